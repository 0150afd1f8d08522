// The state card and the panels around it: what the page shows for each
// connection state, and the card that says which device this browser is.
//
// Security rule this file keeps: text from the gateway (device names, close
// reasons, messages) is set as text, never as markup; where it needs an
// element (the `code` spans of richText, the raw close reason) that element
// is built with el(), which adds the text as a text node.

import { byTestId, el, fingerprint, show } from "./dom.js";

/** Text with `code` spans, from a message using backticks. */
function richText(node, text) {
  const parts = String(text).split("`");
  node.replaceChildren(...parts.map((part, index) => (index % 2 === 1 ? el("code", {}, part) : part)));
}

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

export class StateView {
  /** @param {Document} doc  the page whose state card and panels this view fills */
  constructor(doc = document) {
    this.ui = {
      state: byTestId("state", doc),
      title: byTestId("state-title", doc),
      message: byTestId("state-message", doc),
      closeReason: byTestId("close-reason-message", doc),
      badge: byTestId("connection-badge", doc),
      announcer: byTestId("announcer", doc),
      insecure: doc.getElementById("panel-insecure"),
      insecureMessage: byTestId("insecure-message", doc),
      insecurePort: byTestId("insecure-port", doc),
      insecureCli: byTestId("insecure-cli", doc),
      tokenForm: byTestId("token-form", doc),
      tokenInput: byTestId("token-input", doc),
      tokenReveal: byTestId("token-reveal", doc),
      tokenError: byTestId("token-error", doc),
      nameInput: byTestId("device-name-input", doc),
      adminBox: byTestId("request-admin", doc),
      waiting: doc.getElementById("panel-waiting"),
      waitingWithId: byTestId("waiting-with-id", doc),
      requestId: byTestId("request-id", doc),
      approveCommand: byTestId("approve-command", doc),
      copyCommand: byTestId("copy-command", doc),
      waitingStatus: byTestId("waiting-status", doc),
      waitingExpiry: byTestId("waiting-expiry", doc),
      waitingFingerprint: byTestId("waiting-fingerprint", doc),
      retryNote: byTestId("retry-note", doc),
      cancelUpgrade: byTestId("cancel-upgrade", doc),
      changeToken: byTestId("change-token", doc),
      retryPanel: doc.getElementById("panel-retry"),
      retry: byTestId("retry-button", doc),
      startOver: byTestId("start-over", doc),
      connectAgain: byTestId("connect-again", doc),
      identity: byTestId("identity", doc),
      identityName: byTestId("device-name", doc),
      identityRole: byTestId("device-role", doc),
      identityId: byTestId("device-id", doc),
      identityNote: byTestId("identity-note", doc),
      upgrade: byTestId("request-admin-upgrade", doc),
      forget: byTestId("forget-device", doc),
      forgetGroup: byTestId("forget-confirm-group", doc),
      forgetConfirm: byTestId("forget-confirm", doc),
      forgetCancel: byTestId("forget-cancel", doc),
      fix: doc.getElementById("panel-fix"),
      fixSnippet: byTestId("fix-snippet", doc),
      fixCopy: byTestId("fix-copy", doc),
      fixThen: byTestId("fix-then", doc),
      lastClose: byTestId("last-close", doc),
      gatewayDiagnostics: byTestId("gateway-diagnostics", doc),
      whoami: byTestId("whoami", doc),
      whoamiRefresh: byTestId("whoami-refresh", doc),
    };
    this.state = null;
    this.title = null;
    this.message = null;
    // The pairing request the waiting panel shows; it belongs to the waiting state only.
    this.waitingFor = null;
    // Requests waiting for this admin's approval, counted in the tab's title.
    this.pendingCount = 0;
  }

  /** The tab's title: the state's, with the number of requests waiting, e.g. "(2) Connected — Edge". */
  renderTitle() {
    const count = this.pendingCount > 0 ? `(${this.pendingCount}) ` : "";
    document.title = `${count}${this.title || "Control"} — Edge`;
  }

  setPendingCount(count) {
    this.pendingCount = Number.isFinite(count) && count > 0 ? count : 0;
    this.renderTitle();
  }

  /** The fix a cause comes with (a configuration snippet and the command that applies it). */
  showFix(fix, then) {
    this.ui.fixSnippet.textContent = fix;
    this.ui.fixThen.textContent = then;
    show(this.ui.fix, true);
  }

  announce(text) {
    const announcer = this.ui.announcer;
    announcer.textContent = "";
    window.setTimeout(() => {
      announcer.textContent = text;
    }, 50);
  }

