// Connectors (sinks and sources): a form per type from its config model; validate, then save.

import {ApiError, enc, get, put} from "./api.js";
import {button, el, field, fill} from "./dom.js";
import {schemaForm} from "./forms.js";
import {heading, notify, showError} from "./ui.js";

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const SECRET_MASK = "***";
// Options every sink takes for batching, retries and rejected records: under "More options".
const ADVANCED = ["batch_size", "batch_bytes", "linger_ms", "max_retries", "retry_backoff_ms",
  "retry_backoff_max_ms", "dead_letter_topic", "skip_error", "runtime_error_topic"];

/** Every type of the connectors API with its config model's JSON schema. */
async function pluginTypes() {
  const plugins = await get("/connector-plugins");
  return Promise.all(plugins.map(async p => {
    const answer = await get(`/connector-plugins/${enc(p.class)}/config?kind=${enc(p.type)}`);
    return {kind: p.type, type: p.class, schema: answer.schema};
  }));
}

export function renderNew(main, _arg, ctx) {
  return connectorPage(main, ctx, null);
}

export async function renderEdit(main, name, ctx) {
  let config;
  try {
    config = await get(`/connectors/${enc(name)}/config`);
  } catch (err) {
    heading(main, `Edit connector ${name}`);
    main.append(el("p", {class: "error-text"}, err.status === 404 ?
      `${name} is not a connector of the connectors API (${err.message}); a sink or source of etl.yaml is edited there.` :
      err.message), el("p", {}, el("a", {href: "#/pipelines"}, "Back to the pipelines.")));
    return null;
  }
  return connectorPage(main, ctx, {name, config});
}

/** Kafka Connect's validate answer -> [{field, loc, message}]. */
export function validationProblems(answer) {
  const out = [];
  for (const item of (answer && answer.configs) || []) {
    const value = item.value || {};
    for (const message of value.errors || []) {
      out.push({field: value.name, loc: String(value.name || "").split("."), message});
    }
  }
  return out;
}

