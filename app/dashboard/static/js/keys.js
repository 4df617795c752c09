// API keys (issue 16): the org's keys with their scopes, last use and expiry; create one
// with some of the signed-in key's scopes (its secret shown once) and revoke any.
//
// The new key's secret is kept in this module's memory while the box shows it, never in
// storage, so a reload cannot show it again.

import * as api from "./api.js";
import { byId, confirmAction, fillRows, h, messageOf, secretBox, showStatus } from "./dom.js";
import { apiKey } from "./session.js";
import { browserZone, formatInstant } from "./time.js";

const PREFIX_LENGTH = 12;
const status = () => byId("keys-status");
let keys = [];

/** The prefix of the key this page is signed in with. */
const ownPrefix = () => (apiKey() || "").slice(0, PREFIX_LENGTH);

function keyRow(key) {
  const zone = browserZone();
  const own = key.prefix === ownPrefix();
  const revoke = key.status === "revoked" ? null : h("button", { type: "button", class: "secondary small",
    "aria-label": `Revoke ${key.prefix}`, onclick: () => revokeOne(key) }, "Revoke");
  return h("tr", { "data-key-prefix": key.prefix, class: key.status },
    h("th", { scope: "row", "data-label": "Prefix" }, h("code", {}, key.prefix),
      own ? h("span", { class: "hint" }, " (this key)") : null),
    h("td", { "data-label": "Name" }, key.name || "—"),
    h("td", { "data-label": "Scopes" }, h("ul", { class: "scopes" }, key.scopes.map((scope) => h("li", {}, h("code", {}, scope))))),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${key.status}` }, key.status)),
    h("td", { "data-label": "Created" }, formatInstant(key.createdAt, zone)),
    h("td", { "data-label": "Last used" }, key.lastUsedAt ? formatInstant(key.lastUsedAt, zone) : "never"),
    h("td", { "data-label": "Expires" }, key.expiresAt ? formatInstant(key.expiresAt, zone) : "never"),
    h("td", { "data-label": "" }, revoke));
}

function render() {
  fillRows(byId("keys-table").querySelector("tbody"), keys.map(keyRow));
  showStatus(status(), "", "");
  fillScopeBoxes();
}

/** The scopes a new key may hold: those of the signed-in key (a key grants no more). */
function fillScopeBoxes() {
  const own = keys.find((key) => key.prefix === ownPrefix());
  const boxes = byId("key-scope-boxes");
  const checked = new Set([...boxes.querySelectorAll("input:checked")].map((box) => box.value));
  boxes.replaceChildren(...(own ? own.scopes : []).map((scope) => h("label", { class: "inline" },
    h("input", { type: "checkbox", name: "scopes", value: scope, checked: checked.has(scope) }), scope)));
}

/** Load the org's keys (the signed-in key needs keys:write). */
export async function loadKeys() {
  showStatus(status(), "loading", "Loading keys…");
  try {
    keys = (await api.listKeys()).keys;
    render();
  } catch (error) {
    showStatus(status(), "error", `Could not load keys: ${messageOf(error)}`);
  }
}

async function revokeOne(key) {
  const own = key.prefix === ownPrefix();
  const sure = await confirmAction({ title: `Revoke the key ${key.prefix}?`, yes: "Revoke key",
    text: own ? "This is the key this page is signed in with: you will be signed out."
      : "Every request with it is refused from the next one on. This cannot be undone." });
  if (!sure) return;
  showStatus(status(), "loading", `Revoking ${key.prefix}…`);
  try {
    await api.revokeKey(key.prefix);
    if (own) {
      await api.listKeys().catch(() => {}); // answers 401: the page signs out
      return;
    }
    await loadKeys();
    showStatus(status(), "ok", `${key.prefix} is revoked.`);
  } catch (error) {
    showStatus(status(), "error", `Could not revoke ${key.prefix}: ${messageOf(error)}`);
  }
}

function keyFields(form) {
  const fields = { scopes: [...form.querySelectorAll("input[name=scopes]:checked")].map((box) => box.value) };
  const name = form.elements.name.value.trim();
  if (name) fields.name = name;
  const days = Number(form.elements.expires.value);
  if (days > 0) fields.expiresIn = days * 86400;
  return fields;
}

async function createFromForm(event) {
  event.preventDefault();
  const form = event.target;
  const formStatus = byId("new-key-status");
  const fields = keyFields(form);
  if (fields.scopes.length === 0) {
    showStatus(formStatus, "error", "Choose at least one scope.");
    form.querySelector("input[name=scopes]")?.focus();
    return;
  }
  showStatus(formStatus, "loading", "Creating the key…");
  try {
    const { apiKey: secret, keyPrefix } = await api.createKey(fields);
    form.reset();
    await loadKeys();
    showStatus(formStatus, "ok", `Key ${keyPrefix} created.`);
    showSecret(keyPrefix, secret);
  } catch (error) {
    showStatus(formStatus, "error", messageOf(error));
  }
}

// -- the secret, shown once ----------------------------------------------------------

let secretShown = null; // the secret box, once the page is wired

function showSecret(prefix, secret) {
  secretShown.show(prefix, secret);
}

function hideSecret() {
  if (secretShown) secretShown.hide();
}

/** Wire the keys page. */
export function initKeys() {
  byId("new-key-form").addEventListener("submit", createFromForm);
  secretShown = secretBox("key-secret", "key-secret-prefix", "the key");
}

/** Forget every key and secret shown (at sign-out). */
export function resetKeys() {
  keys = [];
  hideSecret();
  fillRows(byId("keys-table").querySelector("tbody"), []);
  byId("key-scope-boxes").replaceChildren();
  byId("new-key-form").reset();
  for (const id of ["keys-status", "new-key-status"]) showStatus(byId(id), "", "");
}
