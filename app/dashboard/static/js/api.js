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
