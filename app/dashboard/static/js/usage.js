// A meter's usage: the chart, the period total and the top users, all from the summary API.
//
// One query (period, window, zone, split, filters) makes up to three summary calls: the
// windows of the period (dense: every window, the chart's axis and the period total), the
// same split by one dimension (only the (window, group) pairs that have events), and the
// top users, which the API ranks itself (`orderBy=-value&limit=10`): a page never asks for
// every user. Split by user, the chart shows the users with the largest values of the
// period (one more call ranks them first). Every number shown is one the API answered,
// exactly: values beyond 2^53-1 arrive as digit strings and are kept and formatted as BigInts.

import * as api from "./api.js";
import { download, fileSafe, toCsv } from "./csv.js";
import { byId, fillRows, formatNumber, h, messageOf, showStatus, splitList } from "./dom.js";
import { addDays, browserZone, localMidnight, today, windowLabel, zoneNames } from "./time.js";

// Okabe–Ito and friends: distinguishable with the common colour-vision deficiencies.
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
  "#F0E442", "#000000", "#999999", "#882255", "#44AA99", "#117733"];
const MAX_SERIES = PALETTE.length;
const TOP_USERS = 10;
const EMPTY_IS_ZERO = new Set(["sum", "count", "unique_count"]);

let meter = null;
let shown = null;  // what is on screen: the query and the API's answers, for CSV
let chart = null;
let latestRequest = 0;

const status = () => byId("usage-status");

/** The time zone chosen in the usage form (the browser's by default). */
export function chosenZone() {
  return byId("usage-zone").value || browserZone();
}

function groupLabel(value) {
  return value === "" ? "(no value)" : value;
}

function readFilters() {
  return [...byId("usage-filter-fields").querySelectorAll("input")]
    .map((input) => [input.dataset.name, splitList(input.value)])
    .filter(([, values]) => values.length);
}

function readQuery() {
  const zone = chosenZone();
  const from = byId("usage-from").value;
  const to = byId("usage-to").value;
  if (!from || !to) throw new Error("Choose the first and the last day of the period.");
  if (to < from) throw new Error("The last day must not be before the first day.");
  return { zone, from, to, windowSize: byId("usage-window").value,
    split: byId("usage-split").value, filters: readFilters(),
    start: localMidnight(from, zone), end: localMidnight(addDays(to, 1), zone) };
}

function baseParams(query) {
  return [["meterId", meter.id], ["periodStart", query.start], ["periodEnd", query.end],
    ["timeZone", query.zone],
    ...query.filters.flatMap(([name, values]) => values.map((v) => [`filter[${name}]`, v]))];
}

/** The `limit` users with the largest values of the period, as the API ranks them. */
function topUsersOf(query, limit) {
  return api.summary([...baseParams(query), ["groupBy", "userId"], ["orderBy", "-value"],
    ["limit", String(limit)]]);
}

/** The split: by a dimension, every group; by user, the MAX_SERIES top users' windows. */
async function fetchSplit(query, windowed) {
  if (query.split !== "userId") return api.summary([...windowed, ["groupBy", query.split]]);
  const top = await topUsersOf(query, MAX_SERIES);
  const users = top.windows.map((w) => w.groupBy.userId);
  if (!users.length) return { windows: [], nextCursor: null, moreUsers: false };
  // the top users replace a user filter of the form (they are within it already)
  const others = windowed.filter(([name]) => name !== "filter[userId]");
  const split = await api.summary([...others, ["groupBy", "userId"], ["limit", String(MAX_SERIES)],
    ...users.map((user) => ["filter[userId]", user])]);
  split.moreUsers = users.length === MAX_SERIES;  // there may be others, ranked lower
  return split;
}

function fetchUsage(query) {
  const windowed = [...baseParams(query), ["windowSize", query.windowSize]];
  return Promise.all([
    api.summary(windowed),
    query.split ? fetchSplit(query, windowed) : null,
    topUsersOf(query, TOP_USERS),
  ]);
}

