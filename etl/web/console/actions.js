// What can be done to a pipeline: pause/resume/restart/stop, reset offsets, delete, send a test message.

import {ApiError, del, enc, get, post} from "./api.js";
import {button, el, field, fill, fmt, parsePairs, table} from "./dom.js";
import {confirmAction, notify, showError} from "./ui.js";

const DONE = {pause: "Pause", resume: "Resume", stop: "Stop", restart: "Restart"};
const EFFECT = {
  pause: "every worker stops fetching within a second; partitions stay assigned",
  resume: "every worker fetches again from the first message not handled",
  stop: "its consumers leave the group on every worker; offsets can be reset now",
  restart: "every worker stops it (committing) and starts it again",
};

/** POST .../ACTION/ and say what happened. */
export async function control(key, action) {
  const answer = await post(`/etl/pipelines/${enc(key)}/${action}/`, {});
  const workers = (answer.workers || []).length;
  notify(`${DONE[action]} sent for ${answer.pipeline}: ${EFFECT[action]} ` +
    `(desired state ${answer.desired || "running"}, ${workers} worker${workers === 1 ? "" : "s"}).`);
  return answer;
}

/** Ask, then stop or restart (pause/resume go at once: they undo each other). */
export async function controlWithConfirm(key, action) {
  if (action === "stop" || action === "restart") {
    const ok = await confirmAction(`${DONE[action]} ${key}?`,
      el("p", {}, `${DONE[action]}: ${EFFECT[action]}.`), DONE[action], action === "stop");
    if (!ok) return null;
  }
  return control(key, action);
}

function partitionRows(partitions) {
  return Object.entries(partitions || {}).map(([tp, row]) =>
    el("tr", {"data-partition": tp},
      el("th", {scope: "row"}, tp),
      el("td", {class: "num before"}, fmt(row.before)),
      el("td", {class: "num after"}, fmt(row.after)),
      el("td", {class: "num"}, `${fmt(row.log_start)}-${fmt(row.end)}`),
      el("td", {class: "num"}, fmt(row.lag_after))));
}

