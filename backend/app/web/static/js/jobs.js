// The jobs list: live status and progress, a status filter, pages of 100.

import { api, datasetLabel, h, formatTime, progressCell, statusBadge, STATUSES } from "./util.js";

const PAGE = 100;

export function jobsView(params) {
  const status = params.get("status") || "";
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const body = h("tbody");
  const summary = h("p", { class: "muted", "aria-live": "polite" });
  const filter = h("select", { id: "status-filter", onchange: () => { location.hash = link(filter.value, 0); } },
    h("option", { value: "" }, "all"), ...STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
  const prev = h("button", { class: "secondary", type: "button", onclick: () => { location.hash = link(status, offset - PAGE); } }, "← Newer");
  const next = h("button", { class: "secondary", type: "button", onclick: () => { location.hash = link(status, offset + PAGE); } }, "Older →");
  const element = h("section", { "aria-labelledby": "jobs-title" },
    h("h2", { id: "jobs-title" }, "Jobs"),
    h("div", { class: "toolbar" },
      h("div", {}, h("label", { for: "status-filter" }, "Status"), filter),
      h("a", { class: "button", href: "#/new" }, "New job"),
      h("a", { class: "button secondary", href: "#/compare" }, "Compare runs")),
    h("table", { id: "jobs-table" },
      h("caption", { class: "visually-hidden" }, "Jobs, newest first"),
      h("thead", {}, h("tr", {}, ...["Job", "Status", "Progress", "Base model", "Dataset", "Created"].map((t) => h("th", { scope: "col" }, t)))),
      body),
    h("div", { class: "pager" }, prev, next, summary));

  async function refresh() {
    const query = new URLSearchParams({ limit: PAGE, offset });
    if (status) query.set("status", status);
    try {
      const page = await api(`/api/sft/jobs?${query}`);
      window.dispatchEvent(new Event("sft:jobs-changed"));
      body.replaceChildren(...page.jobs.map((job) => h("tr", { "data-job-id": job.job_id },
        h("td", {}, h("a", { href: `#/jobs/${job.job_id}` }, job.job_id.slice(0, 8))),
        h("td", {}, statusBadge(job.status)),
        h("td", {}, progressCell(job)),
        h("td", {}, job.config.base_model),
        h("td", { title: job.config.dataset_name }, datasetLabel(job.config.dataset_name)),
        h("td", {}, formatTime(job.created_at)))));
      if (!page.jobs.length) body.append(h("tr", {}, h("td", { colspan: 6 }, status ? `No ${status} jobs.` : "No jobs yet: start one with New job.")));
      const end = Math.min(offset + page.jobs.length, page.total);
      summary.textContent = page.total ? `${offset + 1}–${end} of ${page.total}` : "";
      prev.disabled = offset === 0;
      next.disabled = end >= page.total;
    } catch (error) {
      summary.textContent = `Could not load the jobs: ${error.message}`;
    }
  }
  refresh();
  const timer = setInterval(refresh, 2000);
  return { element, cleanup: () => clearInterval(timer) };
}

function link(status, offset) {
  const query = new URLSearchParams();
  if (status) query.set("status", status);
  if (offset > 0) query.set("offset", offset);
  return `#/jobs${query.toString() ? "?" + query : ""}`;
}
