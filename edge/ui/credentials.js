// What this browser keeps between visits, and the session cookie that holds
// the device token.
//
// Security rules this file keeps:
// - The device key is an Ed25519 CryptoKey generated non-extractable and kept
//   in IndexedDB (see identity.js); nothing here stores key material.
// - No secret is kept where page script can read it: the device token lives
//   only in the gateway's HttpOnly session cookie (the page reconnects with
//   its key and that cookie, `auth: {}`), and a pasted gateway token is
//   dropped once the cookie is set. localStorage holds only the non-secret
//   `edge.session` marker. A token that an older version stored is traded for
//   the cookie on load, then deleted.
// - No gateway URL, host or token is ever read from the query string or
//   fragment (the CVE-2026-25253 class). The one thing read from the fragment
//   is `#invite=<code>`, a credential for this same origin, which is removed
//   from the address bar at once and kept in sessionStorage only until the
//   gateway answers.

const INVITE_FRAGMENT = /^#invite=([A-Za-z0-9_.~-]{4,256})$/;

export const KEYS = {
  session: "edge.session", // "1": the session cookie holds this device's token (not a secret)
  deviceToken: "edge.deviceToken", // only ever read to migrate what older versions stored
  gatewayToken: "edge.gatewayToken",
  deviceName: "edge.deviceName",
  wantAdmin: "edge.requestAdmin",
  invite: "edge.invite",
};

function storage(area) {
  return {
    get(key) {
      try {
        return window[area].getItem(key);
      } catch {
        return null;
      }
    },
    set(key, value) {
      try {
        window[area].setItem(key, value);
      } catch {
        // Storage refused (private mode, quota): the value lasts for this page only.
      }
    },
    remove(key) {
      try {
        window[area].removeItem(key);
      } catch {
        // Nothing stored, nothing to remove.
      }
    },
  };
}

export const local = storage("localStorage");
export const session = storage("sessionStorage");

export function dropCredentials(names) {
  for (const name of names || []) {
    (name === "invite" ? session : local).remove(KEYS[name]);
  }
}

function defaultDeviceName() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua)
    ? "Microsoft Edge"
    : /Firefox\//.test(ua)
      ? "Firefox"
      : /Chrome\//.test(ua)
        ? "Chromium"
        : /Safari\//.test(ua)
          ? "Safari"
          : "Browser";
  const system = /Android/.test(ua)
    ? "Android"
    : /iPhone|iPad/.test(ua)
      ? "iOS"
      : /Mac OS X/.test(ua)
        ? "macOS"
        : /Windows/.test(ua)
          ? "Windows"
          : /Linux/.test(ua)
            ? "Linux"
            : "another system";
  return `${browser} on ${system}`;
}

export function deviceName() {
  return (local.get(KEYS.deviceName) || defaultDeviceName()).slice(0, 64);
}

export function requestedRole() {
  return local.get(KEYS.wantAdmin) === "1" ? "admin" : "user";
}

/** The credential the next connect frame carries, and its kind. */
export function authFor() {
  if (local.get(KEYS.session) === "1") {
    return ["session", {}]; // the HttpOnly cookie on the upgrade request carries the token
  }
  const token = local.get(KEYS.gatewayToken);
  if (token) {
    return ["token", { token }];
  }
  const invite = session.get(KEYS.invite);
  if (invite) {
    return ["invite", { invite }];
  }
  return ["none", {}];
}

/**
 * Trade the device token for the HttpOnly session cookie, which from then on is
 * the only place the token lives: "ok", "refused" (the token is not valid) or
 * "unreachable".
 */
export async function startSession(deviceToken) {
  try {
    const response = await fetch("/api/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { authorization: `Bearer ${deviceToken}` },
    });
    return response.ok ? "ok" : "refused";
  } catch {
    return "unreachable";
  }
}

/** Clear the session cookie (a cookie-authenticated write: marked as the dashboard's own JSON call). */
export async function endSession() {
  try {
    await fetch("/api/session", {
      method: "DELETE",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
    });
  } catch {
    // No session cookie to clear.
  }
}

/** A device token stored by an older version: into the cookie without pairing again, then gone. */
export async function migrateStoredToken() {
  const stored = local.get(KEYS.deviceToken);
  if (!stored) {
    return;
  }
  const outcome = await startSession(stored);
  if (outcome === "unreachable") {
    return; // try again on the next load rather than lose the pairing
  }
  if (outcome === "ok") {
    local.set(KEYS.session, "1");
    local.remove(KEYS.gatewayToken);
  }
  local.remove(KEYS.deviceToken);
}

/** `#invite=<code>` into sessionStorage and out of the address bar: true, false (none) or "malformed". */
export function takeInviteFromFragment() {
  const hash = window.location.hash;
  if (!hash.startsWith("#invite=")) {
    return false;
  }
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  const match = INVITE_FRAGMENT.exec(hash);
  if (!match) {
    session.remove(KEYS.invite);
    return "malformed";
  }
  session.set(KEYS.invite, match[1]);
  return true;
}
