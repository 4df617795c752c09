// The service's public API, called with the signed-in org's key.

import { apiKey } from "./session.js";

/** An answer that was not 2xx: carries the envelope's message, code and param. */
export class ApiError extends Error {
  constructor(status, envelope) {
    const error = (envelope && envelope.error) || {};
    super(error.message || `the service answered HTTP ${status}`);
    this.status = status;
    this.code = error.code || "";
    this.param = error.param || "";
  }
}

/**
 * JSON text to values with every integer exact: an integer literal beyond 2^53-1 in size
 * (which a Number would round) becomes a BigInt, read from its own digits. null for text
 * that is not JSON (an error page of a proxy).
 */
export function parseExact(text) {
  try {
    return JSON.parse(text, (key, value, context) =>
      (typeof value === "number" && !Number.isSafeInteger(value) && context
        && /^-?\d+$/.test(context.source) ? BigInt(context.source) : value));
  } catch {
    return null;
  }
}

/** A summary value as the page keeps it: the API sends integers beyond 2^53-1 in size as
 * strings of their exact digits; they become BigInts, which format and compare exactly. */
export function exactValue(value) {
  return typeof value === "string" ? BigInt(value) : value;
}

function exactSummary(answer) {
  answer.value = exactValue(answer.value);
  for (const window of answer.windows || []) window.value = exactValue(window.value);
  return answer;
}

let onUnauthorized = () => {};

/** Called when the service refuses the key (revoked, or a typo at sign-in). */
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

/** Call the API; `params` is a list of [name, value] pairs (names may repeat). */
export async function call(method, path, { params = [], body, key = apiKey() } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of params) url.searchParams.append(name, value);
  const headers = { Authorization: `Bearer ${key}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, { method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(0, { error: { message: "the service cannot be reached; check the connection and retry" } });
  }
  const data = parseExact(await response.text().catch(() => ""));
  if (!response.ok) {
    const failure = new ApiError(response.status, data);
    if (response.status === 401) onUnauthorized(failure);
    throw failure;
  }
  return data;
}

export const SUMMARY = "/v1/billing/meter-events/summary";
export const EVENTS = "/v1/billing/meter-events";
export const METERS = "/v1/billing/meters";

export const listMeters = (cursor, key) =>
  call("GET", METERS, { params: [["limit", "100"], ...(cursor ? [["cursor", cursor]] : [])], key });
export const createMeter = (fields) => call("POST", METERS, { body: fields });
export const archiveMeter = (id) => call("DELETE", `${METERS}/${encodeURIComponent(id)}`);
export const summary = (params) => call("GET", SUMMARY, { params }).then(exactSummary);
export const listEvents = (params) => call("GET", EVENTS, { params });
export const cancelEvent = (id) => call("POST", `${EVENTS}/cancel`, { body: { events: [{ id }] } });

// Alerts and webhooks (issue 14).
export const ALERTS = "/v1/billing/alerts";
export const ENDPOINTS = "/v1/webhooks/endpoints";
export const EVENT_TYPES = "/v1/webhooks/event-types";

const page = (limit, cursor, more = []) =>
  [["limit", String(limit)], ...more, ...(cursor ? [["cursor", cursor]] : [])];
const alertPath = (id) => `${ALERTS}/${encodeURIComponent(id)}`;
const endpointPath = (id) => `${ENDPOINTS}/${encodeURIComponent(id)}`;

/** Every item of a paged list (`{[key]: [...], nextCursor}`). */
export async function allPages(path, key, more = []) {
  let items = [];
  let cursor = null;
  do {
    const answer = await call("GET", path, { params: page(100, cursor, more) });
    items = [...items, ...answer[key]];
    cursor = answer.nextCursor;
  } while (cursor);
  return items;
}

export const listAlerts = (includeArchived) =>
  allPages(ALERTS, "alerts", includeArchived ? [["includeArchived", "true"]] : []);
export const createAlert = (fields) => call("POST", ALERTS, { body: fields });
export const archiveAlert = (id) => call("DELETE", alertPath(id));
export const listTriggers = (id, cursor) =>
  call("GET", `${alertPath(id)}/triggers`, { params: page(25, cursor) }).then((answer) => {
    for (const trigger of answer.triggers) trigger.value = exactValue(trigger.value);
    return answer;
  });

export const listEndpoints = () => allPages(ENDPOINTS, "endpoints");
export const createEndpoint = (fields) => call("POST", ENDPOINTS, { body: fields });
export const updateEndpoint = (id, changes) => call("PATCH", endpointPath(id), { body: changes });
export const deleteEndpoint = (id) => call("DELETE", endpointPath(id));
export const rotateSecret = (id) => call("POST", `${endpointPath(id)}/rotate-secret`);
export const eventTypes = () => call("GET", EVENT_TYPES).then((answer) => answer.eventTypes);
export const listMessages = (id, status, cursor) =>
  call("GET", `${endpointPath(id)}/messages`,
    { params: page(25, cursor, status ? [["status", status]] : []) });
export const retryMessage = (id, messageId) =>
  call("POST", `${endpointPath(id)}/messages/${encodeURIComponent(messageId)}/retry`);
export const sendTest = (id) => call("POST", `${endpointPath(id)}/test`);

// API keys (issue 16).
export const KEYS = "/v1/keys";
export const listKeys = () => call("GET", KEYS);
export const createKey = (fields) => call("POST", KEYS, { body: fields });
export const revokeKey = (prefix) => call("DELETE", `${KEYS}/${encodeURIComponent(prefix)}`);
