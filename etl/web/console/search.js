// Message search as a job: conditions, a progress bar, cancel, the matches as they come.

import {enc, get, post} from "./api.js";
import {button, el, field, fill, fmt} from "./dom.js";
import {localTime, messageTable, topicPicker} from "./messages.js";
import {heading, notify, showError} from "./ui.js";

const POLL_MS = 300;

export async function render(main, query, ctx) {
  const params = new URLSearchParams(query || "");
  heading(main, "Search messages");
  const picker = await topicPicker("s-topic", params.get("topic"));
  const partitionInput = el("input", {type: "number", id: "s-partition", min: 0, placeholder: "all"});
  const offsetsInput = el("input", {type: "text", id: "s-offsets", placeholder: "1000-2000, 1000- or -2000", spellcheck: "false"});
  const keysInput = el("textarea", {id: "s-keys", rows: 2, spellcheck: "false", placeholder: "user-1*"});
  const valuesInput = el("textarea", {id: "s-values", rows: 2, spellcheck: "false", placeholder: "disk full"});
  const sinceInput = el("input", {type: "datetime-local", id: "s-since", step: 1});
  const untilInput = el("input", {type: "datetime-local", id: "s-until", step: 1});
  const limitInput = el("input", {type: "number", id: "s-limit", min: 1, max: ctx.info.limits.search, value: 10});
  const problem = el("div", {class: "problem", role: "alert", id: "s-problem"});
  const bar = el("progress", {id: "s-progress", max: 1, value: 0, "aria-label": "Search progress"});
  const status = el("p", {id: "s-status", role: "status"});
  const results = el("div", {id: "s-results"});
  const startButton = el("button", {type: "submit", class: "primary", id: "s-start"}, "Search");
  const cancelButton = button("Cancel", cancel, {id: "s-cancel", disabled: true});
  const progressBox = el("div", {class: "progress-box", hidden: true}, bar, status);
  let job = null;
  let timer = null;
  let announced = null;

  const lines = input => input.value.split("\n").map(s => s.trim()).filter(Boolean);

  function show(answer) {
    job = answer;
    const total = answer.to_scan;
    bar.max = total || 1;
    bar.value = total ? Math.min(answer.scanned, total) : 0;
    const pct = total ? ` (${Math.floor(100 * answer.scanned / total)}%)` : "";
    const what = {
      running: "Searching",
      done: "Done",
      cancelled: "Cancelled",
      failed: "Failed",
    }[answer.state];
    status.dataset.state = answer.state;
    status.dataset.scanned = answer.scanned;
    status.dataset.toScan = total === null ? "" : total;
    status.textContent = `${what}: scanned ${fmt(answer.scanned)} of ${total === null ? "?" : fmt(total)} messages${pct}, ` +
      `${fmt(answer.found)} found in ${fmt(answer.elapsed_s, 1)} s.` +
      (answer.limit_reached ? ` Stopped at the limit of ${answer.limit}: narrow the search or raise the limit.` : "") +
      (answer.error ? ` ${answer.error}` : "");
    fill(results, answer.messages.length ? messageTable(answer.messages, "s-table") :
      answer.state === "running" ? null : el("p", {id: "s-none"}, "No message matches."));
    const running = answer.state === "running";
    cancelButton.disabled = !running;
    startButton.disabled = running;
    if (!running) {
      clearInterval(timer);
      timer = null;
      if (announced === answer.id) return;
      announced = answer.id;
      if (answer.state === "failed") showError(`The search failed: ${answer.error}`, problem);
      else notify(`Search of ${answer.topic} ${answer.state}: ${answer.found} found, ${fmt(answer.scanned)} scanned.`);
    }
  }

  async function poll() {
    if (!job) return;
    try { show(await get(`/etl/searches/${enc(job.id)}/`)); } catch (err) { showError(err, problem); clearInterval(timer); }
  }

  async function start() {
    problem.replaceChildren();
    const topic = picker.input.value.trim();
    if (!topic) { showError("choose a topic", problem); picker.input.focus(); return; }
    const body = {
      topic,
      partition: partitionInput.value === "" ? null : Number(partitionInput.value),
      offsets: offsetsInput.value.trim() || null,
      keys: lines(keysInput), values: lines(valuesInput),
      since: localTime(sinceInput.value) || null, until: localTime(untilInput.value) || null,
      limit: Number(limitInput.value || 10),
    };
    try {
      const answer = await post("/etl/searches/", body);
      progressBox.hidden = false;
      show(answer);
      if (answer.state === "running") timer = setInterval(poll, POLL_MS);
    } catch (err) {
      showError(err, problem);
    }
  }

  async function cancel() {
    if (!job) return;
    try {
      const answer = await post(`/etl/searches/${enc(job.id)}/cancel/`, {});
      notify(`Cancelling the search of ${answer.topic}\u2026`);
      await poll();
    } catch (err) {
      showError(err, problem);
    }
  }

  main.append(picker.list,
    el("form", {class: "search-form", onsubmit: e => { e.preventDefault(); start(); }},
      el("div", {class: "form-grid"},
        field("Topic", picker.input),
        field("Partition (empty: all)", partitionInput),
        field("Offset range", offsetsInput, "Inclusive, in every partition searched."),
        field("Key keywords", keysInput, "One per line; all must occur (phrase, any case). * is any run of characters, ? one character."),
        field("Value keywords", valuesInput, "One per line, as for keys."),
        field("Created from", sinceInput), field("Created until", untilInput),
        field("Most results", limitInput)),
      problem,
      el("div", {class: "toolbar"}, startButton, cancelButton)),
    progressBox, results);
  document.body.dataset.loaded = "true";
  return () => { if (timer) clearInterval(timer); };
}
