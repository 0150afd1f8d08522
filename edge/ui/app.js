// Edge Control UI: pairs this browser with the gateway over the control
// WebSocket and, for admin devices, manages the other devices.
//
// Security rules this file keeps:
// - It connects ONLY to its own origin's /ws. No gateway URL, host or token is
//   ever read from the query string or fragment (the CVE-2026-25253 class).
//   The one thing read from the fragment is `#invite=<code>`, a credential for
//   this same origin, which is removed from the address bar at once.
// - The device key is an Ed25519 CryptoKey generated non-extractable and kept
//   in IndexedDB (see identity.js). No secret is kept where page script can
//   read it: the device token lives only in the gateway's HttpOnly session
//   cookie (the page reconnects with its key and that cookie, `auth: {}`), and
//   a pasted gateway token is dropped once the cookie is set. localStorage
//   holds only the non-secret `edge.session` marker. A token that an older
//   version stored is traded for the cookie on load, then deleted.
// - Text from the gateway is set as text, never as markup.
//
// Stable test hooks (data-testid):
//   state                 the state card; data-state is one of
//                         connecting | token-needed | waiting | connected |
//                         revoked | error | insecure | forgotten
//   state-title, state-message
//   close-reason-message  human message for the last close; data-close-code and
//                         data-close-reason carry the raw code and reason
//   connection-badge      header badge mirroring data-state
//   announcer             polite live region announcing state changes
//   insecure-panel, insecure-message, insecure-cli, insecure-port
//   token-form, token-input, token-reveal, token-error, token-submit,
//   device-name-input, request-admin (checkbox)
//   waiting-panel, waiting-with-id, request-id, approve-command, copy-command,
//   waiting-status, cancel-upgrade, change-token
//   retry-button, start-over, connect-again
//   identity, device-name, device-role, device-id, identity-note,
//   request-admin-upgrade, forget-device, forget-confirm-group, forget-confirm,
//   forget-cancel
//   admin-panel, admin-status, pending-count, pending-list, pending-empty,
//   pending-<REQUESTID>, approve-user-<REQUESTID>, approve-admin-<REQUESTID>,
//   reject-<REQUESTID>
//   device-list, device-<DEVICEID>, device-name-<DEVICEID>, device-role-<DEVICEID>,
//   rename-<DEVICEID>, rename-input-<DEVICEID>, rename-save-<DEVICEID>,
//   revoke-<DEVICEID>, revoke-confirm-<DEVICEID>, revoke-cancel-<DEVICEID>,
//   revoked-list, gone-<DEVICEID>
//   invite-form, invite-role, invite-name, invite-ttl, invite-submit,
//   invite-result, invite-url, invite-copy, invite-qr, invite-list,
//   invite-<INVITEID>, invite-cancel-<INVITEID>
//   whoami, whoami-explanation, whoami-ip, whoami-peer, whoami-local,
//   whoami-hops, whoami-anomalies, whoami-error, whoami-refresh

import { AdminPanel } from "./admin.js";
import { byTestId, copyButton, el, show } from "./dom.js";
import {
  UnsupportedError,
  deleteIdentity,
  loadOrCreateIdentity,
  secureContextProblems,
  signConnect,
} from "./identity.js";
import { loadWhoami } from "./whoami.js";

const APP_VERSION = "1.0";
const WAITING_RETRY_MS = 2000;
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const REQUEST_TIMEOUT_MS = 15000;
const HANDSHAKE_STALL_MS = 20000;
const CLOSE_STALLED = 4000;
const MAX_TOKEN_LENGTH = 512;
const INVITE_FRAGMENT = /^#invite=([A-Za-z0-9_.~-]{4,256})$/;

const KEYS = {
  session: "edge.session", // "1": the session cookie holds this device's token (not a secret)
  deviceToken: "edge.deviceToken", // only ever read to migrate what older versions stored
  gatewayToken: "edge.gatewayToken",
  deviceName: "edge.deviceName",
  wantAdmin: "edge.requestAdmin",
  invite: "edge.invite",
};

