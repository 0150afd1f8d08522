// The admin dashboard: pending pairing requests, paired devices, invites.
//
// Lists are loaded once with devices.list when an admin connects and then kept
// current from pushed events; an event whose data does not carry the full
// record triggers one debounced devices.list, never a timer-driven poll.

import { absoluteTime, age, copyButton, el, qrImage, remaining } from "./dom.js";

const REFRESH_DEBOUNCE_MS = 250;
const CLOCK_TICK_MS = 15000;

const INVITE_TTLS = [
  { seconds: 600, label: "10 minutes" },
  { seconds: 3600, label: "1 hour" },
  { seconds: 86400, label: "1 day" },
  { seconds: 604800, label: "7 days" },
];

// The gateway's rule for an operator-assigned user (edge/pairing/models.py USER_PATTERN).
const USER_PATTERN = /^[a-z0-9][a-z0-9._@-]{0,63}$/;
const DECISION_WORDS = { approved: "approved", rejected: "rejected", expired: "expired" };

function describeError(error) {
  if (error && error.code === "forbidden") {
    return "This device is not an admin, so the gateway refused.";
  }
  return error && error.message ? error.message : String(error);
}

function shortId(id) {
  return typeof id === "string" && id.length > 16 ? `${id.slice(0, 12)}…` : String(id ?? "");
}

export class AdminPanel {
  /**
   * @param {HTMLElement} root   the admin <section>, hidden until an admin connects
   * @param {(method: string, params?: object) => Promise<any>} request
   */
  constructor(root, request) {
    this.root = root;
    this.request = request;
    this.requests = new Map();
    this.devices = new Map();
    this.invites = new Map();
    this.selfId = null;
    this.renaming = null;
    this.renameDraft = "";
    // Per pending request: the user typed in its approve row, kept across re-renders.
    this.userDrafts = new Map();
    this.confirmingRevoke = null;
    this.lastInvite = null;
    this.refreshTimer = null;
    this.clockTimer = null;
    this.pendingList = root.querySelector('[data-testid="pending-list"]');
    this.deviceList = root.querySelector('[data-testid="device-list"]');
    this.revokedList = root.querySelector('[data-testid="revoked-list"]');
    this.inviteList = root.querySelector('[data-testid="invite-list"]');
    this.inviteResult = root.querySelector('[data-testid="invite-result"]');
    this.status = root.querySelector('[data-testid="admin-status"]');
    this.pendingCount = root.querySelector('[data-testid="pending-count"]');
    this.pendingHeading = root.querySelector("#pending-heading");
    this.devicesHeading = root.querySelector("#devices-heading");
    this.buildInviteForm(root.querySelector('[data-testid="invite-form"]'));
  }

  /** Start showing the dashboard for the connected admin device `selfId`. */
  async open(selfId) {
    this.selfId = selfId;
    this.root.hidden = false;
    if (this.clockTimer === null) {
      this.clockTimer = window.setInterval(() => this.tick(), CLOCK_TICK_MS);
    }
    await this.refresh();
  }

  /** Hide the dashboard and forget everything it showed (the socket is gone or not admin). */
  close() {
    this.root.hidden = true;
    window.clearInterval(this.clockTimer);
    window.clearTimeout(this.refreshTimer);
    this.clockTimer = null;
    this.refreshTimer = null;
    this.requests.clear();
    this.devices.clear();
    this.invites.clear();
    this.renaming = null;
    this.renameDraft = "";
    this.userDrafts.clear();
    this.confirmingRevoke = null;
  }

  get isOpen() {
    return !this.root.hidden;
  }

  say(message, tone = "info") {
    this.status.textContent = message;
    this.status.dataset.tone = tone;
  }

  async refresh() {
    let listing;
    try {
      listing = await this.request("devices.list", {});
    } catch (error) {
      this.say(`Could not load devices: ${describeError(error)}`, "error");
      return;
    }
    this.requests = new Map((listing.requests || []).map((item) => [item.id, item]));
    this.devices = new Map((listing.devices || []).map((item) => [item.id, item]));
    this.invites = new Map((listing.invites || []).map((item) => [item.id, item]));
    this.render();
  }

