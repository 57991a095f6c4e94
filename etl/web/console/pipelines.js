// Pipelines: the list (state, rates, lag, owners) and a page per transform, sink or source.

import {ApiError, enc, get} from "./api.js";
import {lagChart} from "./chart.js";
import {button, el, fill, fmt, fmtBytes, fmtTime, stateBadge, table} from "./dom.js";
import {controlWithConfirm, deletePipeline, fileIn, resetOffsets, sendTestMessage, until} from "./actions.js";
import {clearError, heading, notify, showError} from "./ui.js";

const REFRESH_MS = 2000;
const PAUSABLE = ["running", "starting"];
const RESUMABLE = ["paused", "stopped", "halted", "failed", "unassigned"];

function rowActions(p) {
  if (PAUSABLE.includes(p.state)) return ["pause"];
  if (RESUMABLE.includes(p.state)) return ["resume"];
  return [];
}

function workersText(p) {
  const ids = p.workers || [];
  return ids.length ? ids.join(", ") : "none";
}

// The list's columns: [header, cell class, text of a pipeline] (name, state, actions apart).
const COLUMNS = [
  ["Kind", "kind", p => p.kind],
  ["State", "state", null],
  ["Lag", "num lag", p => fmt(p.lag)],
  ["Workers", "workers", workersText],
  ["In/s", "num wide", p => fmt(p.rate_in, 1)],
  ["Out/s", "num wide", p => fmt(p.rate_out, 1)],
  ["Consumed", "num wide", p => fmt(p.consumed)],
  ["Produced", "num wide", p => fmt(p.produced)],
  ["Filtered", "num wide", p => fmt(p.filtered)],
  ["Dead-lettered", "num deadletters", p => fmt(p.dead_lettered)],
  ["Last error", "error", p => p.error || ""],
];

const DEAD_LETTER_CELL = COLUMNS.findIndex(c => c[1].includes("deadletters")) + 1;

/** The cells of a row, updated in place so that focus and selection survive a refresh. */
function updateRow(row, p, ctx, act) {
  const cells = row.cells;
  cells[0].querySelector("a").textContent = p.name;
  COLUMNS.forEach(([, , text], i) => {
    const cell = cells[i + 1];
    if (text === null) {
      const badge = cell.querySelector(".badge");
      if (badge.textContent !== p.state) {
        badge.textContent = p.state;
        badge.className = `badge state-${p.state}`;
      }
      return;
    }
    const value = text(p);
    if (cell.textContent !== value) cell.textContent = value;
  });
  cells[DEAD_LETTER_CELL].title = p.dead_letter_topic ? `to ${p.dead_letter_topic}` : "";
  const wanted = ctx.canChange() ? rowActions(p) : [];
  const cell = cells[COLUMNS.length + 1];
  if (cell.dataset.actions !== wanted.join(",")) {
    const focused = cell.contains(document.activeElement);
    cell.dataset.actions = wanted.join(",");
    fill(cell, wanted.map(action => button(action, () => act(p.key, action),
      {"data-action": action, "aria-label": `${action} ${p.key}`})));
    if (focused && cell.querySelector("button")) cell.querySelector("button").focus();
  }
}

function newRow(p) {
  return el("tr", {"data-pipeline": p.key},
    el("th", {scope: "row", class: "name"}, el("a", {href: `#/pipelines/${enc(p.key)}`}, p.name)),
    COLUMNS.map(([, cls, text]) => el("td", {class: cls}, text === null ? stateBadge(p.state) : null)),
    el("td", {class: "actions"}));
}

