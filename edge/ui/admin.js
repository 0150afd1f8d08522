// The admin dashboard: pending pairing requests, paired devices, invites.
//
// Lists are loaded once with devices.list when an admin connects and then kept
// current from pushed events; an event whose data does not carry the full
// record triggers one debounced devices.list. Last-seen times are not events
// (one per request would flood the log), so the list is also re-read once a
// minute while the dashboard is open, to keep presence and last seen current.
//
// This class holds what the gateway listed and the status line; each list is
// drawn and acted on by its own part, which gets this panel as its one
// dependency: PendingRequests and InviteList (admin-requests.js) and
// DeviceList (admin-devices.js). Text from the gateway is set as text, never
// as markup, in all of them.

import { DeviceList } from "./admin-devices.js";
import { InviteList, PendingRequests } from "./admin-requests.js";

const REFRESH_DEBOUNCE_MS = 250;
const CLOCK_TICK_MS = 15000;
const PRESENCE_EVERY_TICKS = 4; // devices.list once a minute, for last seen and presence

const DECISION_WORDS = { approved: "approved", rejected: "rejected", expired: "expired" };

function describeError(error) {
  if (error && error.code === "forbidden") {
    return "This device is not an admin, so the gateway refused.";
  }
  return error && error.message ? error.message : String(error);
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
    this.refreshTimer = null;
    this.clockTimer = null;
    this.ticks = 0;
    // The gateway's clock minus this browser's, from devices.list: presence is judged in gateway time.
    this.clockSkew = 0;
    const find = (testId) => root.querySelector(`[data-testid="${testId}"]`);
    this.pendingList = find("pending-list");
    this.deviceList = find("device-list");
    this.inviteList = find("invite-list");
    this.status = find("admin-status");
    this.pendingHeading = root.querySelector("#pending-heading");
    this.pending = new PendingRequests(this, { list: this.pendingList, count: find("pending-count") });
    this.deviceView = new DeviceList(this, {
      list: this.deviceList,
      revokedList: find("revoked-list"),
      heading: root.querySelector("#devices-heading"),
      search: find("device-search"),
      sort: find("device-sort"),
      count: find("device-count"),
    });
    this.inviteView = new InviteList(this, { form: find("invite-form"), list: this.inviteList, result: find("invite-result") });
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
    this.deviceView.reset();
    this.pending.reset();
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
    if (typeof listing.now === "number") {
      this.clockSkew = listing.now - Date.now();
    }
    this.render();
  }

  /** Now, by the gateway's clock (epoch ms). */
  gatewayNow() {
    return Date.now() + this.clockSkew;
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
      // Re-read the devices too: the offer to replace an older twin compares current addresses.
      this.scheduleRefresh();
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
    this.ticks += 1;
    if (this.ticks % PRESENCE_EVERY_TICKS === 0) {
      this.scheduleRefresh();
    }
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
    this.pending.render();
    this.deviceView.render();
    this.inviteView.render();
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

  /** Run one gateway call, saying its outcome; a failure re-lists, since the lists may be stale. */
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

  focusTestId(testId) {
    const node = this.root.querySelector(`[data-testid="${CSS.escape(testId)}"]`);
    if (node) {
      node.focus();
    }
  }
}
