// Where a paired browser goes next: back to the page it wanted, or to one of
// the configured apps listed on the dashboard.
//
// A proxy that refused this browser sent it here with the page it wanted in
// `?rd=` (forward-auth's sign-in link). Security rules this file keeps:
// - This page never reads its own query string: the gateway kept `rd` in an
//   HttpOnly cookie when it served the page, checks it (GET /api/apps, see
//   edge/gateway/return_to.py) and answers the absolute URL to use, or null
//   for anything not on its own origin or an upstream host's (an open
//   redirect otherwise). The page navigates only to that answer, once.
// - App names and URLs come from the gateway and are set as text and as an
//   href it built, never as markup.

import { el, show } from "./dom.js";

export class AppsCard {
  /**
   * @param {HTMLElement} root  the apps <section>, hidden until the list is known
   * @param {{ list: HTMLElement, status: HTMLElement }} nodes
   */
  constructor(root, { list, status }) {
    this.root = root;
    this.list = list;
    this.status = status;
  }

  /**
   * Ask the gateway for its apps and for the checked return target; show the
   * apps. Resolves with the URL to go to (null: stay on the dashboard).
   */
  async load() {
    let answer;
    try {
      const response = await fetch("/api/apps", { credentials: "same-origin", headers: { accept: "application/json" } });
      if (!response.ok) {
        return null;
      }
      answer = await response.json();
    } catch {
      return null;
    }
    const apps = (Array.isArray(answer.apps) ? answer.apps : []).filter((app) => /^https?:\/\//.test(String(app.url)));
    this.list.replaceChildren(
      ...apps.map((app, index) =>
        el(
          "li",
          { class: "item app", dataset: { testid: `app-${index}` } },
          el("a", { href: String(app.url), dataset: { testid: `app-link-${index}` } }, String(app.name)),
          " ",
          el("span", { class: "mono muted" }, String(app.url)),
        ),
      ),
    );
    if (apps.length === 0) {
      this.list.replaceChildren(el("li", { class: "empty", dataset: { testid: "apps-empty" } }, "This gateway has no apps configured (upstreams)."));
    }
    const target = typeof answer.returnTo === "string" ? answer.returnTo : null;
    if (target) {
      this.status.textContent = `Returning to ${target}…`;
      this.status.dataset.tone = "info";
    } else if (answer.returnRefused) {
      this.status.textContent = "The address this page was opened with is not one of this gateway's apps, so it was not followed.";
      this.status.dataset.tone = "error";
    } else {
      this.status.textContent = "";
    }
    show(this.status, Boolean(this.status.textContent));
    this.root.hidden = false;
    return target;
  }

  close() {
    this.root.hidden = true;
  }
}
