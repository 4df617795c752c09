// Webhooks: endpoints (create with the secret shown once, enable/disable, delete) and
// each endpoint's message log with its attempts, retry and a test message.
//
// The secret is in the create answer only. It is kept in this module's memory while the
// box shows it and never written to storage, so a reload cannot show it again.

import * as api from "./api.js";
import { byId, confirmAction, fillRows, h, messageOf, secretBox, showStatus } from "./dom.js";
import { browserZone, formatInstant } from "./time.js";

const status = () => byId("endpoints-status");
let endpoints = [];
let shownEndpoint = null;
let messages = [];
let messagesCursor = null;

function endpointRow(endpoint) {
  const shown = shownEndpoint?.id === endpoint.id;
  const state = endpoint.enabled ? "enabled" : "disabled";
  const label = (verb) => `${verb} ${endpoint.url}`;
  return h("tr", { "data-endpoint-id": endpoint.id, class: shown ? "selected" : null },
    h("th", { scope: "row", "data-label": "URL" }, h("button", { type: "button", class: "link",
      "aria-pressed": String(shown), onclick: () => showMessages(endpoint) }, endpoint.url)),
    h("td", { "data-label": "Description" }, endpoint.description || "—"),
    h("td", { "data-label": "Event types" }, endpoint.eventTypes ? endpoint.eventTypes.join(", ") : "All"),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${state}` }, state),
      endpoint.disabledReason ? h("span", { class: "hint" }, ` ${endpoint.disabledReason}`) : null),
    h("td", { "data-label": "" }, h("div", { class: "row-actions" },
      h("button", { type: "button", class: "secondary small", "aria-label": label(endpoint.enabled ? "Disable" : "Enable"),
        onclick: () => setEnabled(endpoint, !endpoint.enabled) }, endpoint.enabled ? "Disable" : "Enable"),
      h("button", { type: "button", class: "secondary small", "aria-label": label("Rotate the secret of"),
        onclick: () => rotateOne(endpoint) }, "Rotate secret"),
      h("button", { type: "button", class: "secondary small", "aria-label": label("Delete"),
        onclick: () => deleteOne(endpoint) }, "Delete"))));
}

function render() {
  fillRows(byId("endpoints-table").querySelector("tbody"), endpoints.map(endpointRow));
  byId("endpoints-table").hidden = endpoints.length === 0;
  if (endpoints.length) showStatus(status(), "", "");
  else showStatus(status(), "empty", "No endpoints yet. Add one with “New endpoint” below.");
}

/** Load the endpoints, and the event types a new one may subscribe to. */
export async function loadEndpoints() {
  showStatus(status(), "loading", "Loading endpoints…");
  try {
    const [listed, types] = await Promise.all([api.listEndpoints(), api.eventTypes()]);
    endpoints = listed;
    fillTypeBoxes(types);
    render();
  } catch (error) {
    showStatus(status(), "error", `Could not load endpoints: ${messageOf(error)}`);
  }
}

function fillTypeBoxes(types) {
  const boxes = byId("endpoint-type-boxes");
  const checked = new Set([...boxes.querySelectorAll("input:checked")].map((box) => box.value));
  boxes.replaceChildren(...types.map((type) => h("label", { class: "inline", title: type.description },
    h("input", { type: "checkbox", name: "eventTypes", value: type.type, checked: checked.has(type.type) }),
    type.type)));
}

function replaceEndpoint(changed) {
  endpoints = endpoints.map((e) => (e.id === changed.id ? changed : e));
  if (shownEndpoint?.id === changed.id) shownEndpoint = changed;
  render();
}

async function setEnabled(endpoint, enabled) {
  showStatus(status(), "loading", `${enabled ? "Enabling" : "Disabling"} ${endpoint.url}…`);
  try {
    const changed = await api.updateEndpoint(endpoint.id, { enabled });
    replaceEndpoint(changed);
    showStatus(status(), "ok", `${changed.url} is ${changed.enabled ? "enabled" : "disabled"}.`);
    byId("endpoints-table").querySelector(`tr[data-endpoint-id="${CSS.escape(changed.id)}"] .row-actions button`)?.focus();
  } catch (error) {
    showStatus(status(), "error", `Could not change ${endpoint.url}: ${messageOf(error)}`);
  }
}

async function deleteOne(endpoint) {
  const sure = await confirmAction({ title: `Delete the endpoint ${endpoint.url}?`, yes: "Delete endpoint",
    text: "Messages still waiting for it are not sent. Its secret stops working." });
  if (!sure) return;
  showStatus(status(), "loading", `Deleting ${endpoint.url}…`);
  try {
    await api.deleteEndpoint(endpoint.id);
    endpoints = endpoints.filter((e) => e.id !== endpoint.id);
    if (shownEndpoint?.id === endpoint.id) hideMessages();
    render();
    showStatus(status(), "ok", `${endpoint.url} is deleted.`);
  } catch (error) {
    showStatus(status(), "error", `Could not delete ${endpoint.url}: ${messageOf(error)}`);
  }
}

async function rotateOne(endpoint) {
  const sure = await confirmAction({ title: `Rotate the secret of ${endpoint.url}?`, yes: "Rotate secret",
    text: "A new secret signs from now on. The current one keeps signing beside it for 24 hours: "
      + "move your receiver to the new one within that time." });
  if (!sure) return;
  showStatus(status(), "loading", `Rotating the secret of ${endpoint.url}…`);
  try {
    const { secret, ...rotated } = await api.rotateSecret(endpoint.id);
    replaceEndpoint(rotated);
    showStatus(status(), "ok", `${rotated.url} has a new secret; the old one signs for 24 more hours.`);
    showSecret({ ...rotated, secret });
  } catch (error) {
    showStatus(status(), "error", `Could not rotate the secret of ${endpoint.url}: ${messageOf(error)}`);
  }
}

// -- the secret, shown once ----------------------------------------------------------

let secretShown = null; // the secret box, once the page is wired

function showSecret(endpoint) {
  secretShown.show(endpoint.url, endpoint.secret);
}

function hideSecret() {
  if (secretShown) secretShown.hide();
}

function endpointFields(form) {
  const types = [...form.querySelectorAll("input[name=eventTypes]:checked")].map((box) => box.value);
  const fields = { url: form.elements.url.value.trim() };
  const description = form.elements.description.value.trim();
  if (description) fields.description = description;
  if (types.length) fields.eventTypes = types;
  return fields;
}

async function createFromForm(event) {
  event.preventDefault();
  const form = event.target;
  const formStatus = byId("new-endpoint-status");
  form.elements.url.removeAttribute("aria-invalid");
  showStatus(formStatus, "loading", "Creating the endpoint…");
  try {
    const created = await api.createEndpoint(endpointFields(form));
    const { secret, ...endpoint } = created;
    endpoints = [...endpoints, endpoint];
    form.reset();
    render();
    showStatus(formStatus, "ok", `Endpoint ${endpoint.url} created.`);
    showSecret({ ...endpoint, secret });
  } catch (error) {
    showStatus(formStatus, "error", messageOf(error));
    const field = form.elements[(error.param || "").split(/[.[]/)[0]];
    if (field && field.setAttribute) {
      field.setAttribute("aria-invalid", "true");
      field.focus();
    }
  }
}

// -- the message log -----------------------------------------------------------------

function attemptItem(attempt) {
  const zone = browserZone();
  const outcome = attempt.statusCode !== null && attempt.statusCode !== undefined
    ? `HTTP ${attempt.statusCode}` : "no answer";
  return h("li", {}, `${formatInstant(attempt.at, zone)}: ${outcome}, ${Math.round(attempt.latencyMs)} ms`,
    attempt.error ? ` — ${attempt.error}` : "");
}

function messageRow(message) {
  const zone = browserZone();
  const attempts = message.attempts || [];
  const retry = message.status === "delivered" ? null : h("button", { type: "button", class: "secondary small",
    "aria-label": `Retry ${message.id}`, onclick: () => retryOne(message) }, "Retry now");
  return h("tr", { "data-message-id": message.id, class: message.status },
    h("td", { "data-label": "Created" }, formatInstant(message.createdAt, zone)),
    h("td", { "data-label": "Event" }, h("code", {}, message.eventType)),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${message.status}` }, message.status)),
    h("td", { "data-label": "Attempts" }, attempts.length === 0 ? String(message.attemptCount || 0)
      : h("details", {}, h("summary", {}, `${message.attemptCount} attempt${message.attemptCount === 1 ? "" : "s"}`),
        h("ol", { class: "attempts" }, attempts.map(attemptItem)))),
    h("td", { "data-label": "Next attempt" }, message.nextAttemptAt ? formatInstant(message.nextAttemptAt, zone) : "—"),
    h("td", { "data-label": "Message id" }, h("code", {}, message.id)),
    h("td", { "data-label": "" }, retry));
}