/** The reset dialog: choose a target, preview before/after (dry run), then move. */
export function resetOffsets(key, running) {
  return new Promise(resolve => {
    const choice = (value, label, checked) => el("label", {class: "choice"},
      el("input", {type: "radio", name: "reset-to", value, checked}), ` ${label}`);
    const timeInput = el("input", {type: "text", id: "reset-time", placeholder: "2024-05-20 14:00:00"});
    const offsetsInput = el("textarea", {id: "reset-offsets", rows: 3, placeholder: "0:1500\n1:0"});
    const stopBox = el("input", {type: "checkbox", id: "reset-stop", checked: running});
    const preview = el("div", {class: "preview", "aria-live": "polite"});
    const problem = el("div", {class: "problem", role: "alert"});
    const previewButton = button("Preview", () => run(true), {class: "primary", id: "reset-preview"});
    const resetButton = button("Reset offsets", () => run(false), {class: "danger", id: "reset-apply", disabled: true});
    const box = el("dialog", {class: "modal wide", "aria-labelledby": "reset-title"},
      el("h2", {id: "reset-title"}, `Reset offsets of ${key}`),
      el("fieldset", {class: "choices"}, el("legend", {}, "Move the committed offsets to"),
        choice("earliest", "the log start (earliest)", true), choice("latest", "the end (latest)"),
        choice("time", "a point in time"), choice("offsets", "given offsets")),
      field("Time (local, or ISO 8601, or epoch ms)", timeInput),
      field("Offsets, one PARTITION:OFFSET (or TOPIC:PARTITION:OFFSET) per line", offsetsInput),
      el("div", {class: "check"}, stopBox, el("label", {for: "reset-stop"},
        "Stop the pipeline on every worker first (offsets move only while it runs nowhere)")),
      problem, preview,
      el("div", {class: "actions"}, button("Close", () => box.close(), {id: "reset-close"}),
        previewButton, resetButton));

    function target() {
      const to = box.querySelector("input[name=reset-to]:checked").value;
      if (to === "time") {
        if (!timeInput.value.trim()) throw new Error("enter the time to move to");
        return {to_time: timeInput.value.trim()};
      }
      if (to === "offsets") {
        const specs = offsetsInput.value.split("\n").map(s => s.trim()).filter(Boolean);
        if (!specs.length) throw new Error("enter at least one PARTITION:OFFSET");
        return {to_offsets: specs};
      }
      return {to};
    }

    let previewed = null;
    box.addEventListener("change", () => { resetButton.disabled = true; previewed = null; });
    async function run(dryRun) {
      problem.replaceChildren();
      let body;
      try { body = {...target(), dry_run: dryRun, stop: stopBox.checked}; } catch (err) { showError(err, problem); return; }
      if (!dryRun && JSON.stringify({...body, dry_run: true}) !== previewed) {
        showError("preview this target first", problem);
        return;
      }
      try {
        const answer = await post(`/etl/pipelines/${enc(key)}/offsets/`, body);
        fill(preview,
          el("h3", {}, dryRun ? "Preview (nothing changed yet)" : "Done"),
          table(["Partition", "Before", "After", "Log start-end", "Lag after"], partitionRows(answer.partitions),
            {class: "reset-table", "data-dry-run": String(dryRun)}),
          (answer.notes || []).map(n => el("p", {class: "note"}, n)));
        if (dryRun) {
          previewed = JSON.stringify(body);
          resetButton.disabled = false;
          resetButton.focus();
        } else {
          const moved = Object.entries(answer.partitions || {})
            .filter(([, r]) => r.before !== r.after).map(([tp, r]) => `${tp} ${fmt(r.before)} \u2192 ${fmt(r.after)}`);
          notify(`Offsets of ${key} reset to ${answer.target}: ${answer.changed} partition(s) moved` +
            (moved.length ? ` (${moved.join(", ")})` : "") +
            `. It stays ${answer.desired}: press Resume to start from the new offsets.`);
          resetButton.disabled = true;
          box.close("done");
        }
      } catch (err) {
        const text = err instanceof ApiError && err.status === 409 && !stopBox.checked
          ? `${err.message}. Tick "Stop the pipeline on every worker first".` : err.message;
        showError(text, problem);
      }
    }
    box.addEventListener("close", () => { resolve(box.returnValue); box.remove(); });
    document.body.append(box);
    box.showModal();
    box.querySelector("input[name=reset-to]").focus();
  });
}

/** Delete a transform's file, or a connector (with the purge list); true when deleted. */
export async function deletePipeline(item, details, info) {
  if (item.kind === "transform") {
    const file = fileIn(details && (details.file || details.path), info.transforms_dir);
    if (!file) {
      showError(`${item.key} comes from ${details && (details.file || details.path) || "a file"} outside this ` +
        `worker's transforms directory (${info.transforms_dir}): remove it on the machine that has it.`);
      return false;
    }
    const plan = await del(`/etl/transforms/files/${enc(file)}?dry_run=true`);
    const ok = await confirmAction(`Delete ${item.key}?`, el("div", {},
      el("p", {}, "This removes:"), el("ul", {class: "purge-list"}, plan.would_remove.map(p => el("li", {}, p))),
      el("p", {}, "The worker then stops the transform after committing what it has done.")),
      "Delete", true);
    if (!ok) return false;
    const done = await del(`/etl/transforms/files/${enc(file)}`);
    notify(`Deleted ${done.removed.join(", ")}: the worker stops ${item.key} after committing.`);
    return true;
  }
  const name = item.name;
  let plan;
  try {
    plan = await del(`/connectors/${enc(name)}?purge=true&dry_run=true`);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 409)) {
      showError(`${item.key} cannot be deleted here: ${err.message}.`);
      return false;
    }
    throw err;
  }
  const items = plan.purge || [];
  const purge = el("input", {type: "checkbox", id: "purge-box", checked: items.length > 0});
  const ok = await confirmAction(`Delete connector ${name}?`, el("div", {},
    el("p", {}, "The connector stops on every worker and is removed from the cluster."),
    el("div", {class: "check"}, purge, el("label", {for: "purge-box"}, "Also purge what belongs to it:")),
    el("ul", {class: "purge-list"}, items.length
      ? items.map(p => el("li", {}, `${p.kind} ${p.name}`, el("span", {class: "hint"}, ` (${p.why})`)))
      : el("li", {}, "nothing else belongs to it"))),
  "Delete", true);
  if (!ok) return false;
  const done = await del(`/connectors/${enc(name)}${purge.checked ? "?purge=true" : ""}`);
  const purged = (done && done.purged) || [];
  notify(`Deleted connector ${name}` +
    (purged.length ? `; purged ${purged.map(p => `${p.kind} ${p.name}`).join(", ")}.` : "."));
  return true;
}

