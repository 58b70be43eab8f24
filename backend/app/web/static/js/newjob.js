// New job: a form built from the config's JSON schema (default, bounds and meaning as help),
// a pasted YAML/JSON config, or a saved template with overrides; the dataset preview; a 400's
// detail shown beside the field it names; Save as template.

import { planPanel } from "./plan.js";
import { api, h } from "./util.js";
import { parseConfigText } from "./yaml.js";

const BASIC = ["base_model", "dataset_name", "max_steps", "num_train_epochs", "learning_rate",
  "per_device_train_batch_size", "max_length", "use_lora", "lora_r", "save_steps"];

/** The field's own schema without the "or null" branch; ``nullable`` says whether it had one. */
function fieldSchema(schema) {
  if (!schema.anyOf) return { ...schema, nullable: false };
  const branches = schema.anyOf.filter((b) => b.type !== "null");
  const nullable = branches.length < schema.anyOf.length;
  if (branches.length === 1) return { ...schema, ...branches[0], anyOf: undefined, nullable };
  return { ...schema, nullable, complex: true };
}

function helpText(name, schema, required) {
  const parts = [schema.description || ""];
  if (required) parts.push("Required.");
  else if (schema.default === null) parts.push("Default: unset.");
  else if (schema.default !== undefined) parts.push(`Default: ${JSON.stringify(schema.default)}.`);
  const bounds = [];
  if (schema.minimum !== undefined) bounds.push(`≥ ${schema.minimum}`);
  if (schema.exclusiveMinimum !== undefined) bounds.push(`> ${schema.exclusiveMinimum}`);
  if (schema.maximum !== undefined) bounds.push(`≤ ${schema.maximum}`);
  if (schema.exclusiveMaximum !== undefined) bounds.push(`< ${schema.exclusiveMaximum}`);
  if (bounds.length) parts.push(`Bounds: ${bounds.join(", ")}.`);
  if (schema.enum) parts.push(`One of: ${schema.enum.join(", ")}.`);
  return parts.filter(Boolean).join(" ");
}

/** What a JSON-valued field takes, by its schema: an object's shape, a list's allowed items. */
function jsonPlaceholder(schema) {
  if (schema.type === "object") return 'JSON object, e.g. {"prompt": "question", "completion": "answer"}';
  const items = schema.items && schema.items.enum;
  if (items) return `JSON list of ${items.join(", ")}, e.g. ["${items[0]}"]`;
  return 'JSON, e.g. ["q_proj", "v_proj"]';
}

class Field {
  constructor(name, raw, required) {
    this.name = name;
    this.schema = fieldSchema(raw);
    this.required = required;
    const s = this.schema, id = `f-${name}`;
    if (s.type === "boolean" && s.nullable) {  // three states: unset (the server decides), true, false
      this.input = h("select", { id, name }, ...["", "true", "false"].map((v) => h("option", { value: v }, v || "unset")));
    } else if (s.type === "boolean") {
      this.input = h("input", { type: "checkbox", id, name });
    } else if (s.enum) {
      this.input = h("select", { id, name }, ...s.enum.map((v) => h("option", { value: v }, v)));
    } else if (s.type === "integer" || s.type === "number") {
      const min = s.minimum ?? s.exclusiveMinimum, max = s.maximum ?? s.exclusiveMaximum;
      this.input = h("input", { type: "number", id, name, min, max, step: s.type === "integer" ? 1 : "any",
        placeholder: s.nullable ? "unset" : undefined });
    } else if (s.type === "string") {
      this.input = h("input", { type: "text", id, name, size: 48, list: ["base_model", "dataset_name"].includes(name) ? `${name}-options` : undefined,
        placeholder: s.nullable ? "unset" : undefined });
    } else {
      this.input = h("input", { type: "text", id, name, size: 48, placeholder: jsonPlaceholder(s) });
    }
    this.input.setAttribute("aria-describedby", `h-${name} e-${name}`);
    if (required) this.input.required = true;
    this.error = h("p", { class: "field-error", id: `e-${name}`, "data-error-for": name });
    this.element = h("div", { class: "field", "data-field": name },
      h("label", { for: id }, name + (required ? " *" : "")), this.input,
      h("p", { class: "help", id: `h-${name}` }, helpText(name, s, required)), this.error);
    this.reset();
  }

  reset() { this.set(this.schema.default); }

