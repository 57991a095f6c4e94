// Notices, errors and dialogs: every action says what it did, every error what to do.

import {el, fill, button} from "./dom.js";

/** Say what an action did (a polite live region: screen readers read it too). */
export function notify(text) {
  const box = document.getElementById("notices");
  const item = el("p", {class: "notice"}, text);
  box.append(item);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => item.remove(), 12000);
}

/** Show an error where it happened (``where``) or at the top of the page. */
export function showError(error, where) {
  const text = error instanceof Error ? error.message : String(error);
  const box = where || document.getElementById("alerts");
  fill(box, el("p", {class: "error-text"}, text));
  box.hidden = false;
  return text;
}

export function clearError(where) {
  const box = where || document.getElementById("alerts");
  box.replaceChildren();
}

/** A modal dialog; resolves with the pressed button's value ("" when dismissed). */
export function dialog({title, body, actions, labelledBy}) {
  return new Promise(resolve => {
    const box = el("dialog", {class: "modal", "aria-labelledby": labelledBy || "dialog-title"});
    const done = value => { box.close(value); };
    const buttons = (actions || [{label: "Close", value: ""}]).map(action =>
      button(action.label, () => done(action.value), {
        class: action.danger ? "danger" : action.primary ? "primary" : "",
        "data-dialog-action": action.value,
      }));
    box.append(
      el("h2", {id: labelledBy || "dialog-title"}, title),
      el("div", {class: "dialog-body"}, body),
      el("div", {class: "actions"}, buttons));
    box.addEventListener("close", () => { resolve(box.returnValue); box.remove(); });
    document.body.append(box);
    box.showModal();
    const first = box.querySelector("input, select, textarea") || buttons[buttons.length - 1];
    first.focus();
  });
}

/** Ask before an action; true when confirmed. */
export async function confirmAction(title, body, label, danger = false) {
  const answer = await dialog({
    title,
    body,
    actions: [{label: "Cancel", value: "cancel"}, {label, value: "ok", danger, primary: !danger}],
  });
  return answer === "ok";
}

/** Ask for the worker's web.token (once per tab: kept in sessionStorage). */
export function askToken(reason) {
  return new Promise(resolve => {
    const input = el("input", {type: "password", id: "token-input", autocomplete: "off", required: true});
    const form = el("form", {method: "dialog", class: "token-form"},
      el("p", {}, reason || "This worker needs its token (web.token) for changes."),
      el("label", {for: "token-input"}, "Token"), input,
      el("p", {class: "hint"}, "Kept for this browser tab only."),
      el("div", {class: "actions"},
        el("button", {type: "submit", value: "cancel", formnovalidate: true}, "Cancel"),
        el("button", {type: "submit", value: "ok", class: "primary"}, "Use token")));
    const box = el("dialog", {class: "modal", id: "token-dialog", "aria-labelledby": "token-title"},
      el("h2", {id: "token-title"}, "Token needed"), form);
    box.addEventListener("close", () => {
      const token = box.returnValue === "ok" ? input.value.trim() : "";
      box.remove();
      resolve(token);
    });
    document.body.append(box);
    box.showModal();
    input.focus();
  });
}

/** Set the page title and move focus to the heading (a route change is announced). */
export function heading(main, text, ...extra) {
  const h1 = el("h1", {tabindex: "-1"}, text);
  document.title = `${text} - ETL console`;
  const head = el("div", {class: "page-head"}, h1, extra);
  main.append(head);
  return h1;
}
