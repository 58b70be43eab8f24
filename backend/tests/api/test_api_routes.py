"""Routes: pre-flight 400s (exact messages, nothing recorded), 422s, output_dir rules, templates,
paging, events pages, health."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.sft.data import bundled_datasets
from app.sft.models import default_device
from factories import contact_rows, wait_for, write_jsonl
from job_helpers import error_detail



@pytest.fixture
def good_config(tiny_model_dir: Path, chat_jsonl: Path) -> dict:
    return {"base_model": str(tiny_model_dir), "dataset_name": str(chat_jsonl), "max_steps": 2}


def assert_refused(client, manager, config: dict, detail: str) -> None:
    """400 with exactly ``detail``, and no job recorded anywhere."""
    response = client.post("/api/sft/train", json={"config": config})
    assert response.status_code == 400, response.text
    assert error_detail(response) == detail
    assert manager.jobs == {}
    assert manager.store.load_jobs() == []
    assert client.get("/api/sft/jobs").json()["total"] == 0


# Pre-flight: each 400 and its message


def test_preflight_accepts_a_good_config(checked_client, checked, good_config):
    response = checked_client.post("/api/sft/train", json={"config": good_config})
    assert response.status_code == 200
    assert response.json()["job_id"] in checked.jobs


def test_unknown_field_suggests_the_right_one(checked_client, checked, good_config):
    assert_refused(checked_client, checked, good_config | {"learning_rat": 0.01},
                   "config.learning_rat: unknown field (did you mean learning_rate?)")


def test_unknown_field_without_a_close_match(checked_client, checked, good_config):
    assert_refused(checked_client, checked, good_config | {"zzzzzz": 1}, "config.zzzzzz: unknown field")


def test_max_steps_and_epochs_both(checked_client, checked, good_config):
    assert_refused(checked_client, checked, good_config | {"num_train_epochs": 1},
                   "config: set only one of max_steps and num_train_epochs")


def test_max_steps_and_epochs_neither(checked_client, checked, good_config):
    config = {k: v for k, v in good_config.items() if k != "max_steps"}
    assert_refused(checked_client, checked, config, "config: set max_steps or num_train_epochs")


def test_model_path_that_does_not_exist(checked_client, checked, good_config, tmp_path):
    missing = str(tmp_path / "no-such-model")
    assert_refused(
        checked_client, checked, good_config | {"base_model": missing},
        f"config.base_model: '{missing}' is neither a local model directory, a .gguf file, a bundled alias "
        "(smollm2-135m-instruct) nor a Hugging Face Hub id",
    )


def test_model_directory_without_config_json(checked_client, checked, good_config, tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    assert_refused(checked_client, checked, good_config | {"base_model": str(empty)},
                   f"config.base_model: {empty} is a directory without a config.json, so not a model directory")


def test_dataset_file_missing(checked_client, checked, good_config, tmp_path):
    missing = str(tmp_path / "missing.jsonl")
    assert_refused(checked_client, checked, good_config | {"dataset_name": missing},
                   f"config.dataset_name: {missing}: file or directory not found")


def test_dataset_line_not_json_names_the_line(checked_client, checked, good_config, tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", contact_rows(2))
    with path.open("a") as f:
        f.write("{this is not json\n")
    assert_refused(checked_client, checked, good_config | {"dataset_name": str(path)},
                   f"config.dataset_name: {path}, line 3: not JSON (Expecting property name enclosed in double "
                   "quotes)")


def test_dataset_row_of_the_wrong_shape_names_the_line(checked_client, checked, good_config, tmp_path):
    rows = contact_rows(3)
    rows[1] = {"messages": [{"role": "user", "content": "only a question"}]}
    path = write_jsonl(tmp_path / "shape.jsonl", rows)
    assert_refused(checked_client, checked, good_config | {"dataset_name": str(path)},
                   f"config.dataset_name: {path}, line 2: the last turn must be the assistant's, got 'user'")


def test_unknown_bundled_dataset(checked_client, checked, good_config):
    known = ", ".join(bundled_datasets()) or "none"
    assert_refused(checked_client, checked, good_config | {"dataset_name": "bundled:nope"},
                   f"config.dataset_name: bundled:nope: no bundled dataset 'bundled:nope' (bundled: {known})")


def test_dataset_outside_allowed_roots(checked_client, checked, good_config, tmp_path_factory, settings):
    outside = write_jsonl(tmp_path_factory.mktemp("outside") / "rows.jsonl", contact_rows(2))
    roots = ", ".join(str(r) for r in settings.resolved_dataset_roots)
    assert_refused(checked_client, checked, good_config | {"dataset_name": str(outside)},
                   f"config.dataset_name: {outside}: local datasets must be under an allowed root ({roots})")


def test_trust_remote_code_not_allowed(checked_client, checked, good_config):
    assert_refused(checked_client, checked, good_config | {"trust_remote_code": True},
                   "config.trust_remote_code: this server does not allow remote code (set SFT_ALLOW_REMOTE_CODE=true)")


def test_fp16_on_cpu(checked_client, checked, good_config):
    if default_device() == "cuda":
        pytest.skip("this machine has a GPU")
    assert_refused(checked_client, checked, good_config | {"precision": "fp16"},
                   "config.precision: precision fp16 needs a CUDA GPU and this machine has none; use 'auto', 'bf16' "
                   "or 'fp32'")


def test_field_bound_names_the_field(checked_client, checked, good_config):
    assert_refused(checked_client, checked, good_config | {"lora_r": 0},
                   "config.lora_r: Input should be greater than or equal to 1")


# Malformed requests: 422


def test_malformed_json_body_is_422(client, manager):
    response = client.post("/api/sft/train", content=b'{"config": {', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert error_detail(response) == "body: JSON decode error at position 12: Expecting property name enclosed in double quotes"
    assert [(e["field"], e["type"]) for e in response.json()["errors"]] == [("body", "json_invalid")]
    assert manager.jobs == {}


def test_config_and_config_id_together_is_422(client, fake_config):
    response = client.post("/api/sft/train", json={"config": fake_config, "config_id": "x"})
    assert response.status_code == 422
    assert response.json() == {"detail": "body: give exactly one of config and config_id", "errors": [
        {"field": "body", "message": "give exactly one of config and config_id", "type": "value_error"}]}


def test_overrides_without_config_id_is_422(client, fake_config):
    response = client.post("/api/sft/train", json={"config": fake_config, "overrides": {"max_steps": 1}})
    assert response.status_code == 422
    assert response.json() == {"detail": "body: overrides only apply with config_id", "errors": [
        {"field": "body", "message": "overrides only apply with config_id", "type": "value_error"}]}


def test_unknown_status_filter_is_422(client):
    assert client.get("/api/sft/jobs?status=sleeping").status_code == 422


# output_dir


@pytest.mark.parametrize("output_dir", ["../x", "{tmp_path}/elsewhere", "."],
                         ids=["parent-escape", "absolute-elsewhere", "the-root-itself"])
def test_output_dir_outside_the_output_root_refused(client, manager, fake_config, settings, tmp_path, output_dir):
    output_dir = output_dir.format(tmp_path=tmp_path)
    root = settings.resolved_output_root
    assert_refused(client, manager, fake_config | {"output_dir": output_dir},
                   f"config.output_dir: {output_dir!r} resolves outside the output root {root}; use a relative "
                   "path (it is taken from the output root) or leave it unset")


def test_output_dir_relative_and_default(client, manager, fake_config, settings):
    root = settings.resolved_output_root
    named = client.post("/api/sft/train", json={"config": fake_config | {"output_dir": "runs/a"}}).json()
    default = client.post("/api/sft/train", json={"config": fake_config}).json()
    assert manager.get_job(named["job_id"]).output_dir == str(root / "runs" / "a")
    assert manager.get_job(default["job_id"]).output_dir == str(root / default["job_id"])


# Saved configs as templates


def test_submit_from_saved_config_with_overrides(client):
    saved = client.post("/api/sft/configs", json={
        "name": "base", "config": {"base_model": "tiny-model", "dataset_name": "data.jsonl", "max_steps": 2,
                                   "lora_r": 4}}).json()
    response = client.post("/api/sft/train", json={"config_id": saved["config_id"],
                                                   "overrides": {"max_steps": 5, "learning_rate": 0.01}})
    assert response.status_code == 200
    config = client.get(f"/api/sft/jobs/{response.json()['job_id']}").json()["config"]
    assert (config["max_steps"], config["learning_rate"], config["lora_r"]) == (5, 0.01, 4)
    assert client.get(f"/api/sft/configs/{saved['config_id']}").json()["config"]["max_steps"] == 2


def test_submit_from_incomplete_template_is_400(client, manager):
    saved = client.post("/api/sft/configs", json={"name": "partial", "config": {"max_steps": 2}}).json()
    response = client.post("/api/sft/train", json={"config_id": saved["config_id"]})
    assert response.status_code == 400
    assert error_detail(response) == "config.base_model: Field required; config.dataset_name: Field required"
    assert manager.jobs == {}


def test_submit_from_missing_config_is_404(client):
    response = client.post("/api/sft/train", json={"config_id": "nope", "overrides": {"max_steps": 1}})
    assert response.status_code == 404
    assert error_detail(response) == "Config nope not found"


def test_saved_config_name_must_be_unique(client):
    first = client.post("/api/sft/configs", json={"name": "dup", "config": {}}).json()
    response = client.post("/api/sft/configs", json={"name": "dup", "config": {}})
    assert response.status_code == 409
    assert error_detail(response) == f"A config named 'dup' already exists ({first['config_id']})"


def test_saved_config_bad_value_is_400(client):
    response = client.post("/api/sft/configs", json={"name": "bad", "config": {"learning_rate": -1}})
    assert response.status_code == 400
    assert error_detail(response) == "config.learning_rate: Input should be greater than 0"


def test_saved_config_blank_name_is_400(client):
    response = client.post("/api/sft/configs", json={"name": "  ", "config": {}})
    assert response.status_code == 400
    assert error_detail(response) == "name: must not be empty"


# Listing, paging, events, health


def test_jobs_paging_and_status_filter(client, manager, gate, fake_config):
    ids = [manager.submit(fake_config | {"seed": i}).job_id for i in range(5)]
    wait_for(lambda: gate.running == {ids[0]}, timeout=10, message="the first job to run")
    # ids[0] running, ids[1:] pending; newest first by default.
    page = client.get("/api/sft/jobs?status=pending&limit=2&offset=1").json()
    assert page["total"] == 4
    assert (page["limit"], page["offset"]) == (2, 1)
    assert [job["job_id"] for job in page["jobs"]] == [ids[3], ids[2]]
    page = client.get("/api/sft/jobs?status=pending&limit=2&offset=1&order=asc").json()
    assert [job["job_id"] for job in page["jobs"]] == [ids[2], ids[3]]
    running = client.get("/api/sft/jobs?status=running").json()
    assert [job["job_id"] for job in running["jobs"]] == [ids[0]]
    assert client.get("/api/sft/jobs?offset=10").json() == {"jobs": [], "total": 5, "offset": 10, "limit": 100}
    assert client.get("/api/sft/jobs?limit=0").status_code == 422


def test_events_json_pages(client, manager, gate, fake_config):
    job_id = manager.submit(fake_config).job_id
    gate.release(job_id)
    wait_for(lambda: manager.get_job(job_id).status.is_terminal(), timeout=10, message="the job to end")
    everything = client.get(f"/api/sft/jobs/{job_id}/events").json()
    assert [e["type"] for e in everything["events"]] == ["created", "queued", "started", "completed"]
    assert [e["seq"] for e in everything["events"]] == [1, 2, 3, 4]
    assert everything["next_after"] == 4
    page = client.get(f"/api/sft/jobs/{job_id}/events?after=1&limit=2").json()
    assert [e["seq"] for e in page["events"]] == [2, 3]
    assert page["next_after"] == 3
    assert client.get(f"/api/sft/jobs/{job_id}/events?after=4").json() == {"events": [], "next_after": 4}
    completed = everything["events"][-1]
    assert completed["message"] == "Training completed"
    assert completed["data"]["result"]["adapter_path"] == manager.get_job(job_id).result["adapter_path"]


def test_events_of_missing_job_is_404(client):
    response = client.get("/api/sft/jobs/nope/events")
    assert response.status_code == 404
    assert error_detail(response) == "Job nope not found"


def test_health(client, manager, gate, fake_config):
    first = manager.submit(fake_config).job_id
    manager.submit(fake_config | {"seed": 1})
    wait_for(lambda: first in gate.running, timeout=10, message="the first job to run")
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["max_concurrent_jobs"] == 1
    assert isinstance(body["version"], str) and body["version"]
    assert body["jobs"] == {"pending": 1, "running": 1, "stopping": 0, "completed": 0, "failed": 0, "stopped": 0}
    assert body["device"] in ("cpu", "cuda") and (body["gpu"] is None) == (body["device"] == "cpu")


def test_config_schema(client):
    response = client.get("/api/sft/config-schema")
    assert response.status_code == 200
    schema = response.json()
    assert {"base_model", "dataset_name", "max_steps", "output_dir"} <= set(schema["properties"])
    # Unknown keys are refused, and every field says what it does.
    assert schema["additionalProperties"] is False
    assert [name for name, field in schema["properties"].items() if not field.get("description")] == []
