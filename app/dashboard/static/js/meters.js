// Meters: list (a page at a time), create with dimensions, archive, choose one to look at.

import * as api from "./api.js";
import { byId, confirmAction, fillRows, h, messageOf, showStatus, splitList } from "./dom.js";

const status = () => byId("meters-status");
let meters = [];
let nextCursor = null;
let selectedId = null;
let onSelect = () => {};

function meterRow(meter) {
  const selected = meter.id === selectedId;
  const view = h("button", { type: "button", class: "link", "aria-pressed": String(selected),
    onclick: () => select(meter.id) }, meter.name);
  const archive = meter.status === "active"
    ? h("button", { type: "button", class: "secondary small", onclick: (event) => archiveOne(meter, event),
        "aria-label": `Archive ${meter.name}` }, "Archive")
    : null;
  return h("tr", { "data-meter-id": meter.id, class: selected ? "selected" : null },
    h("th", { scope: "row", "data-label": "Name" }, view),
    h("td", { "data-label": "Event name" }, h("code", {}, meter.eventName)),
    h("td", { "data-label": "Aggregation" }, meter.aggregationType + (meter.uniqueBy ? ` of ${meter.uniqueBy}` : "")),
    h("td", { "data-label": "Currency" }, meter.currency.toUpperCase()),
    h("td", { "data-label": "Dimensions" }, meter.dimensions.length ? meter.dimensions.join(", ") : "—"),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${meter.status}` }, meter.status)),
    h("td", { "data-label": "" }, archive));
}

function render() {
  fillRows(byId("meters-table").querySelector("tbody"), meters.map(meterRow));
  byId("meters-table").hidden = meters.length === 0;
  byId("meters-more").hidden = !nextCursor;
  if (meters.length) showStatus(status(), "", "");
  else showStatus(status(), "empty", "No meters yet. Create one with “New meter” below.");
}

/** Load the first page of meters (or the next one with `more`). */
export async function loadMeters({ more = false } = {}) {
  showStatus(status(), "loading", "Loading meters…");
  try {
    const page = await api.listMeters(more ? nextCursor : null);
    meters = more ? [...meters, ...page.meters] : page.meters;
    nextCursor = page.nextCursor;
    render();
  } catch (error) {
    showStatus(status(), "error", `Could not load meters: ${messageOf(error)}`);
  }
}

function select(id) {
  selectedId = id;
  render();
  onSelect(meters.find((m) => m.id === id));
}

async function archiveOne(meter) {
  const sure = await confirmAction({ title: `Archive ${meter.name}?`, yes: "Archive meter",
    text: "An archived meter accepts no new events. Its history and summaries stay." });
  if (!sure) return;
  showStatus(status(), "loading", `Archiving ${meter.name}…`);
  try {
    const archived = await api.archiveMeter(meter.id);
    meters = meters.map((m) => (m.id === archived.id ? archived : m));
    render();
    showStatus(status(), "ok", `${archived.name} is archived.`);
    if (archived.id === selectedId) onSelect(archived);
    byId("meters-table").querySelector(`tr[data-meter-id="${CSS.escape(archived.id)}"] button`)?.focus();
  } catch (error) {
    showStatus(status(), "error", `Could not archive ${meter.name}: ${messageOf(error)}`);
  }
}

function meterFields(form) {
  const value = (name) => form.elements[name].value.trim();
  const fields = { name: value("name"), eventName: value("eventName"),
    aggregationType: value("aggregationType"), currency: value("currency") || "usd",
    dimensions: splitList(value("dimensions")) };
  if (fields.aggregationType === "unique_count") fields.uniqueBy = value("uniqueBy");
  return fields;
}

function fieldOf(form, param) {
  return param ? form.elements[param.split(/[.[]/)[0]] : null;
}

async function createFromForm(event) {
  event.preventDefault();
  const form = event.target;
  const formStatus = byId("new-meter-status");
  for (const element of form.elements) element.removeAttribute?.("aria-invalid");
  showStatus(formStatus, "loading", "Creating the meter…");
  try {
    const meter = await api.createMeter(meterFields(form));
    meters = [...meters, meter];
    form.reset();
    byId("unique-by-field").hidden = true;
    showStatus(formStatus, "ok", `Meter ${meter.name} created.`);
    select(meter.id);
  } catch (error) {
    showStatus(formStatus, "error", messageOf(error));
    const field = fieldOf(form, error.param);
    if (field) {
      field.setAttribute("aria-invalid", "true");
      field.focus();
    }
  }
}

/** Wire the meters section; `select` is called with the meter a person chooses. */
export function initMeters({ select: selected }) {
  onSelect = selected;
  byId("new-meter-form").addEventListener("submit", createFromForm);
  byId("meters-more").addEventListener("click", () => loadMeters({ more: true }));
  byId("meter-aggregation").addEventListener("change", (event) => {
    byId("unique-by-field").hidden = event.target.value !== "unique_count";
  });
}

/** Forget every meter shown (at sign-out). */
export function resetMeters() {
  meters = [];
  nextCursor = null;
  selectedId = null;
  fillRows(byId("meters-table").querySelector("tbody"), []);
  byId("new-meter-form").reset();
  byId("new-meter").open = false;
  for (const id of ["meters-status", "new-meter-status"]) showStatus(byId(id), "", "");
}
