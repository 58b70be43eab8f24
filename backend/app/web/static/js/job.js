// One job: live status and progress, the loss chart fed by the event stream, events, log tail,
// checkpoints, Stop / Resume, the failure, and (once it has an adapter) Try it, download, merge, evaluate.

import { api, authFetch, datasetLabel, downloadLink, h, etaText, formatNumber, formatTime, progressCell, statusBadge, TERMINAL } from "./util.js";
import { LineChart } from "./chart.js";
import { exportPanel } from "./exports.js";
import { memoryItems } from "./plan.js";
import { preferencesPanel } from "./preferences.js";

const EVENT_TYPES = ["created", "queued", "started", "model_loaded", "dataset_ready", "metrics", "eval",
  "checkpoint_saved", "efficiency", "stopping", "resumed", "interrupted", "completed", "failed", "stopped", "message"];
const POLL_MS = 1500;

export function jobView(jobId) {
  // Every id that goes into a path is escaped: a crafted link must not send keyed requests elsewhere.
  const base = `/api/sft/jobs/${encodeURIComponent(jobId)}`;
  let job = null, source = null, lastSeq = 0, closed = false, timer = null;

  const title = h("h2", { id: "job-title" }, `Job ${jobId}`);
  const statusEl = h("p", { id: "job-status", "aria-live": "polite" });
  const actionMessage = h("p", { id: "action-message", class: "muted", "aria-live": "polite" });
  const stopButton = h("button", { id: "stop-button", type: "button", onclick: stop }, "Stop");
  const resumeButton = h("button", { id: "resume-button", type: "button", class: "secondary", onclick: resume }, "Resume");
  const details = h("dl", { class: "grid", id: "job-details" });
  const failure = h("section", { id: "job-failure", class: "panel", hidden: true, "aria-labelledby": "failure-title" });
  const efficiency = h("section", { id: "job-efficiency", class: "panel", hidden: true, "aria-labelledby": "efficiency-title" });
  const canvas = h("canvas", { class: "chart", id: "loss-chart", role: "img", "aria-label": "Loss chart" });
  const chart = new LineChart(canvas, [
    { key: "loss", label: "train loss", color: "--series-1", axis: "left" },
    { key: "eval_loss", label: "eval loss", color: "--series-2", axis: "left", markers: true },
    { key: "learning_rate", label: "learning rate", color: "--series-3", axis: "right", dash: [5, 4] },
  ], { title: "Loss and learning rate" });
  window.sftDashboard.chart = chart;
  // Preference tuning (DPO): the reward margin and accuracy, shown once a job logs them.
  const dpoCanvas = h("canvas", { class: "chart", id: "dpo-chart", role: "img", "aria-label": "DPO reward chart" });
  const dpoChart = new LineChart(dpoCanvas, [
    { key: "rewards/margins", label: "reward margin", color: "--series-4", axis: "left" },
    { key: "rewards/accuracies", label: "reward accuracy", color: "--series-5", axis: "right", dash: [5, 4] },
  ], { title: "DPO reward margin and accuracy" });
  const dpoPanel = h("section", { class: "panel", id: "dpo-panel", hidden: true, "aria-labelledby": "dpo-title" },
    h("h3", { id: "dpo-title" }, "Preference (DPO)"), dpoChart.legend(), h("div", { class: "chart-box" }, dpoCanvas));
  // Grader scores (config.graders): each grader's mean score at every eval, its base (step 0) as a dashed line.
  const graderCanvas = h("canvas", { class: "chart", id: "grader-chart", role: "img", "aria-label": "Grader scores" });
  const graderPanel = h("section", { class: "panel", id: "grader-panel", hidden: true, "aria-labelledby": "grader-title" });
  const baseScores = {};
  let graderChart = null, graderXMax = 0;
  const eventsList = h("ol", { class: "events", id: "events-list", "aria-live": "off" });
  const logBox = h("pre", { class: "log", id: "log-tail", tabindex: "0", "aria-label": "Log tail" });
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const checkpointsBody = h("tbody");
  const tryPanel = h("section", { id: "try-it", class: "panel", hidden: true, "aria-labelledby": "try-title" });

  const element = h("section", { "aria-labelledby": "job-title" },
    h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
    title,
    h("div", { class: "toolbar" }, statusEl, stopButton, resumeButton,
      h("a", { class: "button secondary", href: `#/new?from=${encodeURIComponent(jobId)}` }, "Copy config to a new job"),
      h("a", { class: "button secondary", href: `#/compare?jobs=${encodeURIComponent(jobId)}` }, "Compare")),
    actionMessage,
    details,
    failure,
    efficiency,
    h("section", { class: "panel", "aria-labelledby": "chart-title" },
      h("h3", { id: "chart-title" }, "Loss"), chart.legend(), h("div", { class: "chart-box" }, canvas)),
    dpoPanel,
    graderPanel,
    tryPanel,
    h("div", { class: "cols" },
      h("section", { "aria-labelledby": "events-title" }, h("h3", { id: "events-title" }, "Events"),
        h("p", { class: "muted" }, "Metrics go to the chart."), eventsList),
      h("section", { "aria-labelledby": "log-title" }, h("h3", { id: "log-title" }, "Log"),
        h("p", {}, follow, " ", h("label", { for: "log-follow" }, "Follow the end")), logBox)),
    h("section", { "aria-labelledby": "checkpoints-title" }, h("h3", { id: "checkpoints-title" }, "Checkpoints"),
      h("table", { id: "checkpoints" }, h("thead", {}, h("tr", {}, ...["Step", "Eval loss", "Saved", "Path"].map((t) => h("th", { scope: "col" }, t)))),
        checkpointsBody)));

  // Event stream: read with fetch, not EventSource, so the API key travels in a header (EventSource
  // cannot set one, and a key in the URL would end up in logs). Each event is handled once (by seq);
  // a dropped connection is resumed after the last event seen; after a terminal event the stream
  // ends and we look for more.
  function connect() {
    if (closed) return;
    if (source) source.abort();
    const controller = new AbortController();
    source = controller;
    readStream(controller).catch(() => {}).finally(() => {
      if (source !== controller || controller.signal.aborted) return;
      source = null;
      if (!closed) setTimeout(connect, 2000);
    });
  }

  async function readStream(controller) {
    const response = await authFetch(`${base}/events?after=${lastSeq}`,
      { headers: { Accept: "text/event-stream" }, signal: controller.signal, cache: "no-store" });
    if (!response.ok || !response.body) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done || controller.signal.aborted) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const fields = { event: "message", data: [] };
        for (const line of block.split(/\r?\n/)) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "data") fields.data.push(text); else fields[name] = text;
        }
        if (fields.data.length && EVENT_TYPES.includes(fields.event)) onEvent({ data: fields.data.join("\n") });
        if (controller.signal.aborted) return;
      }
    }
  }

  function onEvent(message) {
    const event = JSON.parse(message.data);
    if (event.seq <= lastSeq) return;
    lastSeq = event.seq;
    const data = event.data || {};
    if (event.type === "metrics" || event.type === "eval") {
      for (const key of ["loss", "eval_loss", "learning_rate"]) if (key in data) chart.add(key, data.step, data[key]);
      if ("rewards/margins" in data) {
        dpoPanel.hidden = false;
        for (const key of ["rewards/margins", "rewards/accuracies"]) if (key in data) dpoChart.add(key, data.step, data[key]);
      }
      addGraderScores(data);
      if (event.type === "metrics") return;
    }
    eventsList.append(h("li", { class: event.level }, h("time", { datetime: event.time }, formatTime(event.time)), " ",
      h("strong", {}, event.type), ": ", event.message));
    eventsList.scrollTop = eventsList.scrollHeight;
    if (event.type === "checkpoint_saved") loadCheckpoints();
    if (TERMINAL.has(event.type)) {
      source.abort();
      source = null;
      afterTerminal();
    }
  }

  function addGraderScores(data) {
    const names = Object.keys(data).filter((key) => key.startsWith("grader_")).map((key) => key.slice(7));
    if (!names.length) return;
    if (!graderChart) {
      graderChart = new LineChart(graderCanvas, names.flatMap((name, i) => [
        { key: `grader_${name}`, label: name, color: `--series-${(i % 5) + 1}`, axis: "left", markers: true },
        { key: `base_${name}`, label: `${name}: base`, color: `--series-${(i % 5) + 1}`, axis: "left", dash: [2, 4] },
      ]), { title: "Grader scores" });
      window.sftDashboard.graderChart = graderChart;
      graderPanel.replaceChildren(h("h3", { id: "grader-title" }, "Grader scores"), graderChart.legend(),
        h("div", { class: "chart-box" }, graderCanvas));
      graderPanel.hidden = false;
    }
    for (const name of names) {
      if (!graderChart.series.some((s) => s.key === `grader_${name}`)) continue;
      graderChart.add(`grader_${name}`, data.step, data[`grader_${name}`]);
      if (data.step === 0) baseScores[name] = data[`grader_${name}`];
    }
    graderXMax = Math.max(graderXMax, data.step);
    drawBaseLines();
  }

  /** The base model's score (step 0) of each grader, across the chart. */
  function drawBaseLines() {
    for (const [name, value] of Object.entries(baseScores)) {
      graderChart.add(`base_${name}`, 0, value);
      graderChart.add(`base_${name}`, Math.max(graderXMax, 1), value);
    }
  }

  async function afterTerminal() {
    await refresh();
    window.dispatchEvent(new Event("sft:jobs-changed"));
    loadLogs();
    loadCheckpoints();
    const more = await api(`${base}/events?after=${lastSeq}&limit=1`);
    if (more.events.length || !TERMINAL.has(job.status)) connect();
  }

  async function refresh() {
    try {
      job = await api(base);
    } catch (error) {
      statusEl.replaceChildren(h("span", { class: "error" }, error.message));
      return;
    }
    render();
  }

  function render() {
    const progress = job.progress || {};
    const metrics = progress.metrics || {};
    const result = job.result || {};
    title.textContent = `Job ${job.job_id.slice(0, 8)}: ${job.config.base_model} on ${datasetLabel(job.config.dataset_name)}`;
    statusEl.replaceChildren("Status: ", statusBadge(job.status),
      job.queue_position ? ` (queue position ${job.queue_position})` : "");
    // The button the job's state calls for is the primary one; an ended job has none.
    const stoppable = ["pending", "running"].includes(job.status), resumable = ["stopped", "failed"].includes(job.status);
    stopButton.disabled = !stoppable;
    stopButton.className = stoppable ? "" : "secondary";
    resumeButton.disabled = !resumable;
    resumeButton.className = resumable ? "" : "secondary";
    // A rate appears with the first logged step: until then a running job is measuring it.
    const rate = (value) => value == null && job.status === "running" ? "measuring…" : formatNumber(value);
    chart.setXMax(progress.max_steps);
    dpoChart.setXMax(progress.max_steps);
    if (graderChart && progress.max_steps) { graderXMax = Math.max(graderXMax, progress.max_steps); graderChart.setXMax(graderXMax); drawBaseLines(); }
    const item = (label, value) => [h("div", {}, h("dt", {}, label), h("dd", {}, value))];
    details.replaceChildren(
      ...item("Progress", progressCell(job, { withEta: false })),
      ...item("Phase", progress.phase || "–"),
      ...item("ETA", etaText(job) ?? "–"),
      ...item("Tokens / s", rate(progress.tokens_per_second)),
      ...item("Samples / s", rate(progress.samples_per_second)),
      ...item("Loss", formatNumber(metrics.loss ?? result.train_loss)),
      ...item("Eval loss", formatNumber(metrics.eval_loss ?? result.eval_loss)),
      ...item("Learning rate", formatNumber(metrics.learning_rate)),
      ...(job.config.method === "dpo" ? [...item("Method", `dpo (beta ${job.config.beta}, ${job.config.loss_type})`),
        ...item("Reward margin", formatNumber(metrics["rewards/margins"])),
        ...item("Reward accuracy", formatNumber(metrics["rewards/accuracies"]))] : []),
      ...item("Base model", job.config.base_model),
      ...item("Dataset", datasetLabel(job.config.dataset_name)),
      ...item("Created", formatTime(job.created_at)),
      ...item("Finished", formatTime(job.completed_at)),
      ...item("Output", job.config.output_dir),
      ...memoryItems(job, item));
    const detail = job.error_detail;
    failure.hidden = job.status !== "failed";
    if (job.status === "failed") {
      failure.replaceChildren(h("h3", { id: "failure-title" }, "Why it failed"),
        h("p", {}, "Category: ", h("strong", { id: "failure-category" }, detail ? detail.category : "unknown")),
        h("p", { class: "error", id: "failure-message" }, detail ? detail.message : job.error),
        h("h4", {}, "Last log lines"),
        h("pre", { class: "log" }, ((detail && detail.log_tail) || []).join("\n")));
    }
    renderEfficiency(result.efficiency);
    const usable = job.status === "completed" || (job.status === "stopped" && result.adapter_path);
    if (usable && tryPanel.hidden) buildTryIt();
    tryPanel.hidden = !usable;
  }

  // How efficiently the job trained (app/sft/efficiency.py), once it has: figures, then hints.
  function renderEfficiency(report) {
    efficiency.hidden = !report;
    if (!report) return;
    const pct = (value) => value == null ? "–" : `${(100 * value).toFixed(1)} %`;
    const mib = report.peak_cuda_reserved_mb ?? report.peak_rss_mb;
    const item = (label, value) => [h("div", {}, h("dt", {}, label), h("dd", {}, value))];
    efficiency.replaceChildren(h("h3", { id: "efficiency-title" }, "How efficiently it trained"),
      h("dl", { class: "grid", id: "efficiency-figures" },
        ...item("Real tokens / s", formatNumber(report.real_tokens_per_s)),
        ...item("Padding", pct(report.padding_share)),
        ...item(`MFU (${report.dtype})`, pct(report.mfu)),
        ...item("Achieved TFLOP/s", formatNumber(report.achieved_tflops)),
        ...item("Peak TFLOP/s", formatNumber(report.peak_tflops)),
        ...item(report.peak_cuda_reserved_mb != null ? "Peak CUDA reserved (MiB)" : "Peak RSS (MiB)", formatNumber(mib))),
      h("p", { class: "muted" }, `Peak: ${report.peak_source || "unknown"}`),
      h("ul", { id: "efficiency-hints" }, ...(report.hints || []).map((hint) => h("li", {}, hint.text))));
  }

  async function stop() {
    stopButton.disabled = true;
    try {
      const answer = await api(`${base}/stop`, { method: "POST" });
      actionMessage.textContent = answer.message;
    } catch (error) {
      actionMessage.textContent = `Could not stop: ${error.message}`;
    }
    refresh();
  }

  async function resume() {
    resumeButton.disabled = true;
    try {
      const answer = await api(`${base}/resume`, { method: "POST" });
      actionMessage.textContent = `Resumed: the job is ${answer.status}`;
    } catch (error) {
      actionMessage.textContent = `Could not resume: ${error.message}`;
    }
    await refresh();
    if (!source) connect();
  }

  async function loadLogs() {
    try {
      const logs = await api(`${base}/logs?tail=200`);
      const text = logs.lines.join("\n");
      if (logBox.textContent !== text) {
        logBox.textContent = text;
        if (follow.checked) logBox.scrollTop = logBox.scrollHeight;
      }
    } catch { /* the next poll tries again */ }
  }

  async function loadCheckpoints() {
    try {
      const answer = await api(`${base}/checkpoints`);
      checkpointsBody.replaceChildren(...answer.checkpoints.map((c) => h("tr", {},
        h("td", {}, c.step), h("td", {}, formatNumber(c.eval_loss)), h("td", {}, formatTime(c.created_at)), h("td", {}, c.path))));
      if (!answer.checkpoints.length) checkpointsBody.append(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "None (set save_steps to keep some).")));
    } catch { /* shown empty */ }
  }

  function buildTryIt() {
    const prompt = h("textarea", { id: "try-prompt", rows: 3 });
    const compare = h("input", { type: "checkbox", id: "try-compare", checked: true });
    const maxTokens = h("input", { type: "number", id: "try-max-tokens", min: 1, max: 2048, value: 64 });
    const tuned = h("div", { class: "answer", id: "tuned-answer", "aria-live": "polite" });
    const baseAnswer = h("div", { class: "answer", id: "base-answer", "aria-live": "polite" });
    const tunedMeta = h("p", { class: "muted", id: "tuned-latency" });
    const baseMeta = h("p", { class: "muted", id: "base-latency" });
    const tryError = h("p", { class: "error", id: "try-error", "aria-live": "assertive" });
    const sendButton = h("button", { type: "submit", id: "try-send" }, "Generate");
    const mergeOut = h("p", { id: "merge-result", "aria-live": "polite" });
    const evalOut = h("div", { id: "evaluate-result", "aria-live": "polite" });
    const evalDataset = h("input", { id: "eval-dataset", value: "bundled:json-extract", size: 30 });
    const evalSplit = h("input", { id: "eval-split", value: "eval", size: 8 });
    const evalSamples = h("input", { id: "eval-samples", type: "number", min: 1, max: 10000, value: 50 });
    const preferences = preferencesPanel(jobId);

    async function send(event) {
      event.preventDefault();
      if (!prompt.value.trim()) { tryError.textContent = "Write a message first."; prompt.focus(); return; }
      tryError.textContent = ""; sendButton.disabled = true;
      tuned.textContent = "…"; baseAnswer.textContent = compare.checked ? "…" : "(not asked)";
      preferences.clear();
      const messages = [{ role: "user", content: prompt.value }];
      try {
        const answer = await api(`${base}/generate`, { method: "POST", body: {
          messages, max_new_tokens: Number(maxTokens.value), compare_base: compare.checked } });
        tuned.textContent = answer.completion;
        tunedMeta.textContent = `${answer.completion_tokens} tokens in ${answer.latency_ms.toFixed(0)} ms`;
        if (answer.base_completion !== null && answer.base_completion !== undefined) {
          baseAnswer.textContent = answer.base_completion;
          baseMeta.textContent = `${answer.base_completion_tokens} tokens in ${answer.base_latency_ms.toFixed(0)} ms`;
        } else baseMeta.textContent = "";
        preferences.offer(messages, answer.completion, answer.base_completion);
      } catch (error) {
        tuned.textContent = ""; baseAnswer.textContent = "";
        tryError.textContent = error.message;
      } finally { sendButton.disabled = false; }
    }

    async function merge() {
      mergeOut.textContent = "Merging…";
      try {
        const answer = await api(`${base}/merge`, { method: "POST" });
        mergeOut.textContent = `Merged model in ${answer.merged_path} (${(answer.size_bytes / 1e6).toFixed(1)} MB)`;
      } catch (error) { mergeOut.textContent = `Could not merge: ${error.message}`; }
    }

    async function evaluate(event) {
      event.preventDefault();
      evalOut.replaceChildren(h("p", {}, "Scoring the base model and the tuned one…"));
      try {
        const answer = await api("/api/sft/evaluate", { method: "POST", body: {
          job_id: jobId, dataset_name: evalDataset.value, split: evalSplit.value, max_samples: Number(evalSamples.value) } });
        evalOut.replaceChildren(h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", {}, "Exact match"), h("th", {}, "Rows"))),
          h("tbody", {},
            h("tr", {}, h("td", {}, "base"), h("td", {}, `${(answer.base.exact_match * 100).toFixed(1)} %`), h("td", {}, answer.base.n)),
            h("tr", {}, h("td", {}, "tuned"), h("td", {}, `${(answer.tuned.exact_match * 100).toFixed(1)} %`), h("td", {}, answer.tuned.n)))),
          missesTable(answer.tuned));
      } catch (error) { evalOut.replaceChildren(h("p", { class: "error" }, error.message)); }
    }

    // The rows the tuned model answered wrong: what it said beside what was expected.
    function missesTable(score) {
      const misses = score.misses || [];
      if (!misses.length) return h("p", { class: "muted" }, "The tuned model answered every row exactly.");
      return h("details", { id: "evaluate-misses" },
        h("summary", {}, `The ${misses.length} row${misses.length === 1 ? "" : "s"} the tuned model missed`),
        h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "Row"), h("th", {}, "Prompt"), h("th", {}, "Expected"), h("th", {}, "Answered"))),
          h("tbody", {}, ...misses.map((miss) => h("tr", {},
            h("td", {}, miss.row + 1), h("td", {}, miss.prompt), h("td", {}, miss.reference), h("td", {}, miss.prediction))))));
    }

    tryPanel.replaceChildren(
      h("h3", { id: "try-title" }, "Try it"),
      h("form", { onsubmit: send },
        h("label", { for: "try-prompt" }, "Your message"), prompt,
        h("div", { class: "toolbar" },
          h("div", {}, h("label", { for: "try-max-tokens" }, "Max new tokens"), maxTokens),
          h("span", {}, compare, " ", h("label", { for: "try-compare" }, "Compare with the base model")),
          sendButton)),
      tryError,
      h("div", { class: "cols" },
        h("div", {}, h("h4", {}, "Fine-tuned"), tuned, tunedMeta),
        h("div", {}, h("h4", {}, "Base model"), baseAnswer, baseMeta)),
      preferences.element,
      h("h3", {}, "Take it away"),
      h("div", { class: "toolbar" },
        downloadLink(`${base}/adapter`, `${jobId}-adapter.tar.gz`, "Download adapter",
          { id: "download-adapter", onError: (text) => { actionMessage.textContent = text; } }),
        h("button", { type: "button", class: "secondary", id: "merge-button", onclick: merge }, "Merge into the base model")),
      mergeOut,
      exportPanel(jobId, base),
      h("h3", {}, "Evaluate (held-out exact match, base vs tuned)"),
      h("form", { class: "toolbar", onsubmit: evaluate },
        h("div", {}, h("label", { for: "eval-dataset" }, "Dataset"), evalDataset),
        h("div", {}, h("label", { for: "eval-split" }, "Split"), evalSplit),
        h("div", {}, h("label", { for: "eval-samples" }, "Rows"), evalSamples),
        h("button", { type: "submit", id: "evaluate-button" }, "Evaluate")),
      evalOut);
  }

  async function poll() {
    if (job && TERMINAL.has(job.status)) return;  // Resume refreshes it
    await refresh();
    loadLogs();
  }

  (async () => {
    await refresh();
    connect();
    loadLogs();
    loadCheckpoints();
    timer = setInterval(poll, POLL_MS);
  })();

  return {
    element,
    cleanup: () => { closed = true; clearInterval(timer); if (source) source.abort(); chart.destroy(); dpoChart.destroy(); if (graderChart) graderChart.destroy(); },
  };
}
