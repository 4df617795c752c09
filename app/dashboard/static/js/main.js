// The dashboard's entry point: sign in with an org API key, then meters, usage and events;
// alert rules, webhooks and API keys on pages of their own (#alerts, #webhooks, #keys).

import { initAlerts, loadAlerts, resetAlerts } from "./alerts.js";
import * as api from "./api.js";
import { byId, messageOf, showStatus } from "./dom.js";
import { initEvents, loadEvents, resetEvents, setZone, showEventsOf } from "./events.js";
import { initKeys, loadKeys, resetKeys } from "./keys.js"; // issue 16
import { initMeters, loadMeters, resetMeters } from "./meters.js";
import { apiKey, forget, remember } from "./session.js";
import { chosenZone, initUsage, refreshUsage, resetUsage, showMeter } from "./usage.js";
import { initWebhooks, loadEndpoints, resetWebhooks } from "./webhooks.js";

const PAGES = { usage: () => {}, alerts: loadAlerts, webhooks: loadEndpoints, keys: loadKeys };

/** The page the address names (#alerts, #webhooks), the usage page otherwise. */
function currentPage() {
  const name = window.location.hash.slice(1);
  return Object.hasOwn(PAGES, name) ? name : "usage";
}

/** Show the page the address names and load its data afresh. */
function showPage() {
  const current = currentPage();
  for (const name of Object.keys(PAGES)) {
    byId(`${name}-page`).hidden = name !== current;
    const link = byId(`nav-${name}`);
    if (name === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (apiKey()) PAGES[current]();
}

function showSignedIn(signedIn) {
  byId("sign-in-view").hidden = signedIn;
  byId("app-view").hidden = !signedIn;
  byId("sign-out").hidden = !signedIn;
}

async function signIn(event) {
  event.preventDefault();
  const input = byId("api-key");
  const key = input.value.trim();
  const signInStatus = byId("sign-in-status");
  if (!key) {
    showStatus(signInStatus, "error", "Enter your org API key.");
    input.focus();
    return;
  }
  showStatus(signInStatus, "loading", "Checking the key…");
  try {
    await api.call("GET", api.METERS, { params: [["limit", "1"]], key });
  } catch (error) {
    // 403: a valid key without meters:read (issue 16, scoped keys): still signed in.
    if (error.status !== 403) {
      showStatus(signInStatus, "error", `Sign-in failed: ${messageOf(error)}`);
      input.select();
      return;
    }
  }
  input.value = "";
  remember(key);
  showStatus(signInStatus, "", "");
  enter();
}

function enter() {
  showSignedIn(true);
  byId("main").focus();
  loadMeters();
  showPage();
}

/** Forget the key and everything shown; `why` explains an involuntary sign-out. */
function signOut(why = "") {
  forget();
  resetMeters();
  resetUsage();
  resetEvents();
  resetAlerts();
  resetWebhooks();
  resetKeys(); // issue 16
  showSignedIn(false);
  showStatus(byId("sign-in-status"), why ? "error" : "ok", why || "Signed out. The key is forgotten.");
  byId("api-key").focus();
}

function start() {
  initMeters({ select: (meter) => {
    showMeter(meter);
    showEventsOf(meter);
    byId("usage-title").focus();
  } });
  initUsage({ onZone: setZone, onShow: () => loadEvents() });
  initEvents({ zone: chosenZone(), cancelled: refreshUsage });
  initAlerts();
  initWebhooks();
  initKeys(); // issue 16
  window.addEventListener("hashchange", () => {
    const name = window.location.hash.slice(1);
    if (name === "" || Object.hasOwn(PAGES, name)) showPage();
  });
  byId("sign-in-form").addEventListener("submit", signIn);
  byId("sign-out").addEventListener("click", () => signOut());
  api.whenUnauthorized((error) => {
    if (apiKey()) signOut(`Signed out: ${messageOf(error)}`);
  });
  if (apiKey()) enter();
  else showSignedIn(false);
}

start();