async function loadMessages({ more = false } = {}) {
  const messagesStatus = byId("messages-status");
  const endpoint = shownEndpoint;
  showStatus(messagesStatus, "loading", "Loading messages…");
  try {
    const page = await api.listMessages(endpoint.id, byId("messages-filter").value, more ? messagesCursor : null);
    if (endpoint !== shownEndpoint) return;
    messages = more ? [...messages, ...page.messages] : page.messages;
    messagesCursor = page.nextCursor;
    fillRows(byId("messages-table").querySelector("tbody"), messages.map(messageRow));
    byId("messages-more").hidden = !messagesCursor;
    if (messages.length) showStatus(messagesStatus, "", "");
    else showStatus(messagesStatus, "empty", "No messages. Send a test message to try the endpoint.");
  } catch (error) {
    showStatus(messagesStatus, "error", `Could not load messages: ${messageOf(error)}`);
  }
}

async function retryOne(message) {
  const messagesStatus = byId("messages-status");
  showStatus(messagesStatus, "loading", `Queuing ${message.id} again…`);
  try {
    await api.retryMessage(shownEndpoint.id, message.id);
    await loadMessages();
    showStatus(messagesStatus, "ok", `${message.id} will be sent again now.`);
  } catch (error) {
    showStatus(messagesStatus, "error", `Could not retry ${message.id}: ${messageOf(error)}`);
  }
}

