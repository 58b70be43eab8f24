// Preferences from "Try it": beside the fine-tuned and base answers, pick the better one or write a corrected
// answer; each pick is kept on the server (POST /api/sft/preferences). The panel counts the job's preferences,
// lists them (each with Delete), downloads them as TRL JSONL, and "Train DPO on these N preferences" submits a DPO
// job that starts from this job (POST /api/sft/preferences/train), then opens it.

import { api, downloadLink, h } from "./util.js";

const PREFERENCES = "/api/sft/preferences";

/** The preferences panel of job ``jobId``; ``offer(messages, tuned, base)`` shows the picks for one exchange. */
export function preferencesPanel(jobId) {
  const query = `job_id=${encodeURIComponent(jobId)}`;
  let exchange = null;  // {messages, tuned, base} of the answers on screen, until a pick is kept

  const pickTuned = h("button", { type: "button", id: "pref-pick-tuned", onclick: () => pick("picked_tuned") },
    "Fine-tuned is better");
  const pickBase = h("button", { type: "button", id: "pref-pick-base", class: "secondary",
    onclick: () => pick("picked_base") }, "Base is better");
  const correction = h("textarea", { id: "pref-correction", rows: 3,
    placeholder: "Or write the answer it should have given" });
  const saveCorrection = h("button", { type: "button", id: "pref-save-correction", class: "secondary",
    onclick: () => pick("corrected") }, "Keep my answer");
  const picks = h("div", { id: "pref-picks", hidden: true },
    h("p", {}, "Which answer is better?"),
    h("div", { class: "toolbar" }, pickTuned, pickBase),
    h("label", { for: "pref-correction" }, "Corrected answer (preferred over the fine-tuned one)"), correction,
    h("div", { class: "toolbar" }, saveCorrection));
  const message = h("p", { id: "pref-message", "aria-live": "polite" });
  const count = h("span", { id: "pref-count" }, "0 preferences");
  const steps = h("input", { id: "pref-steps", type: "number", min: 1, max: 100000, size: 6,
    placeholder: "3 epochs" });
  const trainButton = h("button", { type: "button", id: "pref-train", disabled: true, onclick: train },
    "Train DPO on these 0 preferences");
  const list = h("ol", { id: "pref-list" });
  const listBox = h("details", { id: "pref-details" }, h("summary", {}, "Show them"), list);

  function row(preference) {
    const remove = h("button", { type: "button", class: "secondary pref-delete",
      onclick: () => removeOne(preference) }, "Delete");
    return h("li", { "data-preference-id": preference.id },
      h("strong", {}, preference.source.replace("_", " ")), ": ",
      h("span", { class: "pref-prompt" }, preference.prompt[preference.prompt.length - 1].content), " → ",
      h("span", { class: "pref-chosen" }, preference.chosen), " over ",
      h("span", { class: "pref-rejected" }, preference.rejected.trim() ? preference.rejected : "(a blank answer)"),
      " ", remove);
  }

  async function refresh() {
    try {
      const page = await api(`${PREFERENCES}?${query}&limit=1000`);
      const n = page.total;
      count.textContent = `${n} preference${n === 1 ? "" : "s"}`;
      trainButton.textContent = n === 1 ? "Train DPO on this 1 preference" : `Train DPO on these ${n} preferences`;
      trainButton.disabled = n === 0;
      list.replaceChildren(...page.preferences.map(row));
    } catch (error) { message.textContent = `Could not read the preferences: ${error.message}`; }
  }

  // A pick needs two different answers, the preferred one with some text (a blank answer is one to reject).
  function offer(messages, tuned, base) {
    exchange = { messages, tuned, base };
    picks.hidden = false;
    const compared = typeof base === "string" && tuned.trim() !== base.trim();
    pickTuned.disabled = !(compared && tuned.trim());
    pickBase.disabled = !(compared && base.trim());
    saveCorrection.disabled = tuned === "";
    correction.value = "";
    message.textContent = compared ? ""
      : "Compare with the base model to pick between two answers, or write a corrected one.";
  }

  function clear() {
    exchange = null;
    picks.hidden = true;
  }

  async function pick(source) {
    if (!exchange) return;
    const { messages, tuned, base } = exchange;
    const [chosen, rejected] = source === "picked_tuned" ? [tuned, base]
      : source === "picked_base" ? [base, tuned] : [correction.value, tuned];
    if (source === "corrected" && !chosen.trim()) {
      message.textContent = "Write the corrected answer first.";
      correction.focus();
      return;
    }
    try {
      await api(PREFERENCES, { method: "POST", body: { job_id: jobId, prompt: messages, chosen, rejected, source } });
      message.textContent = source === "corrected" ? "Kept your answer over the fine-tuned one."
        : `Kept the ${source === "picked_tuned" ? "fine-tuned" : "base"} answer as the better one.`;
      // One pick per pair of answers: the next Generate offers the next pair.
      pickTuned.disabled = pickBase.disabled = saveCorrection.disabled = true;
      exchange = null;
    } catch (error) { message.textContent = `Could not keep it: ${error.message}`; }
    refresh();
  }

  async function removeOne(preference) {
    try {
      await api(`${PREFERENCES}/${encodeURIComponent(preference.id)}`, { method: "DELETE" });
    } catch (error) { message.textContent = `Could not delete: ${error.message}`; }
    refresh();
  }

  async function train() {
    trainButton.disabled = true;
    const overrides = steps.value ? { max_steps: Number(steps.value) } : null;
    try {
      const started = await api(`${PREFERENCES}/train`, { method: "POST", body: { job_id: jobId, overrides } });
      window.dispatchEvent(new Event("sft:jobs-changed"));
      location.hash = `#/jobs/${encodeURIComponent(started.job_id)}`;
    } catch (error) {
      message.textContent = `Could not start DPO: ${error.message}`;
      trainButton.disabled = false;
    }
  }

  const element = h("section", { id: "preferences", "aria-labelledby": "pref-title" },
    h("h4", { id: "pref-title" }, "Preferences"),
    picks, message,
    h("div", { class: "toolbar" }, count,
      downloadLink(`${PREFERENCES}/download?${query}`, `preferences-${jobId}.jsonl`, "Download JSONL",
        { id: "pref-download", className: "button secondary", onError: (text) => { message.textContent = text; } }),
      h("span", {}, h("label", { for: "pref-steps" }, "DPO steps "), steps),
      trainButton),
    listBox);
  refresh();
  return { element, offer, clear };
}
