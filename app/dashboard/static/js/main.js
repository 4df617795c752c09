// The dashboard's entry point: sign in with an org API key, then meters, usage and events.

import * as api from "./api.js";
import { byId, messageOf, showStatus } from "./dom.js";
import { initEvents, loadEvents, resetEvents, setZone, showEventsOf } from "./events.js";
import { initMeters, loadMeters, resetMeters } from "./meters.js";
import { apiKey, forget, remember } from "./session.js";
import { chosenZone, initUsage, refreshUsage, resetUsage, showMeter } from "./usage.js";

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
    showStatus(signInStatus, "error", `Sign-in failed: ${messageOf(error)}`);
    input.select();
    return;
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
}

/** Forget the key and everything shown; `why` explains an involuntary sign-out. */
function signOut(why = "") {
  forget();
  resetMeters();
  resetUsage();
  resetEvents();
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
  byId("sign-in-form").addEventListener("submit", signIn);
  byId("sign-out").addEventListener("click", () => signOut());
  api.whenUnauthorized((error) => {
    if (apiKey()) signOut(`Signed out: ${messageOf(error)}`);
  });
  if (apiKey()) enter();
  else showSignedIn(false);
}

start();
