// A finished job's exports on its page: GGUF (llama.cpp / Ollama / LM Studio), merged or adapter; the
// formats and GGUF types this server makes (GET /api/sft/export-formats); each export's status, followed
// until it ends, its files to download, and Delete.

import { api, downloadLink, formatBytes, h } from "./util.js";

const ENDED = new Set(["completed", "failed"]);

/** The Export panel of job ``jobId`` (its API path ``base``). */
export function exportPanel(jobId, base) {
  const format = h("select", { id: "export-format" });
  const type = h("select", { id: "export-type" });
  const hint = h("p", { class: "muted", id: "export-hint" });
  const message = h("p", { id: "export-message", "aria-live": "polite" });
  const rows = h("tbody", {});
  const table = h("table", { id: "exports-table", hidden: true },
    h("thead", {}, h("tr", {}, ...["Format", "Type", "Status", "Size", "Files", ""].map((t) => h("th", {}, t)))), rows);
  const button = h("button", { type: "submit", id: "export-button" }, "Export");
  const following = new Set();
  let formats = null;

  function showTypes() {
    const gguf = format.value === "gguf";
    type.disabled = !gguf;
    type.replaceChildren(...(gguf ? formats.gguf_types : []).map((t) =>
      h("option", { value: t, selected: t === formats.default_gguf_type }, t)));
    const missing = Object.entries(formats.unavailable_gguf_types || {});
    hint.textContent = gguf && missing.length
      ? `Not on this server: ${missing.map(([t, why]) => `${t} (${why})`).join("; ")}` : "";
  }

  function row(record) {
    const done = record.status === "completed";
    const files = done && record.result ? record.result.files.map((file) => downloadLink(
      `${base}/exports/${encodeURIComponent(record.export_id)}/files/${encodeURIComponent(file.name)}`, file.name,
      file.name, { className: "export-file", onError: (text) => { message.textContent = text; } })) : [];
    const remove = h("button", { type: "button", class: "secondary export-delete", disabled: record.status === "running",
      onclick: () => removeExport(record) }, "Delete");
    return h("tr", { "data-export-id": record.export_id },
      h("td", {}, record.format), h("td", {}, record.type || ""),
      h("td", { class: "export-status", title: record.error || "" }, record.status + (record.error ? `: ${record.error}` : "")),
      h("td", {}, formatBytes(record.result && record.result.size_bytes)),
      h("td", {}, ...files.flatMap((link, i) => (i ? [" ", link] : [link]))), h("td", {}, remove));
  }

  function show(record) {
    const old = rows.querySelector(`tr[data-export-id="${CSS.escape(record.export_id)}"]`);
    if (old) old.replaceWith(row(record)); else rows.append(row(record));
    table.hidden = false;
    if (!ENDED.has(record.status)) follow(record.export_id);
  }

  async function follow(exportId) {
    if (following.has(exportId)) return;
    following.add(exportId);
    try {
      for (;;) {
        await new Promise((resolve) => setTimeout(resolve, 1500));
        const record = await api(`${base}/exports/${encodeURIComponent(exportId)}`);
        show(record);
        if (ENDED.has(record.status)) return;
      }
    } catch (error) { message.textContent = `Lost the export's status: ${error.message}`; }
    finally { following.delete(exportId); }
  }

  async function start(event) {
    event.preventDefault();
    message.textContent = "";
    button.disabled = true;
    try {
      const record = await api(`${base}/export`, { method: "POST",
        body: { format: format.value, type: format.value === "gguf" ? type.value : null } });
      message.textContent = `Export ${record.export_id}: ${record.status}`;
      show(record);
    } catch (error) { message.textContent = `Could not export: ${error.message}`; }
    finally { button.disabled = false; }
  }

  async function removeExport(record) {
    try {
      await api(`${base}/exports/${encodeURIComponent(record.export_id)}`, { method: "DELETE" });
      rows.querySelector(`tr[data-export-id="${CSS.escape(record.export_id)}"]`)?.remove();
      table.hidden = !rows.children.length;
    } catch (error) { message.textContent = `Could not delete: ${error.message}`; }
  }

  format.addEventListener("change", showTypes);
  (async () => {
    try {
      formats = await api("/api/sft/export-formats");
      format.replaceChildren(...formats.formats.map((f) => h("option", { value: f }, f)));
      showTypes();
      for (const record of (await api(`${base}/exports`)).exports) show(record);
    } catch (error) { message.textContent = `Exports are not available: ${error.message}`; }
  })();

  return h("div", { id: "export-panel" },
    h("h3", {}, "Export (GGUF for llama.cpp / Ollama / LM Studio, merged, or the adapter)"),
    h("form", { class: "toolbar", onsubmit: start },
      h("div", {}, h("label", { for: "export-format" }, "Format"), format),
      h("div", {}, h("label", { for: "export-type" }, "Type"), type),
      button),
    hint, message, table);
}
