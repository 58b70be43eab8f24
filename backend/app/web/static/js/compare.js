// Compare runs: up to five jobs' loss curves overlaid, their differing config fields, final metrics.

import { api, datasetLabel, h, formatNumber, formatTime, statusBadge } from "./util.js";
import { LineChart } from "./chart.js";

const MAX = 5;
const COLORS = ["--series-1", "--series-2", "--series-3", "--series-4", "--series-5"];

export function compareView(params) {
  const chosen = new Set((params.get("jobs") || "").split(",").filter(Boolean).slice(0, MAX));
  const picker = h("tbody");
  const message = h("p", { id: "compare-message", "aria-live": "polite" });
  const result = h("div", { id: "compare-result" });
  let chart = null;

  const element = h("section", { "aria-labelledby": "compare-title" },
    h("h2", { id: "compare-title" }, "Compare runs"),
    h("p", { class: "muted" }, `Pick up to ${MAX} jobs.`),
    h("table", { id: "compare-picker" },
      h("thead", {}, h("tr", {}, ...["Compare", "Job", "Status", "Base model", "Dataset", "Created"].map((t) => h("th", { scope: "col" }, t)))),
      picker),
    h("div", { class: "toolbar" }, h("button", { type: "button", id: "compare-button", onclick: () => { location.hash = `#/compare?jobs=${[...chosen].join(",")}`; } }, "Compare")),
    message, result);

  async function loadPicker() {
    const page = await api("/api/sft/jobs?limit=100");
    picker.replaceChildren(...page.jobs.map((job) => {
      const box = h("input", { type: "checkbox", id: `pick-${job.job_id}`, checked: chosen.has(job.job_id),
        onchange: () => {
          if (box.checked && chosen.size >= MAX) { box.checked = false; message.textContent = `At most ${MAX} jobs.`; return; }
          if (box.checked) chosen.add(job.job_id); else chosen.delete(job.job_id);
          message.textContent = `${chosen.size} chosen.`;
        } });
      return h("tr", {},
        h("td", {}, box, h("label", { for: `pick-${job.job_id}`, class: "visually-hidden" }, `Compare job ${job.job_id}`)),
        h("td", {}, h("a", { href: `#/jobs/${job.job_id}` }, job.job_id.slice(0, 8))),
        h("td", {}, statusBadge(job.status)), h("td", {}, job.config.base_model), h("td", { title: job.config.dataset_name }, datasetLabel(job.config.dataset_name)),
        h("td", {}, formatTime(job.created_at)));
    }));
  }

  async function showComparison() {
    if (!chosen.size) return;
    const ids = [...chosen];
    const jobs = await Promise.all(ids.map((id) => api(`/api/sft/jobs/${encodeURIComponent(id)}`)));
    const metrics = await Promise.all(ids.map((id) => api(`/api/sft/jobs/${encodeURIComponent(id)}/metrics`)));
    const canvas = h("canvas", { class: "chart", id: "compare-chart", role: "img", "aria-label": "Loss curves" });
    chart = new LineChart(canvas, jobs.map((job, i) => ({ key: job.job_id, label: `${job.job_id.slice(0, 8)} train loss`, color: COLORS[i], axis: "left" })),
      { title: "Train loss of the compared jobs" });
    window.sftDashboard.chart = chart;
    metrics.forEach((answer, i) => {
      for (const point of answer.metrics) if (point.loss !== undefined) chart.add(jobs[i].job_id, point.step, point.loss);
    });
    const keys = [...new Set(jobs.flatMap((job) => Object.keys(job.config)))].filter((k) => k !== "output_dir").sort();
    const differing = keys.filter((k) => new Set(jobs.map((job) => JSON.stringify(job.config[k]))).size > 1);
    const header = h("tr", {}, h("th", { scope: "col" }, "Field"), ...jobs.map((job) => h("th", { scope: "col" }, job.job_id.slice(0, 8))));
    const row = (label, values) => h("tr", {}, h("th", { scope: "row" }, label), ...values.map((v) => h("td", {}, v)));
    result.replaceChildren(
      h("section", { class: "panel", "aria-labelledby": "overlay-title" }, h("h3", { id: "overlay-title" }, "Loss curves"), chart.legend(), canvas),
      h("h3", {}, "Config fields that differ"),
      differing.length
        ? h("table", { id: "compare-config" }, h("thead", {}, header.cloneNode(true)),
          h("tbody", {}, ...differing.map((k) => row(k, jobs.map((job) => job.config[k] === undefined ? "(default)" : JSON.stringify(job.config[k]))))))
        : h("p", {}, "The configs are the same."),
      h("h3", {}, "Final metrics"),
      h("table", { id: "compare-metrics" }, h("thead", {}, header.cloneNode(true)), h("tbody", {},
        row("status", jobs.map((job) => job.status)),
        row("steps", jobs.map((job) => formatNumber(job.result?.global_step ?? job.progress?.current_step))),
        row("train loss", jobs.map((job) => formatNumber(job.result?.train_loss))),
        row("last logged loss", jobs.map((job) => formatNumber(job.progress?.metrics?.loss))),
        row("eval loss", jobs.map((job) => formatNumber(job.result?.eval_loss ?? job.progress?.metrics?.eval_loss))),
        row("runtime (s)", jobs.map((job) => formatNumber(job.result?.train_runtime))),
        ...graderRows(jobs, metrics, row))));
  }

  /** One row per grader any job has: its base score (step 0) → its last score, and the checkpoint kept. */
  function graderRows(jobs, metrics, row) {
    const names = [...new Set(metrics.flatMap((answer) => answer.metrics.flatMap((point) => Object.keys(point))))]
      .filter((key) => key.startsWith("grader_")).sort();
    return names.map((key) => row(`grader ${key.slice(7)} (base → last)`, metrics.map((answer, i) => {
      const points = answer.metrics.filter((point) => point[key] !== undefined);
      if (!points.length) return "–";
      const base = points.find((point) => point.step === 0), last = points[points.length - 1];
      const kept = jobs[i].result?.graders?.kept;
      return `${base ? formatNumber(base[key]) : "–"} → ${formatNumber(last[key])} (step ${last.step})` +
        (kept && `grader_${kept.metric}` === key ? `, kept step ${kept.step}` : "");
    })));
  }

  loadPicker().catch((error) => { message.textContent = `Could not load the jobs: ${error.message}`; });
  showComparison().catch((error) => { message.textContent = `Could not compare: ${error.message}`; });
  return { element, cleanup: () => chart && chart.destroy() };
}
