// Messages: query by offset or time (at most 10, cut at 1 KB, whole value as a download); send one.

import {enc, get} from "./api.js";
import {button, el, field, fill, fmt, fmtBytes, table} from "./dom.js";
import {sendForm} from "./actions.js";
import {heading, showError} from "./ui.js";

export function downloadLink(m, part) {
  const size = part === "key" ? m.key_size : m.value_size;
  if (size === null || size === undefined) return null;
  return el("a", {
    href: `/etl/messages/raw/?topic=${enc(m.topic)}&partition=${m.partition}&offset=${m.offset}&part=${part}`,
    download: `${m.topic}-${m.partition}-${m.offset}.${part}`, class: `download-${part}`,
    "aria-label": `Download the ${part} of ${m.partition}@${m.offset} (${fmtBytes(size)})`,
  }, `${part} (${fmtBytes(size)})`);
}

function cell(text, size, cut) {
  if (text === null || text === undefined) return el("td", {class: "mono null"}, "(null)");
  return el("td", {class: "mono cut"}, el("span", {class: "text"}, text),
    cut && size > 1024 ? el("span", {class: "cut-note"}, ` \u2026 first 1 KB of ${fmtBytes(size)}`) : null);
}

/** The result table of a query or a search. */
export function messageTable(messages, id) {
  return table(["Partition", "Offset", "Created", "Key", "Value", "Download"], messages.map(m =>
    el("tr", {"data-offset": m.offset, "data-partition": m.partition},
      el("td", {class: "num"}, m.partition), el("td", {class: "num"}, fmt(m.offset)), el("td", {}, m.time),
      cell(m.key, m.key_size, m.truncated), cell(m.value, m.value_size, m.truncated),
      el("td", {class: "downloads"}, downloadLink(m, "key"), " ", downloadLink(m, "value")))),
  {class: "messages", id});
}

export async function topicPicker(id, value) {
  const input = el("input", {type: "text", id, list: `${id}-list`, spellcheck: "false", value: value || "", autocomplete: "off"});
  const list = el("datalist", {id: `${id}-list`});
  const partitions = {};
  try {
    const answer = await get("/etl/topics/");
    for (const t of answer.topics) {
      partitions[t.name] = t.partitions;
      list.append(el("option", {value: t.name}, `${t.partitions} partition${t.partitions === 1 ? "" : "s"}`));
    }
  } catch { /* typed by hand then */ }
  return {input, list, partitions};
}

/** ``datetime-local`` value -> "YYYY-MM-DD HH:MM:SS" (local time, as the API reads it). */
export function localTime(value) {
  if (!value) return "";
  const [date, time] = value.split("T");
  return `${date} ${time.length === 5 ? `${time}:00` : time}`;
}

export async function render(main, query, ctx) {
  const params = new URLSearchParams(query || "");
  heading(main, "Messages");
  const picker = await topicPicker("q-topic", params.get("topic"));
  const modeSelect = el("select", {id: "q-mode"},
    el("option", {value: "newest"}, "the newest messages"),
    el("option", {value: "offset"}, "from an offset (one partition)"),
    el("option", {value: "time"}, "from a point in time"));
  const partitionInput = el("input", {type: "number", id: "q-partition", min: 0, placeholder: "all"});
  const offsetInput = el("input", {type: "number", id: "q-offset", min: 0, placeholder: "0"});
  const timeInput = el("input", {type: "datetime-local", id: "q-time", step: 1});
  const offsetField = field("Offset", offsetInput);
  const timeField = field("Time (this browser's time zone)", timeInput);
  const problem = el("div", {class: "problem", role: "alert", id: "q-problem"});
  const results = el("div", {id: "q-results", "aria-live": "polite"});
  const showMode = () => {
    offsetField.hidden = modeSelect.value !== "offset";
    timeField.hidden = modeSelect.value !== "time";
  };
  modeSelect.addEventListener("change", showMode);

  async function run() {
    problem.replaceChildren();
    const topic = picker.input.value.trim();
    if (!topic) { showError("choose a topic", problem); picker.input.focus(); return; }
    const args = new URLSearchParams({topic});
    if (partitionInput.value !== "") args.set("partition", partitionInput.value);
    if (modeSelect.value === "offset") {
      if (partitionInput.value === "") { showError("a query by offset needs the partition", problem); partitionInput.focus(); return; }
      args.set("offset", offsetInput.value || "0");
    }
    if (modeSelect.value === "time") {
      if (!timeInput.value) { showError("choose the time to start from", problem); timeInput.focus(); return; }
      args.set("time", localTime(timeInput.value));
    }
    fill(results, el("p", {}, "Reading\u2026"));
    try {
      const answer = await get(`/etl/messages/?${args}`);
      const ranges = Object.entries(answer.partitions || {}).map(([p, r]) => `${p}: ${fmt(r.begin)}-${fmt(r.end)}`).join(", ");
      fill(results,
        el("p", {id: "q-summary"}, `${answer.messages.length} message${answer.messages.length === 1 ? "" : "s"} of ${topic}` +
          ` (at most ${answer.limit}; keys and values cut at 1 KB, download for the whole).` +
          (ranges ? ` Offsets per partition: ${ranges}.` : "")),
        (answer.notes || []).map(n => el("p", {class: "note"}, n)),
        answer.messages.length ? messageTable(answer.messages, "q-table") : null);
    } catch (err) {
      results.replaceChildren();
      showError(err, problem);
    }
  }

  const send = sendForm(params.get("topic") || "", null, true);
  main.append(picker.list,
    el("section", {"aria-labelledby": "h-query"}, el("h2", {id: "h-query"}, "Query"),
      el("form", {class: "query-form", onsubmit: e => { e.preventDefault(); run(); }},
        el("div", {class: "form-grid"},
          field("Topic", picker.input), field("Show", modeSelect),
          field("Partition (empty: all)", partitionInput), offsetField, timeField),
        problem,
        el("div", {class: "toolbar"}, el("button", {type: "submit", class: "primary", id: "q-run"}, "Query"))),
      results),
    ctx.canChange() ? el("section", {"aria-labelledby": "h-send"}, el("h2", {id: "h-send"}, "Send a test message"), send.node) : null,
    el("p", {}, "Looking for a message by its content? ", el("a", {href: "#/search"}, "Search")));
  showMode();
  document.body.dataset.loaded = "true";
  if (params.get("topic")) await run();
  return null;
}

export {button};
