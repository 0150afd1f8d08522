// The control connection and its state machine: connect, answer the
// challenge, take the hello, send requests, and decide what a close means
// (ask for a token, wait for approval, back off, or stop).
//
// Security rule this file keeps: it connects ONLY to its own origin's /ws.
// No gateway URL, host or token is ever read from the query string or
// fragment (the CVE-2026-25253 class).

import { CLOSE_STALLED, UNKNOWN_REFUSAL, WAITING_REASONS } from "./close-reasons.js";
import { KEYS, authFor, deviceName, dropCredentials, local, requestedRole, session, startSession } from "./credentials.js";
import { clock } from "./dom.js";
import { signConnect } from "./identity.js";
import { StoppedStates } from "./stopped.js";

const APP_VERSION = "1.0";
const WAITING_RETRY_MS = 2000;
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const REQUEST_TIMEOUT_MS = 15000;
const HANDSHAKE_STALL_MS = 20000;
// A refusal the person cannot fix from this page (a proxy not trusted, a clock) is fixed
// on the gateway host: the page asks again by itself, slowly, so the fix is enough.
const QUIET_RETRY_FIRST_MS = 10000;
const QUIET_RETRY_MAX_MS = 60000;
const LOCKED_OUT_REASON = "unauthorized: too many failed attempts";

export class GatewayError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class Connection {
  /**
   * @param {object} deps
   * @param {import("./view.js").StateView} deps.view          the state card it drives
   * @param {import("./close-reasons.js").CloseReasons} deps.closeReasons  what a close means
   * @param {(request: Function) => import("./admin.js").AdminPanel} deps.makeAdmin
   *        the admin dashboard, given this connection's request function
   * @param {() => Promise<object|null>} deps.refreshWhoami  re-ask the gateway how it sees
   *        this browser; resolves with GET /api/whoami's answer (null when it failed)
   * @param {import("./apps.js").AppsCard} deps.apps  the configured apps and the return target
   */
  constructor({ view, closeReasons, makeAdmin, refreshWhoami, apps }) {
    this.view = view;
    this.apps = apps;
    this.closeReasons = closeReasons;
    this.refreshWhoami = refreshWhoami;
    // A reconnect that keeps the error card up until the gateway answers otherwise.
    this.quiet = false;
    this.quietAttempt = 0;
    this.closeSeq = 0;
    this.admin = makeAdmin((method, params) => this.request(method, params));
    this.identity = null;
    this.socket = null;
    this.hello = null;
    this.pairingError = null;
    this.lastAuthKind = null;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.countdownTimer = null;
    this.nextRequestId = 1;
    this.pendingRequests = new Map();
    this.reconnectNote = "";
    this.forgetting = false;
    this.connectedNotice = "";
    this.forgetClose = null;
    // The expiry of the pending request this page waits on (epoch ms), from the gateway.
    this.waitExpiresAt = null;
    this.waitUpgrade = false;
  }

  renderIdentity() {
    this.view.renderIdentity(this.identity, this.hello, deviceName());
  }

  /** Whether a reconnect is scheduled (the page is backing off or re-checking). */
  get reconnecting() {
    return this.reconnectTimer !== null;
  }

  clearTimers() {
    window.clearTimeout(this.reconnectTimer);
    window.clearInterval(this.countdownTimer);
    this.reconnectTimer = null;
    this.countdownTimer = null;
  }

  /** Count down to `due` (epoch ms) with `render(msLeft)` each second, then run `then`. */
  countDown(due, render, then) {
    this.clearTimers();
    const tick = () => render(due - Date.now());
    tick();
    this.countdownTimer = window.setInterval(tick, 1000);
    this.reconnectTimer = window.setTimeout(() => {
      window.clearInterval(this.countdownTimer);
      this.countdownTimer = null;
      this.reconnectTimer = null;
      then();
    }, Math.max(0, due - Date.now()));
  }