export async function renderList(main, _arg, ctx) {
  const links = ctx.canChange() ? el("div", {class: "toolbar"},
    el("a", {class: "button", href: "#/transforms/new"}, "New transform"),
    el("a", {class: "button", href: "#/connectors/new"}, "New connector")) : null;
  heading(main, "Pipelines", links);
  const summary = el("p", {id: "worker", class: "summary"}, "loading\u2026");
  const problem = el("div", {id: "problem", class: "problem", role: "alert"});
  const body = el("tbody");
  const empty = el("p", {class: "empty", hidden: true},
    "No pipelines yet. Drop a transform file into transforms/ or create one: ",
    el("a", {href: "#/transforms/new"}, "New transform"), ".");
  const charts = el("div", {class: "charts", id: "charts"});
  main.append(summary, problem,
    el("div", {class: "table-wrap"},
      el("table", {id: "pipelines", class: "pipelines"},
        el("caption", {class: "sr-only"}, "Pipelines of the cluster"),
        el("thead", {}, el("tr", {},
          el("th", {scope: "col"}, "Pipeline"),
          COLUMNS.map(([head, cls]) => el("th", {scope: "col", class: cls.includes("wide") ? "wide" : null}, head)),
          el("th", {scope: "col"}, el("span", {class: "sr-only"}, "Actions")))),
        body)),
    empty,
    el("h2", {}, "Lag per partition"), charts);

  async function act(key, action) {
    try {
      await controlWithConfirm(key, action);
    } catch (err) {
      showError(err, problem);
    }
    refresh();
  }

  async function refresh() {
    try {
      const [status, history] = await Promise.all([get("/etl/status/"), get("/etl/history/")]);
      problem.replaceChildren();
      const w = status.worker || {};
      const workers = status.workers || [];
      const alive = workers.filter(x => x.alive).length;
      fill(summary, `${workers.length} worker${workers.length === 1 ? "" : "s"} (${alive} alive)`,
        ` \u00b7 this worker ${w.id || "-"} on ${w.host || "-"} \u00b7 broker ${w.bootstrap_servers || "-"}`,
        ` \u00b7 updated ${w.updated_at ? new Date(w.updated_at * 1000).toLocaleTimeString() : "-"}`);
      const seen = new Set();
      for (const p of status.pipelines) {
        seen.add(p.key);
        let row = body.querySelector(`tr[data-pipeline="${CSS.escape(p.key)}"]`);
        if (!row) { row = newRow(p); body.append(row); }
        updateRow(row, p, ctx, act);
      }
      for (const row of [...body.rows]) if (!seen.has(row.dataset.pipeline)) row.remove();
      empty.hidden = status.pipelines.length > 0;
      const keys = Object.keys(history.pipelines).sort();
      fill(charts, keys.length ? keys.map(k => lagChart(k, history.times, history.pipelines[k])) :
        el("p", {}, "No partitions assigned yet."));
      document.body.dataset.loaded = "true";
    } catch (err) {
      showError(err instanceof ApiError && err.status === 0 ? err :
        new Error(`cannot read the status: ${err.message}`), problem);
    }
  }
  await refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}

// ---- detail -------------------------------------------------------------------------------

