// Small DOM helpers shared by every page (no framework: plain elements).

const SVG_NS = "http://www.w3.org/2000/svg";

/** An element: el("button", {type: "button", onclick: fn}, "text", child, ...). */
export function el(tag, attrs, ...children) {
  const svg = tag.startsWith("svg:");
  const node = svg ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.setAttribute("class", value);
    } else if (name === "dataset") {
      for (const [k, v] of Object.entries(value)) node.dataset[k] = v;
    } else if (!svg && (name === "value" || name === "checked" || name === "disabled" || name === "hidden")) {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of ``node``. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** A number with thousands separators; "-" for none. */
export function fmt(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  return Number(value).toLocaleString("en-US", {maximumFractionDigits: digits});
}

/** Epoch seconds or milliseconds as local "YYYY-MM-DD HH:MM:SS". */
export function fmtTime(value, millis = false) {
  if (value === null || value === undefined) return "-";
  const date = new Date(millis ? value : value * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    (millis ? `.${pad(date.getMilliseconds(), 3)}` : "");
}

/** A byte count as "812 B", "4.1 KB", "2.3 MB". */
export function fmtBytes(size) {
  if (size === null || size === undefined) return "-";
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
  return `${(size / 1024 / 1024).toFixed(1)} MB`;
}

/** A labelled form field: <div class="field"><label for=id>...</label> input hint</div>. */
let fieldCounter = 0;
export function field(label, input, hint) {
  const id = input.id || `f${++fieldCounter}`;
  input.id = id;
  const parts = [el("label", {for: id}, label), input];
  if (hint) {
    const hintId = `${id}-hint`;
    input.setAttribute("aria-describedby", hintId);
    parts.push(el("p", {class: "hint", id: hintId}, hint));
  }
  return el("div", {class: "field"}, parts);
}

/** A <button type=button>. */
export function button(label, onclick, attrs = {}) {
  return el("button", {type: "button", onclick, ...attrs}, label);
}

/** "running" -> a state badge. */
export function stateBadge(state) {
  return el("span", {class: `badge state-${state || "unknown"}`}, state || "unknown");
}

/** A table inside a scrolling wrapper (wide tables scroll on a phone, the page does not). */
export function table(head, rows, attrs = {}) {
  return el("div", {class: "table-wrap"},
    el("table", attrs,
      el("thead", {}, el("tr", {}, head.map(h => el("th", {scope: "col"}, h)))),
      el("tbody", {}, rows)));
}

/** Parse "a=b" lines into an object. */
export function parsePairs(text) {
  const out = {};
  for (const line of String(text || "").split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`"${line}" is not NAME=VALUE`);
    out[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return out;
}
