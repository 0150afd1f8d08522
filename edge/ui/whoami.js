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

const LOCAL_RULES = {
  loopback: "a direct loopback connection with no proxy headers",
  network: "your address is in local.networks",
  "local-network": "your address is in local.networks",
};

function format(address) {
  if (!address || !address.ip) {
    return "a unix socket";
  }
  const ip = address.ip.includes(":") ? `[${address.ip}]` : address.ip;
  return address.port ? `${ip}:${address.port}` : ip;
}

/** One or two plain sentences explaining the resolution. */
export function explain(info) {
  const client = info.client && info.client.ip ? info.client.ip : "unknown";
  const peer = format(info.peer);
  const anomalies = Array.isArray(info.anomalies) ? info.anomalies : [];
  const sentences = [];
  if (info.trusted_peer) {
    const hops = Array.isArray(info.hops) ? info.hops.length : 0;
    sentences.push(
      `Your connection reached the gateway through ${peer}, a trusted proxy; walking its forwarding header right to left (${hops} ${hops === 1 ? "entry" : "entries"}), the gateway takes ${client} as your address.`,
    );
  } else if (anomalies.includes("untrusted_proxy_headers")) {
    sentences.push(
      `Your connection came from ${peer}, which is not a trusted proxy, so the gateway ignored its forwarding headers and takes ${client} as your address.`,
    );
  } else {
    sentences.push(`Your connection came straight from ${peer}; no proxy was involved, so ${client} is your address.`);
  }
  if (info.local) {
    const rule = LOCAL_RULES[info.local_rule] || info.local_rule || "a local rule";
    sentences.push(`You count as local (${rule}), so this browser is approved as admin without a token.`);
  } else if (anomalies.length > 0) {
    sentences.push("You do not count as local, because the gateway recorded an anomaly (below). Pairing needs the gateway token.");
  } else {
    sentences.push("You do not count as local, so pairing needs the gateway token and an operator's approval.");
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
      row("Peer is a trusted proxy", info.trusted_peer ? "yes" : "no"),
      row("Scheme and host", `${info.scheme || "?"}://${info.host || "?"}`),
      row("Local", info.local ? `yes (${info.local_rule || "local"})` : "no", "whoami-local"),
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

export async function loadWhoami(container) {
  try {
    const response = await fetch("/api/whoami", { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}`);
    }
    renderWhoami(container, await response.json());
  } catch (error) {
    container.replaceChildren(
      el("p", { class: "muted", dataset: { testid: "whoami-error" } }, `Could not ask the gateway who you are (${error.message}).`),
    );
  }
}
