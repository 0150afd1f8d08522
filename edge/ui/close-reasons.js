// What the page says, and does next, when the control connection closes.
//
// The words for the gateway's own refusals are not kept here: the gateway
// serves its one refusal table at GET /api/refusals, so the page shows the
// words the docs and the CLI use. This file holds only the close codes that
// table cannot know (a proxy's, the network's, the page's own stall timeout).

export const CLOSE_STALLED = 4000;

/** Close codes whose reason is not in the gateway's refusal table (a proxy's, the network's). */
const CLOSE_CODES = {
  1000: { title: "The gateway closed the connection", message: "Reconnecting.", next: "backoff" },
  1001: { title: "The gateway is going away", message: "It is shutting down or reloading.", next: "backoff" },
  1006: {
    title: "Cannot reach the gateway",
    message: "The network or the reverse proxy dropped the connection.",
    next: "backoff",
  },
  // 1006 on a page opened at the gateway's own loopback address: no network, no proxy.
  "1006-direct": {
    title: "Cannot reach the gateway",
    message: "The gateway stopped answering: is edge serve still running on this machine?",
    next: "backoff",
  },
  1011: { title: "The gateway hit an internal error", message: "Its log says why.", next: "backoff" },
  1013: { title: "The gateway is busy", message: "It asked clients to come back later.", next: "backoff" },
  [CLOSE_STALLED]: {
    title: "The gateway did not answer",
    message: "The connection opened but the handshake never finished (a proxy buffering WebSockets?).",
    next: "backoff",
  },
};

export const UNKNOWN_REFUSAL = {
  state: "error",
  title: "The gateway refused the connection",
  message: "It gave a reason this page does not know; the gateway log has the details.",
  next: "manual",
};

export const WAITING_REASONS = {
  "not-paired": "This device is new to the gateway.",
  "role-upgrade": "This device asked to become an admin; until approved it stays a user.",
};

/**
 * Every refusal the gateway can close the control connection with, keyed by
 * close reason; load() fills it before the first connect. Each entry has
 * title, message and nextStep (what to show), and what the page does next:
 *
 * state: the state card to show
 * next:  ask-token    show the token form
 *        retry-now    reconnect at once (after dropping a stale credential)
 *        backoff      reconnect with exponential backoff
 *        wait         pairing pending: reconnect every 2 s until approved
 *        manual       stop; a "Try again" button reconnects
 *        start-over   stop; offer to start again with a new device key
 * drop:  stored credentials that the reason proves useless.
 */
/** Whether this page was opened at a loopback address, straight from the gateway. */
export function directLocalPage(hostname = window.location.hostname) {
  return ["localhost", "127.0.0.1", "[::1]", "::1"].includes(hostname) || hostname.endsWith(".localhost");
}

export class CloseReasons {
  constructor() {
    this.table = {};
    this.causes = {};
  }

  async load() {
    try {
      const response = await fetch("/api/refusals", { cache: "no-store", credentials: "same-origin" });
      if (response.ok) {
        const table = await response.json();
        this.table = table && typeof table.closeReasons === "object" ? table.closeReasons : {};
        this.causes = table && typeof table.causes === "object" && table.causes ? table.causes : {};
      }
    } catch {
      // Unreachable gateway: every refusal is then described as unknown, with its raw reason.
    }
  }

  /**
   * What really went wrong when a refusal comes with an anomaly the gateway
   * saw (GET /api/whoami): an entry that replaces the refusal's words, its
   * `fix` filled with the proxy's address, or null. The origin refusal a
   * page gets through an untrusted proxy is the one such case: its own words
   * ("add the origin to auth.allowed_origins") would send the operator the
   * wrong way.
   */
  /** Whether some cause can stand behind this refusal (worth asking /api/whoami). */
  hasCause(entry) {
    return Boolean(entry) && Object.values(this.causes).some((cause) => cause.refusal === entry.reason);
  }

  cause(entry, whoami) {
    if (!entry || !whoami || !Array.isArray(whoami.anomalies)) {
      return null;
    }
    const found = Object.values(this.causes).find((cause) => cause.refusal === entry.reason && whoami.anomalies.includes(cause.anomaly));
    if (!found) {
      return null;
    }
    const peer = whoami.peer && whoami.peer.ip ? String(whoami.peer.ip) : "127.0.0.1";
    const fix = String(found.fix).replace("{peer}", peer.includes(":") ? `"${peer}"` : peer);
    return { ...entry, title: found.title, message: found.message, fix, then: found.then, cause: found };
  }

  /** The gateway's entry for one close reason, or undefined when its table has none. */
  entry(reason) {
    return this.table[reason];
  }

  /** What to show and do for a close with `code` and `reason`. */
  describe(code, reason) {
    const closeReasons = this.table;
    const known = Object.hasOwn(closeReasons, reason) ? closeReasons[reason] : null;
    if (known && known.closeCode === code) {
      return known;
    }
    if (code === 1008) {
      return { ...UNKNOWN_REFUSAL, message: `${UNKNOWN_REFUSAL.message} (reason: “${reason}”)` };
    }
    // A code the gateway's table knows, closed by the server under it without the reason
    // (uvicorn closes with 1012 at shutdown), reads like the gateway's own close.
    const sameCode = Object.values(closeReasons).find((entry) => entry.closeCode === code);
    if (code === 1006 && directLocalPage()) {
      return CLOSE_CODES["1006-direct"];
    }
    return CLOSE_CODES[code] || sameCode || { title: "The connection closed", message: `Close code ${code}.`, next: "backoff" };
  }
}