function dl(pairs) {
  return el("dl", {class: "facts"}, pairs.filter(Boolean).map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function partitionTable(item) {
  const rows = Object.entries(item.partitions || {}).map(([tp, p]) =>
    el("tr", {"data-partition": tp},
      el("th", {scope: "row"}, tp),
      el("td", {}, stateBadge(p.state)),
      el("td", {}, p.owner ? `${p.owner.worker} (${p.owner.host || "?"} pid ${p.owner.pid || "?"})` : "none"),
      el("td", {class: "num committed"}, fmt(p.committed)),
      el("td", {class: "num"}, fmt(p.log_start)),
      el("td", {class: "num"}, fmt(p.end)),
      el("td", {class: "num lag"}, fmt(p.lag))));
  if (!rows.length) return el("p", {}, "No partitions known yet (the group has not committed, or it is starting).");
  return table(["Partition", "State", "Owner", "Committed", "Log start", "End", "Lag"], rows, {class: "partitions"});
}

function logList(lines) {
  if (!lines.length) return el("p", {class: "empty"}, "No log lines of this pipeline on this worker yet.");
  return el("ol", {class: "log-lines"}, lines.map(line =>
    el("li", {class: `log-${line.level}`},
      el("time", {}, fmtTime(line.at)), " ", el("span", {class: "level"}, line.level.toUpperCase()), " ",
      el("span", {class: "message"}, line.message))));
}

function letterRow(letter, index) {
  const detailId = `letter-${index}`;
  const detail = el("tr", {class: "letter-detail", id: detailId, hidden: true},
    el("td", {colspan: 6},
      el("h4", {}, "Headers"),
      table(["Header", "Value"], Object.entries(letter.headers || {}).map(([k, v]) =>
        el("tr", {}, el("th", {scope: "row"}, k), el("td", {class: "mono"}, v === null ? "(null)" : v))),
      {class: "headers"}),
      el("h4", {}, `Original key (${fmtBytes(letter.key_size)})`),
      el("pre", {class: "value key"}, letter.key === null ? "(null)" : letter.key),
      el("h4", {}, `Original value (${fmtBytes(letter.value_size)})${letter.truncated ? ", first 1 KB" : ""}`),
      el("pre", {class: "value original"}, letter.value === null ? "(null)" : letter.value),
      el("p", {}, el("a", {
        href: `/etl/messages/raw/?topic=${enc(letter.topic)}&partition=${letter.partition}&offset=${letter.offset}&part=value`,
        download: "",
      }, "Download the whole value"))));
  const toggle = button("Open", () => {
    const open = detail.hidden;
    detail.hidden = !open;
    toggle.textContent = open ? "Close" : "Open";
    toggle.setAttribute("aria-expanded", String(open));
  }, {"aria-expanded": "false", "aria-controls": detailId, class: "open-letter"});
  const row = el("tr", {class: "letter", "data-offset": letter.offset},
    el("td", {}, letter.time),
    el("td", {}, `${letter.source_topic}/${letter.source_partition}@${letter.source_offset}`),
    el("td", {}, letter.stage),
    el("td", {class: "error"}, `${letter.exception_class}: ${letter.exception_message}`),
    el("td", {class: "mono"}, letter.location || ""),
    el("td", {}, toggle));
  return [row, detail];
}

export async function renderDetail(main, key, ctx) {
  let item;
  try {
    item = await get(`/etl/pipelines/${enc(key)}/`);
  } catch (err) {
    heading(main, key);
    main.append(el("p", {}, err.message, " ", el("a", {href: "#/pipelines"}, "Back to the pipelines.")));
    return null;
  }
  key = item.key;
  const h1 = heading(main, item.name, el("span", {class: "kind-badge"}, item.kind), el("span", {id: "detail-state"}, stateBadge(item.state)));
  h1.dataset.pipeline = key;
  const problem = el("div", {class: "problem", role: "alert", id: "detail-problem"});
  const toolbar = el("div", {class: "toolbar", role: "group", "aria-label": "Actions"});
  const overview = el("div", {id: "overview"});
  const progress = el("div", {id: "progress"});
  const chart = el("div", {id: "chart"});
  const config = el("div", {id: "config"}, el("p", {}, "loading\u2026"));
  const lastError = el("div", {id: "last-error-box"});
  const errorLines = el("div", {id: "error-lines"});
  const errors = el("div", {id: "errors"}, lastError, errorLines);
  const letters = el("div", {id: "deadletters"}, el("p", {}, "loading\u2026"));
  const logs = el("div", {id: "logs"}, el("p", {}, "loading\u2026"));
  main.append(el("p", {}, el("a", {href: "#/pipelines"}, "\u2190 All pipelines")), toolbar, problem,
    el("section", {"aria-labelledby": "h-overview"}, el("h2", {id: "h-overview"}, "Overview"), overview),
    el("section", {"aria-labelledby": "h-progress"}, el("h2", {id: "h-progress"}, "Consumption progress"), progress, chart),
    el("section", {"aria-labelledby": "h-config"}, el("h2", {id: "h-config"}, "Configuration"), config),
    el("section", {"aria-labelledby": "h-errors"}, el("h2", {id: "h-errors"}, "Recent errors and dead letters"),
      errors, letters),
    el("section", {"aria-labelledby": "h-logs"}, el("h2", {id: "h-logs"}, "Recent log lines"), logs));

  let details = null;
  let gone = false;

  async function act(action) {
    problem.replaceChildren();
    try {
      if (action === "reset") {
        await resetOffsets(key, PAUSABLE.includes(item.state) || item.state === "paused");
      } else if (action === "delete") {
        if (await deletePipeline(item, details, ctx.info)) {
          gone = true;
          await until(async () => {
            try { await get(`/etl/pipelines/${enc(key)}/`); return false; } catch (err) { return err.status === 404; }
          }, 30000);
          notify(`${key} is gone from the cluster's status.`);
          location.hash = "#/pipelines";
          return;
        }
      } else if (action === "send") {
        await sendTestMessage(item.source.split(",")[0]);
      } else {
        await controlWithConfirm(key, action);
      }
    } catch (err) {
      showError(err, problem);
    }
    refresh();
  }

  function renderToolbar() {
    if (!ctx.canChange()) { toolbar.hidden = true; return; }
    const actions = [];
    if (PAUSABLE.includes(item.state)) actions.push(["pause", "Pause"]);
    if (RESUMABLE.includes(item.state)) actions.push(["resume", "Resume"]);
    actions.push(["restart", "Restart"], ["stop", "Stop"]);
    if (item.kind !== "source") actions.push(["reset", "Reset offsets\u2026"]);
    if (item.source && item.kind !== "source") actions.push(["send", "Send test message\u2026"]);
    actions.push(["delete", "Delete\u2026"]);
    const wanted = actions.map(a => a[0]).join(",");
    if (toolbar.dataset.actions === wanted) return;
    const focused = document.activeElement && toolbar.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    toolbar.dataset.actions = wanted;
    const editFile = item.kind === "transform" && details ? fileIn(details.file || details.path, ctx.info.transforms_dir) : null;
    fill(toolbar, actions.map(([action, label]) => button(label, () => act(action),
      {"data-action": action, class: action === "delete" || action === "stop" ? "danger" : ""})),
    editFile ? el("a", {class: "button", href: `#/transforms/edit/${enc(editFile)}`, "data-action": "edit"}, "Edit code") : null,
    item.kind !== "transform" ? el("a", {class: "button", href: `#/connectors/edit/${enc(item.name)}`, "data-action": "edit"}, "Edit configuration") : null);
    const again = focused && toolbar.querySelector(`[data-action="${focused}"]`);
    if (again) again.focus();
  }

  function renderOverview() {
    fill(document.getElementById("detail-state"), stateBadge(item.state));
    fill(overview, dl([
      ["State", `${item.state} (desired: ${item.desired || "running"})`],
      ["Reads", item.source || "-"],
      item.target ? ["Writes", item.target] : null,
      ["Consumer group", item.group_id || "-"],
      ["Workers", workersText(item)],
      ["Messages/s in, out", `${fmt(item.rate_in, 1)}, ${fmt(item.rate_out, 1)}`],
      ["Consumed, produced, filtered", `${fmt(item.consumed)}, ${fmt(item.produced)}, ${fmt(item.filtered)}`],
      ["Dead-lettered", `${fmt(item.dead_lettered)} (to ${item.dead_letter_topic || "-"})`],
      ["Lag", el("span", {id: "detail-lag"}, fmt(item.lag))],
      item.version ? ["Version", el("code", {id: "version"}, item.version)] : null,
      item.path ? ["File", el("code", {}, item.path)] : null,
    ]));
    fill(progress, partitionTable(item));
    const history = item.history || {times: [], lag: {}};
    fill(chart, lagChart(key, history.times, history.lag, "Lag per partition, last minutes"));
    const halted = Object.entries(item.halted || {});
    fill(lastError, item.error ? el("p", {class: "error-text", id: "last-error"},
      `Last error${item.error_at ? ` (${fmtTime(item.error_at)})` : ""}: ${item.error}`) :
      el("p", {id: "last-error"}, "No error reported."),
    halted.length ? el("p", {class: "error-text"}, `Halted partitions: ${halted.map(([tp, h]) =>
      `${tp} (${typeof h === "object" && h ? h.reason || JSON.stringify(h) : h})`).join(", ")}`) : null);
    renderToolbar();
  }

  async function loadConfig() {
    try {
      details = await get(`/etl/pipelines/${enc(key)}/config/`);
      fill(config, dl([
        ["Consumer group", details.group_id || "-"],
        details.file ? ["File", el("code", {}, details.file)] : null,
        ["Dead-letter topic", details.dead_letter_topic || "-"],
      ]), el("pre", {class: "config", id: "config-json"}, JSON.stringify(details.config || {}, null, 2)),
      el("p", {class: "hint"}, "Secrets are shown as ***."));
      toolbar.dataset.actions = "";
      renderToolbar();
    } catch (err) {
      fill(config, el("p", {class: "error-text"}, err.message));
    }
  }

  async function loadLetters() {
    try {
      const answer = await get(`/etl/pipelines/${enc(key)}/deadletters/?limit=20`);
      const rows = answer.letters.slice().reverse().map(letterRow).flat();
      fill(letters, el("h3", {}, `Dead letters in ${answer.topic}`),
        el("p", {}, answer.note || `${fmt(answer.matched)} in all; the newest ${fmt(answer.letters.length)} below, newest first.`),
        rows.length ? table(["Time", "Failed message", "Stage", "Reason", "Where", ""], rows, {class: "letters"}) : null,
        button("Refresh dead letters", loadLetters, {}));
    } catch (err) {
      fill(letters, el("p", {class: "error-text"}, err.message), button("Try again", loadLetters, {}));
    }
  }

  async function loadLogs() {
    try {
      const answer = await get(`/etl/pipelines/${enc(key)}/logs/?lines=50`);
      const lines = answer.lines.slice().reverse();
      const bad = lines.filter(l => l.level === "error" || l.level === "warning").slice(0, 5);
      fill(errorLines, bad.length ? [el("h3", {}, "Recent error lines"), logList(bad)] : null);
      fill(logs, el("p", {class: "hint"}, `Worker ${answer.worker}, newest first (every worker keeps its own; \`etl logs ${key}\` shows all).`),
        logList(lines), button("Refresh logs", loadLogs, {}));
    } catch (err) {
      fill(logs, el("p", {class: "error-text"}, err.message));
    }
  }

  async function refresh() {
    if (gone) return;
    try {
      item = await get(`/etl/pipelines/${enc(key)}/`);
      renderOverview();
    } catch (err) {
      if (err.status === 404) {
        showError(`${key} is no longer in the cluster (deleted?).`, problem);
        return;
      }
      showError(err, problem);
    }
  }

  renderOverview();
  await Promise.all([loadConfig(), loadLetters(), loadLogs()]);
  document.body.dataset.loaded = "true";
  const timer = setInterval(refresh, REFRESH_MS);
  clearError();
  return () => clearInterval(timer);
}
