// Alerts: list the org's rules, create one (thresholds, scope, period, zone, filter),
// archive one, and read a rule's recent triggers.

import * as api from "./api.js";
import { byId, confirmAction, fillRows, formatNumber, h, messageOf, showStatus, splitList } from "./dom.js";
import { browserZone, formatInstant, zoneNames } from "./time.js";

const status = () => byId("alerts-status");
let alerts = [];
let meterNames = new Map();
let shownAlert = null;
let triggersCursor = null;
let triggers = [];

/** "Each user", "The whole org" or "User u-42", as a person reads a rule's scope. */
export function scopeLabel(scope) {
  if (scope === "user") return "Each user";
  if (scope === "org") return "The whole org";
  return `User ${scope.userId}`;
}

function periodLabel(alert) {
  return `${alert.period === "day" ? "Day" : "Month"} (${alert.timeZone})`;
}

function alertRow(alert) {
  const triggersButton = h("button", { type: "button", class: "link", "aria-pressed": String(shownAlert?.id === alert.id),
    onclick: () => showTriggers(alert) }, alert.name);
  const archive = alert.archived ? null : h("button", { type: "button", class: "secondary small",
    "aria-label": `Archive ${alert.name}`, onclick: () => archiveOne(alert) }, "Archive");
  const filter = Object.entries(alert.filter || {}).map(([name, value]) => `${name}=${value}`).join(", ");
  const state = alert.archived ? "archived" : "active";
  return h("tr", { "data-alert-id": alert.id, class: shownAlert?.id === alert.id ? "selected" : null },
    h("th", { scope: "row", "data-label": "Name" }, triggersButton),
    h("td", { "data-label": "Meter" }, meterNames.get(alert.meterId) || alert.meterId,
      filter ? h("span", { class: "hint" }, ` where ${filter}`) : null),
    h("td", { "data-label": "Thresholds" }, alert.thresholds.map(formatNumber).join(", ")),
    h("td", { "data-label": "Scope" }, scopeLabel(alert.scope)),
    h("td", { "data-label": "Period" }, periodLabel(alert)),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${state}` }, state)),
    h("td", { "data-label": "" }, archive));
}

function render() {
  fillRows(byId("alerts-table").querySelector("tbody"), alerts.map(alertRow));
  byId("alerts-table").hidden = alerts.length === 0;
  if (alerts.length) showStatus(status(), "", "");
  else showStatus(status(), "empty", "No alert rules yet. Create one with “New alert rule” below.");
}

async function loadMeterChoices() {
  const meters = await api.allPages(api.METERS, "meters");
  meterNames = new Map(meters.map((m) => [m.id, m.name]));
  const select = byId("alert-meter");
  const chosen = select.value;
  select.replaceChildren(...meters.filter((m) => m.status === "active").map((m) =>
    h("option", { value: m.id }, `${m.name} (${m.aggregationType})`)));
  if (chosen && meterNames.has(chosen)) select.value = chosen;
}

/** Load the rules (and the meters they name). */
export async function loadAlerts() {
  showStatus(status(), "loading", "Loading alert rules…");
  try {
    await loadMeterChoices();
    alerts = await api.listAlerts(byId("alerts-archived").checked);
    render();
  } catch (error) {
    showStatus(status(), "error", `Could not load alert rules: ${messageOf(error)}`);
  }
}

async function archiveOne(alert) {
  const sure = await confirmAction({ title: `Archive ${alert.name}?`, yes: "Archive rule",
    text: "An archived rule sends no more alerts. The triggers it sent stay listed." });
  if (!sure) return;
  showStatus(status(), "loading", `Archiving ${alert.name}…`);
  try {
    const archived = await api.archiveAlert(alert.id);
    alerts = byId("alerts-archived").checked
      ? alerts.map((a) => (a.id === archived.id ? archived : a))
      : alerts.filter((a) => a.id !== archived.id);
    render();
    showStatus(status(), "ok", `${archived.name} is archived.`);
  } catch (error) {
    showStatus(status(), "error", `Could not archive ${alert.name}: ${messageOf(error)}`);
  }
}

/**
 * The thresholds typed, ascending and distinct; null when one is not a whole number.
 * Spaces, semicolons and ", " separate them; a comma inside digits groups thousands when
 * the groups say so ("1,000,000" is one million), and separates otherwise ("500,2000").
 */
export function parseThresholds(text) {
  const numbers = [];
  for (const token of text.split(/[\s;]+|,\s+/).filter(Boolean)) {
    const items = /^\d{1,3}(,\d{3})+$/.test(token) ? [token.replaceAll(",", "")] : token.split(",");
    for (const item of items.filter(Boolean)) {
      if (!/^\d+$/.test(item) || !Number.isSafeInteger(Number(item))) return null;
      numbers.push(Number(item));
    }
  }
  return [...new Set(numbers)].sort((a, b) => a - b);
}

/** "model=gpt-4, region=eu" as {model: "gpt-4", region: "eu"}; null when a pair has no "=". */
export function parseFilter(text) {
  const filter = {};
  for (const pair of splitList(text)) {
    const at = pair.indexOf("=");
    if (at < 1) return null;
    filter[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
  }
  return filter;
}

function alertFields(form) {
  const value = (name) => form.elements[name].value.trim();
  const scope = value("scope");
  return {
    name: value("name"), meterId: value("meterId"),
    thresholds: parseThresholds(value("thresholds")),
    scope: scope === "one" ? { userId: value("userId") } : scope,
    period: value("period"), timeZone: value("timeZone"),
    filter: parseFilter(value("filter")),
    notifyOnResolve: form.elements.notifyOnResolve.checked,
  };
}

function markInvalid(form, name) {
  const field = form.elements[name];
  if (!field) return;
  field.setAttribute("aria-invalid", "true");
  field.focus();
}

async function createFromForm(event) {
  event.preventDefault();
  const form = event.target;
  const formStatus = byId("new-alert-status");
  for (const element of form.elements) element.removeAttribute?.("aria-invalid");
  const fields = alertFields(form);
  const local = !fields.meterId ? ["meterId", "Choose a meter (create one on the Usage page first)."]
    : !fields.thresholds || !fields.thresholds.length ? ["thresholds", "Thresholds are whole numbers separated by commas."]
      : !fields.filter ? ["filter", "A filter is dimension=value pairs separated by commas."]
        : fields.scope.userId === "" ? ["userId", "Name the user this rule watches."] : null;
  if (local) {
    showStatus(formStatus, "error", local[1]);
    markInvalid(form, local[0]);
    return;
  }
  showStatus(formStatus, "loading", "Creating the alert rule…");
  try {
    const alert = await api.createAlert(fields);
    alerts = [...alerts, alert];
    form.reset();
    resetFormChoices();
    render();
    showStatus(formStatus, "ok", `Alert rule ${alert.name} created.`);
  } catch (error) {
    showStatus(formStatus, "error", messageOf(error));
    const param = (error.param || "").split(/[.[]/)[0];
    markInvalid(form, param === "scope" && fields.scope.userId !== undefined ? "userId" : param);
  }
}

function triggerRow(trigger) {
  const zone = shownAlert.timeZone;
  return h("tr", { "data-trigger-id": trigger.id },
    h("td", { "data-label": "Time" }, formatInstant(trigger.at, zone)),
    h("td", { "data-label": "Event" }, h("code", {}, trigger.type)),
    h("td", { "data-label": "User" }, trigger.userId ?? "(whole org)"),
    h("td", { "data-label": "Threshold", class: "num" }, formatNumber(trigger.threshold)),
    h("td", { "data-label": "Value", class: "num" }, formatNumber(trigger.value)),
    h("td", { "data-label": "Period" }, `${formatInstant(trigger.periodStart, zone)} – ${formatInstant(trigger.periodEnd, zone)}`),
    h("td", { "data-label": "Message" }, trigger.messageId ? h("code", {}, trigger.messageId) : "—"));
}

async function loadTriggers({ more = false } = {}) {
  const triggersStatus = byId("triggers-status");
  const alert = shownAlert;
  showStatus(triggersStatus, "loading", "Loading triggers…");
  try {
    const page = await api.listTriggers(alert.id, more ? triggersCursor : null);
    if (alert !== shownAlert) return;
    triggers = more ? [...triggers, ...page.triggers] : page.triggers;
    triggersCursor = page.nextCursor;
    fillRows(byId("triggers-table").querySelector("tbody"), triggers.map(triggerRow));
    byId("triggers-more").hidden = !triggersCursor;
    if (triggers.length) showStatus(triggersStatus, "", "");
    else showStatus(triggersStatus, "empty", "No threshold crossed yet.");
  } catch (error) {
    showStatus(triggersStatus, "error", `Could not load triggers: ${messageOf(error)}`);
  }
}

function showTriggers(alert) {
  shownAlert = alert;
  render();
  byId("triggers-alert-name").textContent = alert.name;
  byId("triggers-zone").textContent = alert.timeZone;
  byId("triggers-section").hidden = false;
  byId("triggers-title").focus();
  loadTriggers();
}

function resetFormChoices() {
  byId("alert-user-field").hidden = true;
  byId("alert-zone").value = browserZone();
}

/** Wire the alerts page. */
export function initAlerts() {
  byId("alert-zone").replaceChildren(...zoneNames().map((zone) => h("option", { value: zone }, zone)));
  resetFormChoices();
  byId("new-alert-form").addEventListener("submit", createFromForm);
  byId("alert-scope").addEventListener("change", (event) => {
    byId("alert-user-field").hidden = event.target.value !== "one";
  });
  byId("alerts-archived").addEventListener("change", () => loadAlerts());
  byId("triggers-refresh").addEventListener("click", () => loadTriggers());
  byId("triggers-more").addEventListener("click", () => loadTriggers({ more: true }));
}

/** Forget every rule and trigger shown (at sign-out). */
export function resetAlerts() {
  alerts = [];
  triggers = [];
  shownAlert = null;
  triggersCursor = null;
  for (const table of ["alerts-table", "triggers-table"]) fillRows(byId(table).querySelector("tbody"), []);
  byId("triggers-section").hidden = true;
  byId("new-alert-form").reset();
  byId("new-alert").open = false;
  resetFormChoices();
  for (const id of ["alerts-status", "new-alert-status", "triggers-status"]) showStatus(byId(id), "", "");
}
