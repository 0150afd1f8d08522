// Edge Control UI: pairs this browser with the gateway over the control
// WebSocket and, for admin devices, manages the other devices.
//
// This module only builds the page's parts and hands each its dependencies:
//   view.js           the state card, its panels and the identity card
//   close-reasons.js  what a close of the control connection means
//   credentials.js    what the browser stores, the session cookie, #invite=
//   connection.js     the control connection and its state machine
//   controls.js       the token form and the page's buttons
//   admin.js          the admin dashboard (admin-requests.js, admin-devices.js)
//   apps.js           the configured apps, and the return to the page a proxy refused
//   whoami.js         how the gateway sees this browser
//   identity.js       the device key; dom.js: element helpers
// Each of them states the security rules it keeps in its own header.
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
//   pending-<REQUESTID>, approve-login-<REQUESTID>, approve-user-<REQUESTID>,
//   approve-admin-<REQUESTID>, reject-<REQUESTID>, replace-<REQUESTID> (checkbox: revoke
//   the older twin on approval)
//   device-search, device-sort, device-count, devices-empty, device-online-<DEVICEID>
//   (data-online), device-seen-<DEVICEID>, device-ip-<DEVICEID>
//   device-list, device-<DEVICEID>, device-name-<DEVICEID>, device-role-<DEVICEID>,
//   device-user-<DEVICEID>, rename-<DEVICEID>, rename-input-<DEVICEID>,
//   rename-save-<DEVICEID>, revoke-<DEVICEID>, revoke-confirm-<DEVICEID>,
//   revoke-cancel-<DEVICEID>, revoked-list, gone-<DEVICEID>
//   invite-form, invite-role, invite-name, invite-ttl, invite-submit,
//   invite-result, invite-url, invite-copy, invite-qr, invite-list,
//   invite-<INVITEID>, invite-cancel-<INVITEID>
//   apps, app-list, app-<N>, app-link-<N>, apps-empty, return-status
//   fix-panel, fix-snippet, fix-copy, fix-then (the fix a cause behind a refusal names)
//   diagnostics (collapsed), last-close, gateway-diagnostics,
//   whoami, whoami-explanation, whoami-ip, whoami-peer, whoami-local,
//   whoami-hops, whoami-anomalies, whoami-error, whoami-refresh

import { AdminPanel } from "./admin.js";
import { AppsCard } from "./apps.js";
import { CloseReasons } from "./close-reasons.js";
import { Connection } from "./connection.js";
import { Controls } from "./controls.js";
import { migrateStoredToken, takeInviteFromFragment } from "./credentials.js";
import { byTestId } from "./dom.js";
import { secureContextProblems } from "./identity.js";
import { StateView } from "./view.js";
import { loadWhoami, renderGatewayDiagnostics } from "./whoami.js";

const view = new StateView(document);
const closeReasons = new CloseReasons();
const refreshWhoami = async () => {
  const info = await loadWhoami(view.ui.whoami);
  renderGatewayDiagnostics(view.ui.gatewayDiagnostics, info);
  return info;
};
const connection = new Connection({
  view,
  closeReasons,
  makeAdmin: (request) => new AdminPanel(byTestId("admin-panel"), request),
  refreshWhoami,
  apps: new AppsCard(byTestId("apps"), { list: byTestId("app-list"), status: byTestId("return-status") }),
});
const controls = new Controls({ view, connection, closeReasons, refreshWhoami });

/** The tab's title counts the requests waiting, so an admin sees them from another tab. */
function countPendingInTitle() {
  const count = byTestId("pending-count");
  const admin = byTestId("admin-panel");
  const update = () => view.setPendingCount(admin.hidden ? 0 : Number(count.dataset.count || 0));
  const observer = new MutationObserver(update);
  observer.observe(count, { attributes: true, attributeFilter: ["data-count"] });
  observer.observe(admin, { attributes: true, attributeFilter: ["hidden"] });
}

async function main() {
  const refusals = closeReasons.load();
  controls.wire();
  countPendingInTitle();
  refreshWhoami();
  const invite = takeInviteFromFragment();
  const problems = secureContextProblems();
  if (problems.length > 0) {
    view.showInsecure(problems[0]);
    return;
  }
  if (!(await controls.ensureIdentity())) {
    return;
  }
  if (invite === "malformed") {
    controls.showDamagedInvite();
    return;
  }
  await migrateStoredToken();
  await refusals;
  connection.connect();
}

main();
