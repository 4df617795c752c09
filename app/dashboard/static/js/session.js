// The org API key lives in this tab's sessionStorage and nowhere else.

const KEY = "metering.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function remember(key) {
  sessionStorage.setItem(KEY, key);
}

export function forget() {
  sessionStorage.removeItem(KEY);
}