/** The file name when ``path`` lies directly in ``directory``. */
export function fileIn(path, directory) {
  if (!path || !directory) return null;
  const at = path.lastIndexOf("/");
  const dir = path.slice(0, at);
  return dir.replace(/\/+$/, "") === directory.replace(/\/+$/, "") ? path.slice(at + 1) : null;
}

/** A dialog that sends one test message to ``topic`` (the documents' "test" action). */
export function sendTestMessage(topic) {
  return new Promise(resolve => {
    const form = sendForm(topic, answer => { box.close("sent"); resolve(answer); });
    const box = el("dialog", {class: "modal", "aria-labelledby": "send-title"},
      el("h2", {id: "send-title"}, `Send a test message to ${topic}`), form.node,
      el("div", {class: "actions"}, button("Close", () => box.close(), {})));
    box.addEventListener("close", () => { box.remove(); resolve(null); });
    document.body.append(box);
    box.showModal();
    form.focus();
  });
}

/** The send form (also on the Messages page). */
export function sendForm(topic, onSent, topics) {
  const topicInput = el("input", {type: "text", id: "send-topic", value: topic || "", list: topics ? "topic-list" : null, spellcheck: "false"});
  const keyInput = el("input", {type: "text", id: "send-key", placeholder: "demo", spellcheck: "false"});
  const valueInput = el("textarea", {id: "send-value", rows: 4, placeholder: '{"key": "test"}', spellcheck: "false"});
  const partitionInput = el("input", {type: "number", id: "send-partition", min: 0, placeholder: "any"});
  const headersInput = el("textarea", {id: "send-headers", rows: 2, placeholder: "NAME=VALUE, one per line", spellcheck: "false"});
  const problem = el("div", {class: "problem", role: "alert"});
  const result = el("p", {class: "result", "aria-live": "polite", id: "send-result"});
  async function send() {
    problem.replaceChildren();
    try {
      const answer = await post("/etl/messages/", {
        topic: topicInput.value.trim(), key: keyInput.value, value: valueInput.value,
        partition: partitionInput.value === "" ? null : Number(partitionInput.value),
        headers: parsePairs(headersInput.value),
      });
      const text = `Sent to ${answer.topic} partition ${answer.partition} at offset ${answer.offset}.`;
      result.textContent = text;
      notify(text);
      if (onSent) onSent(answer);
    } catch (err) {
      showError(err, problem);
    }
  }
  const node = el("form", {class: "send-form", onsubmit: e => { e.preventDefault(); send(); }},
    field("Topic", topicInput),
    field("Key (empty: no key)", keyInput),
    field("Value", valueInput),
    field("Partition (empty: chosen by the key)", partitionInput),
    field("Headers", headersInput),
    problem,
    el("div", {class: "actions"}, el("button", {type: "submit", class: "primary", id: "send-button"}, "Send")),
    result);
  return {node, focus: () => (topic ? keyInput : topicInput).focus()};
}

/** Wait until ``check()`` is true (polling every ``ms``), at most ``timeout`` ms. */
export async function until(check, timeout = 30000, ms = 700) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    try { if (await check()) return true; } catch { /* not there yet */ }
    await new Promise(r => setTimeout(r, ms));
  }
  return false;
}

export {get};
