// Dates and time zones: a period picked as local dates becomes two exact instants.

// Browsers name some zones by their old IANA names (ICU's canonical ids); people know
// the current ones. Both name the same zone, and the service accepts either.
const CURRENT_NAMES = {
  "Asia/Calcutta": "Asia/Kolkata", "Asia/Katmandu": "Asia/Kathmandu",
  "Asia/Saigon": "Asia/Ho_Chi_Minh", "Asia/Rangoon": "Asia/Yangon", "Europe/Kiev": "Europe/Kyiv",
  "America/Godthab": "America/Nuuk", "Atlantic/Faeroe": "Atlantic/Faroe",
  "Pacific/Enderbury": "Pacific/Kanton", "Etc/UTC": "UTC", "Etc/GMT": "UTC",
};
const current = (zone) => CURRENT_NAMES[zone] || zone;

/** The browser's own IANA time zone. */
export function browserZone() {
  return current(Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
}

/** Every IANA zone the browser knows, UTC and the browser's zone included. */
export function zoneNames() {
  const known = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  return [...new Set(["UTC", browserZone(), ...known.map(current)])].sort((a, b) =>
    a === "UTC" ? -1 : b === "UTC" ? 1 : a.localeCompare(b));
}

function wallClock(instantMs, zone) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(instantMs));
  const part = (type) => Number(parts.find((p) => p.type === type).value);
  return { year: part("year"), month: part("month"), day: part("day"),
           hour: part("hour"), minute: part("minute"), second: part("second") };
}

/** The zone's offset from UTC at an instant, in milliseconds. */
function offsetAt(instantMs, zone) {
  const w = wallClock(instantMs, zone);
  const asUtc = Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);
  return asUtc - Math.floor(instantMs / 1000) * 1000;
}

/** The instant the local date `YYYY-MM-DD` starts in `zone`, as RFC 3339 UTC. */
export function localMidnight(isoDate, zone) {
  const [year, month, day] = isoDate.split("-").map(Number);
  const wall = Date.UTC(year, month - 1, day);
  let instant = wall - offsetAt(wall, zone);
  instant = wall - offsetAt(instant, zone);  // the offset that holds at that midnight
  return new Date(instant).toISOString().replace(".000Z", "Z");
}

/** The local date `days` after `YYYY-MM-DD`. */
export function addDays(isoDate, days) {
  const [year, month, day] = isoDate.split("-").map(Number);
  return new Date(Date.UTC(year, month - 1, day + days)).toISOString().slice(0, 10);
}

/** Today's date in `zone`, as `YYYY-MM-DD`. */
export function today(zone) {
  const w = wallClock(Date.now(), zone);
  return `${w.year}-${String(w.month).padStart(2, "0")}-${String(w.day).padStart(2, "0")}`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** A chart label for a window that starts at `windowStart` (local time with its offset). */
export function windowLabel(windowStart, windowSize) {
  const [date, time = ""] = windowStart.split("T");
  const [year, month, day] = date.split("-");
  const monthName = MONTHS[Number(month) - 1];
  if (windowSize === "month") return `${monthName} ${year}`;
  if (windowSize === "day") return `${Number(day)} ${monthName}`;
  return `${Number(day)} ${monthName} ${time.slice(0, 5)}`;
}

/** An instant (RFC 3339) as local date and time in `zone`, for tables. */
export function formatInstant(rfc3339, zone) {
  return new Intl.DateTimeFormat("en-GB", {
    timeZone: zone, year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  }).format(new Date(rfc3339));
}