  scheduleRefresh() {
    window.clearTimeout(this.refreshTimer);
    this.refreshTimer = window.setTimeout(() => {
      this.refreshTimer = null;
      if (this.isOpen) {
        this.refresh();
      }
    }, REFRESH_DEBOUNCE_MS);
  }

  /** Apply one pushed event; reconcile with a single list call when the data is partial. */
  onEvent(name, data) {
    if (!this.isOpen || !data || typeof data !== "object") {
      return;
    }
    if (name === "pairing.requested" && data.id) {
      this.requests.set(data.id, data);
      this.say(`New pairing request ${data.id} from ${data.name || "an unnamed device"} (${data.clientIp || "unknown address"}).`);
      this.render();
      return;
    }
    if (name === "pairing.resolved" && data.requestId) {
      const known = this.requests.get(data.requestId);
      this.requests.delete(data.requestId);
      const decision = DECISION_WORDS[data.decision] || String(data.decision || "resolved");
      const who = known && known.name ? ` (${known.name})` : "";
      this.say(`Request ${data.requestId}${who} ${decision}${data.role && decision === "approved" ? ` as ${data.role}` : ""}.`);
      this.render();
    } else if (name.startsWith("device.") && data.id && data.status) {
      this.devices.set(data.id, data);
      this.render();
    }
    this.scheduleRefresh();
  }

  tick() {
    const now = Date.now();
    for (const [id, item] of this.requests) {
      if (typeof item.expiresAt === "number" && item.expiresAt <= now) {
        this.requests.delete(id);
      }
    }
    this.render();
  }

  /**
   * Re-render the lists, keeping keyboard focus on the same control when it still exists.
   * Events arrive while the operator types, so a focused text field also keeps its caret.
   */
  render() {
    const active = document.activeElement;
    const focusedTestId = active && this.root.contains(active) ? active.dataset.testid : null;
    const focusInLists = Boolean(focusedTestId) && [this.pendingList, this.deviceList, this.inviteList].some((list) => list.contains(active));
    const caret = active instanceof HTMLInputElement ? [active.selectionStart, active.selectionEnd] : null;
    this.renderPending();
    this.renderDevices();
    this.renderInvites();
    if (focusInLists) {
      const again = this.root.querySelector(`[data-testid="${CSS.escape(focusedTestId)}"]`);
      if (again) {
        again.focus();
        if (caret && again instanceof HTMLInputElement && caret[0] !== null) {
          again.setSelectionRange(caret[0], caret[1]);
        }
      } else {
        this.pendingHeading.focus();
      }
    }
  }

