// Small helpers: the API, building elements, formatting.

export class ApiError extends Error {
  /** ``errors``: a 400's or 422's structured problems, [{field, message, type}, ...] (null otherwise). */
  constructor(status, detail, errors = null) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
    this.errors = Array.isArray(errors) ? errors : null;
  }
}

// API keys: asked for once (when /health says keys are on, or a call answers 401), kept for the
// browser tab's session in sessionStorage, and sent as a header on every call, streams included:
// never in a URL, where it would end up in logs and history.
const KEY_STORAGE = "sft-api-key";
let keyPrompt = null;

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

/** The headers that carry the key (none without one). */
export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** Ask for a key in a dialog (one at a time); resolve once one is entered. */
export function askForKey(reason) {
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
    const dialog = h("dialog", { id: "key-dialog", "aria-labelledby": "key-title" },
      h("form", { method: "dialog" },
        h("h2", { id: "key-title" }, "API key"),
        h("p", {}, reason),
        h("p", { class: "muted" }, "It is kept for this tab only. An admin creates keys with: python -m app keys create --name NAME"),
        h("p", {}, h("label", { for: "api-key" }, "Key "), input),
        h("p", {}, h("button", { type: "submit", id: "key-submit" }, "Use this key"))));
    dialog.addEventListener("cancel", (event) => event.preventDefault());
    dialog.addEventListener("close", () => {
      const key = input.value.trim();
      if (!key) { dialog.showModal(); return; }
      sessionStorage.setItem(KEY_STORAGE, key);
      dialog.remove();
      keyPrompt = null;
      resolve(key);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
  return keyPrompt;
}

/** fetch with the key; on a 401, ask for a (new) key and try once more. */
export async function authFetch(path, init = {}) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, { ...init, headers: { ...(init.headers || {}), ...authHeaders() } });
    if (response.status !== 401 || attempt >= 3) return response;
    if (init.signal && init.signal.aborted) return response;
    const refused = apiKey() !== null;
    sessionStorage.removeItem(KEY_STORAGE);
    await askForKey(refused ? "That key was refused (unknown or revoked): enter another." : "This server needs an API key.");
  }
}

/** Call the service's API; resolve to the JSON answer, or throw ApiError with its detail. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await authFetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    const detail = data && data.detail !== undefined ? data.detail : data;
    throw new ApiError(response.status, detail, data && data.errors);
  }
  return data;
}

/** h("div", {class: "x", onclick: f}, child, ...): an element; strings become text. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  seconds = Math.round(seconds);
  const hours = Math.floor(seconds / 3600), minutes = Math.floor((seconds % 3600) / 60), secs = seconds % 60;
  if (hours) return `${hours}h ${minutes}m`;
  if (minutes) return `${minutes}m ${secs}s`;
  return `${secs}s`;
}

export function formatTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function formatNumber(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString();
  return Math.abs(value) < 1e-3 && value !== 0 ? value.toExponential(2) : value.toPrecision(digits);
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}`, "data-status": status }, status);
}

/** A running job's ETA: "estimating…" while training has not made enough steps to tell; null otherwise. */
export function etaText(job) {
  const progress = job.progress || {};
  if (job.status !== "running") return null;
  if (progress.eta_seconds != null) return formatDuration(progress.eta_seconds);
  return progress.phase === "training" ? "estimating…" : null;
}

/** A progress bar with "step / max", and the ETA while running unless ``withEta`` is false. */
export function progressCell(job, { withEta = true } = {}) {
  const progress = job.progress || {};
  const step = progress.current_step ?? 0, max = progress.max_steps ?? 0;
  const label = max ? `${step} / ${max}` : (progress.phase || "–");
  const eta = withEta && etaText(job) ? ` · ETA ${etaText(job)}` : "";
  return h("span", { class: "progress-cell" },
    h("progress", { max: max || 1, value: max ? step : 0, "aria-label": `Progress ${label}` }), " ", label + eta);
}

/** The job statuses, in their order, and the terminal ones: read from the server's OpenAPI document (the
 * status enum of its job model), so the list is written once, on the server. Filled in place once
 * ``statusesReady`` resolves (the router waits for it before it shows a view). */
export const STATUSES = [];
export const TERMINAL = new Set();

async function loadStatuses() {
  try {
    const response = await fetch("/openapi.json");
    if (!response.ok) throw new Error(`/openapi.json answered ${response.status}`);
    const status = (await response.json()).components.schemas.JobStatusResponse.properties.status;
    STATUSES.push(...status.enum);
    for (const name of status["x-terminal"]) TERMINAL.add(name);
  } catch (error) {
    console.error("The job statuses could not be read from /openapi.json:", error);
  }
}

export const statusesReady = loadStatuses();

/** A download link that also works with keys: a plain link cannot carry the key, so with one the file is
 * fetched with it and saved from memory. ``onError(message)`` hears a refused download. */
export function downloadLink(href, filename, label, { id, className = "button", onError = () => {} } = {}) {
  async function save(event) {
    if (!apiKey()) return;
    event.preventDefault();
    const response = await authFetch(href);
    if (!response.ok) { onError(`Download failed: ${response.status}`); return; }
    const url = URL.createObjectURL(await response.blob());
    const anchor = h("a", { href: url, download: filename });
    document.body.append(anchor);
    anchor.click();
    anchor.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }
  return h("a", { class: className, id, href, download: filename, onclick: save }, label);
}

/** Bytes as "1.2 MB". */
export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** How a job's dataset reads in a list: an uploaded file (<data>/files/file-....jsonl on the server) by its
 * file id, as /v1 names it; any other dataset as it was given. */
export function datasetLabel(name) {
  const upload = /(?:^|[\\/])(file-[A-Za-z0-9]+)\.jsonl$/.exec(name || "");
  return upload ? upload[1] : (name ?? "–");
}
