// Small DOM helpers. Text from the API only ever goes in through textContent.

export const byId = (id) => document.getElementById(id);

/** An element with attributes (or properties for on* handlers) and text or element children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return element;
}

/** Show a message in a status region: kind is "loading", "empty", "error", "ok" or "". */
export function showStatus(element, kind, text) {
  element.textContent = text || "";
  element.className = kind ? `status ${kind}` : "status";
  const section = element.closest("section");
  if (section) section.setAttribute("aria-busy", kind === "loading" ? "true" : "false");
}

/** The message an error carries (the API envelope's message for API errors). */
export function messageOf(error) {
  return error && error.message ? error.message : String(error);
}

const numbers = new Intl.NumberFormat("en-US", { maximumFractionDigits: 6 });

/** A number (or a BigInt, digit for digit) as people read it; "—" for no value. */
export function formatNumber(value) {
  return value === null || value === undefined ? "—" : numbers.format(value);
}

/** Comma-separated text as a list of trimmed, non-empty, distinct items. */
export function splitList(text) {
  return [...new Set(text.split(",").map((item) => item.trim()).filter(Boolean))];
}

/** Replace a table body's rows. */
export function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

const confirmDialog = () => byId("confirm-dialog");
let latestConfirmation = 0;

/** Ask for confirmation in a modal dialog; resolves true only on the confirming button. */
export function confirmAction({ title, text, yes, no = "Keep it" }) {
  const dialog = confirmDialog();
  const opener = document.activeElement;
  const asking = ++latestConfirmation;
  byId("confirm-title").textContent = title;
  byId("confirm-text").textContent = text;
  byId("confirm-yes").textContent = yes;
  byId("confirm-no").textContent = no;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    // "close" is queued: an earlier question's late close must not answer this one.
    const closed = () => {
      const current = asking === latestConfirmation;
      if (current && dialog.open) return;
      dialog.removeEventListener("close", closed);
      if (current && opener && opener.isConnected) opener.focus();
      resolve(current && dialog.returnValue === "yes");
    };
    dialog.addEventListener("close", closed);
    dialog.showModal();
    byId("confirm-no").focus();
  });
}

/**
 * A secret shown once (an API key, a webhook signing secret): the box `${ids}-box` with
 * its `${ids}-value` input, `${ids}-status`, the `label` element naming what it opens,
 * and its `${ids}-copy` and `${ids}-done` buttons, wired here. `what` names the secret in
 * the message when the browser refuses the clipboard.
 */
export function secretBox(ids, label, what) {
  const box = byId(`${ids}-box`);
  const input = byId(`${ids}-value`);
  const status = byId(`${ids}-status`);
  const hide = () => {
    input.value = "";
    byId(label).textContent = "";
    box.hidden = true;
  };
  const show = (name, secret) => {
    byId(label).textContent = name;
    input.value = secret;
    showStatus(status, "", "");
    box.hidden = false;
    input.focus();
    input.select();
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(input.value);
      showStatus(status, "ok", "Copied to the clipboard.");
    } catch {
      input.focus();
      input.select();
      showStatus(status, "error", `The browser refused the clipboard: ${what} is selected, copy it with Ctrl+C (⌘C).`);
    }
  };
  byId(`${ids}-copy`).addEventListener("click", copy);
  byId(`${ids}-done`).addEventListener("click", hide);
  return { show, hide };
}