async function sendTest() {
  const messagesStatus = byId("messages-status");
  showStatus(messagesStatus, "loading", "Queuing a test message…");
  try {
    const message = await api.sendTest(shownEndpoint.id);
    await loadMessages();
    showStatus(messagesStatus, "ok", `Test message ${message.id} queued; refresh to see its delivery.`);
  } catch (error) {
    showStatus(messagesStatus, "error", `Could not send a test message: ${messageOf(error)}`);
  }
}

function showMessages(endpoint) {
  shownEndpoint = endpoint;
  messages = [];
  render();
  byId("messages-endpoint-url").textContent = endpoint.url;
  byId("messages-section").hidden = false;
  byId("messages-title").focus();
  loadMessages();
}

function hideMessages() {
  shownEndpoint = null;
  messages = [];
  messagesCursor = null;
  fillRows(byId("messages-table").querySelector("tbody"), []);
  byId("messages-section").hidden = true;
}

/** Wire the webhooks page. */
export function initWebhooks() {
  byId("new-endpoint-form").addEventListener("submit", createFromForm);
  secretShown = secretBox("secret", "secret-url", "the secret");
  byId("messages-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadMessages();
  });
  byId("messages-filter").addEventListener("change", () => loadMessages());
  byId("messages-test").addEventListener("click", sendTest);
  byId("messages-more").addEventListener("click", () => loadMessages({ more: true }));
}

/** Forget every endpoint, message and secret shown (at sign-out). */
export function resetWebhooks() {
  endpoints = [];
  hideSecret();
  hideMessages();
  fillRows(byId("endpoints-table").querySelector("tbody"), []);
  byId("new-endpoint-form").reset();
  byId("new-endpoint").open = false;
  for (const id of ["endpoints-status", "new-endpoint-status", "messages-status"]) showStatus(byId(id), "", "");
}