  set(value) {
    const s = this.schema;
    if (s.type === "boolean" && s.nullable) this.input.value = value === null || value === undefined ? "" : String(value);
    else if (s.type === "boolean") this.input.checked = Boolean(value);
    else if (value === undefined || value === null) this.input.value = s.enum ? (s.default ?? s.enum[0]) : "";
    else if (s.complex || s.type === "array" || s.type === "object") this.input.value = typeof value === "string" ? value : JSON.stringify(value);
    else this.input.value = String(value);
  }

  get() {
    const s = this.schema, text = this.input.value;
    if (s.type === "boolean" && s.nullable) return text === "" ? null : text === "true";
    if (s.type === "boolean") return this.input.checked;
    if (s.enum) return text;
    if (text.trim() === "") return null;
    if (s.type === "integer" || s.type === "number") return Number(text);
    if (s.type === "string") return text;
    try { return JSON.parse(text); } catch { return text.trim(); }
  }

  /** The value when it differs from the default (what a config needs to say), else undefined. */
  changed() {
    const value = this.get();
    const fallback = this.schema.default === undefined ? null : this.schema.default;
    if (this.required) return value === null ? undefined : value;
    return JSON.stringify(value) === JSON.stringify(fallback) ? undefined : value;
  }

  showError(message) {
    this.error.textContent = message || "";
    if (message) this.input.setAttribute("aria-invalid", "true"); else this.input.removeAttribute("aria-invalid");
  }
}

/** An API error's problems as [[form field or null, message], ...]: from its structured ``errors``
 * ({field: "config.lora_r", message}), or, from an answer without them, its detail's clauses. */
export function problems(error) {
  if (error && error.errors && error.errors.length) {
    return error.errors.map(({ field, message }) => {
      const match = (field || "").match(/^(?:config\.)?([a-z_]+)/);
      return match ? [match[1], message] : [null, message];
    });
  }
  return splitDetail(error ? error.detail : "");
}

/** "config.lora_r: Input should be ...; config: set max_steps ..." -> [[field or null, message], ...] */
export function splitDetail(detail) {
  if (typeof detail !== "string") return [[null, JSON.stringify(detail)]];
  return detail.split("; ").map((part) => {
    const match = part.match(/^(?:config\.)?([a-z_]+)(?:\.[\w.]+)?: ([\s\S]*)$/);
    return match ? [match[1], match[2]] : [null, part];
  });
}

