// The admin dashboard's pending pairing requests (approve as user or admin,
// reject) and its invites (create, show once, cancel).
//
// Admin is never granted by one click: "Approve as admin" opens a dialog that
// shows what the device asks for (role, name, address, fingerprint) and only
// its "Grant admin" button sends the approval. "Approve as user" grants user
// whatever the device asked for.
//
// Security rules this file keeps:
// - Request and invite fields come from the gateway and are set as text
//   (el() children), never as markup; the invite QR code is shown as an
//   image (qrImage), never inserted as SVG markup.
// - An invite link is shown once, to the admin who made it; its code rides in
//   the link's #fragment, which browsers never send to any server.

import { olderTwin } from "./admin-devices.js";
import { absoluteTime, age, copyButton, el, fingerprint, qrImage, remaining, shortId } from "./dom.js";

const INVITE_TTLS = [
  { seconds: 600, label: "10 minutes" },
  { seconds: 3600, label: "1 hour" },
  { seconds: 86400, label: "1 day" },
  { seconds: 604800, label: "7 days" },
];

// The gateway's rule for an operator-assigned user (edge/pairing/models.py USER_PATTERN).
const USER_PATTERN = /^[a-z0-9][a-z0-9._@-]{0,63}$/;

export class PendingRequests {
  /**
   * @param {import("./admin.js").AdminPanel} panel  the dashboard: its request and
   *        device maps, request, act, say, render and focusTestId
   * @param {{ list: HTMLElement, count: HTMLElement }} nodes
   */
  constructor(panel, { list, count }) {
    this.panel = panel;
    this.list = list;
    this.count = count;
    // Per pending request: the user typed in its approve row, kept across re-renders.
    this.userDrafts = new Map();
    // Per pending request: false once the operator unticked "replace the older device".
    this.replaceChoices = new Map();
  }

  /** Forget what was typed in the approve rows (the dashboard closed). */
  reset() {
    this.userDrafts.clear();
    this.replaceChoices.clear();
  }

  render() {
    const items = [...this.panel.requests.values()].sort((a, b) => (a.createdAt || 0) - (b.createdAt || 0));
    this.count.textContent = String(items.length);
    this.count.dataset.count = String(items.length);
    if (items.length === 0) {
      this.list.replaceChildren(el("li", { class: "empty", dataset: { testid: "pending-empty" } }, "No device is waiting for approval."));
      return;
    }
    this.list.replaceChildren(...items.map((item) => this.pendingItem(item)));
  }

  pendingItem(item) {
    const id = item.id;
    const wantsAdmin = item.role === "admin";
    const upgrade = item.reason === "role-upgrade";
    return el(
      "li",
      { class: "item pending", dataset: { testid: `pending-${id}`, requestId: id } },
      el(
        "div",
        { class: "item-head" },
        el("strong", { class: "item-name" }, item.name || "Unnamed device"),
        el("span", { class: "mono request-code" }, id),
        wantsAdmin ? el("span", { class: "badge admin" }, upgrade ? "wants admin (upgrade)" : "wants admin") : null,
      ),
      el(
        "dl",
        { class: "facts compact" },
        el("dt", {}, "Address"),
        el("dd", { class: "mono" }, item.clientIp || "unknown"),
        el("dt", {}, "Browser"),
        el("dd", { class: "ua", title: item.userAgent || "" }, item.userAgent || "not sent"),
        el("dt", {}, "Asked"),
        el("dd", { title: absoluteTime(item.createdAt) }, age(item.createdAt)),
        el("dt", {}, "Expires"),
        el("dd", { title: absoluteTime(item.expiresAt) }, remaining(item.expiresAt)),
        el("dt", {}, "Fingerprint"),
        el("dd", { class: "mono fingerprint", title: item.deviceId || "", dataset: { testid: `pending-fingerprint-${id}` } }, fingerprint(item.deviceId)),
      ),
      this.userField(id),
      this.replaceField(item),
      el(
        "div",
        { class: "actions" },
        el(
          "button",
          {
            type: "button",
            dataset: { testid: `approve-user-${id}` },
            "aria-label": `Approve ${item.name || id} as user`,
            onclick: () => this.approve(id, "user"),
          },
          "Approve as user",
        ),
        el(
          "button",
          {
            type: "button",
            class: "warn",
            dataset: { testid: `approve-admin-${id}` },
            "aria-label": `Approve ${item.name || id} as admin`,
            onclick: () => this.confirmAdmin(item),
          },
          "Approve as admin…",
        ),
        el(
          "button",
          {
            type: "button",
            class: "secondary",
            dataset: { testid: `reject-${id}` },
            "aria-label": `Reject ${item.name || id}`,
            onclick: () => this.reject(id),
          },
          "Reject",
        ),
      ),
    );
  }

