// Webhooks (#/webhooks): register an endpoint (its secret shown once), list them, delete one, and each one's
// deliveries with every attempt (status, latency, error) and a Redeliver button. The event types come from the
// server's OpenAPI document (the WebhookEventType enum), so they are written once, on the server.

import { api, formatTime, h } from "./util.js";

async function eventTypes() {
  const response = await fetch("/openapi.json");
  if (!response.ok) throw new Error(`/openapi.json answered ${response.status}`);
  return (await response.json()).components.schemas.WebhookEventType.enum;
}

const JOB_ENDS = new Set(["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]);

export function webhooksView() {
  const url = h("input", { id: "webhook-url", type: "url", required: true, placeholder: "https://example.com/hooks/sft", size: 50 });
  const description = h("input", { id: "webhook-description", maxlength: 200 });
  const events = h("fieldset", { id: "webhook-events" }, h("legend", {}, "Events"));
  const message = h("p", { id: "webhook-message", "aria-live": "polite" });
  const secret = h("p", { id: "webhook-secret", hidden: true });
  const rows = h("tbody", {});
  const deliveries = h("section", { id: "webhook-deliveries", hidden: true });
  let timer = null;

  function row(endpoint) {
    return h("tr", { "data-webhook-id": endpoint.id },
      h("td", {}, endpoint.id), h("td", {}, endpoint.url), h("td", {}, endpoint.events.join(", ")),
      h("td", {}, endpoint.scope), h("td", {}, formatTime(endpoint.created_at)),
      h("td", {},
        h("button", { type: "button", class: "secondary webhook-deliveries", onclick: () => showDeliveries(endpoint) }, "Deliveries"),
        " ",
        h("button", { type: "button", class: "secondary webhook-delete", onclick: () => remove(endpoint) }, "Delete")));
  }

  async function refresh() {
    const { webhooks } = await api("/api/webhooks");
    rows.replaceChildren(...webhooks.map(row));
    if (!webhooks.length) rows.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No webhooks yet.")));
  }

  function attemptText(attempt) {
    const parts = [attempt.status_code ?? "no answer", attempt.error, attempt.latency_ms != null ? `${Math.round(attempt.latency_ms)} ms` : null];
    return `#${attempt.attempt} ${formatTime(attempt.started_at)}: ${parts.filter((p) => p !== null && p !== undefined).join(" · ")}`;
  }

  async function showDeliveries(endpoint) {
    clearTimeout(timer);
    deliveries.hidden = false;
    try {
      const page = await api(`/api/webhooks/${encodeURIComponent(endpoint.id)}/deliveries?limit=50`);
      const body = h("tbody", {}, ...page.deliveries.map((d) => h("tr", { "data-delivery-id": d.id },
        h("td", {}, d.id), h("td", {}, d.event_type), h("td", {}, d.job_id || ""),
        h("td", { class: "delivery-status" }, d.status + (d.status === "pending" && d.next_attempt_at ? ` (next ${formatTime(d.next_attempt_at)})` : "")),
        h("td", {}, h("ul", { class: "attempts" }, ...d.attempts.map((a) => h("li", { title: a.response || "" }, attemptText(a))))),
        h("td", {}, h("button", { type: "button", class: "secondary redeliver",
          onclick: () => redeliver(endpoint, d) }, "Redeliver")))));
      deliveries.replaceChildren(h("h3", {}, `Deliveries of ${endpoint.id}`),
        page.deliveries.length ? h("table", { id: "deliveries-table" },
          h("thead", {}, h("tr", {}, ...["Webhook-id", "Event", "Job", "Status", "Attempts", ""].map((t) => h("th", { scope: "col" }, t)))), body)
          : h("p", { class: "muted" }, "Nothing sent yet."));
      if (page.deliveries.some((d) => d.status === "pending")) timer = setTimeout(() => showDeliveries(endpoint), 2000);
    } catch (error) { deliveries.replaceChildren(h("p", {}, `Could not read the deliveries: ${error.message}`)); }
  }

  async function redeliver(endpoint, delivery) {
    try {
      await api(`/api/webhooks/${encodeURIComponent(endpoint.id)}/deliveries/${encodeURIComponent(delivery.id)}/redeliver`, { method: "POST" });
      message.textContent = `Delivery ${delivery.id} queued again`;
      showDeliveries(endpoint);
    } catch (error) { message.textContent = `Could not redeliver: ${error.message}`; }
  }

  async function remove(endpoint) {
    try {
      await api(`/api/webhooks/${encodeURIComponent(endpoint.id)}`, { method: "DELETE" });
      message.textContent = `Deleted webhook ${endpoint.id}`;
      deliveries.hidden = true;
      await refresh();
    } catch (error) { message.textContent = `Could not delete: ${error.message}`; }
  }

  async function create(event) {
    event.preventDefault();
    message.textContent = "";
    const chosen = [...events.querySelectorAll("input:checked")].map((box) => box.value);
    try {
      const created = await api("/api/webhooks", { method: "POST",
        body: { url: url.value.trim(), events: chosen.length ? chosen : null, description: description.value || null } });
      secret.hidden = false;
      secret.replaceChildren("Signing secret of ", h("code", {}, created.id), " (shown once, keep it now): ",
        h("code", { id: "webhook-secret-value" }, created.secret));
      url.value = "";
      await refresh();
    } catch (error) { message.textContent = `Could not register: ${error.message}`; }
  }

  eventTypes().then((types) => {
    events.append(...types.map((type) => h("label", { class: "check" },
      h("input", { type: "checkbox", name: "event", value: type, checked: JOB_ENDS.has(type) }), ` ${type} `)));
  }).catch((error) => { message.textContent = `The event types could not be read: ${error.message}`; });
  refresh().catch((error) => { message.textContent = `Could not list the webhooks: ${error.message}`; });

  const element = h("section", { "aria-labelledby": "webhooks-title" },
    h("h2", { id: "webhooks-title" }, "Webhooks"),
    h("p", { class: "muted" }, "Signed POSTs when your jobs end (and more, if you ask): verify them with the openai SDK's ",
      h("code", {}, "webhooks.unwrap"), " and the endpoint's secret."),
    h("form", { id: "webhook-form", onsubmit: create },
      h("p", {}, h("label", { for: "webhook-url" }, "URL "), url),
      h("p", {}, h("label", { for: "webhook-description" }, "Description "), description),
      events,
      h("p", {}, h("button", { type: "submit", id: "webhook-add" }, "Add webhook"))),
    secret, message,
    h("table", { id: "webhooks-table" },
      h("thead", {}, h("tr", {}, ...["Id", "URL", "Events", "Scope", "Created", ""].map((t) => h("th", { scope: "col" }, t)))), rows),
    deliveries);
  return { element, cleanup: () => clearTimeout(timer) };
}
