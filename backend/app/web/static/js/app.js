// The dashboard: a hash router over the views, and the header's version and job counts.

import { api, apiKey, askForKey, h, statusesReady } from "./util.js";
import { jobsView } from "./jobs.js";
import { jobView } from "./job.js";
import { newJobView } from "./newjob.js";
import { compareView } from "./compare.js";
import { modelsView } from "./models.js";
import { webhooksView } from "./webhooks.js";

const main = document.getElementById("view");
// Tests and the bench read the open job's chart from here.
window.sftDashboard = { chart: null, view: null };
let cleanup = null;

const routes = [
  [/^#\/jobs\/([\w-]+)$/, (m) => jobView(m[1])],
  [/^#\/new(?:\?(.*))?$/, (m) => newJobView(new URLSearchParams(m[1] || ""))],
  [/^#\/compare(?:\?(.*))?$/, (m) => compareView(new URLSearchParams(m[1] || ""))],
  [/^#\/models$/, () => modelsView()],
  [/^#\/webhooks$/, () => webhooksView()],
  [/^#\/jobs(?:\?(.*))?$/, (m) => jobsView(new URLSearchParams(m[1] || ""))],
];

async function route() {
  await statusesReady;
  if (cleanup) { cleanup(); cleanup = null; }
  window.sftDashboard.chart = null;
  const hash = location.hash || "#/jobs";
  const match = routes.map(([re, view]) => [hash.match(re), view]).find(([m]) => m);
  const section = hash.split(/[/?]/)[1];
  for (const link of document.querySelectorAll(".top nav a")) {
    const current = link.getAttribute("href").slice(2) === section;
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  if (!match) {
    main.append(h("h2", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/jobs" }, "Back to the jobs")));
    return;
  }
  const view = match[1](match[0]);
  window.sftDashboard.view = view;
  main.append(view.element);
  cleanup = view.cleanup || null;
  if (document.activeElement === document.body || !document.activeElement) main.focus({ preventScroll: true });
}

async function refreshHeader() {
  try {
    let health = await api("/health");
    // /health is open: without a key it shows no one's jobs. Ask once, then count the user's own.
    if (health.auth === "keys" && !apiKey()) {
      await askForKey("This server needs an API key.");
      health = await api("/health");
    }
    document.getElementById("version").textContent = `version ${health.version}`;
    const running = (health.jobs.running || 0) + (health.jobs.stopping || 0);
    document.getElementById("counts").textContent = `${running} running · ${health.jobs.pending || 0} queued`;
  } catch {
    document.getElementById("counts").textContent = "service unreachable";
  }
}

window.addEventListener("hashchange", route);
// Views that just learned something new about the jobs ask for fresh counts at once.
window.addEventListener("sft:jobs-changed", refreshHeader);
route();
refreshHeader();
setInterval(refreshHeader, 3000);
