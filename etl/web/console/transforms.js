// ETL tasks: a transform from a template (its params as a form) or from code; test; save; live.

import {ApiError, enc, get, post, put} from "./api.js";
import {button, el, field, fill, fmt, parsePairs, table} from "./dom.js";
import {schemaForm} from "./forms.js";
import {codeEditor} from "./editor.js";
import {heading, notify, showError} from "./ui.js";

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;

function skeleton(source, target, start) {
  return `SOURCE_TOPIC = ${JSON.stringify(source || "orders")}
TARGET_TOPIC = ${JSON.stringify(target || "orders-clean")}
START_OFFSET = ${JSON.stringify(start || "earliest")}
ON_ERROR = "continue"


def deal_message(message):
    # message: key and value (text or None), topic, partition, offset, timestamp, headers
    message["value"] = message["value"] + "ValueSuffix"
    return message  # a dict is produced; a list fans out; None filters the message out
`;
}

async function topicList() {
  try {
    const answer = await get("/etl/topics/");
    return el("datalist", {id: "topic-list"}, answer.topics.map(t => el("option", {value: t.name}, `${t.partitions} partitions`)));
  } catch {
    return el("datalist", {id: "topic-list"});
  }
}

export function renderNew(main, _arg, ctx) {
  return transformPage(main, ctx, null);
}

export async function renderEdit(main, file, ctx) {
  let loaded;
  try {
    loaded = await get(`/etl/transforms/files/${enc(file)}`);
  } catch (err) {
    heading(main, `Edit ${file}`);
    main.append(el("p", {class: "error-text"}, err.message), el("p", {}, el("a", {href: "#/pipelines"}, "Back to the pipelines.")));
    return null;
  }
  return transformPage(main, ctx, loaded);
}