  renderPending() {
    const items = [...this.requests.values()].sort((a, b) => (a.createdAt || 0) - (b.createdAt || 0));
    this.pendingCount.textContent = String(items.length);
    this.pendingCount.dataset.count = String(items.length);
    if (items.length === 0) {
      this.pendingList.replaceChildren(el("li", { class: "empty", dataset: { testid: "pending-empty" } }, "No device is waiting for approval."));
      return;
    }
    this.pendingList.replaceChildren(...items.map((item) => this.pendingItem(item)));
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
        el("dt", {}, "Device"),
        el("dd", { class: "mono", title: item.deviceId || "" }, shortId(item.deviceId)),
      ),
      this.userField(id),
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
            onclick: () => this.approve(id, "admin"),
          },
          "Approve as admin",
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

  async act(work, success) {
    try {
      const result = await work();
      this.say(success(result));
      return result;
    } catch (error) {
      this.say(describeError(error), "error");
      this.scheduleRefresh();
      return null;
    }
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

  async approve(requestId, role) {
    const user = (this.userDrafts.get(requestId) || "").trim();
    if (user && !USER_PATTERN.test(user)) {
      this.say(`“${user}” is not a user name: use a-z, 0-9, '.', '_', '@' or '-' (at most 64), starting with a letter or digit.`, "error");
      this.focusTestId(`approve-login-${requestId}`);
      return;
    }
    const params = user ? { requestId, role, user } : { requestId, role };
    const done = await this.act(
      () => this.request("devices.approve", params),
      (device) =>
        `Approved ${device && device.name ? device.name : requestId} as ${role}${device && device.user ? `, user ${device.user}` : ""}.`,
    );
    if (done) {
      this.userDrafts.delete(requestId);
      this.requests.delete(requestId);
      if (done.id) {
        this.devices.set(done.id, done);
      }
      this.render();
    }
  }

  async reject(requestId) {
    const done = await this.act(() => this.request("devices.reject", { requestId }), () => `Request ${requestId} rejected.`);
    if (done) {
      this.requests.delete(requestId);
      this.render();
    }
  }

  renderDevices() {
    const all = [...this.devices.values()].sort((a, b) => (b.lastSeenAt || 0) - (a.lastSeenAt || 0));
    const active = all.filter((device) => device.status !== "revoked" && device.status !== "expired");
    const gone = all.filter((device) => device.status === "revoked" || device.status === "expired");
    this.deviceList.replaceChildren(
      ...(active.length > 0
        ? active.map((device) => this.deviceItem(device))
        : [el("li", { class: "empty" }, "No paired devices yet.")]),
    );
    this.revokedList.replaceChildren(
      ...gone.map((device) =>
        el(
          "li",
          { class: "item gone", dataset: { testid: `gone-${device.id}` } },
          el("strong", {}, device.name || "Unnamed device"),
          " ",
          el("span", { class: "badge" }, device.status),
          " ",
          el("span", { class: "mono", title: device.id }, shortId(device.id)),
        ),
      ),
    );
    this.revokedList.closest("details").hidden = gone.length === 0;
  }

  deviceItem(device) {
    const id = device.id;
    const isSelf = id === this.selfId;
    const name = device.name || "Unnamed device";
    return el(
      "li",
      { class: "item device", dataset: { testid: `device-${id}`, deviceId: id } },
      el(
        "div",
        { class: "item-head" },
        el("strong", { class: "item-name", dataset: { testid: `device-name-${id}` } }, name),
        el("span", { class: `badge ${device.role === "admin" ? "admin" : ""}`, dataset: { testid: `device-role-${id}` } }, device.role || "?"),
        isSelf ? el("span", { class: "badge self" }, "this device") : null,
      ),
      el(
        "dl",
        { class: "facts compact" },
        el("dt", {}, "Last seen"),
        el("dd", { title: absoluteTime(device.lastSeenAt) }, age(device.lastSeenAt)),
        el("dt", {}, "Last address"),
        el("dd", { class: "mono" }, device.lastIp || "unknown"),
        el("dt", {}, "User"),
        el("dd", { class: "mono", dataset: { testid: `device-user-${id}` } }, device.user || "— (device id)"),
        el("dt", {}, "Approved by"),
        el("dd", {}, device.approvedBy || "—"),
        el("dt", {}, "Device id"),
        el("dd", { class: "mono", title: id }, shortId(id)),
      ),
      this.renaming === id ? this.renameForm(device) : this.deviceActions(device, isSelf),
    );
  }

  deviceActions(device, isSelf) {
    const id = device.id;
    const name = device.name || id;
    if (this.confirmingRevoke === id) {
      return el(
        "div",
        { class: "actions confirm", role: "group", "aria-label": `Confirm revoking ${name}` },
        el("span", {}, `Revoke ${name}? Its sessions close at once.`),
        el(
          "button",
          { type: "button", class: "danger", dataset: { testid: `revoke-confirm-${id}` }, onclick: () => this.revoke(id) },
          "Yes, revoke",
        ),
        el(
          "button",
          {
            type: "button",
            class: "secondary",
            dataset: { testid: `revoke-cancel-${id}` },
            onclick: () => this.setConfirmingRevoke(null, `revoke-${id}`),
          },
          "Cancel",
        ),
      );
    }
    return el(
      "div",
      { class: "actions" },
      el(
        "button",
        {
          type: "button",
          class: "secondary",
          dataset: { testid: `rename-${id}` },
          "aria-label": `Rename ${name}`,
          onclick: () => this.startRename(id),
        },
        "Rename",
      ),
      isSelf
        ? el("span", { class: "muted" }, "Use “Forget this device” to remove this one.")
        : el(
            "button",
            {
              type: "button",
              class: "danger",
              dataset: { testid: `revoke-${id}` },
              "aria-label": `Revoke ${name}`,
              onclick: () => this.setConfirmingRevoke(id, `revoke-confirm-${id}`),
            },
            "Revoke",
          ),
    );
  }

  focusTestId(testId) {
    const node = this.root.querySelector(`[data-testid="${CSS.escape(testId)}"]`);
    if (node) {
      node.focus();
    }
  }

  setConfirmingRevoke(id, focusTestId) {
    this.confirmingRevoke = id;
    this.renderDevices();
    this.focusTestId(focusTestId);
  }

  async revoke(deviceId) {
    const name = (this.devices.get(deviceId) || {}).name || deviceId;
    this.confirmingRevoke = null;
    const done = await this.act(() => this.request("devices.revoke", { deviceId }), () => `Revoked ${name}.`);
    if (done && done.id) {
      this.devices.set(done.id, done);
    }
    this.render();
    this.devicesHeading.focus();
  }

  startRename(id) {
    this.renaming = id;
    this.renameDraft = (this.devices.get(id) || {}).name || "";
    this.confirmingRevoke = null;
    this.renderDevices();
    this.focusTestId(`rename-input-${id}`);
  }

  /** The rename form; the typed text lives in this.renameDraft, so a re-render keeps it. */
  renameForm(device) {
    const id = device.id;
    const input = el("input", {
      id: `rename-input-${id}`,
      type: "text",
      maxlength: "64",
      required: true,
      value: this.renameDraft,
      autocomplete: "off",
      dataset: { testid: `rename-input-${id}` },
    });
    const cancel = () => {
      this.renaming = null;
      this.renameDraft = "";
      this.renderDevices();
      this.focusTestId(`rename-${id}`);
    };
    input.addEventListener("input", () => {
      this.renameDraft = input.value;
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        cancel();
      }
    });
    const form = el(
      "form",
      { class: "actions rename" },
      el("label", { for: `rename-input-${id}` }, "New name"),
      input,
      el("button", { type: "submit", dataset: { testid: `rename-save-${id}` } }, "Save"),
      el("button", { type: "button", class: "secondary", onclick: cancel }, "Cancel"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = input.value.trim();
      if (!name) {
        this.say("A device name cannot be empty.", "error");
        input.focus();
        return;
      }
      const done = await this.act(() => this.request("devices.rename", { deviceId: id, name }), () => `Renamed to ${name}.`);
      if (done) {
        if (done.id) {
          this.devices.set(done.id, done);
        }
        this.renaming = null;
        this.renameDraft = "";
        this.renderDevices();
        this.focusTestId(`rename-${id}`);
      }
    });
    return form;
  }

  buildInviteForm(form) {
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
      const created = await this.act(
        () => this.request("invites.create", params),
        () => "Invite created. Open the link on the new device; it is shown once.",
      );
      if (created) {
        this.showInvite(created);
        if (created.invite && created.invite.id) {
          this.invites.set(created.invite.id, created.invite);
          this.renderInvites();
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
      el("p", { class: "muted" }, "The code travels in the link's #fragment, which browsers never send to any server, proxy logs included."),
    ].filter(Boolean);
    this.inviteResult.replaceChildren(...parts);
    this.inviteResult.hidden = false;
    this.inviteResult.querySelector("#invite-result-heading").focus();
  }

  renderInvites() {
    const now = Date.now();
    const open = [...this.invites.values()].filter(
      (invite) => !invite.usedAt && !invite.cancelledAt && (typeof invite.expiresAt !== "number" || invite.expiresAt > now),
    );
    if (open.length === 0) {
      this.inviteList.replaceChildren(el("li", { class: "empty" }, "No open invites."));
      return;
    }
    this.inviteList.replaceChildren(
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
    const done = await this.act(() => this.request("invites.cancel", { inviteId }), () => "Invite cancelled.");
    if (done) {
      this.invites.delete(inviteId);
      this.renderInvites();
    }
  }
}