/** Ask the API for the form's query and show the answers. */
export async function refreshUsage() {
  if (!meter) return;
  let query;
  try {
    query = readQuery();
  } catch (error) {
    showStatus(status(), "error", messageOf(error));
    return;
  }
  const request = ++latestRequest;
  showStatus(status(), "loading", "Loading usage…");
  try {
    const [dense, split, users] = await fetchUsage(query);
    if (request !== latestRequest) return;  // a newer query is on its way
    shown = { query, meter, dense, split, users };
    render();
    showStatus(status(), dense.eventCount ? "ok" : "empty", dense.eventCount
      ? `Usage from ${query.from} to ${query.to}, ${query.zone}.`
      : `No usage from ${query.from} to ${query.to}.`);
  } catch (error) {
    if (request !== latestRequest) return;
    shown = null;
    byId("usage-results").hidden = true;
    byId("top-users-block").hidden = true;
    showStatus(status(), "error", `Could not load usage: ${messageOf(error)}`);
  }
}

// -- what the answers become ----------------------------------------------------------

/** A bar's height: the chart library takes Numbers (the table and the total stay exact). */
function barHeight(value) {
  return typeof value === "bigint" ? Number(value) : value;
}

function chartSeries() {
  const { dense, split, query } = shown;
  const labels = dense.windows.map((w) => windowLabel(w.windowStart, query.windowSize));
  if (!split) return { labels, datasets: [{ label: meter.name, data: dense.windows.map((w) => barHeight(w.value)) }] };
  const position = new Map(dense.windows.map((w, i) => [w.windowStart, i]));
  const empty = EMPTY_IS_ZERO.has(meter.aggregationType) ? 0 : null;
  const groups = new Map();
  for (const w of split.windows) {
    const key = w.groupBy[query.split];
    if (!groups.has(key)) groups.set(key, { label: groupLabel(key), data: labels.map(() => empty), events: 0 });
    const group = groups.get(key);
    group.data[position.get(w.windowStart)] = barHeight(w.value);
    group.events += w.eventCount;
  }
  const ordered = [...groups.values()].sort((a, b) => b.events - a.events || a.label.localeCompare(b.label));
  const left = Math.max(ordered.length - MAX_SERIES, 0);
  const note = split.moreUsers ? `The ${MAX_SERIES} users with the largest values`
    : left ? `${left} more groups are in the table` : "";
  return { labels, datasets: ordered.slice(0, MAX_SERIES), note };
}

function drawChart() {
  const series = chartSeries();
  const stacked = document.querySelector("input[name=usage-layout]:checked").value === "stacked";
  if (chart) chart.destroy();
  chart = null;
  if (!window.Chart) {
    showStatus(status(), "error", "The chart library did not load; the table below has the data.");
    return;
  }
  const datasets = series.datasets.map((d, i) => ({ label: d.label, data: d.data,
    backgroundColor: PALETTE[i % PALETTE.length], borderWidth: 0 }));
  chart = new window.Chart(byId("usage-chart"), {
    type: "bar",
    data: { labels: series.labels, datasets },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: { x: { stacked }, y: { stacked, beginAtZero: true } },
      plugins: { legend: { display: datasets.length > 1, position: "bottom" },
        subtitle: { display: Boolean(series.note), text: series.note } } },
  });
}

function tableRows() {
  const { dense, split, query } = shown;
  const windows = split ? split.windows : dense.windows;
  return windows.map((w) => [w.windowStart, w.windowEnd,
    ...(split ? [w.groupBy[query.split]] : []), w.value, w.eventCount]);
}

function tableHeader() {
  return ["windowStart", "windowEnd", ...(shown.split ? [shown.query.split] : []), "value", "eventCount"];
}

function renderTable() {
  const header = ["Window start", "Window end", ...(shown.split ? [shown.query.split] : []), "Value", "Events"];
  const numeric = (i) => i >= header.length - 2;
  byId("chart-table").querySelector("thead").replaceChildren(
    h("tr", {}, header.map((name, i) => h("th", { scope: "col", class: numeric(i) ? "num" : null }, name))));
  fillRows(byId("chart-table").querySelector("tbody"), tableRows().map((row) => h("tr", {},
    row.map((cell, i) => h("td", { class: numeric(i) ? "num" : null },
      numeric(i) ? formatNumber(cell) : (i === 2 ? groupLabel(cell) : cell))))));
}

/** The top users as the API ranked them (largest first, ties by user id). */
function topUsers() {
  return shown.users.windows.map((w, i) => [i + 1, w.groupBy.userId, w.value, w.eventCount]);
}

