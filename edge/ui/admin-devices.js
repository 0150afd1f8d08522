// The admin dashboard's device list: paired devices with rename and revoke,
// sorted and searched, each with its presence (an online dot, "connected now"
// for this device), and the revoked or expired ones under their own heading.
//
// Presence comes from last-seen times: the gateway notes every request and,
// while a control socket is open, the device on it; it writes them to the
// store about once a minute, and devices.list answers what the serving
// process saw to the second, with its own clock (`now`), so the browser's
// clock never decides who is online.
//
// Security rule this file keeps: device names, users and addresses come from
// the gateway and are set as text (el() children), never as markup. A revoke
// takes a second, explicit confirmation, and this device is never offered one
// (it leaves with "Forget this device").

import { absoluteTime, age, el, shortId } from "./dom.js";

// Seen within this long (gateway time) counts as online: twice the gateway's
// last-seen write interval plus its flush, so an idle open dashboard stays online.
export const ONLINE_WINDOW_MS = 150000;

export const SORTS = {
  "last-seen": { label: "Last seen", compare: (a, b) => (b.lastSeenAt || 0) - (a.lastSeenAt || 0) },
  name: { label: "Name", compare: (a, b) => String(a.name || "").localeCompare(String(b.name || "")) },
  address: { label: "Address", compare: (a, b) => String(a.lastIp || "~").localeCompare(String(b.lastIp || "~"), undefined, { numeric: true }) },
  role: { label: "Role", compare: (a, b) => String(a.role).localeCompare(String(b.role)) },
  paired: { label: "Paired", compare: (a, b) => (b.createdAt || 0) - (a.createdAt || 0) },
};

/**
 * The paired device a pending request most likely takes over from: another
 * device with the same name last seen at the request's address (the same
 * browser profile or machine paired again under a new key), the most recently
 * seen if several; null when there is none.
 */
export function olderTwin(devices, request) {
  const twins = [...devices.values()].filter(
    (device) =>
      device.status === "paired" &&
      device.id !== request.deviceId &&
      Boolean(request.clientIp) &&
      device.lastIp === request.clientIp &&
      String(device.name || "") === String(request.name || ""),
  );
  twins.sort((a, b) => (b.lastSeenAt || 0) - (a.lastSeenAt || 0));
  return twins[0] || null;
}

/** Whether `device` matches every word of `query` in its name, user, address, role or id. */
export function matches(device, query) {
  const words = String(query || "").toLowerCase().split(/\s+/).filter(Boolean);
  const text = [device.name, device.user, device.lastIp, device.role, device.id].map((part) => String(part || "").toLowerCase()).join(" ");
  return words.every((word) => text.includes(word));
}

export class DeviceList {
  /**
   * @param {import("./admin.js").AdminPanel} panel  the dashboard: its device map,
   *        request, act, render and focusTestId
   * @param {{ list: HTMLElement, revokedList: HTMLElement, heading: HTMLElement }} nodes
   */
  constructor(panel, { list, revokedList, heading, search, sort, count }) {
    this.panel = panel;
    this.list = list;
    this.revokedList = revokedList;
    this.heading = heading;
    this.search = search;
    this.sort = sort;
    this.count = count;
    this.sort.replaceChildren(...Object.entries(SORTS).map(([value, { label }]) => el("option", { value }, label)));
    this.sort.value = "last-seen";
    this.search.addEventListener("input", () => this.render());
    this.sort.addEventListener("change", () => this.render());
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

  /** Whether the gateway saw `device` recently (by the gateway's clock), or it is this one. */
  online(device) {
    if (device.id === this.panel.selfId) {
      return true;
    }
    return typeof device.lastSeenAt === "number" && this.panel.gatewayNow() - device.lastSeenAt < ONLINE_WINDOW_MS;
  }

  render() {
    const sort = SORTS[this.sort.value] || SORTS["last-seen"];
    const all = [...this.panel.devices.values()].sort((a, b) => sort.compare(a, b) || String(a.id).localeCompare(String(b.id)));
    const active = all.filter((device) => device.status !== "revoked" && device.status !== "expired");
    const gone = all.filter((device) => device.status === "revoked" || device.status === "expired");
    const shown = active.filter((device) => matches(device, this.search.value));
    this.count.textContent = shown.length === active.length ? String(active.length) : `${shown.length} of ${active.length}`;
    this.count.dataset.count = String(shown.length);
    const empty = active.length > 0 ? "No paired device matches the search." : "No paired devices yet.";
    this.list.replaceChildren(
      ...(shown.length > 0
        ? shown.map((device) => this.deviceItem(device))
        : [el("li", { class: "empty", dataset: { testid: "devices-empty" } }, empty)]),
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
    const online = this.online(device);
    const seen = isSelf ? "connected now" : online ? `online, ${age(device.lastSeenAt, this.panel.gatewayNow())}` : age(device.lastSeenAt, this.panel.gatewayNow());
    return el(
      "li",
      { class: "item device", dataset: { testid: `device-${id}`, deviceId: id, online: String(online) } },
      el(
        "div",
        { class: "item-head" },
        el("span", {
          class: `dot ${online ? "online" : "offline"}`,
          role: "img",
          "aria-label": online ? "online" : "offline",
          title: online ? "online" : "offline",
          dataset: { testid: `device-online-${id}`, online: String(online) },
        }),
        el("strong", { class: "item-name", dataset: { testid: `device-name-${id}` } }, name),
        el("span", { class: `badge ${device.role === "admin" ? "admin" : ""}`, dataset: { testid: `device-role-${id}` } }, device.role || "?"),
        isSelf ? el("span", { class: "badge self" }, "this device") : null,
      ),
      el(
        "dl",
        { class: "facts compact" },
        el("dt", {}, "Last seen"),
        el("dd", { title: absoluteTime(device.lastSeenAt), dataset: { testid: `device-seen-${id}` } }, seen),
        el("dt", {}, "Last address"),
        el("dd", { class: "mono", dataset: { testid: `device-ip-${id}` } }, device.lastIp || "unknown"),
        el("dt", {}, "User"),
        el("dd", { class: "mono", dataset: { testid: `device-user-${id}` } }, device.user || "— (device id)"),
        el("dt", {}, "Approved by"),
        el("dd", {}, device.approvedBy || "—"),
        el("dt", {}, "Paired"),
        el("dd", { title: absoluteTime(device.createdAt) }, age(device.createdAt, this.panel.gatewayNow())),
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
