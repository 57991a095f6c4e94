// Forms generated from a pydantic model's JSON schema (template params, connector configs).

import {el, fill, parsePairs} from "./dom.js";

function resolve(schema, root) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return {...((root.$defs || {})[name] || {}), ...schema, $ref: undefined};
  }
  return schema || {};
}

/** How a property is edited: its widget and what it accepts. */
function describe(prop, root) {
  prop = resolve(prop, root);
  let nullable = false;
  let options = [prop];
  if (prop.anyOf) {
    options = prop.anyOf.map(p => resolve(p, root)).filter(p => {
      if (p.type === "null") { nullable = true; return false; }
      return true;
    });
  }
  const types = options.map(p => p.type || (p.enum ? "string" : "object"));
  const one = options.length === 1 ? options[0] : null;
  const base = {nullable, prop, default: prop.default};
  if (one && one.enum) return {...base, widget: "select", choices: one.enum};
  if (one && one.type === "boolean") return {...base, widget: "checkbox"};
  if (one && (one.type === "integer" || one.type === "number")) {
    return {...base, widget: "number", numeric: one.type, min: one.minimum ?? one.exclusiveMinimum, max: one.maximum};
  }
  if (one && one.type === "string") {
    const secret = one.format === "password" || one.writeOnly;
    return {...base, widget: secret ? "secret" : "text", pattern: one.pattern};
  }
  if (one && one.type === "array") {
    const items = resolve(one.items, root);
    if (items.enum) return {...base, widget: "choices", choices: items.enum};
    if (!items.type || items.type === "string" || items.type === "integer") {
      return {...base, widget: "lines", itemType: items.type || "string"};
    }
  }
  if (types.includes("string") && types.includes("array")) return {...base, widget: "lines", orText: true};
  if (one && one.type === "object" && one.additionalProperties &&
      ["string", "integer", "number"].includes(one.additionalProperties.type)) {
    return {...base, widget: "pairs"};
  }
  return {...base, widget: "json"};
}

function hintOf(name, info, required) {
  const parts = [];
  if (info.prop.description) parts.push(info.prop.description);
  if (info.widget === "lines") parts.push(info.orText ? "One per line (one line: a single value)." : "One per line.");
  if (info.widget === "pairs") parts.push("One NAME=VALUE per line.");
  if (info.widget === "json") parts.push("JSON.");
  if (!required && info.default !== undefined && info.default !== null && info.default !== "" &&
      !(Array.isArray(info.default) && !info.default.length) && typeof info.default !== "object") {
    parts.push(`Default: ${info.default}.`);
  }
  if (info.min !== undefined || info.max !== undefined) {
    parts.push(`From ${info.min ?? "-"} to ${info.max ?? "-"}.`);
  }
  return parts.join(" ");
}

/**
 * A form for ``schema``. Returns {node, read, showProblems, clearProblems}.
 * ``read()`` gives only what the user set (values equal to the default are left out),
 * or throws an Error naming the field that does not parse.
 */
