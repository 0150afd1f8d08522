// Where a connection stops, or waits on a countdown: locked out, declined by
// the operator, timed out. Methods of Connection (connection.js assigns them to
// its prototype), kept apart so each module stays small enough to read.
import { KEYS, local } from "./credentials.js";
import { clock } from "./dom.js";
import { fetchAttempts } from "./whoami.js";

// Without a lockout end to count down to (the unauthenticated-socket cap, or whoami unreachable).
const LOCKED_OUT_FALLBACK_MS = 10000;

export const StoppedStates = {
  /** Locked out: count down what `/api/whoami` reports (attempts.lockedFor), then reconnect. */
  async lockedOut(entry, close) {
    const view = this.view;
    const attempts = await fetchAttempts();
    const lockedMs = attempts && attempts.lockedFor > 0 ? attempts.lockedFor * 1000 : LOCKED_OUT_FALLBACK_MS;
    view.setState("locked-out", { title: entry.title, message: entry.message, close });
    view.setRetry({ label: "Try again now", enabled: true });
    this.countDown(
      Date.now() + lockedMs,
      (left) => view.setRetryNote(`Trying again by itself in ${clock(left)}.`),
      () => this.reconnect(),
    );
  },

  /** After a wrong token: how many tries this address has left, on the token form. */
  async sayTriesLeft(prefix) {
    const attempts = await fetchAttempts();
    if (!attempts || typeof attempts.triesLeft !== "number" || this.view.state !== "token-needed") {
      return;
    }
    const left = attempts.triesLeft;
    if (left <= 0) {
      this.view.showTokenError(`${prefix} No tries left: this address is locked out for ${clock(attempts.lockedFor * 1000)}.`);
      return;
    }
    const tries = left === 1 ? "1 try" : `${left} tries`;
    this.view.showTokenError(`${prefix} ${tries} left before this address is locked out for a while.`);
  },

  /**
   * A paired user's request for admin ended without admin: stop asking for
   * it and connect as the user it already is; ``notice`` follows "Connected".
   */
  connectAsUser(notice, message) {
    local.remove(KEYS.wantAdmin);
    this.connectedNotice = notice;
    this.attempt = 0;
    this.view.setState("connecting", { title: "Connecting as a user…", message });
    this.connect();
  },

  /** Nobody approved the request in time: stop (a check would open a new one), offer to ask. */
  timedOut(requestId) {
    this.clearTimers();
    this.waitExpiresAt = null;
    if (this.waitUpgrade) {
      this.connectAsUser(` Admin access was not granted: request ${requestId} timed out.`, "The admin request timed out.");
      return;
    }
    this.view.setState("timed-out", {
      title: "Timed out — ask again",
      message: `Nobody approved request \`${requestId}\` in time, so it expired. This page stopped asking; ask again to put a new request in front of the operator.`,
    });
    this.view.setRetry({ label: "Ask again", enabled: true });
    this.view.setRetryNote("");
  },

  /**
   * An operator declined this device's request. Never ask again by itself:
   * the operator said no, and a page that re-asked would put the device
   * straight back in their queue. A person may ask again after the cool-down.
   */
  declined(info, close) {
    this.clearTimers();
    this.waitExpiresAt = null;
    const requestId = typeof info.requestId === "string" ? info.requestId : "";
    if (info.reason === "role-upgrade") {
      this.connectAsUser(` An operator declined admin access (request ${requestId}).`, "The admin request was declined.");
      return;
    }
    const view = this.view;
    view.setState("declined", {
      title: "Declined by the operator",
      message: `An operator declined request \`${requestId}\` of this device. This page does not ask again by itself; if that was a mistake, ask the operator, then ask again.`,
      close,
    });
    const seconds = typeof info.retryAfter === "number" ? info.retryAfter : 0;
    if (seconds <= 0) {
      view.setRetry({ label: "Ask again", enabled: true });
      view.setRetryNote("");
      return;
    }
    view.setRetry({ label: "Ask again", enabled: false });
    this.countDown(
      Date.now() + seconds * 1000,
      (left) => view.setRetryNote(`This device may ask again in ${clock(left)}.`),
      () => {
        view.setRetry({ label: "Ask again", enabled: true });
        view.setRetryNote("This device may ask again now.");
      },
    );
  },

  /**
   * The request this page waited on is gone and the last check opened a new
   * one: it expired between two checks (a clock that jumped, a suspended
   * tab). A declined request never gets here: the gateway answers those
   * with PAIRING_DECLINED and opens nothing. Stop checking, and say the new
   * request is the one the operator now sees.
   */
  requestGone(previous, fresh, upgrade, close) {
    this.clearTimers();
    if (upgrade) {
      this.connectAsUser(` Admin access was not granted (request ${previous} timed out).`, "The admin request was not granted.");
      return;
    }
    this.view.setState("timed-out", {
      title: "Timed out — ask again",
      message: "",
      closeMessage: `Nobody approved request ${previous} in time, so it expired. This page stopped asking so it does not flood the operator; the last check opened request ${fresh}, and “Ask again” waits for that one.`,
      close,
    });
    this.view.setRetry({ label: "Ask again", enabled: true });
    this.view.setRetryNote("");
  },
};