export function newJobView(params) {
  const fields = new Map();
  let extra = {};              // pasted keys the form has no field for: sent as they are (the server names them)
  let template = null;         // {config_id, name, config} when starting from a saved config
  const form = h("form", { class: "config", id: "job-form", novalidate: true, onsubmit: submit });
  const formError = h("div", { class: "error", id: "form-error", role: "alert" });
  const formMessage = h("p", { id: "form-message", "aria-live": "polite" });
  const templateSelect = h("select", { id: "template-select", onchange: chooseTemplate }, h("option", { value: "" }, "none: fill in the form"));
  const pasteBox = h("textarea", { id: "paste-config", rows: 6, placeholder: "base_model: smollm2-135m-instruct\ndataset_name: bundled:json-extract\nmax_steps: 40" });
  const pasteMessage = h("p", { id: "paste-message", "aria-live": "polite" });
  const templateName = h("input", { id: "template-name", size: 24 });
  const previewOut = h("div", { id: "preview-result", "aria-live": "polite" });
  const modelOptions = h("datalist", { id: "base_model-options" });
  const datasetOptions = h("datalist", { id: "dataset_name-options" }, h("option", { value: "bundled:json-extract" }));
  const basicSet = h("fieldset", {}, h("legend", {}, "Model, data and length"));
  const moreSet = h("details", {}, h("summary", {}, "All other settings"));

  const element = h("section", { "aria-labelledby": "new-title" },
    h("h2", { id: "new-title" }, "New job"),
    h("div", { class: "panel" },
      h("div", { class: "toolbar" },
        h("div", {}, h("label", { for: "template-select" }, "Start from a saved config"), templateSelect),
        h("button", { type: "button", class: "secondary", id: "demo-config", onclick: loadDemo },
          "Fill in the demo (bundled model and data)")),
      h("details", {}, h("summary", {}, "Paste a YAML or JSON config"),
        h("label", { for: "paste-config", class: "visually-hidden" }, "Config as YAML or JSON"), pasteBox,
        h("div", { class: "toolbar" }, h("button", { type: "button", class: "secondary", id: "paste-load", onclick: loadPasted }, "Load into the form")),
        pasteMessage)),
    formError,
    form,
    modelOptions, datasetOptions);

  form.append(basicSet, moreSet,
    h("div", { class: "toolbar" },
      h("button", { type: "submit", id: "submit-job" }, "Start training"),
      h("button", { type: "button", class: "secondary", id: "preview-button", onclick: preview }, "Preview dataset"),
      h("div", {}, h("label", { for: "template-name" }, "Template name"), templateName),
      h("button", { type: "button", class: "secondary", id: "save-template", onclick: saveTemplate }, "Save as template")),
    formMessage, previewOut);
  // The fit planner's estimate of what the form would submit, refreshed as it changes.
  const plan = planPanel(() => requestBody());
  form.append(plan.element);
  form.addEventListener("input", plan.schedule);
  form.addEventListener("change", plan.schedule);

  function clearErrors() {
    formError.replaceChildren();
    for (const field of fields.values()) field.showError("");
  }

  function showError(error) {
    let first = null;
    const general = [];
    for (const [name, message] of problems(error)) {
      const field = name && fields.get(name);
      if (field) {
        field.showError(field.error.textContent ? `${field.error.textContent}; ${message}` : message);
        first = first || field;
      } else general.push(name ? `${name}: ${message}` : message);
    }
    if (general.length) formError.replaceChildren(h("p", {}, general.join("; ")));
    if (first) {
      if (!basicSet.contains(first.element)) moreSet.open = true;
      first.input.focus();
    }
  }

  function collect() {
    const config = {};
    for (const field of fields.values()) {
      const value = field.changed();
      if (value !== undefined) config[field.name] = value;
    }
    return { ...config, ...extra };
  }

  /** Put ``config`` into the form: over the current values, or over the defaults with ``reset``. */
  function fill(config, { reset = true } = {}) {
    if (reset) {
      for (const field of fields.values()) field.reset();
      extra = {};
    }
    for (const [key, value] of Object.entries(config || {})) {
      if (key === "output_dir") continue;
      if (fields.has(key)) fields.get(key).set(value); else extra[key] = value;
    }
    plan.schedule();
    return Object.keys(extra);
  }

  /** What /train (and /plan) get: the form's config, or the template's id with what the form changed. */
  function requestBody() {
    const config = collect();
    if (!template) return { config };
    const overrides = {};
    for (const [key, value] of Object.entries(config)) {
      if (JSON.stringify(template.config[key]) !== JSON.stringify(value)) overrides[key] = value;
    }
    return { config_id: template.config_id, overrides };
  }

  async function submit(event) {
    event.preventDefault();
    clearErrors();
    formMessage.textContent = "Submitting…";
    const body = requestBody();
    try {
      const answer = await api("/api/sft/train", { method: "POST", body });
      formMessage.textContent = `Job ${answer.job_id} is ${answer.status}.`;
      location.hash = `#/jobs/${answer.job_id}`;
    } catch (error) {
      formMessage.textContent = "";
      showError(error);
    }
  }

  async function saveTemplate() {
    clearErrors();
    if (!templateName.value.trim()) { formError.replaceChildren(h("p", {}, "Template name: give the template a name.")); templateName.focus(); return; }
    try {
      const answer = await api("/api/sft/configs", { method: "POST", body: { name: templateName.value.trim(), config: collect() } });
      formMessage.textContent = `Saved as template "${answer.name}" (${answer.config_id}).`;
      loadTemplates();
    } catch (error) { showError(error); }
  }

  let models = [];  // GET /api/sft/models: which bundled models still need their one-time conversion

  async function preview() {
    clearErrors();
    const config = collect();
    const body = { dataset_name: config.dataset_name ?? "", base_model: config.base_model ?? "" };
    for (const key of ["dataset_split", "dataset_format", "column_mapping", "max_length", "completion_only_loss"]) {
      const value = fields.get(key)?.get();
      if (value !== null && value !== undefined) body[key] = value;
    }
    // The first use of a bundled model converts it (tens of seconds): say so, and count the seconds.
    const converting = models.some((m) => m.name === body.base_model && m.kind === "bundled" && !m.ready);
    const waiting = converting
      ? `Converting the bundled model ${body.base_model} into a trainable copy, once (about 20 s on a quiet 2-core CPU, `
        + "a minute or two on a busy one), then reading the dataset…"
      : "Reading the dataset…";
    const note = h("p", { id: "preview-waiting" }, waiting);
    previewOut.replaceChildren(note);
    const started = Date.now();
    const ticker = setInterval(() => { note.textContent = `${waiting} ${Math.round((Date.now() - started) / 1000)} s`; }, 1000);
    try {
      const p = await api("/api/sft/datasets/preview", { method: "POST", body });
      if (converting) models = await api("/api/sft/models").catch(() => models);
      const share = (p.truncated_share * 100).toFixed(1);
      previewOut.replaceChildren(h("section", { class: "panel", "aria-labelledby": "preview-title" },
        h("h3", { id: "preview-title" }, "Dataset preview"),
        h("dl", { class: "grid" },
          h("div", {}, h("dt", {}, "Format"), h("dd", { id: "preview-format" }, p.dataset_format)),
          h("div", {}, h("dt", {}, "Rows"), h("dd", { id: "preview-rows" }, `${p.rows}${p.rows_capped ? "+ (first ones read)" : ""}`)),
          h("div", {}, h("dt", {}, "Tokens: min / median / p95 / max"), h("dd", {}, `${p.token_lengths.min} / ${p.token_lengths.median} / ${p.token_lengths.p95} / ${p.token_lengths.max}`)),
          h("div", {}, h("dt", {}, "Mean tokens"), h("dd", {}, p.token_lengths.mean)),
          h("div", {}, h("dt", {}, `Truncated at max_length ${p.max_length}`), h("dd", { id: "preview-truncated" }, `${p.truncated_rows} rows (${share} %)`))),
        h("p", { class: "muted" }, "Examples as the model sees them; the highlighted part is trained on."),
        ...p.examples.map((example, i) => h("figure", {},
          h("figcaption", {}, `Example ${i + 1} (${example.tokens} tokens)`),
          h("pre", { class: "rendered" }, ...example.segments.map((seg) => seg.trained ? h("mark", {}, seg.text) : seg.text))))));
    } catch (error) {
      previewOut.replaceChildren();
      showError(error);
    } finally { clearInterval(ticker); }
  }

  /** The API's own example of a job (the bundled model on the bundled data), from its OpenAPI document. */
  async function loadDemo() {
    clearErrors();
    templateSelect.value = "";
    template = null;
    try {
      const spec = await api("/openapi.json");
      const example = spec.components.schemas.JobStartRequest.examples.find((e) => e.config);
      fill(example.config);
      formMessage.textContent = "The demo: SmolLM2-135M-Instruct learns to answer with one JSON line (a few minutes on a CPU).";
    } catch (error) { formError.replaceChildren(h("p", {}, `Could not load the demo config: ${error.message}`)); }
  }

  function loadPasted() {
    clearErrors();
    try {
      const config = parseConfigText(pasteBox.value);
      const unknown = fill(config, { reset: false });
      pasteMessage.textContent = `Loaded ${Object.keys(config).length} fields into the form (the others keep their values).` +
        (unknown.length ? ` Not form fields (sent as they are): ${unknown.join(", ")}.` : "");
    } catch (error) {
      pasteMessage.textContent = `Could not read it: ${error.message}`;
    }
  }

  async function chooseTemplate() {
    clearErrors();
    template = null;
    if (!templateSelect.value) { fill({}); return; }
    try {
      template = await api(`/api/sft/configs/${encodeURIComponent(templateSelect.value)}`);
      fill(template.config);
      formMessage.textContent = `Starting from "${template.name}": what you change is sent as overrides.`;
    } catch (error) { formError.replaceChildren(h("p", {}, error.message)); }
  }

  async function loadTemplates() {
    try {
      const configs = await api("/api/sft/configs");
      const chosen = templateSelect.value;
      templateSelect.replaceChildren(h("option", { value: "" }, "none: fill in the form"),
        ...configs.map((c) => h("option", { value: c.config_id, selected: c.config_id === chosen }, c.name)));
    } catch { /* the list stays as it is */ }
  }

  (async () => {
    try {
      const schema = await api("/api/sft/config-schema");
      const required = new Set(schema.required || []);
      const names = Object.keys(schema.properties);
      for (const name of names) fields.set(name, new Field(name, schema.properties[name], required.has(name)));
      basicSet.append(...BASIC.filter((n) => fields.has(n)).map((n) => fields.get(n).element));
      moreSet.append(...names.filter((n) => !BASIC.includes(n)).map((n) => fields.get(n).element));
    } catch (error) {
      formError.replaceChildren(h("p", {}, `Could not load the config schema: ${error.message}`));
      return;
    }
    const from = params.get("from");
    if (from) {
      try { fill((await api(`/api/sft/jobs/${encodeURIComponent(from)}`)).config); formMessage.textContent = `Config copied from job ${from}.`; }
      catch (error) { formError.replaceChildren(h("p", {}, error.message)); }
    }
    loadTemplates();
    api("/api/sft/models").then((found) => {
      models = found;
      modelOptions.replaceChildren(...models.map((m) => h("option", { value: m.name }, m.kind)));
    }).catch(() => {});
  })();
  return { element };
}