  /**
   * The login upstream apps will know the device by (Remote-User). The name a
   * device chose is never that login, so the operator types it here; empty
   * leaves the device id.
   */
  userField(id) {
    const input = el("input", {
      id: `approve-login-${id}`,
      type: "text",
      maxlength: "64",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "e.g. alice",
      value: this.userDrafts.get(id) || "",
      dataset: { testid: `approve-login-${id}` },
    });
    input.addEventListener("input", () => {
      this.userDrafts.set(id, input.value);
    });
    return el(
      "div",
      { class: "actions user-field" },
      el("label", { for: `approve-login-${id}` }, "User for upstream apps (optional)"),
      input,
    );
  }

  /**
   * The offer to replace an older twin (same name, same address): ticked by
   * default, so approving a browser that paired again does not leave a ghost.
   */
  replaceField(item) {
    const twin = olderTwin(this.panel.devices, item);
    if (!twin) {
      return null;
    }
    const id = item.id;
    const box = el("input", {
      id: `replace-${id}`,
      type: "checkbox",
      checked: this.replaceChoices.get(id) !== false,
      dataset: { testid: `replace-${id}`, deviceId: twin.id },
    });
    box.addEventListener("change", () => {
      this.replaceChoices.set(id, box.checked);
    });
    return el(
      "div",
      { class: "field checkbox replace" },
      box,
      el(
        "label",
        { for: `replace-${id}` },
        `Replace the older “${twin.name || "Unnamed device"}” (${shortId(twin.id)}, ${twin.lastIp}, last seen ${age(twin.lastSeenAt)}): revoke it as this one is approved`,
      ),
    );
  }

  /**
   * Ask before granting admin: show what the device asks for and who it is,
   * and approve only on "Grant admin". An admin device can approve and revoke
   * every other, so this is the one approval that must never be a misclick.
   */
  confirmAdmin(item) {
    const id = item.id;
    const grant = (role, cls, testid, label) =>
      el(
        "button",
        {
          type: "button",
          class: cls,
          dataset: { testid },
          onclick: () => {
            dialog.close();
            this.approve(id, role);
          },
        },
        label,
      );
    const asked = item.role === "admin" ? (item.reason === "role-upgrade" ? "admin (upgrade of a paired user)" : "admin") : "user";
    const dialog = el(
      "dialog",
      { class: "approve-dialog", "aria-labelledby": "approve-dialog-title", dataset: { testid: "approve-dialog" } },
      el("h3", { id: "approve-dialog-title" }, `Grant admin to ${item.name || "this device"}?`),
      el(
        "p",
        {},
        "An admin device can approve, rename and revoke every other device. Check the fingerprint against the one the device's page shows.",
      ),
      el(
        "dl",
        { class: "facts compact" },
        el("dt", {}, "Asks for"),
        el("dd", { dataset: { testid: "approve-dialog-role" } }, asked),
        el("dt", {}, "Name"),
        el("dd", {}, item.name || "Unnamed device"),
        el("dt", {}, "Address"),
        el("dd", { class: "mono" }, item.clientIp || "unknown"),
        el("dt", {}, "Fingerprint"),
        el("dd", { class: "mono fingerprint", dataset: { testid: "approve-dialog-fingerprint" } }, fingerprint(item.deviceId)),
        el("dt", {}, "Request"),
        el("dd", { class: "mono" }, id),
      ),
      el(
        "div",
        { class: "actions" },
        grant("admin", "warn", "approve-dialog-confirm", "Grant admin"),
        grant("user", "secondary", "approve-dialog-user", "Approve as user instead"),
        el(
          "button",
          { type: "button", class: "secondary", dataset: { testid: "approve-dialog-cancel" }, onclick: () => dialog.close() },
          "Cancel",
        ),
      ),
    );
    dialog.addEventListener("close", () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector('[data-testid="approve-dialog-cancel"]').focus();
  }

  async approve(requestId, role) {
    const panel = this.panel;
    const user = (this.userDrafts.get(requestId) || "").trim();
    if (user && !USER_PATTERN.test(user)) {
      panel.say(`“${user}” is not a user name: use a-z, 0-9, '.', '_', '@' or '-' (at most 64), starting with a letter or digit.`, "error");
      panel.focusTestId(`approve-login-${requestId}`);
      return;
    }
    const params = user ? { requestId, role, user } : { requestId, role };
    const item = this.panel.requests.get(requestId);
    const twin = item && this.replaceChoices.get(requestId) !== false ? olderTwin(this.panel.devices, item) : null;
    if (twin) {
      params.replaces = twin.id;
    }
    const done = await panel.act(
      () => panel.request("devices.approve", params),
      (device) =>
        `Approved ${device && device.name ? device.name : requestId} as ${role}${device && device.user ? `, user ${device.user}` : ""}.`,
    );
    if (done) {
      this.userDrafts.delete(requestId);
      this.replaceChoices.delete(requestId);
      panel.requests.delete(requestId);
      if (twin) {
        panel.devices.set(twin.id, { ...twin, status: "revoked" });
        panel.say(`Approved ${done.name || requestId} as ${role}, replacing the older ${twin.name || shortId(twin.id)}.`);
      }
      if (done.id) {
        panel.devices.set(done.id, done);
      }
      panel.render();
    }
  }

  async reject(requestId) {
    const panel = this.panel;
    const done = await panel.act(() => panel.request("devices.reject", { requestId }), () => `Request ${requestId} rejected.`);
    if (done) {
      panel.requests.delete(requestId);
      panel.render();
    }
  }
}

export class InviteList {
  /**
   * @param {import("./admin.js").AdminPanel} panel  the dashboard: its invite map, request and act
   * @param {{ form: HTMLFormElement, list: HTMLElement, result: HTMLElement }} nodes
   */
  constructor(panel, { form, list, result }) {
    this.panel = panel;
    this.list = list;
    this.result = result;
    this.buildForm(form);
  }