async function connectorPage(main, ctx, existing) {
  const editing = Boolean(existing);
  heading(main, editing ? `Edit connector ${existing.name}` : "New connector");
  if (!ctx.canChange()) {
    main.append(el("p", {class: "notice-box"}, "This worker is read-only: connectors cannot be created or changed here."));
    return null;
  }
  const types = (await pluginTypes()).filter(t => t.schema);
  const current = existing ? existing.config : {};
  const typeSelect = el("select", {id: "c-type", disabled: editing},
    types.map(t => el("option", {value: `${t.kind}:${t.type}`}, `${t.kind}: ${t.type}`)));
  if (editing) {
    const kind = current.kind || (types.find(t => t.type === current.type) || {}).kind || "sink";
    typeSelect.value = `${kind}:${current.type}`;
  }
  const nameInput = el("input", {type: "text", id: "c-name", spellcheck: "false", placeholder: "orders-pg",
    value: editing ? existing.name : "", readonly: editing});
  const typeHelp = el("p", {class: "hint", id: "c-type-help"});
  const formBox = el("div", {id: "c-form"});
  const problem = el("div", {class: "problem", role: "alert", id: "c-problem"});
  const out = el("div", {class: "output", id: "c-output", "aria-live": "polite"});
  let form = null;
  let chosen = null;

  function mount() {
    const [kind, type] = typeSelect.value.split(":");
    chosen = types.find(t => t.kind === kind && t.type === type);
    typeHelp.textContent = String(chosen.schema.description || "").split("\n\n")[0].replace(/``/g, "");
    const values = {};
    for (const [k, v] of Object.entries(editing ? current : {})) if (v !== SECRET_MASK) values[k] = v;
    form = schemaForm(chosen.schema, {
      values, skip: ["name", "type", "kind"], advanced: ADVANCED, idPrefix: "cfg", secretsKept: editing,
    });
    fill(formBox, form.node);
  }
  typeSelect.addEventListener("change", mount);
  mount();

  function config() {
    const values = form.read();
    if (editing) {
      // A secret left blank keeps the stored one: the API shows it as *** and takes *** back as "unchanged".
      for (const [k, v] of Object.entries(current)) if (v === SECRET_MASK && !(k in values)) values[k] = SECRET_MASK;
    }
    return {...values, kind: chosen.kind, type: chosen.type};
  }

  async function validate(quiet) {
    problem.replaceChildren();
    let body;
    try { body = config(); } catch (err) { form.showProblems(err.problems || []); showError(err, problem); return false; }
    const name = nameInput.value.trim();
    try {
      const answer = await put(`/connector-plugins/${enc(chosen.type)}/config/validate`, {...body, name});
      const problems = validationProblems(answer);
      const left = form.showProblems(problems.filter(p => p.field !== "name"));
      const nameProblem = problems.find(p => p.field === "name");
      if (answer.error_count) {
        const text = [nameProblem ? `name: ${nameProblem.message}` : null,
          ...left.map(p => `${p.field}: ${p.message}`)].filter(Boolean);
        showError(`${answer.error_count} problem${answer.error_count === 1 ? "" : "s"}: fix the marked fields` +
          (text.length ? ` (${text.join("; ")})` : "") + ".", problem);
        fill(out, el("p", {id: "c-validated", class: "bad"}, `Not valid: ${answer.error_count} problem(s).`));
        return false;
      }
      if (!quiet) {
        fill(out, el("p", {id: "c-validated", class: "ok"}, "Valid: every option checks out."));
        notify(`The ${chosen.kind} ${chosen.type} configuration is valid.`);
      }
      return true;
    } catch (err) {
      showError(err, problem);
      return false;
    }
  }

  async function save() {
    const name = nameInput.value.trim();
    if (!NAME.test(name)) {
      nameInput.setAttribute("aria-invalid", "true");
      showError("Name: letters, digits, '.', '_' or '-' (it names the connector and its pipeline)", problem);
      nameInput.focus();
      return;
    }
    nameInput.removeAttribute("aria-invalid");
    if (!(await validate(true))) return;
    try {
      const answer = await put(`/connectors/${enc(name)}/config`, config());
      const key = `${chosen.kind}:${name}`;
      notify(`${editing ? "Updated" : "Created"} connector ${name} (${chosen.kind} ${chosen.type}); every worker starts it.`);
      fill(out, el("p", {id: "c-saved"}, `Saved connector ${answer && answer.name ? answer.name : name}.`),
        el("p", {id: "c-live", class: "live waiting"}, "Waiting for a worker to run it\u2026"));
      watch(key);
    } catch (err) {
      if (err instanceof ApiError && err.problems.length) form.showProblems(err.problems);
      showError(err, problem);
    }
  }

  function watch(key) {
    const timer = setInterval(async () => {
      const node = document.getElementById("c-live");
      if (!node) { clearInterval(timer); return; }
      try {
        const item = await get(`/etl/pipelines/${enc(key)}/`);
        if (item.state === "running") {
          clearInterval(timer);
          node.className = "live ok";
          fill(node, `Running on ${(item.workers || []).join(", ")}. `, el("a", {href: `#/pipelines/${enc(key)}`}, "Open it"), ".");
        } else if (item.state === "failed") {
          node.className = "live bad";
          node.textContent = `It failed to start: ${item.error}`;
        } else {
          node.textContent = `Waiting for a worker to run it\u2026 (${item.state})`;
        }
      } catch { /* not in the status yet */ }
    }, 800);
  }

  main.append(
    el("div", {class: "form-grid"}, field("Type", typeSelect), field("Name", nameInput)), typeHelp,
    el("h2", {}, "Configuration"), formBox, problem,
    el("div", {class: "toolbar"}, button("Validate", () => validate(false), {id: "c-validate"}),
      button(editing ? "Save changes" : "Create", save, {id: "c-save", class: "primary"})),
    out);
  document.body.dataset.loaded = "true";
  return null;
}