function renderTopUsers() {
  const rows = topUsers();
  fillRows(byId("top-users-table").querySelector("tbody"), rows.map(([rank, user, value, events]) =>
    h("tr", {}, h("td", {}, String(rank)), h("th", { scope: "row" }, user),
      h("td", { class: "num" }, formatNumber(value)), h("td", { class: "num" }, formatNumber(events)))));
  byId("top-users-table").hidden = rows.length === 0;
  byId("top-users-csv").hidden = rows.length === 0;
  showStatus(byId("top-users-status"), rows.length ? "" : "empty",
    rows.length ? "" : "No users in this period.");
}

function render() {
  const { dense } = shown;
  byId("usage-results").hidden = false;
  byId("top-users-block").hidden = false;
  byId("period-total").textContent = formatNumber(dense.value);
  byId("period-events").textContent =
    `${formatNumber(dense.eventCount)} ${dense.eventCount === 1 ? "event" : "events"}`;
  byId("period-aggregation").textContent =
    `${meter.aggregationType}${meter.uniqueBy ? ` of ${meter.uniqueBy}` : ""}, ${meter.currency.toUpperCase()}`;
  renderTable();
  renderTopUsers();
  drawChart();
}

// -- the form ---------------------------------------------------------------------------

function fillZones() {
  const select = byId("usage-zone");
  select.replaceChildren(...zoneNames().map((zone) => h("option", { value: zone }, zone)));
  select.value = browserZone();
}

function fillSplitAndFilters() {
  const names = [...meter.dimensions, "userId"];
  byId("usage-split").replaceChildren(h("option", { value: "" }, "Nothing"),
    ...names.map((name) => h("option", { value: name }, name === "userId" ? "User" : name)));
  byId("usage-filter-fields").replaceChildren(...names.map((name) => h("div", { class: "field" },
    h("label", { for: `filter-${name}` }, name === "userId" ? "User" : name),
    h("input", { id: `filter-${name}`, "data-name": name, autocomplete: "off" }))));
}

function describe(m) {
  const parts = [`Event name ${m.eventName}`, `${m.aggregationType}${m.uniqueBy ? ` of ${m.uniqueBy}` : ""}`,
    `currency ${m.currency.toUpperCase()}`,
    m.dimensions.length ? `dimensions ${m.dimensions.join(", ")}` : "no dimensions", m.status];
  return parts.join(" · ");
}

/** Show the usage of a meter (the one a person chose). */
export function showMeter(chosen) {
  const same = meter && meter.id === chosen.id;
  meter = chosen;
  byId("usage-section").hidden = false;
  byId("usage-meter-name").textContent = chosen.name;
  byId("usage-meter-facts").textContent = describe(chosen);
  if (!same) {
    fillSplitAndFilters();
    byId("usage-results").hidden = true;
    byId("top-users-block").hidden = true;
  }
  if (!byId("usage-to").value) {
    byId("usage-to").value = today(chosenZone());
    byId("usage-from").value = addDays(byId("usage-to").value, -6);
  }
  return refreshUsage();
}

function downloadUsage() {
  if (!shown) return;
  const { query } = shown;
  download(`usage-${fileSafe(shown.meter.eventName)}-${query.from}-${query.to}-${query.windowSize}.csv`,
    toCsv(tableHeader(), tableRows()));
}

function downloadTopUsers() {
  if (!shown) return;
  download(`top-users-${fileSafe(shown.meter.eventName)}-${shown.query.from}-${shown.query.to}.csv`,
    toCsv(["rank", "userId", "value", "eventCount"], topUsers()));
}

/** Wire the usage form; `onZone` hears of a new time zone, `onShow` of each submitted query. */
export function initUsage({ onZone, onShow }) {
  fillZones();
  byId("usage-form").addEventListener("submit", (event) => {
    event.preventDefault();
    refreshUsage();
    onShow();
  });
  byId("usage-zone").addEventListener("change", () => onZone(chosenZone()));
  for (const radio of document.querySelectorAll("input[name=usage-layout]")) {
    radio.addEventListener("change", () => shown && drawChart());
  }
  byId("usage-csv").addEventListener("click", downloadUsage);
  byId("top-users-csv").addEventListener("click", downloadTopUsers);
}

/** Forget the meter and everything shown (at sign-out). */
export function resetUsage() {
  meter = null;
  shown = null;
  latestRequest += 1;
  if (chart) chart.destroy();
  chart = null;
  byId("usage-section").hidden = true;
  byId("usage-to").value = "";
  byId("usage-from").value = "";
  fillZones();
  showStatus(status(), "", "");
}
