// The console's router: a page per hash route (#/pipelines, #/messages, ...), one <main>.

import {get} from "./api.js";
import {el, fill} from "./dom.js";
import {clearError, showError} from "./ui.js";
import * as pipelines from "./pipelines.js";
import * as transforms from "./transforms.js";
import * as connectors from "./connectors.js";
import * as messages from "./messages.js";
import * as search from "./search.js";

const ROUTES = [
  [/^#?\/?$/, "pipelines", pipelines.renderList],
  [/^#\/pipelines\/?$/, "pipelines", pipelines.renderList],
  [/^#\/pipelines\/(.+)$/, "pipelines", pipelines.renderDetail],
  [/^#\/transforms\/new$/, "transforms", transforms.renderNew],
  [/^#\/transforms\/edit\/(.+)$/, "transforms", transforms.renderEdit],
  [/^#\/connectors\/new$/, "connectors", connectors.renderNew],
  [/^#\/connectors\/edit\/(.+)$/, "connectors", connectors.renderEdit],
  [/^#\/messages(?:\?(.*))?$/, "messages", messages.render],
  [/^#\/search(?:\?(.*))?$/, "search", search.render],
];

const ctx = {info: null, cleanup: null};

/** What the page may do: "read_only", "token", "open" or "refused" (see GET /etl/info/). */
export function canChange() {
  return ctx.info && (ctx.info.changes === "token" || ctx.info.changes === "open");
}

function showMode(info) {
  const mode = document.getElementById("mode");
  const text = {
    read_only: "read-only (web.read_only)",
    refused: "read-only: changes need web.token on this address",
    token: "changes need the token",
    open: "",
  }[info.changes] || "";
  fill(mode, text);
  mode.hidden = !text;
  document.body.classList.toggle("read-only", !canChange());
}

async function route(initial = false) {
  if (ctx.cleanup) { try { ctx.cleanup(); } catch { /* a page's timers only */ } }
  ctx.cleanup = null;
  clearError();
  const hash = location.hash || "#/pipelines";
  const main = document.getElementById("main");
  main.replaceChildren();
  for (const [pattern, nav, render] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    try {
      const arg = match[1] === undefined ? "" : decodeURIComponent(match[1]);
      ctx.cleanup = await render(main, arg, ctx) || null;
    } catch (err) {
      showError(err);
    }
    document.body.dataset.loaded = "true";
    const h1 = main.querySelector("h1");
    // After a route change the new page's heading takes the focus (and is announced);
    // the first page of a visit leaves it at the start (the skip link comes first).
    if (h1 && !initial && document.activeElement === document.body) h1.focus({preventScroll: true});
    return;
  }
  main.append(el("h1", {tabindex: "-1"}, "Not found"),
    el("p", {}, "No such page. ", el("a", {href: "#/pipelines"}, "Go to the pipelines.")));
}

async function start() {
  try {
    ctx.info = await get("/etl/info/");
  } catch (err) {
    ctx.info = {changes: "open", limits: {query: 10, display_bytes: 1024, search: 100}};
    showError(err);
  }
  ctx.canChange = canChange;
  showMode(ctx.info);
  window.addEventListener("hashchange", () => {
    document.activeElement && document.activeElement.blur();
    route();
  });
  await route(true);
}

start();
