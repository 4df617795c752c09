// Recent events of the chosen meter: newest first, searchable, cancellable.

import * as api from "./api.js";
import { download, fileSafe, toCsv } from "./csv.js";
import { byId, confirmAction, fillRows, formatNumber, h, messageOf, showStatus } from "./dom.js";
import { formatInstant } from "./time.js";

const PAGE = "25";
const OUTCOMES = {
  cancelled: "Event cancelled: it no longer counts in any summary.",
  already_cancelled: "That event was already cancelled.",
  expired: "That event is older than the cancellation window and stays counted.",
  not_found: "That event no longer exists.",
};

let meter = null;
let events = [];
let nextCursor = null;
let search = { userId: "", idempotency: "" };
let zone = "UTC";
let afterCancel = () => {};

const status = () => byId("events-status");

function dimensionsText(dimensions) {
  const entries = Object.entries(dimensions);
  return entries.length ? entries.map(([name, value]) => `${name}=${value}`).join(", ") : "—";
}

function eventRow(event) {
  const cancel = event.status === "active"
    ? h("button", { type: "button", class: "danger small", onclick: () => cancelOne(event),
        "aria-label": `Cancel event of ${event.userId} at ${formatInstant(event.timestamp, zone)}` }, "Cancel")
    : null;
  return h("tr", { "data-event-id": event.id, class: event.status === "cancelled" ? "cancelled" : null },
    h("td", { "data-label": "Time" }, h("time", { datetime: event.timestamp }, formatInstant(event.timestamp, zone))),
    h("td", { "data-label": "User" }, event.userId),
    h("td", { "data-label": "Value", class: "num" }, formatNumber(event.value)),
    h("td", { "data-label": "Dimensions" }, dimensionsText(event.dimensions)),
    h("td", { "data-label": "Idempotency key" }, event.idempotency ? h("code", {}, event.idempotency) : "—"),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${event.status}` }, event.status)),
    h("td", { "data-label": "" }, cancel));
}

function render() {
  fillRows(byId("events-table").querySelector("tbody"), events.map(eventRow));
  byId("events-table").hidden = events.length === 0;
  byId("events-more").hidden = !nextCursor;
  byId("events-csv").hidden = events.length === 0;
}

function searchParams() {
  const params = [["meterId", meter.id], ["limit", PAGE]];
  if (search.userId) params.push(["userId", search.userId]);
  if (search.idempotency) params.push(["idempotency", search.idempotency]);
  return params;
}

/** Load the newest events matching the search (or the next page with `more`). */
export async function loadEvents({ more = false } = {}) {
  if (!meter) return;
  showStatus(status(), "loading", "Loading events…");
  try {
    const params = searchParams();
    if (more && nextCursor) params.push(["cursor", nextCursor]);
    const page = await api.listEvents(params);
    events = more ? [...events, ...page.events] : page.events;
    nextCursor = page.nextCursor;
    render();
    const searching = search.userId || search.idempotency;
    showStatus(status(), events.length ? "" : "empty", events.length ? ""
      : searching ? "No events match this search." : "No events recorded for this meter yet.");
  } catch (error) {
    showStatus(status(), "error", `Could not load events: ${messageOf(error)}`);
  }
}

async function cancelOne(event) {
  const sure = await confirmAction({
    title: "Cancel this event?", yes: "Cancel event",
    text: `${event.userId}, value ${formatNumber(event.value)}, at ${formatInstant(event.timestamp, zone)}. ` +
      "It will leave every summary and stay listed as cancelled." });
  if (!sure) return;
  showStatus(status(), "loading", "Cancelling the event…");
  try {
    const outcome = (await api.cancelEvent(event.id)).events[0];
    events = events.map((e) => (e.id === event.id && outcome.status !== "expired"
      && outcome.status !== "not_found" ? { ...e, status: "cancelled" } : e));
    render();
    showStatus(status(), outcome.status === "cancelled" ? "ok" : "error", OUTCOMES[outcome.status] || outcome.status);
    byId("events-title").focus();
    afterCancel();
  } catch (error) {
    showStatus(status(), "error", `Could not cancel the event: ${messageOf(error)}`);
  }
}

function downloadEvents() {
  const rows = events.map((e) => [e.id, e.timestamp, e.userId, e.value,
    JSON.stringify(e.dimensions), e.idempotency, e.status]);
  download(`events-${fileSafe(meter.eventName)}.csv`,
    toCsv(["id", "timestamp", "userId", "value", "dimensions", "idempotency", "status"], rows));
}

/** Show the events of a meter (the one a person chose). */
export function showEventsOf(chosen) {
  if (!meter || meter.id !== chosen.id) {
    search = { userId: "", idempotency: "" };
    byId("events-form").reset();
  }
  meter = chosen;
  byId("events-section").hidden = false;
  return loadEvents();
}

/** Show times in another zone. */
export function setZone(newZone) {
  zone = newZone;
  if (meter) render();
}

/** Wire the events section; `cancelled` is called after each cancellation. */
export function initEvents({ cancelled, zone: initialZone }) {
  afterCancel = cancelled;
  zone = initialZone;
  byId("events-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search = { userId: byId("events-user").value.trim(), idempotency: byId("events-idempotency").value.trim() };
    loadEvents();
  });
  byId("events-clear").addEventListener("click", () => {
    byId("events-form").reset();
    search = { userId: "", idempotency: "" };
    loadEvents();
  });
  byId("events-more").addEventListener("click", () => loadEvents({ more: true }));
  byId("events-csv").addEventListener("click", downloadEvents);
}

/** Forget the meter and its events (at sign-out). */
export function resetEvents() {
  meter = null;
  events = [];
  nextCursor = null;
  fillRows(byId("events-table").querySelector("tbody"), []);
  byId("events-section").hidden = true;
  byId("events-form").reset();
  showStatus(status(), "", "");
}
