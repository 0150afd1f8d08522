// "The address the gateway sees for you and why", from GET /api/whoami.
//
// This is the panel an operator opens when a proxy is misconfigured: it says
// which hop the gateway trusted, which headers it ignored and whether the
// client counts as local, in words that point at the configuration key.

import { el } from "./dom.js";

const ANOMALIES = {
  untrusted_proxy_headers:
    "Proxy headers arrived from an address that is not in proxy.trusted_proxies, so the gateway ignored them. If that address is your reverse proxy, add it to proxy.trusted_proxies.",
  malformed_forwarded:
    "A forwarding header held an entry the gateway could not parse (for example 'unknown' or garbage), so it stopped walking the hops there. Check the proxy's forwarding configuration.",
  too_many_hops:
    "The forwarding header listed more hops than the gateway walks (64). Something is appending to it in a loop, or a client is padding it.",
};

function format(address) {
  if (!address || !address.ip) {
    return "a unix socket";
  }
  const ip = address.ip.includes(":") ? `[${address.ip}]` : address.ip;
  return address.port ? `${ip}:${address.port}` : ip;
}

/** Who owns the connection, as the kernel said, and the local.peer_check rule in force. */
function owner(info) {
  const peer = info.peer || {};
  const rule = info.peerCheck === "address" ? "local.peer_check: address, not checked" : `local.peer_check: ${info.peerCheck || "uid"}`;
  if (peer.owner === "same-user" || peer.owner === "other-user") {
    const who = peer.user ? `${peer.user} (uid ${peer.uid})` : `uid ${peer.uid}`;
    const whose = peer.owner === "same-user" ? "the gateway's own user" : "not the gateway's user";
    return `${who}, ${whose} (${rule})`;
  }
  return `unknown (${rule})`;
}

/** One or two plain sentences explaining the resolution. */
export function explain(info) {
  const client = info.client && info.client.ip ? info.client.ip : "unknown";
  const peer = format(info.peer);
  const anomalies = Array.isArray(info.anomalies) ? info.anomalies : [];
  const hops = Array.isArray(info.hops) ? info.hops.filter((hop) => hop.source !== "peer").length : 0;
  const header = info.headerUsed;
  const sentences = [];
  if (info.trustedPeer && header) {
    sentences.push(
      `Your connection reached the gateway through ${peer}, a trusted proxy; reading its ${header} header right to left (${hops} ${hops === 1 ? "entry" : "entries"}), the gateway takes ${client} as your address.`,
    );
  } else if (info.trustedPeer) {
    sentences.push(
      `Your connection came from ${peer}, an address in proxy.trusted_proxies, but it sent no forwarding header, so ${client} is your address.`,
    );
  } else if (anomalies.includes("untrusted_proxy_headers")) {
    sentences.push(
      `Your connection came from ${peer}, which is not a trusted proxy, so the gateway ignored its forwarding headers and takes ${client} as your address.`,
    );
  } else {
    sentences.push(`Your connection came straight from ${peer}; no proxy was involved, so ${client} is your address.`);
  }
  const rule = typeof info.localRule === "string" && info.localRule ? info.localRule : null;
  if (info.local) {
    sentences.push(
      `You count as local${rule ? ` (${rule})` : ""}, so this browser is approved as admin without a token.`,
    );
  } else if (anomalies.length > 0) {
    sentences.push(
      "You do not count as local, because the gateway recorded an anomaly (below); a device from here pairs with the gateway token and an operator's approval.",
    );
  } else {
    sentences.push(
      `You do not count as local${rule ? ` (${rule})` : ""}, so a device from here pairs with the gateway token and an operator's approval.`,
    );
  }
  return sentences.join(" ");
}

function row(label, value, testId) {
  return [el("dt", {}, label), el("dd", { dataset: testId ? { testid: testId } : {} }, value)];
}

function hopsTable(hops) {
  const body = hops.map((hop) =>
    el(
      "tr",
      {},
      el("td", { class: "mono" }, String(hop.address ?? "")),
      el("td", {}, String(hop.source ?? "")),
      el("td", {}, String(hop.verdict ?? "")),
      el("td", {}, String(hop.detail ?? "")),
    ),
  );
  return el(
    "div",
    { class: "table-scroll", tabindex: "0", role: "region", "aria-label": "Hops walked" },
    el(
      "table",
      { dataset: { testid: "whoami-hops" } },
      el("caption", {}, "Hops the gateway walked, nearest first"),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", { scope: "col" }, "Address"),
          el("th", { scope: "col" }, "From"),
          el("th", { scope: "col" }, "Verdict"),
          el("th", { scope: "col" }, "Detail"),
        ),
      ),
      el("tbody", {}, body),
    ),
  );
}