  /**
   * Show one state. Focus moves only when the state itself changes, so a
   * waiting page that re-checks every 2 seconds does not steal the keyboard.
   */
  setState(state, { title, message, next = null, closeMessage = null, close = null, focus = true, fix = null }) {
    const ui = this.ui;
    const changed = state !== this.state || title !== this.title || message !== this.message;
    const stateChanged = state !== this.state;
    this.state = state;
    this.title = title;
    this.message = message;
    if (state !== "waiting") {
      this.waitingFor = null;
    }
    ui.state.dataset.state = state;
    ui.badge.dataset.state = state;
    ui.badge.textContent = state.replace("-", " ");
    ui.title.textContent = title;
    richText(ui.message, message || "");
    show(ui.message, !closeMessage);
    if (close) {
      // The raw code and reason are for whoever debugs, not for the person reading the card.
      ui.lastClose.textContent = close.reason
        ? `Last close of the control connection: code ${close.code}, gateway's reason “${close.reason}”.`
        : `Last close of the control connection: code ${close.code}.`;
      show(ui.lastClose, true);
    }
    show(ui.fix, Boolean(fix));
    if (fix) {
      this.showFix(fix.snippet, fix.then);
    }
    if (closeMessage) {
      richText(ui.closeReason, closeMessage);
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
    const stopped = state === "declined" || state === "timed-out" || state === "locked-out";
    show(ui.retryPanel, state === "error" || state === "revoked" || state === "forgotten" || stopped);
    show(ui.retry, state === "error" || stopped);
    if (!stopped) {
      this.setRetry({ label: "Try again now", enabled: true });
      this.setRetryNote("");
    }
    show(ui.startOver, next === "start-over");
    show(ui.connectAgain, state === "forgotten");
    this.renderTitle();
    if (changed) {
      this.announce(`${title}. ${String(message || "").replace(/`/g, "")}`);
    }
    if (stateChanged && focus) {
      if (state === "token-needed") {
        ui.tokenInput.focus();
      } else if (state !== "connecting") {
        ui.title.focus();
      }
    }
  }

  /** The state card's message line alone, for countdowns that must not re-announce the state. */
  setMessage(text) {
    this.ui.message.textContent = text;
  }

  /** The "Try again" panel while a reconnect is scheduled; hidden again when the attempt starts. */
  showRetry() {
    show(this.ui.retryPanel, true);
    show(this.ui.retry, true);
  }

  hideRetryPanel() {
    show(this.ui.retryPanel, false);
  }

  /** The retry button's words and whether it may be pressed yet (a cool-down runs). */
  setRetry({ label, enabled }) {
    this.ui.retry.textContent = label;
    this.ui.retry.disabled = !enabled;
  }

  /** The line under the retry button: a countdown, or nothing. */
  setRetryNote(text) {
    this.ui.retryNote.textContent = text;
    show(this.ui.retryNote, Boolean(text));
  }

  /**
   * The waiting panel's request id, the CLI command that approves it, and
   * this device's fingerprint (the first 16 hex digits of its id in groups of
   * four, as `edge devices approve` and the dashboard show them), so the
   * operator can check they approve this very device.
   */
  showWaitingRequest(requestId, deviceId = "") {
    this.waitingFor = requestId;
    this.ui.requestId.textContent = requestId;
    this.ui.approveCommand.textContent = `edge devices approve ${requestId}`;
    this.ui.waitingFingerprint.textContent = fingerprint(deviceId);
    show(this.ui.waitingWithId, true);
  }

  /** How long the pending request has left (`Times out in 4:32`). */
  setWaitingExpiry(text) {
    this.ui.waitingExpiry.textContent = text;
    show(this.ui.waitingExpiry, Boolean(text));
  }

  hideWaitingRequest() {
    show(this.ui.waitingWithId, false);
  }

  /** The waiting panel's buttons: withdraw an admin request, or paste another token. */
  showWaitingChoices({ cancelUpgrade, changeToken }) {
    show(this.ui.cancelUpgrade, cancelUpgrade);
    show(this.ui.changeToken, changeToken);
  }

  setWaitingStatus(text) {
    this.ui.waitingStatus.textContent = text;
  }

  /**
   * The identity card: this browser's device id, and its name and role as the
   * gateway's hello gave them (`hello` null while not connected).
   */
  renderIdentity(identity, hello, name) {
    const ui = this.ui;
    if (!identity) {
      show(ui.identity, false);
      return;
    }
    show(ui.identity, true);
    ui.identityId.textContent = identity.id;
    ui.identityName.textContent = hello ? hello.device.name : name;
    ui.identityRole.textContent = hello ? hello.device.role : "not connected";
    show(ui.upgrade, Boolean(hello) && hello.device.role !== "admin");
    ui.identityNote.textContent = identity.persisted
      ? ""
      : "This browser does not let the page keep its key (private browsing?), so the pairing ends when you close the tab.";
    show(ui.identityNote, !identity.persisted);
  }

  showTokenError(message) {
    const ui = this.ui;
    ui.tokenError.textContent = message;
    show(ui.tokenError, Boolean(message));
    ui.tokenInput.setAttribute("aria-invalid", message ? "true" : "false");
    if (message) {
      ui.tokenInput.focus();
    }
  }

  /** This browser cannot hold a device key here: say why, and how else to pair. */
  showInsecure(kind, error) {
    const ui = this.ui;
    ui.insecureMessage.textContent = insecureCopy(kind, error).message;
    ui.insecurePort.textContent = window.location.port || (window.location.protocol === "https:" ? "443" : "80");
    ui.insecureCli.textContent = `edge pair --url ${window.location.origin} --token <gateway token>`;
    this.setState("insecure", { ...insecureCopy(kind, error), message: "" });
    show(ui.identity, false);
  }
}