  detachSocket() {
    const socket = this.socket;
    if (socket) {
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      socket.onerror = null;
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
        socket.close(1000, "client reconnecting");
      }
      this.socket = null;
    }
  }

  /** Stop reconnecting and drop the socket without treating it as a close. */
  stop() {
    this.clearTimers();
    this.detachSocket();
  }

  failPendingRequests(message) {
    for (const [, pending] of this.pendingRequests) {
      window.clearTimeout(pending.timer);
      pending.reject(new GatewayError("not_connected", message));
    }
    this.pendingRequests.clear();
  }

  /** Connect again at once, with the backoff reset. */
  reconnect() {
    this.attempt = 0;
    this.quiet = false;
    this.quietAttempt = 0;
    this.connect();
  }

  /** Open the control socket to this page's own origin and nowhere else. */
  connect() {
    this.clearTimers();
    this.detachSocket();
    this.hello = null;
    this.pairingError = null;
    if (!this.identity) {
      return;
    }
    if (this.view.state === "connecting") {
      this.view.setMessage(this.reconnectNote ? `${this.reconnectNote} Reconnecting…` : "Opening the control connection.");
      this.view.hideRetryPanel();
    } else if (this.view.state !== "waiting" && !this.quiet) {
      this.view.setState("connecting", { title: "Connecting to the gateway…", message: "Opening the control connection.", focus: false });
    }
    this.reconnectNote = "";
    const url = `${window.location.protocol === "https:" ? "wss://" : "ws://"}${window.location.host}/ws`;
    const ws = new WebSocket(url);
    let answered = false;
    this.socket = ws;
    // A proxy that accepts the upgrade but never relays frames would leave the page "connecting" forever.
    const stall = window.setTimeout(() => {
      if (this.socket === ws && !this.hello) {
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
        this.answerChallenge(ws, frame);
      } else if (frame.type === "hello") {
        this.onHello(frame);
      } else if (frame.type === "error") {
        this.pairingError = frame;
      } else if (frame.type === "res") {
        this.onResponse(frame);
      } else if (frame.type === "event") {
        this.onEvent(frame);
      }
    };
    ws.onclose = (event) => {
      window.clearTimeout(stall);
      if (this.socket !== ws) {
        return;
      }
      this.socket = null;
      if (this.forgetting) {
        // self.forget revokes this very device, so the gateway may close before it answers.
        this.forgetClose = { code: event.code, reason: event.reason || "" };
        this.hello = null;
        this.failPendingRequests("The connection to the gateway closed.");
        return;
      }
      this.onClose(event.code, event.reason || "");
    };
  }

  async answerChallenge(ws, challenge) {
    if (typeof challenge.nonce !== "string" || challenge.nonce.length === 0 || challenge.nonce.length > 256) {
      ws.close(1002, "bad challenge");
      return;
    }
    const role = requestedRole();
    const [kind, auth] = authFor();
    this.lastAuthKind = kind;
    const signedAt = Date.now();
    let signature;
    try {
      signature = await signConnect(this.identity, challenge.nonce, signedAt, role);
    } catch (error) {
      this.detachSocket();
      this.view.showInsecure("sign-failed", error);
      return;
    }
    if (ws.readyState !== WebSocket.OPEN) {
      return;
    }
    ws.send(
      JSON.stringify({
        type: "connect",
        auth,
        device: { id: this.identity.id, publicKey: this.identity.publicKey, signedAt, signature },
        client: { name: deviceName(), app: "control-ui", version: APP_VERSION },
        role,
      }),
    );
  }

  onHello(frame) {
    if (!frame.device || typeof frame.device.id !== "string") {
      return;
    }
    this.hello = frame;
    this.attempt = 0;
    this.quiet = false;
    this.quietAttempt = 0;
    this.clearTimers();
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
        this.refreshWhoami();
        this.onward(frame, outcome === "ok");
      });
    } else {
      this.refreshWhoami();
      this.onward(frame, true);
    }
    session.remove(KEYS.invite);
    if (frame.device.role !== requestedRole()) {
      // The operator decided the role; asking again on every reconnect would nag.
      local.remove(KEYS.wantAdmin);
    }
    const where = client.local ? "a local client" : `address ${client.ip || "unknown"}`;
    this.view.setState("connected", {
      title: "Connected",
      message: `Connected as ${frame.device.name || "this device"} (${frame.device.role}) from ${where}.${this.connectedNotice}`,
    });
    this.connectedNotice = "";
    this.renderIdentity();
    if (frame.device.role === "admin") {
      this.admin.open(frame.device.id);
    } else {
      this.admin.close();
    }
  }

  /**
   * Once connected (and, on a first pairing, once the session cookie is set):
   * list the apps, and go back to the page a proxy sent this browser here
   * from, if the gateway confirms it is one of its own addresses.
   */
  async onward(frame, sessionReady) {
    const target = await this.apps.load();
    if (target && sessionReady && this.hello === frame) {
      window.location.assign(target);
    }
  }

  onResponse(frame) {
    const pending = this.pendingRequests.get(frame.id);
    if (!pending) {
      return;
    }
    this.pendingRequests.delete(frame.id);
    window.clearTimeout(pending.timer);
    if (frame.ok) {
      pending.resolve(frame.result);
    } else {
      const error = frame.error || {};
      pending.reject(new GatewayError(error.code || "error", error.message || "The gateway refused the request."));
    }
  }

  onEvent(frame) {
    const data = frame.data && typeof frame.data === "object" ? frame.data : {};
    const hello = this.hello;
    if (hello && frame.event === "device.renamed" && data.id === hello.device.id && data.name) {
      hello.device.name = data.name;
      this.renderIdentity();
    }
    this.admin.onEvent(String(frame.event || ""), data);
  }

  /** Send one request over the connected socket; resolves with `result`, rejects with a GatewayError. */
  request(method, params = {}) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN || !this.hello) {
      return Promise.reject(new GatewayError("not_connected", "Not connected to the gateway."));
    }
    const id = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      const timer = window.setTimeout(() => {
        this.pendingRequests.delete(id);
        reject(new GatewayError("timeout", `The gateway did not answer ${method} in time.`));
      }, REQUEST_TIMEOUT_MS);
      this.pendingRequests.set(id, { resolve, reject, timer });
      socket.send(JSON.stringify({ type: "req", id, method, params }));
    });
  }

  onClose(code, reason) {
    const view = this.view;
    const wasConnected = Boolean(this.hello);
    const quiet = this.quiet;
    this.quiet = false;
    this.closeSeq += 1;
    this.hello = null;
    this.failPendingRequests("The connection to the gateway closed.");
    this.admin.close();
    this.apps.close();
    const entry = this.closeReasons.describe(code, reason);
    dropCredentials(entry.drop);
    const close = { code, reason };
    const closeMessage = entry.message;
    this.renderIdentity();
    if (reason === LOCKED_OUT_REASON) {
      this.lockedOut(entry, close);
      return;
    }

    switch (entry.next) {
      case "wait":
        this.waitForApproval(close);
        return;
      case "retry-now":
        if (local.get(KEYS.gatewayToken) || session.get(KEYS.invite)) {
          view.setState("connecting", { title: entry.title, message: entry.message, closeMessage, close, focus: false });
          this.connect();
        } else {
          view.setState("token-needed", { title: entry.title, message: entry.message, closeMessage, close });
        }
        return;
      case "ask-token":
        view.ui.tokenInput.value = "";
        view.setState("token-needed", { title: entry.title, message: entry.message, closeMessage, close });
        if (reason === "unauthorized: gateway token mismatch") {
          view.showTokenError("The gateway rejected that token. Paste it again.");
          this.sayTriesLeft("The gateway rejected that token. Paste it again.");
        }
        return;
      case "backoff":
        if (view.state === "waiting") {
          this.scheduleReconnect(this.backoffDelay(), "waiting");
          return;
        }
        view.setState("connecting", {
          title: wasConnected ? `Disconnected: ${entry.title.toLowerCase()}` : entry.title,
          message: entry.message,
          focus: false,
        });
        this.scheduleReconnect(this.backoffDelay(), "connecting", entry.message);
        return;
      default:
        this.showRefusal(entry, close, quiet);
    }
  }

  /**
   * A refusal the page cannot get past by itself. Its words are the refusal
   * table's, unless /api/whoami shows the cause behind it (a proxy the gateway
   * does not trust): then the cause is the headline, with the fix to copy.
   * Unless the refusal asks to start over, the page asks again by itself.
   */
  async showRefusal(entry, close, quiet) {
    const seq = this.closeSeq;
    let shown = entry;
    if (this.closeReasons.hasCause(entry)) {
      shown = this.closeReasons.cause(entry, await this.refreshWhoami()) || entry;
      if (seq !== this.closeSeq || this.socket) {
        return; // another attempt started while the page asked
      }
    }
    this.view.setState(shown.state || "error", {
      title: shown.title,
      message: shown.message,
      next: shown.next,
      closeMessage: shown.message,
      close,
      focus: !quiet,
      fix: shown.fix ? { snippet: shown.fix, then: shown.then } : null,
    });
    if (shown.next === "manual") {
      const delay = Math.min(QUIET_RETRY_MAX_MS, QUIET_RETRY_FIRST_MS * 2 ** this.quietAttempt);
      this.quietAttempt += 1;
      this.clearTimers();
      this.reconnectTimer = window.setTimeout(() => {
        this.quiet = true;
        this.connect();
      }, delay);
    }
  }

  backoffDelay() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  /** Reconnect after `delay` ms, counting down on the page so nobody wonders what it is doing. */
  scheduleReconnect(delay, mode, note = "") {
    this.clearTimers();
    let due = Date.now() + delay;
    const approvalPending = Boolean(this.pairingError && this.pairingError.requestId);
    const expiresAt = mode === "waiting" && approvalPending ? this.waitExpiresAt : null;
    if (expiresAt !== null) {
      due = Math.min(due, expiresAt);
    }
    this.reconnectNote = note;
    const render = () => {
      const seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
      if (mode === "waiting") {
        this.view.setWaitingStatus(
          approvalPending ? "Still waiting for an operator; checking every 2 seconds." : `Trying again in ${seconds} s…`,
        );
        if (expiresAt !== null) {
          this.view.setWaitingExpiry(`Times out in ${clock(expiresAt - Date.now())}`);
        }
      } else {
        this.view.setMessage(`${note} Reconnecting in ${seconds} s…`.trim());
      }
    };
    render();
    if (mode === "connecting") {
      this.view.showRetry();
    }
    if (delay >= 1500) {
      this.countdownTimer = window.setInterval(render, 1000);
    }
    this.reconnectTimer = window.setTimeout(() => {
      if (expiresAt !== null && Date.now() >= expiresAt) {
        this.timedOut(this.view.waitingFor || this.pairingError.requestId);
        return;
      }
      this.connect();
    }, Math.max(0, due - Date.now()));
  }

  waitForApproval(close) {
    const view = this.view;
    const info = this.pairingError || {};
    if (info.code === "PAIRING_DECLINED") {
      this.declined(info, close);
      return;
    }
    const requestId = typeof info.requestId === "string" && info.requestId ? info.requestId : null;
    const upgrade = info.reason === "role-upgrade";
    const entry = this.closeReasons.entry("pairing required") || UNKNOWN_REFUSAL;
    if (requestId && view.waitingFor && requestId !== view.waitingFor) {
      this.requestGone(view.waitingFor, requestId, upgrade, close);
      return;
    }
    if (requestId) {
      this.waitExpiresAt = typeof info.expiresAt === "number" ? info.expiresAt : null;
      this.waitUpgrade = upgrade;
      view.showWaitingRequest(requestId, this.identity ? this.identity.id : "");
      view.setState("waiting", {
        title: upgrade ? "Waiting for admin approval" : entry.title,
        message: `${WAITING_REASONS[info.reason] || entry.message} Request ${requestId} times out if nobody approves it in time.`,
        closeMessage: null,
        close,
      });
      view.showWaitingChoices({ cancelUpgrade: upgrade, changeToken: !upgrade && this.lastAuthKind === "token" });
      this.attempt = 0;
      this.scheduleReconnect(WAITING_RETRY_MS, "waiting");
      return;
    }
    view.hideWaitingRequest();
    const detail = info.detail || info.reason || "the gateway's pending-request limit";
    view.setState("waiting", {
      title: "The gateway cannot take a new request right now",
      message: `Too many devices are already waiting (${detail}). Ask an operator to approve or reject pending requests (\`edge devices list\`); this page keeps trying.`,
      close,
    });
    view.showWaitingChoices({ cancelUpgrade: upgrade, changeToken: this.lastAuthKind === "token" });
    this.scheduleReconnect(Math.max(WAITING_RETRY_MS, this.backoffDelay()), "waiting");
  }

  /**
   * Ask the gateway to revoke this very device. It may close the socket before
   * it answers; that close is kept in forgetClose rather than handled as one.
   * Resolves with the sentence to show about the gateway's side.
   */
  async forgetOnGateway() {
    let serverNote = "The gateway revoked it as well.";
    if (this.hello) {
      this.forgetting = true;
      this.forgetClose = null;
      try {
        await this.request("self.forget", {});
      } catch (error) {
        if (!this.forgetClose || this.forgetClose.reason !== "device revoked") {
          serverNote = `The gateway could not revoke it (${error.message}); an admin should revoke it from the device list or with \`edge devices revoke ${this.identity.id}\`.`;
        }
      } finally {
        this.forgetting = false;
      }
    } else {
      serverNote = "This page was not connected, so the gateway may still list it; an admin can revoke it there.";
    }
    return serverNote;
  }
}

// The pages where this one stops or waits on a countdown (stopped.js).
Object.assign(Connection.prototype, StoppedStates);
