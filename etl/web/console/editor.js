// A code editor: a textarea with line numbers; Tab indents (Esc, then Tab, leaves it).

import {el} from "./dom.js";

export function codeEditor({id = "code", label = "Code", value = "", rows = 22} = {}) {
  const gutter = el("pre", {class: "gutter", "aria-hidden": "true"});
  const area = el("textarea", {
    id, class: "code", rows, spellcheck: "false", autocapitalize: "off", autocomplete: "off",
    wrap: "off", "aria-describedby": `${id}-help`,
  });
  area.value = value;
  let escaped = false;
  let marked = null;

  function numbers() {
    const count = area.value.split("\n").length;
    const lines = [];
    for (let i = 1; i <= count; i++) lines.push(i === marked ? `\u25b6${i}` : String(i));
    gutter.textContent = lines.join("\n");
    gutter.scrollTop = area.scrollTop;
  }

  area.addEventListener("input", () => { marked = null; numbers(); });
  area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
  area.addEventListener("keydown", event => {
    if (event.key === "Escape") { escaped = true; return; }
    if (event.key === "Tab" && !escaped && !event.shiftKey && !event.ctrlKey && !event.altKey && !event.metaKey) {
      event.preventDefault();
      const {selectionStart: start, selectionEnd: end} = area;
      area.setRangeText("    ", start, end, "end");
      numbers();
    }
    if (event.key !== "Escape") escaped = false;
  });

  const node = el("div", {class: "editor-field"},
    el("label", {for: id}, label),
    el("div", {class: "editor"}, gutter, area),
    el("p", {class: "hint", id: `${id}-help`},
      "Tab indents; press Esc, then Tab, to move on. Lines are numbered at the left."));
  numbers();

  return {
    node,
    area,
    get value() { return area.value; },
    set value(text) { area.value = text; marked = null; numbers(); },
    /** Point at a line (an error's line): marks the gutter and selects the line. */
    markLine(line) {
      marked = line || null;
      numbers();
      if (!line) return;
      const lines = area.value.split("\n");
      const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
      area.focus();
      area.setSelectionRange(start, start + (lines[line - 1] || "").length);
      const lineHeight = area.scrollHeight / Math.max(lines.length, 1);
      area.scrollTop = Math.max(0, (line - 3) * lineHeight);
    },
  };
}
