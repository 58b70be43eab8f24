"""The requests of the SFT API, built once and sent by either client (sync or async).

Each function returns a :class:`Call`: what to send and how to read the answer. The clients add
the transport: base URL, key, retries, timeouts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from .types import (
    Checkpoint,
    ConfigSaved,
    Delivery,
    Evaluation,
    EventPage,
    Export,
    ExportFormats,
    Generation,
    Health,
    Job,
    JobList,
    JobStart,
    MemoryPlan,
    Merge,
    ModelInfo,
    SavedConfig,
    StopResult,
    Webhook,
    WebhookCreated,
)

T = TypeVar("T")

PREFIX = "/api/sft"


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Safe to send again after a lost answer or a 502/503/504 (GETs, and a submit with its
    #: Idempotency-Key). Any call is sent again when the connection could not even be made.
    repeatable: bool = False
    #: Model work (generate, evaluate, merge): the answer may take minutes.
    slow: bool = False


def _job(job_id: str, tail: str = "") -> str:
    return f"{PREFIX}/jobs/{quote(job_id, safe='')}{tail}"


def _message(data: dict[str, Any]) -> str:
    return data["message"]


def health() -> Call[Health]:
    return Call("GET", "/health", Health.from_dict, repeatable=True)


def train(config: dict[str, Any] | None, *, config_id: str | None, overrides: dict[str, Any] | None,
          idempotency_key: str | None) -> Call[JobStart]:
    body: dict[str, Any] = {"config": config} if config_id is None else {"config_id": config_id}
    if overrides is not None:
        body["overrides"] = overrides
    # A key of our own when the caller gave none: a retry after a lost answer then returns the job
    # the first attempt created instead of starting a second one.
    key = idempotency_key or str(uuid.uuid4())
    return Call("POST", f"{PREFIX}/train", JobStart.from_dict, json=body,
                headers={"Idempotency-Key": key}, repeatable=True)


def plan(config: dict[str, Any] | None, *, config_id: str | None, overrides: dict[str, Any] | None) -> Call[MemoryPlan]:
    body: dict[str, Any] = {"config": config} if config_id is None else {"config_id": config_id}
    if overrides is not None:
        body["overrides"] = overrides
    return Call("POST", f"{PREFIX}/plan", MemoryPlan.from_dict, json=body, repeatable=True)  # submits nothing


def list_jobs(*, status: str | None, limit: int, offset: int, order: str) -> Call[JobList]:
    params: dict[str, Any] = {"limit": limit, "offset": offset, "order": order}
    if status is not None:
        params["status"] = status
    return Call("GET", f"{PREFIX}/jobs", JobList.from_dict, params=params, repeatable=True)


def get_job(job_id: str) -> Call[Job]:
    return Call("GET", _job(job_id), Job.from_dict, repeatable=True)


def stop(job_id: str) -> Call[StopResult]:
    return Call("POST", _job(job_id, "/stop"), StopResult.from_dict)


def resume(job_id: str) -> Call[JobStart]:
    return Call("POST", _job(job_id, "/resume"), JobStart.from_dict)


def delete_job(job_id: str) -> Call[str]:
    return Call("DELETE", _job(job_id), _message)


def checkpoints(job_id: str) -> Call[list[Checkpoint]]:
    return Call("GET", _job(job_id, "/checkpoints"),
                lambda data: [Checkpoint.from_dict(c) for c in data["checkpoints"]], repeatable=True)


def metrics(job_id: str) -> Call[list[dict[str, Any]]]:
    return Call("GET", _job(job_id, "/metrics"), lambda data: data["metrics"], repeatable=True)


def logs(job_id: str, *, tail: int | None) -> Call[list[str]]:
    return Call("GET", _job(job_id, "/logs"), lambda data: data["lines"],
                params={"tail": tail} if tail is not None else None, repeatable=True)


def events(job_id: str, *, after: int, limit: int) -> Call[EventPage]:
    return Call("GET", _job(job_id, "/events"), EventPage.from_dict,
                params={"after": after, "limit": limit}, repeatable=True)


def events_path(job_id: str) -> str:
    return _job(job_id, "/events")


def adapter_path(job_id: str) -> str:
    return _job(job_id, "/adapter")


def generate(job_id: str, *, prompt: str | None, messages: list[dict[str, str]] | None, max_new_tokens: int,
             temperature: float, top_p: float | None, seed: int | None, compare_base: bool,
             checkpoint: str | None) -> Call[Generation]:
    body: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature,
                            "compare_base": compare_base}
    if prompt is not None:
        body["prompt"] = prompt
    if messages is not None:
        body["messages"] = messages
    for name, value in (("top_p", top_p), ("seed", seed), ("checkpoint", checkpoint)):
        if value is not None:
            body[name] = value
    return Call("POST", _job(job_id, "/generate"), Generation.from_dict, json=body, slow=True)


def evaluate(job_id: str, *, dataset_name: str | None, split: str | None, max_samples: int | None,
             max_new_tokens: int | None, checkpoint: str | None) -> Call[Evaluation]:
    body: dict[str, Any] = {"job_id": job_id}
    for name, value in (("dataset_name", dataset_name), ("split", split), ("max_samples", max_samples),
                        ("max_new_tokens", max_new_tokens), ("checkpoint", checkpoint)):
        if value is not None:
            body[name] = value
    return Call("POST", f"{PREFIX}/evaluate", Evaluation.from_dict, json=body, slow=True)


def merge(job_id: str) -> Call[Merge]:
    return Call("POST", _job(job_id, "/merge"), Merge.from_dict, slow=True)


def export_formats() -> Call[ExportFormats]:
    return Call("GET", f"{PREFIX}/export-formats", ExportFormats.from_dict, repeatable=True)


def start_export(job_id: str, *, fmt: str, gguf_type: str | None) -> Call[Export]:
    # Repeatable: asking again for the same format and type answers the export the job already has.
    return Call("POST", _job(job_id, "/export"), Export.from_dict, json={"format": fmt, "type": gguf_type},
                repeatable=True)


def list_exports(job_id: str) -> Call[list[Export]]:
    return Call("GET", _job(job_id, "/exports"), lambda data: [Export.from_dict(e) for e in data["exports"]],
                repeatable=True)


def get_export(job_id: str, export_id: str) -> Call[Export]:
    return Call("GET", _job(job_id, f"/exports/{quote(export_id, safe='')}"), Export.from_dict, repeatable=True)


def delete_export(job_id: str, export_id: str) -> Call[Export]:
    return Call("DELETE", _job(job_id, f"/exports/{quote(export_id, safe='')}"), Export.from_dict)


def export_file_path(job_id: str, export_id: str, name: str) -> str:
    return _job(job_id, f"/exports/{quote(export_id, safe='')}/files/{quote(name, safe='')}")


def models() -> Call[list[ModelInfo]]:
    return Call("GET", f"{PREFIX}/models", lambda data: [ModelInfo.from_dict(m) for m in data], repeatable=True)


def save_config(name: str, config: dict[str, Any]) -> Call[ConfigSaved]:
    return Call("POST", f"{PREFIX}/configs", ConfigSaved.from_dict, json={"name": name, "config": config})


def list_configs() -> Call[list[SavedConfig]]:
    return Call("GET", f"{PREFIX}/configs", lambda data: [SavedConfig.from_dict(c) for c in data],
                repeatable=True)


def get_config(config_id: str) -> Call[SavedConfig]:
    return Call("GET", f"{PREFIX}/configs/{quote(config_id, safe='')}", SavedConfig.from_dict, repeatable=True)


def delete_config(config_id: str) -> Call[str]:
    return Call("DELETE", f"{PREFIX}/configs/{quote(config_id, safe='')}", _message)


def config_schema() -> Call[dict[str, Any]]:
    return Call("GET", f"{PREFIX}/config-schema", lambda data: data, repeatable=True)


WEBHOOKS = "/api/webhooks"


def _webhook(webhook_id: str, tail: str = "") -> str:
    return f"{WEBHOOKS}/{quote(webhook_id, safe='')}{tail}"


def create_webhook(url: str, *, events: list[str] | None, scope: str, description: str | None) -> Call[WebhookCreated]:
    body: dict[str, Any] = {"url": url, "scope": scope}
    if events is not None:
        body["events"] = events
    if description is not None:
        body["description"] = description
    return Call("POST", WEBHOOKS, WebhookCreated.from_dict, json=body)


def list_webhooks() -> Call[list[Webhook]]:
    return Call("GET", WEBHOOKS, lambda data: [Webhook.from_dict(w) for w in data["webhooks"]], repeatable=True)


def get_webhook(webhook_id: str) -> Call[Webhook]:
    return Call("GET", _webhook(webhook_id), Webhook.from_dict, repeatable=True)


def delete_webhook(webhook_id: str) -> Call[Webhook]:
    return Call("DELETE", _webhook(webhook_id), Webhook.from_dict)


def webhook_deliveries(webhook_id: str, *, limit: int) -> Call[list[Delivery]]:
    return Call("GET", _webhook(webhook_id, "/deliveries"),
                lambda data: [Delivery.from_dict(d) for d in data["deliveries"]], params={"limit": limit},
                repeatable=True)


def redeliver(webhook_id: str, delivery_id: str) -> Call[Delivery]:
    return Call("POST", _webhook(webhook_id, f"/deliveries/{quote(delivery_id, safe='')}/redeliver"),
                Delivery.from_dict)
