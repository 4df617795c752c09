// The customer portal page: one end customer's usage this month, by meter and by day in
// the browser's time zone, with a breakdown by a dimension. Token from the URL fragment.

import { browserZone, localMidnight, today } from "/dashboard/static/js/time.js";

const STORAGE = "metering-portal-token";
const byId = (id) => document.getElementById(id);

/** The token: from `#token=pt_...` or `#pt_...` (then dropped from the address bar), else
 * the one this tab was given before (a reload). */
function readToken() {
  const fragment = window.location.hash.slice(1);
  const given = fragment.startsWith("pt_") ? fragment : new URLSearchParams(fragment).get("token");
  if (given) {
    try { window.sessionStorage.setItem(STORAGE, given); } catch { /* storage blocked: keep it in memory */ }
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    return given;
  }
  try { return window.sessionStorage.getItem(STORAGE); } catch { return null; }
}

class PortalError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the service answered HTTP ${status}`);
    this.status = status;
    this.code = error.code || "";
  }
}

async function call(token, path, params = []) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of params) url.searchParams.append(name, value);
  const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new PortalError(response.status, body);
  return body;
}

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

function showStatus(kind, text) {
  const status = byId("status");
  status.className = `status ${kind}`;
  status.textContent = text;
}

const WHY = {
  token_expired: "This link has expired. Ask for a new one to see your usage.",
  token_revoked: "This link is no longer valid. Ask for a new one to see your usage.",
};

function explain(error) {
  if (error.status === 401) return WHY[error.code] || "This link is not valid. Ask for a new one.";
  if (error.status === 429) return "Too many requests right now; try again in a minute.";
  return `Your usage could not be loaded: ${error.message}`;
}

/** This month in `zone`: its first day, the next month's first day, and a label. */
function thisMonth(zone) {
  const [year, month] = today(zone).split("-").map(Number);
  const first = `${year}-${String(month).padStart(2, "0")}-01`;
  const next = new Date(Date.UTC(year, month, 1)).toISOString().slice(0, 10);
  const label = new Date(Date.UTC(year, month - 1, 15)).toLocaleDateString(undefined,
    { month: "long", year: "numeric", timeZone: "UTC" });
  return { start: localMidnight(first, zone), end: localMidnight(next, zone), label };
}

const format = (value, unit) => {
  const text = typeof value === "number" ? value.toLocaleString() : String(value ?? 0);
  return unit ? `${text} ${unit}` : text;
};

function drawChart(canvas, windows, label) {
  if (!window.Chart) return;
  new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: windows.map((w) => String(Number(w.windowStart.slice(8, 10)))),  // the day of the month
      datasets: [{ label, data: windows.map((w) => Number(w.value)), backgroundColor: "#2f6fdf" }],
    },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
      plugins: { legend: { display: false },
        tooltip: { callbacks: { title: (items) => windows[items[0].dataIndex].windowStart.slice(0, 10) } } },
      scales: { y: { beginAtZero: true } } },
  });
}

async function renderBreakdown(token, meter, period, zone, dimension, body) {
  const answer = await call(token, `/v1/portal/meters/${encodeURIComponent(meter.id)}/summary`, [
    ["periodStart", period.start], ["periodEnd", period.end], ["timeZone", zone],
    ["groupBy", dimension]]);
  const rows = [...(answer.windows || [])].sort((a, b) => Number(b.value) - Number(a.value));
  body.replaceChildren(...(rows.length ? rows.map((w) => h("tr", {},
    h("td", {}, w.groupBy[dimension] || "(none)"), h("td", { class: "number" }, format(w.value, meter.unit))))
    : [h("tr", {}, h("td", { colspan: "2" }, "No usage this month."))]));
}

async function renderMeter(token, meter, period, zone) {
  const path = `/v1/portal/meters/${encodeURIComponent(meter.id)}/summary`;
  const daily = await call(token, path, [["periodStart", period.start], ["periodEnd", period.end],
    ["windowSize", "day"], ["timeZone", zone]]);
  const canvas = h("canvas", { "aria-label": `${meter.name} by day`, role: "img" });
  const card = h("section", { class: "meter", "data-meter": meter.id },
    h("div", { class: "meter-head" }, h("h2", {}, meter.name),
      h("span", { class: "total", "data-total": "" }, format(daily.value, meter.unit))),
    h("div", { class: "chart" }, canvas));
  byId("meters").append(card);
  drawChart(canvas, daily.windows || [], meter.name);
  if (!meter.dimensions.length) return;
  const select = h("select", { "aria-label": "Break down by" },
    ...meter.dimensions.map((d) => h("option", { value: d }, d)));
  const body = h("tbody");
  card.append(h("div", { class: "breakdown-head" }, h("span", {}, "By"), select),
    h("table", { class: "breakdown" }, h("thead", {}, h("tr", {}, h("th", {}, "Value"),
      h("th", { class: "number" }, "Usage"))), body));
  select.addEventListener("change", () =>
    renderBreakdown(token, meter, period, zone, select.value, body).catch((e) => showStatus("error", explain(e))));
  await renderBreakdown(token, meter, period, zone, meter.dimensions[0], body);
}

async function main() {
  const token = readToken();
  if (!token) {
    showStatus("error", "This page needs a link with a usage token.");
    return;
  }
  const zone = browserZone();
  const period = thisMonth(zone);
  byId("period").textContent = `${period.label} · times in ${zone}`;
  try {
    const { meters } = await call(token, "/v1/portal/meters");
    if (!meters.length) showStatus("", "There is nothing to show yet.");
    for (const meter of meters) await renderMeter(token, meter, period, zone);
    if (meters.length) showStatus("", "");
    document.body.dataset.ready = "true";
  } catch (error) {
    byId("meters").replaceChildren();
    showStatus("error", explain(error));
    document.body.dataset.ready = "error";
  }
}

main();
