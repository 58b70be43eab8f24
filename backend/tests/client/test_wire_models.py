"""The light client's models against the server's OpenAPI document: every answer the client reads is
described, field by field, exactly as the server documents it; and the async client is the sync one's twin."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import sft_client
from pydantic import BaseModel
from sft_client import models, types
from sft_client.client import AsyncSFTClient, SFTClient

from app.jobs.models import JobStatus
from app.main import create_app

REF = "#/components/schemas/"

#: What the client reads from each route: (method, path, status) -> its model (a list of them for a bare list).
READS: dict[tuple[str, str], Any] = {
    ("get", "/health"): types.Health,
    ("post", "/api/sft/train"): types.JobStart,
    ("post", "/api/sft/jobs/{job_id}/resume"): types.JobStart,
    ("get", "/api/sft/jobs"): types.JobList,
    ("get", "/api/sft/jobs/{job_id}"): types.Job,
    ("post", "/api/sft/jobs/{job_id}/stop"): types.StopResult,
    ("delete", "/api/sft/jobs/{job_id}"): models.DeleteResponse,
    ("get", "/api/sft/jobs/{job_id}/events"): types.EventPage,
    ("get", "/api/sft/jobs/{job_id}/checkpoints"): models.CheckpointListResponse,
    ("get", "/api/sft/jobs/{job_id}/metrics"): models.MetricsResponse,
    ("get", "/api/sft/jobs/{job_id}/logs"): models.LogsResponse,
    ("post", "/api/sft/jobs/{job_id}/generate"): types.Generation,
    ("post", "/api/sft/evaluate"): types.Evaluation,
    ("post", "/api/sft/jobs/{job_id}/merge"): types.Merge,
    ("get", "/api/sft/models"): [types.ModelInfo],
    ("post", "/api/sft/configs"): types.ConfigSaved,
    ("get", "/api/sft/configs"): [types.SavedConfig],
    ("get", "/api/sft/configs/{config_id}"): types.SavedConfig,
    ("delete", "/api/sft/configs/{config_id}"): models.DeleteResponse,
    ("post", "/api/webhooks"): types.WebhookCreated,
    ("get", "/api/webhooks/{webhook_id}"): types.Webhook,
    ("delete", "/api/webhooks/{webhook_id}"): types.Webhook,
    ("get", "/api/webhooks"): models.WebhookListResponse,
    ("get", "/api/webhooks/{webhook_id}/deliveries"): models.WebhookDeliveryListResponse,
    ("post", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): types.Delivery,
    ("post", "/api/sft/preferences"): types.Preference,
    ("get", "/api/sft/preferences"): types.PreferencePage,
    ("delete", "/api/sft/preferences/{preference_id}"): types.Preference,
    ("delete", "/api/sft/preferences"): types.PreferencesDeleted,
    ("post", "/api/sft/preferences/train"): types.PreferenceJob,
}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app().openapi()


def inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """``schema`` with every reference replaced by what it names (titles and null defaults dropped: the
    document leaves a null default out, and ``required`` already says a field may be absent)."""
    if isinstance(schema, list):
        return [inline(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return inline(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
    return {key: inline(value, definitions) for key, value in schema.items()
            if key != "title" and not (key == "default" and value is None)}


def client_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema as the client reads it, nested models inlined."""
    schema = model.model_json_schema(mode="serialization")
    return inline(schema, schema.pop("$defs", {}))


def test_every_answer_the_client_reads_is_the_servers_documented_model(openapi):
    for (method, path), model in READS.items():
        operation = openapi["paths"][path][method]
        success = next(code for code in operation["responses"] if code.startswith("2"))  # 200, 201 or 202
        answer = operation["responses"][success]["content"]["application/json"]["schema"]
        if isinstance(model, list):
            assert answer["type"] == "array", (method, path)
            answer, model = answer["items"], model[0]
        assert answer == {"$ref": REF + model.__name__}, (method, path, answer)


@pytest.mark.parametrize("read", list(READS), ids=lambda read: " ".join(read))
def test_the_clients_model_and_the_document_agree_field_by_field(openapi, read):
    model = READS[read][0] if isinstance(READS[read], list) else READS[read]
    documented = inline({"$ref": REF + model.__name__}, openapi["components"]["schemas"])
    mine = client_schema(model)
    assert sorted(mine.get("properties", {})) == sorted(documented.get("properties", {}))
    assert sorted(mine.get("required", [])) == sorted(documented.get("required", []))
    for name, field in mine.get("properties", {}).items():
        assert field == documented["properties"][name], f"{model.__name__}.{name}"
    assert mine == documented


def test_the_status_list_is_the_servers_enum(openapi):
    assert models.JOB_STATUSES == tuple(status.value for status in JobStatus)
    assert models.TERMINAL_STATUSES == {status.value for status in JobStatus if status.is_terminal()}
    documented = openapi["components"]["schemas"]["JobStatusResponse"]["properties"]["status"]
    assert tuple(documented["enum"]) == models.JOB_STATUSES  # what the dashboard reads
    assert set(documented["x-terminal"]) == models.TERMINAL_STATUSES


def test_the_health_answer_has_every_field_the_server_sends(openapi):
    assert set(types.Health.model_fields) == set(openapi["components"]["schemas"]["HealthResponse"]["properties"])
    health = types.Health.from_dict({"version": "1", "auth": "keys", "max_concurrent_jobs": 1, "jobs": {},
                                     "device": "cpu", "model_requests": {"running": 0},
                                     "executor": {"name": "ray", "status": "up", "address": "x"}, "new": 1})
    assert (health.auth, health.executor.name, health.executor.model_extra) == ("keys", "ray", {"address": "x"})
    assert health.raw["new"] == 1  # what a newer server adds stays readable


def test_open_records_read_like_the_dicts_they_were():
    job = types.Job.from_dict({"job_id": "j", "status": "completed", "created_at": "t",
                               "config": {"base_model": "m", "dataset_name": "d", "lora_r": 8},
                               "result": {"adapter_path": "/a", "global_step": 2, "stopped": False},
                               "attempts": [{"attempt": 1, "started_at": "t", "host": "n1"}]})
    assert job.adapter_path == "/a" and job.is_terminal and job.progress is None
    assert job.config["lora_r"] == 8 and job.config.get("missing", "?") == "?"
    assert job.result.get("eval_loss", "?") == "?"  # not sent: absent, as in the JSON
    assert job.config.to_dict() == {"base_model": "m", "dataset_name": "d", "lora_r": 8}
    assert job.attempts[0].raw["host"] == "n1" and job.attempts[0]["host"] == "n1"


def test_the_async_client_has_every_method_of_the_sync_one_with_its_arguments():
    public = {name for name, _ in inspect.getmembers(SFTClient, inspect.isfunction) if not name.startswith("_")}
    sync_only = {"close"}
    for name in public - sync_only:
        twin = getattr(AsyncSFTClient, name)
        assert inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(twin), name
        sync_args = list(inspect.signature(getattr(SFTClient, name)).parameters)
        assert list(inspect.signature(twin).parameters) == sync_args, name
    assert sft_client.Job is models.JobStatusResponse
