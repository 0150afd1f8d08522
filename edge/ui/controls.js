// The page's forms and buttons: the gateway-token form, the waiting panel's
// choices, "Try again" / "Start over", the identity card's admin request and
// "Forget this device", and the invite link arriving in the fragment.
//
// Security rules this file keeps:
// - A pasted gateway token is checked for shape before it is stored, is
//   cleared from the input at once, and (see credentials.js) is dropped once
//   the session cookie holds the device token.
// - Forgetting a device erases its key (identity.js), every stored
//   credential and the session cookie, not only the gateway's record.

import { KEYS, deviceName, endSession, local, requestedRole, session, takeInviteFromFragment } from "./credentials.js";
import { copyButton, show } from "./dom.js";
import { UnsupportedError, deleteIdentity, loadOrCreateIdentity } from "./identity.js";

const MAX_TOKEN_LENGTH = 512;

export class Controls {
  /**
   * @param {object} deps
   * @param {import("./view.js").StateView} deps.view
   * @param {import("./connection.js").Connection} deps.connection
   * @param {import("./close-reasons.js").CloseReasons} deps.closeReasons
   * @param {() => void} deps.refreshWhoami
   */
  constructor({ view, connection, closeReasons, refreshWhoami }) {
    this.view = view;
    this.ui = view.ui;
    this.connection = connection;
    this.closeReasons = closeReasons;
    this.refreshWhoami = refreshWhoami;
  }

  /** Load this browser's device key, or say why it cannot have one here. */
  async ensureIdentity() {
    const connection = this.connection;
    try {
      connection.identity = await loadOrCreateIdentity();
    } catch (error) {
      connection.identity = null;
      this.view.showInsecure(error instanceof UnsupportedError ? "no-ed25519" : "no-webcrypto", error);
      return false;
    }
    connection.renderIdentity();
    return true;
  }

  onTokenSubmit(event) {
    event.preventDefault();
    const ui = this.ui;
    const token = ui.tokenInput.value.trim();
    if (!token) {
      this.view.showTokenError("Paste the gateway token first.");
      return;
    }
    if (token.length > MAX_TOKEN_LENGTH || /\s/.test(token)) {
      this.view.showTokenError("That does not look like a gateway token: it is one line of letters, digits, '-' and '_'.");
      return;
    }
    this.view.showTokenError("");
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
    this.connection.attempt = 0;
    this.view.setState("connecting", { title: "Asking the gateway…", message: "Sending the pairing request." });
    this.connection.renderIdentity();
    this.connection.connect();
  }

  onReveal() {
    const ui = this.ui;
    const reveal = ui.tokenInput.type === "password";
    ui.tokenInput.type = reveal ? "text" : "password";
    ui.tokenReveal.textContent = reveal ? "Hide" : "Show";
    ui.tokenReveal.setAttribute("aria-pressed", String(reveal));
  }

  async startOver() {
    const connection = this.connection;
    connection.stop();
    connection.admin.close();
    await deleteIdentity();
    local.remove(KEYS.session);
    local.remove(KEYS.deviceToken);
    local.remove(KEYS.wantAdmin);
    await endSession(); // the old device's cookie is no credential of the new key
    connection.hello = null;
    connection.identity = null;
    connection.attempt = 0;
    await this.ensureIdentity();
    connection.connect();
  }

  askForAdmin() {
    local.set(KEYS.wantAdmin, "1");
    this.connection.reconnect();
  }

  stayUser() {
    local.remove(KEYS.wantAdmin);
    this.connection.attempt = 0;
    this.view.setState("connecting", { title: "Connecting as a user…", message: "Withdrawing the admin request." });
    this.connection.connect();
  }

  changeToken() {
    this.connection.stop();
    local.remove(KEYS.gatewayToken);
    const missing = this.closeReasons.entry("unauthorized: gateway token missing");
    this.view.setState("token-needed", {
      title: missing ? missing.title : "Gateway token",
      message: "Paste the gateway token; on the gateway host, `edge token show` prints it.",
    });
  }

  showForgetConfirm(visible) {
    const ui = this.ui;
    show(ui.forgetGroup, visible);
    show(ui.forget, !visible);
    (visible ? ui.forgetCancel : ui.forget).focus();
  }

  /** Revoke this device on the gateway (when connected) and erase its key and tokens here. */
  async forgetDevice() {
    const ui = this.ui;
    const connection = this.connection;
    show(ui.forgetGroup, false);
    show(ui.forget, true);
    const serverNote = await connection.forgetOnGateway();
    connection.stop();
    connection.failPendingRequests("This device was forgotten.");
    connection.admin.close();
    await deleteIdentity();
    for (const key of [KEYS.session, KEYS.deviceToken, KEYS.gatewayToken, KEYS.wantAdmin]) {
      local.remove(key);
    }
    session.remove(KEYS.invite);
    await endSession();
    connection.hello = null;
    connection.identity = null;
    connection.renderIdentity();
    this.view.setState("forgotten", {
      title: "This device was forgotten",
      message: `Its key and tokens are deleted from this browser. ${serverNote} Connect again to pair as a new device.`,
    });
  }

  async connectAgain() {
    this.connection.attempt = 0;
    await this.ensureIdentity();
    this.connection.connect();
  }

  showDamagedInvite() {
    if (this.connection.hello) {
      return;
    }
    this.connection.stop();
    this.view.setState("token-needed", {
      title: "The invite link is damaged",
      message: "The invite code in the link is not valid (it may have been cut off). Ask for a new link, or paste the gateway token.",
    });
  }

  wire() {
    const ui = this.ui;
    const connection = this.connection;
    ui.tokenForm.addEventListener("submit", (event) => this.onTokenSubmit(event));
    ui.tokenReveal.addEventListener("click", () => this.onReveal());
    ui.nameInput.value = deviceName();
    ui.adminBox.checked = requestedRole() === "admin";
    ui.copyCommand.replaceWith(
      copyButton(() => ui.approveCommand.textContent, ui.approveCommand, "copy-command", "Copy command"),
    );
    ui.fixCopy.replaceWith(copyButton(() => ui.fixSnippet.textContent, ui.fixSnippet, "fix-copy", "Copy"));
    ui.retry.addEventListener("click", () => connection.reconnect());
    ui.startOver.addEventListener("click", () => this.startOver());
    ui.connectAgain.addEventListener("click", () => this.connectAgain());
    ui.cancelUpgrade.addEventListener("click", () => this.stayUser());
    ui.changeToken.addEventListener("click", () => this.changeToken());
    ui.upgrade.addEventListener("click", () => this.askForAdmin());
    ui.forget.addEventListener("click", () => this.showForgetConfirm(true));
    ui.forgetCancel.addEventListener("click", () => this.showForgetConfirm(false));
    ui.forgetConfirm.addEventListener("click", () => this.forgetDevice());
    ui.whoamiRefresh.addEventListener("click", () => this.refreshWhoami());
    window.addEventListener("online", () => {
      if (connection.reconnecting) {
        connection.reconnect();
      }
    });
    window.addEventListener("hashchange", () => {
      const invite = takeInviteFromFragment();
      if (invite === "malformed") {
        this.showDamagedInvite();
      } else if (invite === true && !connection.hello && connection.identity) {
        connection.reconnect();
      }
    });
  }
}