/**
 * Every refusal the gateway can close the control connection with, keyed by
 * close reason. The gateway serves its one refusal table at
 * GET /api/refusals, so the words shown here are the ones the docs and the CLI
 * use; loadRefusals fills this before the first connect. Each entry has
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
let closeReasons = {};

async function loadRefusals() {
  try {
    const response = await fetch("/api/refusals", { cache: "no-store", credentials: "same-origin" });
    if (response.ok) {
      const table = await response.json();
      closeReasons = table && typeof table.closeReasons === "object" ? table.closeReasons : {};
    }
  } catch {
    // Unreachable gateway: every refusal is then described as unknown, with its raw reason.
  }
}

/** Close codes whose reason is not in the gateway's refusal table (a proxy's, the network's). */
const CLOSE_CODES = {
  1000: { title: "The gateway closed the connection", message: "Reconnecting.", next: "backoff" },
  1001: { title: "The gateway is going away", message: "It is shutting down or reloading.", next: "backoff" },
  1006: {
    title: "Cannot reach the gateway",
    message: "The network or the reverse proxy dropped the connection.",
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

const UNKNOWN_REFUSAL = {
  state: "error",
  title: "The gateway refused the connection",
  message: "It gave a reason this page does not know; the gateway log has the details.",
  next: "manual",
};

const WAITING_REASONS = {
  "not-paired": "This device is new to the gateway.",
  "role-upgrade": "This device asked to become an admin; until approved it stays a user.",
};

class GatewayError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// ---------------------------------------------------------------- storage

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

const local = storage("localStorage");
const session = storage("sessionStorage");

function dropCredentials(names) {
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

function deviceName() {
  return (local.get(KEYS.deviceName) || defaultDeviceName()).slice(0, 64);
}

// ---------------------------------------------------------------- page elements

const ui = {
  state: byTestId("state"),
  title: byTestId("state-title"),
  message: byTestId("state-message"),
  closeReason: byTestId("close-reason-message"),
  badge: byTestId("connection-badge"),
  announcer: byTestId("announcer"),
  insecure: document.getElementById("panel-insecure"),
  tokenForm: byTestId("token-form"),
  tokenInput: byTestId("token-input"),
  tokenReveal: byTestId("token-reveal"),
  tokenError: byTestId("token-error"),
  nameInput: byTestId("device-name-input"),
  adminBox: byTestId("request-admin"),
  waiting: document.getElementById("panel-waiting"),
  waitingWithId: byTestId("waiting-with-id"),
  requestId: byTestId("request-id"),
  approveCommand: byTestId("approve-command"),
  copyCommand: byTestId("copy-command"),
  waitingStatus: byTestId("waiting-status"),
  cancelUpgrade: byTestId("cancel-upgrade"),
  changeToken: byTestId("change-token"),
  retryPanel: document.getElementById("panel-retry"),
  retry: byTestId("retry-button"),
  startOver: byTestId("start-over"),
  connectAgain: byTestId("connect-again"),
  identity: byTestId("identity"),
  identityName: byTestId("device-name"),
  identityRole: byTestId("device-role"),
  identityId: byTestId("device-id"),
  identityNote: byTestId("identity-note"),
  upgrade: byTestId("request-admin-upgrade"),
  forget: byTestId("forget-device"),
  forgetGroup: byTestId("forget-confirm-group"),
  forgetConfirm: byTestId("forget-confirm"),
  forgetCancel: byTestId("forget-cancel"),
  whoami: byTestId("whoami"),
  whoamiRefresh: byTestId("whoami-refresh"),
};

// ---------------------------------------------------------------- state

let identity = null;
let socket = null;
let hello = null;
let pairingError = null;
let lastAuthKind = null;
let attempt = 0;
let reconnectTimer = null;
let countdownTimer = null;
let nextRequestId = 1;
const pendingRequests = new Map();
let currentState = null;
let currentTitle = null;
let currentMessage = null;
let reconnectNote = "";
let forgetting = false;
let waitingFor = null;
let connectedNotice = "";
let forgetClose = null;

const admin = new AdminPanel(byTestId("admin-panel"), request);

function announce(text) {
  ui.announcer.textContent = "";
  window.setTimeout(() => {
    ui.announcer.textContent = text;
  }, 50);
}

/** Text with `code` spans, from a message using backticks. */
function richText(node, text) {
  const parts = String(text).split("`");
  node.replaceChildren(...parts.map((part, index) => (index % 2 === 1 ? el("code", {}, part) : part)));
}

/**
 * Show one state. Focus moves only when the state itself changes, so a
 * waiting page that re-checks every 2 seconds does not steal the keyboard.
 */
function setState(state, { title, message, next = null, closeMessage = null, close = null, focus = true }) {
  const changed = state !== currentState || title !== currentTitle || message !== currentMessage;
  const stateChanged = state !== currentState;
  currentState = state;
  currentTitle = title;
  currentMessage = message;
  if (state !== "waiting") {
    waitingFor = null;
  }
  ui.state.dataset.state = state;
  ui.badge.dataset.state = state;
  ui.badge.textContent = state.replace("-", " ");
  ui.title.textContent = title;
  richText(ui.message, message || "");
  show(ui.message, !closeMessage);
  if (closeMessage) {
    richText(ui.closeReason, closeMessage);
    if (close && close.reason) {
      ui.closeReason.append(" ", el("span", { class: "raw-reason" }, `(gateway's reason: “${close.reason}”, code ${close.code})`));
    }
    ui.closeReason.dataset.closeCode = close ? String(close.code) : "";
    ui.closeReason.dataset.closeReason = close ? close.reason : "";
    show(ui.closeReason, true);
  } else {
    ui.closeReason.textContent = "";
    delete ui.closeReason.dataset.closeCode;
    delete ui.closeReason.dataset.closeReason;
    show(ui.closeReason, false);
  }
  show(ui.insecure, state === "insecure");
  show(ui.tokenForm, state === "token-needed");
  show(ui.waiting, state === "waiting");
  show(ui.retryPanel, state === "error" || state === "revoked" || state === "forgotten");
  show(ui.retry, state === "error");
  show(ui.startOver, next === "start-over");
  show(ui.connectAgain, state === "forgotten");
  document.title = `${title} — Edge`;
  if (changed) {
    announce(`${title}. ${String(message || "").replace(/`/g, "")}`);
  }
  if (stateChanged && focus) {
    if (state === "token-needed") {
      ui.tokenInput.focus();
    } else if (state !== "connecting") {
      ui.title.focus();
    }
  }
}

function renderIdentity() {
  if (!identity) {
    show(ui.identity, false);
    return;
  }
  show(ui.identity, true);
  ui.identityId.textContent = identity.id;
  ui.identityName.textContent = hello ? hello.device.name : deviceName();
  ui.identityRole.textContent = hello ? hello.device.role : "not connected";
  show(ui.upgrade, Boolean(hello) && hello.device.role !== "admin");
  ui.identityNote.textContent = identity.persisted
    ? ""
    : "This browser does not let the page keep its key (private browsing?), so the pairing ends when you close the tab.";
  show(ui.identityNote, !identity.persisted);
}

// ---------------------------------------------------------------- connection

function authFor() {
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

function requestedRole() {
  return local.get(KEYS.wantAdmin) === "1" ? "admin" : "user";
}

function clearTimers() {
  window.clearTimeout(reconnectTimer);
  window.clearInterval(countdownTimer);
  reconnectTimer = null;
  countdownTimer = null;
}

function detachSocket() {
  if (socket) {
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
    if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
      socket.close(1000, "client reconnecting");
    }
    socket = null;
  }
}

function failPendingRequests(message) {
  for (const [, pending] of pendingRequests) {
    window.clearTimeout(pending.timer);
    pending.reject(new GatewayError("not_connected", message));
  }
  pendingRequests.clear();
}

/** Open the control socket to this page's own origin and nowhere else. */
function connect() {
  clearTimers();
  detachSocket();
  hello = null;
  pairingError = null;
  if (!identity) {
    return;
  }
  if (currentState === "connecting") {
    ui.message.textContent = reconnectNote ? `${reconnectNote} Reconnecting…` : "Opening the control connection.";
    show(ui.retryPanel, false);
  } else if (currentState !== "waiting") {
    setState("connecting", { title: "Connecting to the gateway…", message: "Opening the control connection.", focus: false });
  }
  reconnectNote = "";
  const url = `${window.location.protocol === "https:" ? "wss://" : "ws://"}${window.location.host}/ws`;
  const ws = new WebSocket(url);
  let answered = false;
  socket = ws;
  // A proxy that accepts the upgrade but never relays frames would leave the page "connecting" forever.
  const stall = window.setTimeout(() => {
    if (socket === ws && !hello) {
      ws.close(CLOSE_STALLED, "handshake stalled");
    }
  }, HANDSHAKE_STALL_MS);
  ws.onmessage = (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") {
      return;
    }
    if (frame.type === "challenge" && !answered) {
      answered = true;
      answerChallenge(ws, frame);
    } else if (frame.type === "hello") {
      onHello(frame);
    } else if (frame.type === "error") {
      pairingError = frame;
    } else if (frame.type === "res") {
      onResponse(frame);
    } else if (frame.type === "event") {
      onEvent(frame);
    }
  };
  ws.onclose = (event) => {
    window.clearTimeout(stall);
    if (socket !== ws) {
      return;
    }
    socket = null;
    if (forgetting) {
      // self.forget revokes this very device, so the gateway may close before it answers.
      forgetClose = { code: event.code, reason: event.reason || "" };
      hello = null;
      failPendingRequests("The connection to the gateway closed.");
      return;
    }
    onClose(event.code, event.reason || "");
  };
}

async function answerChallenge(ws, challenge) {
  if (typeof challenge.nonce !== "string" || challenge.nonce.length === 0 || challenge.nonce.length > 256) {
    ws.close(1002, "bad challenge");
    return;
  }
  const role = requestedRole();
  const [kind, auth] = authFor();
  lastAuthKind = kind;
  const signedAt = Date.now();
  let signature;
  try {
    signature = await signConnect(identity, challenge.nonce, signedAt, role);
  } catch (error) {
    detachSocket();
    showInsecure("sign-failed", error);
    return;
  }
  if (ws.readyState !== WebSocket.OPEN) {
    return;
  }
  ws.send(
    JSON.stringify({
      type: "connect",
      auth,
      device: { id: identity.id, publicKey: identity.publicKey, signedAt, signature },
      client: { name: deviceName(), app: "control-ui", version: APP_VERSION },
      role,
    }),
  );
}

function onHello(frame) {
  if (!frame.device || typeof frame.device.id !== "string") {
    return;
  }
  hello = frame;
  attempt = 0;
  clearTimers();
  const client = frame.client || {};
  // A token comes only on a first pairing (or after the gateway token or an invite):
  // it goes straight into the HttpOnly cookie and is not kept anywhere page script reads.
  const token = typeof frame.deviceToken === "string" ? frame.deviceToken : "";
  if (token && !client.local) {
    startSession(token).then((outcome) => {
      if (outcome === "ok") {
        local.set(KEYS.session, "1");
        local.remove(KEYS.gatewayToken);
      }
      refreshWhoami();
    });
  } else {
    refreshWhoami();
  }
  session.remove(KEYS.invite);
  if (frame.device.role !== requestedRole()) {
    // The operator decided the role; asking again on every reconnect would nag.
    local.remove(KEYS.wantAdmin);
  }
  const where = client.local ? "a local client" : `address ${client.ip || "unknown"}`;
  setState("connected", {
    title: "Connected",
    message: `Connected as ${frame.device.name || "this device"} (${frame.device.role}) from ${where}.${connectedNotice}`,
  });
  connectedNotice = "";
  renderIdentity();
  if (frame.device.role === "admin") {
    admin.open(frame.device.id);
  } else {
    admin.close();
  }
}

/**
 * Trade the device token for the HttpOnly session cookie, which from then on is
 * the only place the token lives: "ok", "refused" (the token is not valid) or
 * "unreachable".
 */
async function startSession(deviceToken) {
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
async function endSession() {
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
async function migrateStoredToken() {
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

function onResponse(frame) {
  const pending = pendingRequests.get(frame.id);
  if (!pending) {
    return;
  }
  pendingRequests.delete(frame.id);
  window.clearTimeout(pending.timer);
  if (frame.ok) {
    pending.resolve(frame.result);
  } else {
    const error = frame.error || {};
    pending.reject(new GatewayError(error.code || "error", error.message || "The gateway refused the request."));
  }
}

function onEvent(frame) {
  const data = frame.data && typeof frame.data === "object" ? frame.data : {};
  if (hello && frame.event === "device.renamed" && data.id === hello.device.id && data.name) {
    hello.device.name = data.name;
    renderIdentity();
  }
  admin.onEvent(String(frame.event || ""), data);
}

/** Send one request over the connected socket; resolves with `result`, rejects with a GatewayError. */
function request(method, params = {}) {
  if (!socket || socket.readyState !== WebSocket.OPEN || !hello) {
    return Promise.reject(new GatewayError("not_connected", "Not connected to the gateway."));
  }
  const id = nextRequestId++;
  return new Promise((resolve, reject) => {
    const timer = window.setTimeout(() => {
      pendingRequests.delete(id);
      reject(new GatewayError("timeout", `The gateway did not answer ${method} in time.`));
    }, REQUEST_TIMEOUT_MS);
    pendingRequests.set(id, { resolve, reject, timer });
    socket.send(JSON.stringify({ type: "req", id, method, params }));
  });
}

function describeClose(code, reason) {
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
  return CLOSE_CODES[code] || sameCode || { title: "The connection closed", message: `Close code ${code}.`, next: "backoff" };
}

function onClose(code, reason) {
  const wasConnected = Boolean(hello);
  hello = null;
  failPendingRequests("The connection to the gateway closed.");
  admin.close();
  const entry = describeClose(code, reason);
  dropCredentials(entry.drop);
  const close = { code, reason };
  const closeMessage = entry.message;
  renderIdentity();

  switch (entry.next) {
    case "wait":
      waitForApproval(close);
      return;
    case "retry-now":
      if (local.get(KEYS.gatewayToken) || session.get(KEYS.invite)) {
        setState("connecting", { title: entry.title, message: entry.message, closeMessage, close, focus: false });
        connect();
      } else {
        setState("token-needed", { title: entry.title, message: entry.message, closeMessage, close });
      }
      return;
    case "ask-token":
      ui.tokenInput.value = "";
      setState("token-needed", { title: entry.title, message: entry.message, closeMessage, close });
      if (reason === "unauthorized: gateway token mismatch") {
        showTokenError("The gateway rejected that token. Paste it again.");
      }
      return;
    case "backoff":
      if (currentState === "waiting") {
        scheduleReconnect(backoffDelay(), "waiting");
        return;
      }
      setState("connecting", {
        title: wasConnected ? `Disconnected: ${entry.title.toLowerCase()}` : entry.title,
        message: entry.message,
        focus: false,
      });
      scheduleReconnect(backoffDelay(), "connecting", entry.message);
      return;
    default:
      setState(entry.state || "error", {
        title: entry.title,
        message: entry.message,
        next: entry.next,
        closeMessage,
        close,
      });
  }
}

function backoffDelay() {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  attempt += 1;
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

/** Reconnect after `delay` ms, counting down on the page so nobody wonders what it is doing. */
function scheduleReconnect(delay, mode, note = "") {
  clearTimers();
  const due = Date.now() + delay;
  const approvalPending = Boolean(pairingError && pairingError.requestId);
  reconnectNote = note;
  const render = () => {
    const seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
    if (mode === "waiting") {
      ui.waitingStatus.textContent = approvalPending
        ? "Still waiting for an operator; checking every 2 seconds."
        : `Trying again in ${seconds} s…`;
    } else {
      ui.message.textContent = `${note} Reconnecting in ${seconds} s…`.trim();
    }
  };
  render();
  if (mode === "connecting") {
    show(ui.retryPanel, true);
    show(ui.retry, true);
  }
  if (delay >= 1500) {
    countdownTimer = window.setInterval(render, 1000);
  }
  reconnectTimer = window.setTimeout(connect, delay);
}

function waitForApproval(close) {
  const info = pairingError || {};
  const requestId = typeof info.requestId === "string" && info.requestId ? info.requestId : null;
  const upgrade = info.reason === "role-upgrade";
  const entry = closeReasons["pairing required"] || UNKNOWN_REFUSAL;
  if (requestId && waitingFor && requestId !== waitingFor) {
    requestGone(waitingFor, requestId, upgrade, close);
    return;
  }
  if (requestId) {
    waitingFor = requestId;
    ui.requestId.textContent = requestId;
    ui.approveCommand.textContent = `edge devices approve ${requestId}`;
    show(ui.waitingWithId, true);
    setState("waiting", {
      title: upgrade ? "Waiting for admin approval" : entry.title,
      message: `${WAITING_REASONS[info.reason] || entry.message} Request ${requestId} expires after a few minutes.`,
      closeMessage: null,
      close,
    });
    show(ui.cancelUpgrade, upgrade);
    show(ui.changeToken, !upgrade && lastAuthKind === "token");
    attempt = 0;
    scheduleReconnect(WAITING_RETRY_MS, "waiting");
    return;
  }
  show(ui.waitingWithId, false);
  const detail = info.detail || info.reason || "the gateway's pending-request limit";
  setState("waiting", {
    title: "The gateway cannot take a new request right now",
    message: `Too many devices are already waiting (${detail}). Ask an operator to approve or reject pending requests (\`edge devices list\`); this page keeps trying.`,
    close,
  });
  show(ui.cancelUpgrade, upgrade);
  show(ui.changeToken, lastAuthKind === "token");
  scheduleReconnect(Math.max(WAITING_RETRY_MS, backoffDelay()), "waiting");
}

/**
 * The request this page waited on is gone (rejected, or it expired) and the
 * last check opened a new one. Stop checking: asking again every 2 seconds
 * would make rejection pointless for the operator.
 */
function requestGone(previous, fresh, upgrade, close) {
  clearTimers();
  if (upgrade) {
    local.remove(KEYS.wantAdmin);
    connectedNotice = ` Admin access was not granted (request ${previous} was rejected or expired).`;
    attempt = 0;
    setState("connecting", { title: "Connecting as a user…", message: "The admin request was not granted." });
    connect();
    return;
  }
  setState("error", {
    title: "The request was rejected or expired",
    message: "",
    next: "manual",
    closeMessage: `Request ${previous} is no longer pending: an operator rejected it, or nobody approved it in time. This page stopped asking so it does not flood the operator; the last check opened request ${fresh}, and “Try again” waits for that one.`,
    close,
  });
}

// ---------------------------------------------------------------- user actions

function showTokenError(message) {
  ui.tokenError.textContent = message;
  show(ui.tokenError, Boolean(message));
  ui.tokenInput.setAttribute("aria-invalid", message ? "true" : "false");
  if (message) {
    ui.tokenInput.focus();
  }
}

function onTokenSubmit(event) {
  event.preventDefault();
  const token = ui.tokenInput.value.trim();
  if (!token) {
    showTokenError("Paste the gateway token first.");
    return;
  }
  if (token.length > MAX_TOKEN_LENGTH || /\s/.test(token)) {
    showTokenError("That does not look like a gateway token: it is one line of letters, digits, '-' and '_'.");
    return;
  }
  showTokenError("");
  const name = ui.nameInput.value.trim();
  if (name) {
    local.set(KEYS.deviceName, name.slice(0, 64));
  }
  if (ui.adminBox.checked) {
    local.set(KEYS.wantAdmin, "1");
  } else {
    local.remove(KEYS.wantAdmin);
  }
  local.set(KEYS.gatewayToken, token);
  ui.tokenInput.value = "";
  attempt = 0;
  setState("connecting", { title: "Asking the gateway…", message: "Sending the pairing request." });
  renderIdentity();
  connect();
}

function onReveal() {
  const reveal = ui.tokenInput.type === "password";
  ui.tokenInput.type = reveal ? "text" : "password";
  ui.tokenReveal.textContent = reveal ? "Hide" : "Show";
  ui.tokenReveal.setAttribute("aria-pressed", String(reveal));
}

async function startOver() {
  clearTimers();
  detachSocket();
  admin.close();
  await deleteIdentity();
  local.remove(KEYS.session);
  local.remove(KEYS.deviceToken);
  local.remove(KEYS.wantAdmin);
  await endSession(); // the old device's cookie is no credential of the new key
  hello = null;
  identity = null;
  attempt = 0;
  await ensureIdentity();
  connect();
}

function askForAdmin() {
  local.set(KEYS.wantAdmin, "1");
  attempt = 0;
  connect();
}

function stayUser() {
  local.remove(KEYS.wantAdmin);
  attempt = 0;
  setState("connecting", { title: "Connecting as a user…", message: "Withdrawing the admin request." });
  connect();
}

function changeToken() {
  clearTimers();
  detachSocket();
  local.remove(KEYS.gatewayToken);
  const missing = closeReasons["unauthorized: gateway token missing"];
  setState("token-needed", {
    title: missing ? missing.title : "Gateway token",
    message: "Paste the gateway token; on the gateway host, `edge token show` prints it.",
  });
}

function showForgetConfirm(visible) {
  show(ui.forgetGroup, visible);
  show(ui.forget, !visible);
  (visible ? ui.forgetCancel : ui.forget).focus();
}

/** Revoke this device on the gateway (when connected) and erase its key and tokens here. */
async function forgetDevice() {
  show(ui.forgetGroup, false);
  show(ui.forget, true);
  let serverNote = "The gateway revoked it as well.";
  if (hello) {
    forgetting = true;
    forgetClose = null;
    try {
      await request("self.forget", {});
    } catch (error) {
      if (!forgetClose || forgetClose.reason !== "device revoked") {
        serverNote = `The gateway could not revoke it (${error.message}); an admin should revoke it from the device list or with \`edge devices revoke ${identity.id}\`.`;
      }
    } finally {
      forgetting = false;
    }
  } else {
    serverNote = "This page was not connected, so the gateway may still list it; an admin can revoke it there.";
  }
  clearTimers();
  detachSocket();
  failPendingRequests("This device was forgotten.");
  admin.close();
  await deleteIdentity();
  for (const key of [KEYS.session, KEYS.deviceToken, KEYS.gatewayToken, KEYS.wantAdmin]) {
    local.remove(key);
  }
  session.remove(KEYS.invite);
  await endSession();
  hello = null;
  identity = null;
  renderIdentity();
  setState("forgotten", {
    title: "This device was forgotten",
    message: `Its key and tokens are deleted from this browser. ${serverNote} Connect again to pair as a new device.`,
  });
}

async function connectAgain() {
  attempt = 0;
  await ensureIdentity();
  connect();
}

function takeInviteFromFragment() {
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

function showDamagedInvite() {
  if (hello) {
    return;
  }
  clearTimers();
  detachSocket();
  setState("token-needed", {
    title: "The invite link is damaged",
    message: "The invite code in the link is not valid (it may have been cut off). Ask for a new link, or paste the gateway token.",
  });
}

function refreshWhoami() {
  loadWhoami(ui.whoami);
}

// ---------------------------------------------------------------- start

function insecureCopy(kind, error) {
  const origin = window.location.origin;
  const messages = {
    "not-secure-context": `This page was loaded from ${origin} over plain HTTP, which browsers do not treat as a secure context, so they switch off the cryptography this browser needs to hold a device key.`,
    "no-webcrypto": "This browser offers no WebCrypto (crypto.subtle), which the device key needs.",
    "no-ed25519": "This browser has WebCrypto but cannot make Ed25519 keys. Current Chromium, Firefox and Safari can; update the browser or use another one.",
    "sign-failed": `This browser could not sign with its device key (${error && error.message ? error.message : "unknown error"}).`,
  };
  return {
    title: "This browser cannot pair here",
    message: `${messages[kind] || messages["no-webcrypto"]} Nothing was sent to the gateway. Use one of the options below.`,
  };
}

function showInsecure(kind, error) {
  byTestId("insecure-message").textContent = insecureCopy(kind, error).message;
  byTestId("insecure-port").textContent = window.location.port || (window.location.protocol === "https:" ? "443" : "80");
  byTestId("insecure-cli").textContent = `edge pair --url ${window.location.origin} --token <gateway token>`;
  setState("insecure", { ...insecureCopy(kind, error), message: "" });
  show(ui.identity, false);
}

async function ensureIdentity() {
  try {
    identity = await loadOrCreateIdentity();
  } catch (error) {
    identity = null;
    showInsecure(error instanceof UnsupportedError ? "no-ed25519" : "no-webcrypto", error);
    return false;
  }
  renderIdentity();
  return true;
}

function wireControls() {
  ui.tokenForm.addEventListener("submit", onTokenSubmit);
  ui.tokenReveal.addEventListener("click", onReveal);
  ui.nameInput.value = deviceName();
  ui.adminBox.checked = requestedRole() === "admin";
  ui.copyCommand.replaceWith(
    copyButton(() => ui.approveCommand.textContent, ui.approveCommand, "copy-command", "Copy command"),
  );
  ui.retry.addEventListener("click", () => {
    attempt = 0;
    connect();
  });
  ui.startOver.addEventListener("click", startOver);
  ui.connectAgain.addEventListener("click", connectAgain);
  ui.cancelUpgrade.addEventListener("click", stayUser);
  ui.changeToken.addEventListener("click", changeToken);
  ui.upgrade.addEventListener("click", askForAdmin);
  ui.forget.addEventListener("click", () => showForgetConfirm(true));
  ui.forgetCancel.addEventListener("click", () => showForgetConfirm(false));
  ui.forgetConfirm.addEventListener("click", forgetDevice);
  ui.whoamiRefresh.addEventListener("click", refreshWhoami);
  window.addEventListener("online", () => {
    if (reconnectTimer !== null) {
      attempt = 0;
      connect();
    }
  });
  window.addEventListener("hashchange", () => {
    const invite = takeInviteFromFragment();
    if (invite === "malformed") {
      showDamagedInvite();
    } else if (invite === true && !hello && identity) {
      attempt = 0;
      connect();
    }
  });
}

async function main() {
  const refusals = loadRefusals();
  wireControls();
  refreshWhoami();
  const invite = takeInviteFromFragment();
  const problems = secureContextProblems();
  if (problems.length > 0) {
    showInsecure(problems[0]);
    return;
  }
  if (!(await ensureIdentity())) {
    return;
  }
  if (invite === "malformed") {
    showDamagedInvite();
    return;
  }
  await migrateStoredToken();
  await refusals;
  connect();
}

main();