export function schemaForm(schema, {values = {}, skip = [], advanced = [], idPrefix = "p", secretsKept = false} = {}) {
  const required = new Set(schema.required || []);
  const props = schema.properties || {};
  const inputs = {};
  const errors = {};
  const main = el("div", {class: "form-grid"});
  const more = el("div", {class: "form-grid"});
  const names = Object.keys(props).filter(n => !skip.includes(n));
  names.sort((a, b) => (required.has(b) ? 1 : 0) - (required.has(a) ? 1 : 0));
  for (const name of names) {
    const info = describe(props[name], schema);
    const id = `${idPrefix}-${name}`;
    const given = values[name];
    let input;
    if (info.widget === "select") {
      const choices = info.choices.map(c => el("option", {value: JSON.stringify(c)}, String(c)));
      if (info.nullable || (!required.has(name) && info.default === undefined)) {
        choices.unshift(el("option", {value: ""}, "(not set)"));
      }
      input = el("select", {id}, choices);
      const current = given !== undefined ? given : info.default;
      input.value = current === undefined || current === null ? "" : JSON.stringify(current);
    } else if (info.widget === "checkbox") {
      input = el("input", {type: "checkbox", id});
      input.checked = Boolean(given !== undefined ? given : info.default);
    } else if (info.widget === "number") {
      input = el("input", {type: "number", id, inputmode: "numeric", step: info.numeric === "integer" ? "1" : "any"});
      if (info.min !== undefined) input.min = info.min;
      if (info.max !== undefined) input.max = info.max;
      const current = given !== undefined ? given : info.default;
      input.value = current === undefined || current === null ? "" : String(current);
    } else if (info.widget === "text" || info.widget === "secret") {
      input = el("input", {
        type: info.widget === "secret" ? "password" : "text", id, spellcheck: "false",
        autocomplete: info.widget === "secret" ? "new-password" : "off",
      });
      const current = given !== undefined ? given : info.default;
      input.value = current === undefined || current === null ? "" : String(current);
      if (info.widget === "secret" && secretsKept) input.placeholder = "unchanged (*** kept)";
    } else if (info.widget === "choices") {
      const chosen = new Set(given || info.default || []);
      input = el("fieldset", {id, class: "choices"}, el("legend", {class: "sr-only"}, name),
        info.choices.map(c => el("label", {class: "choice"},
          el("input", {type: "checkbox", value: c, checked: chosen.has(c)}), ` ${c}`)));
    } else {
      input = el("textarea", {id, rows: info.widget === "json" ? 4 : 3, spellcheck: "false"});
      const current = given !== undefined ? given : info.default;
      if (info.widget === "lines") {
        input.value = current === undefined || current === null ? "" :
          (Array.isArray(current) ? current.join("\n") : String(current));
      } else if (info.widget === "pairs") {
        input.value = Object.entries(current || {}).map(([k, v]) => `${k}=${v}`).join("\n");
      } else {
        input.value = current === undefined || current === null ||
          (typeof current === "object" && !Object.keys(current).length) ? "" : JSON.stringify(current, null, 1);
      }
    }
    input.dataset.field = name;
    const label = el("label", {for: id}, name, required.has(name) ? el("span", {class: "req"}, " (required)") : null);
    const hint = hintOf(name, info, required.has(name));
    const hintNode = hint ? el("p", {class: "hint", id: `${id}-hint`}, hint) : null;
    const errorNode = el("p", {class: "field-error", id: `${id}-error`, hidden: true});
    const described = [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" ");
    if (info.widget !== "choices") input.setAttribute("aria-describedby", described);
    if (required.has(name)) input.setAttribute("aria-required", "true");
    const wrapper = el("div", {class: `field field-${info.widget}`, "data-field-name": name},
      info.widget === "checkbox" ? el("div", {class: "check"}, input, label) : [label, input],
      hintNode, errorNode);
    inputs[name] = {input, info};
    errors[name] = errorNode;
    (advanced.includes(name) ? more : main).append(wrapper);
  }
  const node = el("div", {class: "schema-form"}, main);
  if (more.children.length) {
    node.append(el("details", {class: "more"}, el("summary", {}, "More options"), more));
  }

  function valueOf(name) {
    const {input, info} = inputs[name];
    const dflt = info.default;
    switch (info.widget) {
      case "select": {
        if (input.value === "") return undefined;
        const v = JSON.parse(input.value);
        return v === dflt && !required.has(name) ? undefined : v;
      }
      case "checkbox":
        return input.checked === Boolean(dflt) && !required.has(name) ? undefined : input.checked;
      case "number": {
        if (input.value.trim() === "") return undefined;
        const v = Number(input.value);
        if (Number.isNaN(v)) throw fieldError(name, "expected a number");
        return v === dflt && !required.has(name) ? undefined : v;
      }
      case "text":
      case "secret":
        if (input.value === "") return undefined;
        return input.value === dflt && !required.has(name) ? undefined : input.value;
      case "choices": {
        const picked = [...input.querySelectorAll("input:checked")].map(i => i.value);
        return picked.length ? picked : undefined;
      }
      case "lines": {
        const lines = input.value.split("\n").map(s => s.trim()).filter(Boolean);
        if (!lines.length) return undefined;
        const typed = info.itemType === "integer" ? lines.map(Number) : lines;
        return info.orText && typed.length === 1 ? typed[0] : typed;
      }
      case "pairs": {
        if (!input.value.trim()) return undefined;
        try { return parsePairs(input.value); } catch (err) { throw fieldError(name, err.message); }
      }
      default: {
        if (!input.value.trim()) return undefined;
        try { return JSON.parse(input.value); } catch (err) { throw fieldError(name, `not JSON: ${err.message}`); }
      }
    }
  }

  function fieldError(name, message) {
    const error = new Error(`${name}: ${message}`);
    error.problems = [{field: name, loc: [name], message}];
    return error;
  }

  function read() {
    clearProblems();
    const out = {};
    for (const name of Object.keys(inputs)) {
      const v = valueOf(name);
      if (v !== undefined) out[name] = v;
    }
    return out;
  }

  function clearProblems() {
    for (const [name, node] of Object.entries(errors)) {
      node.hidden = true;
      node.textContent = "";
      inputs[name].input.removeAttribute("aria-invalid");
    }
  }

  /** Put each problem under its field; returns the problems no field took. */
  function showProblems(problems, prefix = []) {
    clearProblems();
    const left = [];
    let first = null;
    for (const problem of problems || []) {
      const loc = (problem.loc || String(problem.field || "").split(".")).slice(prefix.length);
      const name = loc[0];
      if (name && errors[name] && prefix.every((p, i) => (problem.loc || [])[i] === p || !problem.loc)) {
        const node = errors[name];
        node.hidden = false;
        node.textContent = [node.textContent, problem.message].filter(Boolean).join("; ");
        inputs[name].input.setAttribute("aria-invalid", "true");
        const details = node.closest("details");
        if (details) details.open = true;
        first = first || inputs[name].input;
      } else {
        left.push(problem);
      }
    }
    if (first) first.focus();
    return left;
  }

  return {node, read, showProblems, clearProblems, inputs};
}

/** Replace ``container``'s content with a form and return it. */
export function mountForm(container, schema, options) {
  const form = schemaForm(schema, options);
  fill(container, form.node);
  return form;
}
