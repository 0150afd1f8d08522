// The admin dashboard's device list: paired devices with rename and revoke,
// and the revoked or expired ones under their own heading.
//
// Security rule this file keeps: device names, users and addresses come from
// the gateway and are set as text (el() children), never as markup. A revoke
// takes a second, explicit confirmation, and this device is never offered one
// (it leaves with "Forget this device").

import { absoluteTime, age, el, shortId } from "./dom.js";

export class DeviceList {
  /**
   * @param {import("./admin.js").AdminPanel} panel  the dashboard: its device map,
   *        request, act, render and focusTestId
   * @param {{ list: HTMLElement, revokedList: HTMLElement, heading: HTMLElement }} nodes
   */
  constructor(panel, { list, revokedList, heading }) {
    this.panel = panel;
    this.list = list;
    this.revokedList = revokedList;
    this.heading = heading;
    this.renaming = null;
    this.renameDraft = "";
    this.confirmingRevoke = null;
  }

  /** Forget any rename or revoke in progress (the dashboard closed). */
  reset() {
    this.renaming = null;
    this.renameDraft = "";
    this.confirmingRevoke = null;
  }

  render() {
    const all = [...this.panel.devices.values()].sort((a, b) => (b.lastSeenAt || 0) - (a.lastSeenAt || 0));
    const active = all.filter((device) => device.status !== "revoked" && device.status !== "expired");
    const gone = all.filter((device) => device.status === "revoked" || device.status === "expired");
    this.list.replaceChildren(
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
    const isSelf = id === this.panel.selfId;
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

  setConfirmingRevoke(id, focusTestId) {
    this.confirmingRevoke = id;
    this.render();
    this.panel.focusTestId(focusTestId);
  }

  async revoke(deviceId) {
    const panel = this.panel;
    const name = (panel.devices.get(deviceId) || {}).name || deviceId;
    this.confirmingRevoke = null;
    const done = await panel.act(() => panel.request("devices.revoke", { deviceId }), () => `Revoked ${name}.`);
    if (done && done.id) {
      panel.devices.set(done.id, done);
    }
    panel.render();
    this.heading.focus();
  }

  startRename(id) {
    this.renaming = id;
    this.renameDraft = (this.panel.devices.get(id) || {}).name || "";
    this.confirmingRevoke = null;
    this.render();
    this.panel.focusTestId(`rename-input-${id}`);
  }

  /** The rename form; the typed text lives in this.renameDraft, so a re-render keeps it. */
  renameForm(device) {
    const panel = this.panel;
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
      this.render();
      panel.focusTestId(`rename-${id}`);
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
        panel.say("A device name cannot be empty.", "error");
        input.focus();
        return;
      }
      const done = await panel.act(() => panel.request("devices.rename", { deviceId: id, name }), () => `Renamed to ${name}.`);
      if (done) {
        if (done.id) {
          panel.devices.set(done.id, done);
        }
        this.renaming = null;
        this.renameDraft = "";
        this.render();
        panel.focusTestId(`rename-${id}`);
      }
    });
    return form;
  }
}