export function renderWhoami(container, info) {
  const anomalies = Array.isArray(info.anomalies) ? info.anomalies : [];
  const hops = Array.isArray(info.hops) ? info.hops : [];
  const authState = info.auth && info.auth.state ? info.auth.state : "anonymous";
  const parts = [
    el("p", { class: "lead", dataset: { testid: "whoami-explanation" } }, explain(info)),
    el(
      "dl",
      { class: "facts" },
      row("Your address", info.client && info.client.ip ? format(info.client) : "unknown", "whoami-ip"),
      row("Connected peer", format(info.peer), "whoami-peer"),
      row("Connection owner", owner(info), "whoami-owner"),
      row("Peer is a trusted proxy", info.trustedPeer ? "yes" : "no"),
      row("Scheme and host", `${info.scheme || "?"}://${info.host || "?"}`),
      row("Forwarding header used", info.headerUsed || "none"),
      row("Local", info.local ? "yes" : "no", "whoami-local"),
      row("HTTP auth", authState),
    ),
    hops.length > 0 ? hopsTable(hops) : null,
    anomalies.length > 0
      ? el(
          "ul",
          { class: "anomalies", dataset: { testid: "whoami-anomalies" } },
          anomalies.map((name) =>
            el("li", {}, el("strong", { class: "mono" }, String(name)), " — ", ANOMALIES[name] || "An unexpected proxy-header condition."),
          ),
        )
      : null,
  ];
  container.replaceChildren(...parts.filter(Boolean));
}

/**
 * This address's failure budget as the gateway counts it (`attempts` of
 * /api/whoami: limit, triesLeft, lockedFor seconds), or null when it cannot
 * say (a local client, or the gateway unreachable).
 */
export async function fetchAttempts() {
  try {
    const response = await fetch("/api/whoami", { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) {
      return null;
    }
    const info = await response.json();
    return info && typeof info.attempts === "object" ? info.attempts : null;
  } catch {
    return null;
  }
}


/** Ask GET /api/whoami and show the answer; resolves with it, or with null when it failed. */
export async function loadWhoami(container) {
  try {
    const response = await fetch("/api/whoami", { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}`);
    }
    const info = await response.json();
    renderWhoami(container, info);
    return info;
  } catch (error) {
    container.replaceChildren(
      el("p", { class: "muted", dataset: { testid: "whoami-error" } }, `Could not ask the gateway who you are (${error.message}).`),
    );
    return null;
  }
}

/**
 * For local and admin callers, what the gateway has seen (whoami's `gateway`):
 * the same-host proxy warning until a correctly forwarded request arrived,
 * then that request; and the refusals this worker counted, by reason.
 */
export function renderGatewayDiagnostics(container, info) {
  const gateway = info && typeof info.gateway === "object" ? info.gateway : null;
  if (!gateway) {
    container.replaceChildren();
    container.hidden = true;
    return;
  }
  const proxy = gateway.sameHostProxy || {};
  const parts = [
    el(
      "p",
      { dataset: { testid: "public-url" } },
      gateway.publicUrl
        ? `Other devices reach this dashboard at ${gateway.publicUrl} (server.public_url); invites and their QR codes use it.`
        : "server.public_url is not set: invites and their QR codes use the address this page was opened at, which another device may not reach.",
    ),
  ];
  if (proxy.warning) {
    parts.push(el("p", { class: "warning", dataset: { testid: "proxy-warning" } }, String(proxy.warning)));
  }
  if (proxy.forwarded) {
    const seen = proxy.forwarded;
    const at = typeof seen.at === "number" ? new Date(seen.at * 1000).toLocaleString() : "";
    parts.push(
      el(
        "p",
        { dataset: { testid: "proxy-forwarded" } },
        `A request forwarded by ${seen.peer || "a unix socket"} with ${seen.header} (for ${seen.client || "an unknown client"}) arrived ${at}: the proxy forwards as it should.`,
      ),
    );
  }
  const counts = gateway.refusals && gateway.refusals.counts ? gateway.refusals.counts : {};
  const reasons = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  if (reasons.length > 0) {
    parts.push(
      el("p", {}, "Refusals this gateway process counted, by reason:"),
      el(
        "ul",
        { dataset: { testid: "refusal-counts" } },
        reasons.map(([reason, count]) => el("li", {}, el("span", { class: "mono" }, reason), ` × ${count}`)),
      ),
    );
  }
  container.replaceChildren(...parts);
  container.hidden = parts.length === 0;
}