  buildForm(form) {
    const panel = this.panel;
    const role = form.querySelector('[data-testid="invite-role"]');
    const name = form.querySelector('[data-testid="invite-name"]');
    const ttl = form.querySelector('[data-testid="invite-ttl"]');
    ttl.replaceChildren(...INVITE_TTLS.map((option) => el("option", { value: String(option.seconds) }, option.label)));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const params = { role: role.value, ttl: Number(ttl.value) };
      if (name.value.trim()) {
        params.name = name.value.trim();
      }
      const created = await panel.act(
        () => panel.request("invites.create", params),
        () => "Invite created. Open the link on the new device; it is shown once.",
      );
      if (created) {
        this.showInvite(created);
        if (created.invite && created.invite.id) {
          panel.invites.set(created.invite.id, created.invite);
          this.render();
        }
      }
    });
  }

  showInvite(created) {
    const url = String(created.url || "");
    const urlInput = el("input", { type: "text", readonly: true, value: url, id: "invite-url", dataset: { testid: "invite-url" } });
    urlInput.addEventListener("focus", () => urlInput.select());
    const invite = created.invite || {};
    const qr = created.qrSvg ? qrImage(created.qrSvg, `QR code of the invite link for a ${invite.role || "user"} device`) : null;
    const parts = [
      el("h4", { tabindex: "-1", id: "invite-result-heading" }, `Invite for a ${invite.role || "user"} device`),
      el("label", { for: "invite-url" }, "Invite link (single use, expires ", remaining(invite.expiresAt) || "soon", ")"),
      el("div", { class: "copy-row" }, urlInput, copyButton(() => url, urlInput, "invite-copy")),
      qr,
      loopbackLinkNote(url),
      el("p", { class: "muted" }, "The code travels in the link's #fragment, which browsers never send to any server, proxy logs included."),
    ].filter(Boolean);
    this.result.replaceChildren(...parts);
    this.result.hidden = false;
    this.result.querySelector("#invite-result-heading").focus();
  }

  render() {
    const now = Date.now();
    const open = [...this.panel.invites.values()].filter(
      (invite) => !invite.usedAt && !invite.cancelledAt && (typeof invite.expiresAt !== "number" || invite.expiresAt > now),
    );
    if (open.length === 0) {
      this.list.replaceChildren(el("li", { class: "empty" }, "No open invites."));
      return;
    }
    this.list.replaceChildren(
      ...open.map((invite) =>
        el(
          "li",
          { class: "item invite", dataset: { testid: `invite-${invite.id}` } },
          el("strong", {}, invite.name || "Unnamed invite"),
          " ",
          el("span", { class: `badge ${invite.role === "admin" ? "admin" : ""}` }, invite.role),
          " ",
          el("span", { class: "muted", title: absoluteTime(invite.expiresAt) }, `expires ${remaining(invite.expiresAt, now)}`),
          " ",
          el(
            "button",
            {
              type: "button",
              class: "secondary small",
              dataset: { testid: `invite-cancel-${invite.id}` },
              "aria-label": `Cancel invite ${invite.name || invite.id}`,
              onclick: () => this.cancelInvite(invite.id),
            },
            "Cancel",
          ),
        ),
      ),
    );
  }

  async cancelInvite(inviteId) {
    const panel = this.panel;
    const done = await panel.act(() => panel.request("invites.cancel", { inviteId }), () => "Invite cancelled.");
    if (done) {
      panel.invites.delete(inviteId);
      this.render();
    }
  }
}

/** A link on a loopback address opens on this machine only: say so, and how to fix it. */
function loopbackLinkNote(url) {
  let host = "";
  try {
    host = new URL(url).hostname;
  } catch {
    return null;
  }
  if (!["localhost", "127.0.0.1", "[::1]"].includes(host) && !host.endsWith(".localhost")) {
    return null;
  }
  return el(
    "p",
    { class: "warning", dataset: { testid: "invite-loopback" } },
    `This link points at ${host}, which only this machine reaches: another device cannot open it. Set server.public_url to the address other devices use (your reverse proxy's), or open this dashboard at that address, and create the invite again.`,
  );
}
