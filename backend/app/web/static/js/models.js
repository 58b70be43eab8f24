// Models usable offline (GET /api/sft/models).

import { api, h } from "./util.js";

export function modelsView() {
  const body = h("tbody");
  const message = h("p", { "aria-live": "polite" });
  const element = h("section", { "aria-labelledby": "models-title" },
    h("h2", { id: "models-title" }, "Models"),
    h("p", { class: "muted" }, "What a config's base_model can name without a download."),
    h("table", { id: "models-table" }, h("thead", {}, h("tr", {}, ...["Name", "Kind", "Ready", "Path"].map((t) => h("th", { scope: "col" }, t)))), body),
    message);
  api("/api/sft/models").then((models) => {
    body.replaceChildren(...models.map((m) => h("tr", {},
      h("td", {}, m.name), h("td", {}, m.kind), h("td", {}, m.ready ? "yes" : "after a conversion"), h("td", {}, m.path))));
    if (!models.length) message.textContent = "No models found.";
  }).catch((error) => { message.textContent = `Could not list the models: ${error.message}`; });
  return { element };
}
