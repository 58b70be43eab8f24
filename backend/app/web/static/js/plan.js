// The fit planner on the page: the New job form's live estimate (POST /api/sft/plan, debounced) and a job's
// estimated vs measured peak memory. Every text goes through h(), which makes strings text nodes.

import { api, h } from "./util.js";

const TERMS = [["weights_mb", "Weights"], ["gradients_mb", "Gradients"], ["optimizer_mb", "Optimizer"],
  ["activations_mb", "Activations"], ["logits_mb", "Logits"], ["overhead_mb", "Overhead"], ["loading_mb", "Loading"]];

export function mib(value) {
  if (value == null) return "–";
  return value >= 10240 ? `${(value / 1024).toFixed(0)} GiB` : value >= 1024 ? `${(value / 1024).toFixed(1)} GiB`
    : `${value.toFixed(0)} MiB`;
}

/** A panel that re-plans ``body()`` (a /train body) ``delay`` ms after the last ``schedule()``. */
export function planPanel(body, { delay = 500 } = {}) {
  const element = h("div", { class: "panel", id: "plan-panel", "aria-live": "polite" },
    h("p", { class: "muted" }, "Memory estimate: fill in a model and a dataset."));
  let timer = null;
  let asked = 0;

  async function refresh() {
    const request = body();
    const config = request.config || request.overrides || {};
    if (!request.config_id && (!config.base_model || !config.dataset_name)) return;
    const mine = ++asked;
    try {
      const plan = await api("/api/sft/plan", { method: "POST", body: request });
      if (mine === asked) show(plan);
    } catch (error) {
      if (mine === asked) {
        element.replaceChildren(h("h3", {}, "Memory estimate"),
          h("p", { class: "muted", id: "plan-error" }, `No estimate: ${error.message}`));
      }
    }
  }

  function show(plan) {
    const est = plan.estimate;
    const verdict = plan.fits === false ? "Does not fit" : plan.fits ? "Fits" : "Device unknown";
    element.replaceChildren(
      h("h3", {}, "Memory estimate: ", h("span", { id: "plan-verdict", class: plan.fits === false ? "error" : "" }, verdict)),
      h("p", { id: "plan-message" }, plan.message),
      h("table", { class: "plan-terms" },
        h("tbody", {}, ...TERMS.filter(([key]) => est[key]).map(([key, label]) =>
          h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, mib(est[key])))),
        h("tr", {}, h("th", { scope: "row" }, "Peak per worker"), h("td", { id: "plan-total" }, mib(est.total_mb))))),
      h("p", { class: "muted" }, `${est.method}, ${est.precision}, ${est.strategy} over ${est.num_workers} worker(s), `
        + `${est.tokens_per_batch.toLocaleString()} tokens per batch, ${(est.params / 1e9).toFixed(2)} B parameters`));
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, delay);
  }
  return { element, schedule };
}

/** A job's estimated (at submit) vs measured peak memory, as definition-list items; none without a plan. */
export function memoryItems(job, item) {
  const memory = job.memory;
  if (!memory) return [];
  const measured = memory.measured_peak_mb == null ? "–"
    : `${mib(memory.measured_peak_mb)} (${memory.measured_from}; estimate ${memory.error >= 0 ? "+" : ""}`
      + `${(memory.error * 100).toFixed(0)} %)`;
  return [...item("Peak memory, estimated", mib(memory.estimated_peak_mb)), ...item("Peak memory, measured", measured)];
}