async function transformPage(main, ctx, loaded) {
  const editing = Boolean(loaded);
  heading(main, editing ? `Edit transform ${loaded.name}` : "New transform");
  if (!ctx.canChange()) {
    main.append(el("p", {class: "notice-box"}, "This worker is read-only: transforms cannot be tested or saved here."));
    if (loaded) main.append(el("pre", {class: "config"}, loaded.text));
    return null;
  }
  const [templates, topics] = await Promise.all([get("/etl/templates/").then(a => a.templates), topicList()]);
  const template0 = loaded && loaded.template ? loaded.template : null;

  // ---- test ----
  const keyInput = el("input", {type: "text", id: "t-key", spellcheck: "false", placeholder: "demo"});
  const valueInput = el("textarea", {id: "t-value", rows: 3, spellcheck: "false", placeholder: '{"key": "test"}'});
  const headersInput = el("textarea", {id: "t-headers", rows: 2, spellcheck: "false", placeholder: "NAME=VALUE, one per line"});
  const samples = el("div", {id: "t-samples"});
  const testOut = el("div", {id: "t-test-output", class: "output", "aria-live": "polite"});
  const problem = el("div", {class: "problem", role: "alert", id: "t-problem"});
  const testProblem = el("div", {class: "problem", role: "alert", id: "t-test-problem"});
  const renderProblem = el("div", {class: "problem", role: "alert", id: "t-render-problem"});
  const saveOut = el("div", {id: "t-save-output", class: "output", "aria-live": "polite"});
  const fileHint = el("p", {class: "hint", id: "t-file-hint"});

  // ---- basics ----
  const nameInput = el("input", {type: "text", id: "t-name", spellcheck: "false", placeholder: "orders_clean",
    value: loaded ? loaded.name : "", readonly: editing});
  const sourceInput = el("input", {type: "text", id: "t-source", list: "topic-list", spellcheck: "false",
    value: template0 ? template0.source_topic || "" : ""});
  const targetInput = el("input", {type: "text", id: "t-target", list: "topic-list", spellcheck: "false",
    value: template0 ? template0.target_topic || "" : ""});
  const startSelect = el("select", {id: "t-start"},
    el("option", {value: "earliest"}, "earliest (all still in the topic)"),
    el("option", {value: "latest"}, "latest (new messages only)"));
  startSelect.value = template0 && template0.start_offset ? template0.start_offset : "earliest";
  const errorSelect = el("select", {id: "t-on-error"},
    el("option", {value: ""}, "as errors.policy"),
    el("option", {value: "continue"}, "continue (dead-letter, go on)"),
    el("option", {value: "stop"}, "stop (halt before it)"));
  errorSelect.value = template0 && template0.on_error ? template0.on_error : "";
  const topicsBox = el("div", {class: "form-grid", id: "t-topics"},
    field("Source topic (required)", sourceInput),
    field("Target topic (required, not the source)", targetInput),
    field("Start offset", startSelect),
    field("On error", errorSelect));

  // ---- mode: template or code ----
  const modeTemplate = el("input", {type: "radio", name: "t-mode", id: "t-mode-template", value: "template"});
  const modeCode = el("input", {type: "radio", name: "t-mode", id: "t-mode-code", value: "code"});
  const templateSelect = el("select", {id: "t-template"}, templates.map(t => el("option", {value: t.name}, t.name)));
  const templateHelp = el("p", {class: "hint", id: "t-template-help"});
  const paramsBox = el("div", {id: "t-params"});
  const templatePane = el("div", {id: "template-pane"},
    field("Template", templateSelect), templateHelp,
    el("h3", {}, "Parameters"), paramsBox,
    renderProblem,
    button("Open as code", openAsCode, {id: "t-open-code", class: "secondary"}),
    el("p", {class: "hint"}, "Open as code: render the template into Python you can edit (saved as .py)."));
  const editor = codeEditor({id: "t-code", label: "deal_message code (Python)",
    value: loaded && loaded.kind === "python" ? loaded.text : skeleton()});
  const codePane = el("div", {id: "code-pane"}, editor.node);
  let form = null;

  function setParams(values) {
    const chosen = templates.find(t => t.name === templateSelect.value) || templates[0];
    templateHelp.textContent = chosen.description;
    form = schemaForm(chosen.schema, {values: values || {}, idPrefix: "param"});
    fill(paramsBox, form.node);
  }
  templateSelect.addEventListener("change", () => setParams({}));
  if (template0 && template0.template) templateSelect.value = template0.template;
  setParams(template0 ? template0.params : {});

  function mode() { return modeCode.checked ? "code" : "template"; }
  function showMode() {
    templatePane.hidden = mode() !== "template";
    topicsBox.hidden = mode() !== "template";
    codePane.hidden = mode() !== "code";
    fileHint.textContent = `Saved as ${fileName() || "NAME"} in ${ctx.info.transforms_dir}` +
      (mode() === "code" ? " (topics and options are set in the code)." : " (a template file; the worker renders it).");
  }
  const startsAsCode = loaded ? loaded.kind === "python" : false;
  modeCode.checked = startsAsCode;
  modeTemplate.checked = !startsAsCode;
  const modeBox = el("fieldset", {class: "choices", id: "t-mode"}, el("legend", {}, "Write it"),
    el("label", {class: "choice"}, modeTemplate, " from a template"),
    el("label", {class: "choice"}, modeCode, " as code"));
  if (editing) modeBox.hidden = true;
  modeBox.addEventListener("change", () => {
    if (mode() === "code" && !editor.value.trim()) editor.value = skeleton(sourceInput.value, targetInput.value, startSelect.value);
    showMode();
  });

  function fileName() {
    if (loaded) return loaded.file;
    const name = nameInput.value.trim();
    return name ? `${name}${mode() === "code" ? ".py" : ".yaml"}` : "";
  }
  nameInput.addEventListener("input", showMode);

  function templateData() {
    return {
      template: templateSelect.value,
      source_topic: sourceInput.value.trim(),
      target_topic: targetInput.value.trim(),
      start_offset: startSelect.value,
      on_error: errorSelect.value || null,
      params: form.read(),
    };
  }

  function sourceBody() {
    return mode() === "code" ? {text: editor.value} : {template: templateData()};
  }

  function showProblems(err, box = problem) {
    const problems = (err && err.problems) || [];
    let left = problems;
    if (mode() === "template" && form) left = form.showProblems(problems, ["params"]);
    for (const input of [sourceInput, targetInput]) input.removeAttribute("aria-invalid");
    for (const p of left) {
      if (p.field === "source_topic") sourceInput.setAttribute("aria-invalid", "true");
      if (p.field === "target_topic") targetInput.setAttribute("aria-invalid", "true");
    }
    const line = problems.map(p => p.line).find(Boolean) || (err && err.body && err.body.line);
    if (mode() === "code" && line) editor.markLine(line);
    showError(err.message + (line ? ` (line ${line} is marked in the editor)` : ""), box);
  }

  async function pickSamples() {
    testProblem.replaceChildren();
    const topic = mode() === "code" ? (editor.value.match(/^SOURCE_TOPIC\s*=\s*["']([^"']+)["']/m) || [])[1] : sourceInput.value.trim();
    if (!topic) { showError("set the source topic first", testProblem); return; }
    try {
      const answer = await get(`/etl/messages/?topic=${enc(topic)}`);
      if (!answer.messages.length) {
        fill(samples, el("p", {}, `${topic} has no messages yet: type a sample, or send one from the Messages page.`));
        return;
      }
      fill(samples, el("p", {}, `The newest messages of ${topic}; choose one:`),
        table(["Partition@offset", "Key", "Value", ""], answer.messages.map(m =>
          el("tr", {}, el("td", {}, `${m.partition}@${m.offset}`), el("td", {class: "mono"}, m.key ?? "(null)"),
            el("td", {class: "mono cut"}, m.value ?? "(null)"),
            el("td", {}, button("Use", () => {
              keyInput.value = m.key ?? "";
              valueInput.value = m.value ?? "";
              headersInput.value = Object.entries(m.headers || {}).map(([k, v]) => `${k}=${v ?? ""}`).join("\n");
              fill(samples, el("p", {class: "hint"}, `Using ${topic} ${m.partition}@${m.offset}${m.truncated ? " (its first 1 KB)" : ""}.`));
              valueInput.focus();
            }, {"aria-label": `Use message ${m.partition}@${m.offset}`, class: "use-sample"})))),
        {class: "samples"}));
      samples.querySelector("button").focus();
    } catch (err) {
      showError(err, testProblem);
    }
  }

  async function runTest() {
    testProblem.replaceChildren();
    testOut.replaceChildren();
    editor.markLine(null);
    let body;
    try {
      body = {...sourceBody(), file: fileName() || null,
        message: {key: keyInput.value === "" ? null : keyInput.value, value: valueInput.value, headers: parsePairs(headersInput.value)}};
    } catch (err) { showProblems(err, testProblem); return; }
    try {
      const answer = await post("/etl/transforms/test/", body);
      if (!answer.ok) {
        if (answer.line && mode() === "code") editor.markLine(answer.line);
        fill(testOut, el("h3", {}, "Test failed"),
          el("p", {class: "error-text", id: "t-test-error"}, answer.error),
          answer.line ? el("p", {}, `Line ${answer.line} is marked in the editor.`) : null);
        return;
      }
      const records = answer.records || [];
      fill(testOut, el("h3", {}, "Test output"),
        el("p", {id: "t-test-summary"}, answer.filtered ? "Filtered out: deal_message returned None (nothing is produced)." :
          `${records.length} record${records.length === 1 ? "" : "s"} to ${answer.target_topic} (${fmt(answer.elapsed_ms, 1)} ms${answer.is_async ? ", async" : ""}):`),
        records.map((r, i) => el("div", {class: "record", "data-record": i},
          el("p", {}, el("strong", {}, "key "), el("code", {class: "out-key"}, r.key ?? "(null)")),
          el("pre", {class: "out-value"}, r.value ?? "(null)"))),
        el("details", {}, el("summary", {}, "What deal_message returned"),
          el("pre", {}, JSON.stringify(answer.output, null, 2))));
    } catch (err) {
      showProblems(err, testProblem);
    }
  }

  async function openAsCode() {
    renderProblem.replaceChildren();
    try {
      const answer = await post("/etl/templates/render/", templateData());
      editor.value = answer.text;
      modeCode.checked = true;
      showMode();
      notify(`Rendered template ${templateSelect.value} into code: edit it, test, then save as ${fileName() || "NAME.py"}.`);
      editor.area.focus();
    } catch (err) {
      showProblems(err, renderProblem);
    }
  }

  let watching = null;
  async function save() {
    problem.replaceChildren();
    const name = loaded ? loaded.name : nameInput.value.trim();
    if (!NAME.test(name)) {
      nameInput.setAttribute("aria-invalid", "true");
      showError("Name: letters, digits, '_' or '-' (it becomes the file name and the pipeline's name)", problem);
      nameInput.focus();
      return;
    }
    nameInput.removeAttribute("aria-invalid");
    let body;
    try { body = {...sourceBody(), create: !editing}; } catch (err) { showProblems(err); return; }
    try {
      const saved = await put(`/etl/transforms/files/${enc(fileName())}`, body);
      notify(`Saved ${saved.path} (version ${saved.version}): ${saved.source_topic} \u2192 ${saved.target_topic}.`);
      fill(saveOut, el("p", {id: "t-saved"}, `Saved ${saved.path}, version `, el("code", {}, saved.version), "."),
        el("p", {id: "t-live", class: "live waiting"}, "Waiting for the worker to load it\u2026"));
      if (!editing) {
        loaded = {file: saved.file, name: saved.name, kind: mode() === "code" ? "python" : "template"};
        nameInput.readOnly = true;
        modeBox.hidden = true;
      }
      watchLive(saved);
    } catch (err) {
      showProblems(err);
    }
  }

  function watchLive(saved) {
    if (watching) clearInterval(watching);
    const started = Date.now();
    const line = () => document.getElementById("t-live");
    const tick = async () => {
      const node = line();
      if (!node) { clearInterval(watching); return; }
      try {
        const item = await get(`/etl/pipelines/${enc(saved.key)}/`);
        const waited = (Date.now() - started) / 1000;
        if (item.version === saved.version && ["running", "paused"].includes(item.state)) {
          clearInterval(watching);
          node.className = "live ok";
          fill(node, `Live: version ${saved.version} is ${item.state} on ${(item.workers || []).join(", ") || "this worker"}. `,
            el("a", {href: `#/pipelines/${enc(saved.key)}`}, "Open the pipeline"), ".");
          notify(`${saved.key} version ${saved.version} is live.`);
        } else if (item.state === "load_error" || (item.error && item.error.includes("reload failed"))) {
          node.className = "live bad";
          node.textContent = `The worker did not take this version: ${item.error}`;
        } else if (item.version && item.version !== saved.version) {
          const logs = await get(`/etl/pipelines/${enc(saved.key)}/logs/?lines=20`);
          const scheduled = logs.lines.some(l => l.message.includes("reload scheduled") &&
            l.message.includes(`version=${saved.version}`));
          if (scheduled) {
            node.textContent = `The worker has loaded version ${saved.version}: it takes over from version ` +
              `${item.version} at the next batch of messages (none has come since).`;
          } else if (waited > 4) {
            node.textContent = `The worker still runs version ${item.version} (${item.state}); an edit takes over ` +
              "at the next batch of messages, a changed topic after a restart of the pipeline.";
          }
        } else {
          node.textContent = `Waiting for the worker to load it\u2026 (${item.state})`;
        }
      } catch (err) {
        if (err.status !== 404) node.textContent = `Cannot read its status: ${err.message}`;
      }
    };
    watching = setInterval(tick, 800);
    tick();
  }

  main.append(topics,
    el("section", {"aria-labelledby": "h-basics"}, el("h2", {id: "h-basics"}, "1. Name and topics"),
      field("Name (file name and pipeline name)", nameInput), fileHint, modeBox, topicsBox),
    el("section", {"aria-labelledby": "h-how"}, el("h2", {id: "h-how"}, "2. What it does"), templatePane, codePane),
    el("section", {"aria-labelledby": "h-test"}, el("h2", {id: "h-test"}, "3. Test on a sample message"),
      el("p", {class: "hint"}, `Runs deal_message once on this worker, as \`etl test-transform\` does (time limit ${ctx.info.transform_timeout_s} s); nothing is produced.`),
      el("div", {class: "form-grid"}, field("Key (empty: null)", keyInput), field("Value", valueInput), field("Headers", headersInput)),
      el("div", {class: "toolbar"}, button("Pick from the source topic", pickSamples, {id: "t-pick"}),
        button("Test", runTest, {id: "t-test", class: "primary"})),
      testProblem, samples, testOut),
    el("section", {"aria-labelledby": "h-save"}, el("h2", {id: "h-save"}, "4. Save"),
      el("p", {class: "hint"}, "Writes the file into the transforms directory; the worker's hot reload starts it, or swaps it in at the next batch."),
      problem,
      el("div", {class: "toolbar"}, button(editing ? "Save changes" : "Save", save, {id: "t-save", class: "primary"})),
      saveOut));
  showMode();
  document.body.dataset.loaded = "true";
  return () => { if (watching) clearInterval(watching); };
}

export {ApiError};
