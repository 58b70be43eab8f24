"""One error shape outside /v1: ``detail`` a string naming the field, and for a 400 (the request cannot
run) or a 422 (the body does not parse) the structured ``errors`` beside it; other statuses keep
``{"detail"}`` alone. The training core's errors reach it through the one mapping in core/errors.py."""

from __future__ import annotations

import pytest

from app.core.errors import InvalidConfig, clauses, from_sft_error, validation_errors
from app.sft import errors as sft
from factories import wait_for, write_jsonl
from job_helpers import error_detail


def test_a_malformed_body_is_a_422_with_a_string_detail_and_the_field(client):
    response = client.post("/api/sft/train", json={"config": {"base_model": "m"}, "overrides": {"x": 1},
                                                   "config_id": 5})
    assert response.status_code == 422
    assert response.json() == {
        "detail": "config_id: Input should be a valid string",
        "errors": [{"field": "config_id", "message": "Input should be a valid string", "type": "string_type"}],
    }


def test_a_422_names_nested_fields_and_query_parameters(client, manager, fake_config):
    job = manager.submit(fake_config)
    response = client.post(f"/api/sft/jobs/{job.job_id}/generate",
                           json={"messages": [{"role": "user", "content": 5}], "max_new_tokens": 0})
    assert response.status_code == 422
    assert error_detail(response) == ("messages.0.content: Input should be a valid string; "
                                      "max_new_tokens: Input should be greater than or equal to 1")
    assert [e["type"] for e in response.json()["errors"]] == ["string_type", "greater_than_equal"]
    response = client.get("/api/sft/jobs?limit=0")
    assert response.status_code == 422
    assert error_detail(response) == "limit: Input should be greater than or equal to 1"


def test_a_preflight_refusal_is_a_400_with_each_field_it_names(checked_client):
    response = checked_client.post("/api/sft/train", json={"config": {"lora_r": 0, "max_steps": 1}})
    assert response.status_code == 400
    assert response.json() == {
        "detail": "config.base_model: Field required; config.dataset_name: Field required; "
                  "config.lora_r: Input should be greater than or equal to 1",
        "errors": [
            {"field": "config.base_model", "message": "Field required", "type": "invalid_config"},
            {"field": "config.dataset_name", "message": "Field required", "type": "invalid_config"},
            {"field": "config.lora_r", "message": "Input should be greater than or equal to 1",
             "type": "invalid_config"},
        ],
    }


def test_a_training_core_error_is_a_400_naming_its_argument(client, tiny_model_dir, tmp_path):
    missing = tmp_path / "missing.jsonl"
    response = client.post("/api/sft/datasets/preview", json={"dataset_name": str(missing),
                                                              "base_model": str(tiny_model_dir)})
    assert response.status_code == 400
    detail = error_detail(response)
    assert detail.startswith(f"dataset_name: {missing}")
    assert [(e["field"], e["type"]) for e in response.json()["errors"]] == [("dataset_name", "invalid_dataset")]
    dataset = write_jsonl(tmp_path / "chat.jsonl", [{"text": "hello"}])
    response = client.post("/api/sft/datasets/preview", json={"dataset_name": str(dataset),
                                                              "base_model": str(tmp_path / "no-model")})
    assert response.status_code == 400
    assert [(e["field"], e["type"]) for e in response.json()["errors"]] == [("base_model", "invalid_model")]


def test_other_statuses_keep_detail_alone(client, manager, fake_config):
    job = manager.submit(fake_config)
    wait_for(lambda: manager.get_job(job.job_id).status == "running", timeout=10, message="the job to run")
    response = client.post(f"/api/sft/jobs/{job.job_id}/merge")
    assert response.status_code == 409
    assert response.json() == {"detail": f"Job {job.job_id} is running; only a completed or stopped job with an "
                                         "adapter can be used"}
    assert client.get("/api/sft/jobs/nope").json() == {"detail": "Job nope not found"}


@pytest.mark.parametrize(("error", "status", "detail"), [
    (sft.ConfigError("must be positive", field="config.lora_r"), 400, "config.lora_r: must be positive"),
    (sft.RequestError("prompt: it tokenizes to nothing"), 400, "prompt: it tokenizes to nothing"),
    (sft.ModelError("no such model"), 400, "no such model"),
    (sft.ArtifactUnavailable("Job j is running"), 409, "Job j is running"),
    (sft.CheckpointMissing("Checkpoint 'x' not found for job j"), 404, "Checkpoint 'x' not found for job j"),
    (sft.GenerationCancelled("stopped: the client disconnected"), 499, "stopped: the client disconnected"),
    (sft.GenerationTimedOut("stopped after 1 s"), 504, "stopped after 1 s"),
])
def test_every_training_core_error_maps_to_one_status(error, status, detail):
    mapped = from_sft_error(error)
    assert (mapped.status_code, mapped.detail) == (status, detail)


def test_a_field_already_in_the_message_is_not_repeated():
    error = sft.DatasetError("not JSON", source="d.jsonl", location="line 3")
    error.field = "dataset_name"
    assert from_sft_error(error).detail == "dataset_name: d.jsonl, line 3: not JSON"
    with sft.naming({sft.DatasetError: "dataset_name"}), pytest.raises(sft.DatasetError) as caught:
        raise sft.DatasetError("dataset_name: already named")
    assert from_sft_error(caught.value).detail == "dataset_name: already named"


def test_clauses_split_only_where_a_field_begins():
    detail = ("config.lora_target_modules: q match no module of m (its linear layers: a, b; or use 'all-linear'); "
              "config.output_dir: '..' resolves outside the output root")
    assert [e["field"] for e in clauses(detail, error_type="t")] == ["config.lora_target_modules",
                                                                      "config.output_dir"]
    assert clauses("give exactly one of messages and prompt", error_type="t") == [
        {"field": None, "message": "give exactly one of messages and prompt", "type": "t"}]
    assert InvalidConfig("file too big", field="training_file").errors == [
        {"field": "training_file", "message": "file too big", "type": "invalid_config"}]


def test_validation_errors_drop_the_location_kind():
    errors = validation_errors([{"loc": ["body", "config", "lora_r"], "msg": "Value error, bad", "type": "value_error"},
                                {"loc": ["body"], "msg": "Field required", "type": "missing"}])
    assert errors == [{"field": "config.lora_r", "message": "bad", "type": "value_error"},
                      {"field": "body", "message": "Field required", "type": "missing"}]


def test_the_openapi_document_shows_the_shape(client):
    document = client.get("/openapi.json").json()
    train = document["paths"]["/api/sft/train"]["post"]["responses"]
    for status in ("400", "422"):
        assert train[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    schema = document["components"]["schemas"]["ErrorResponse"]
    assert schema["required"] == ["detail"] and set(schema["properties"]) == {"detail", "errors"}
    field = document["components"]["schemas"]["FieldError"]
    assert set(field["properties"]) == {"field", "message", "type"}
    api = {path: operations for path, operations in document["paths"].items() if path.startswith("/api/")}
    refs = [(path, status, answer["content"]["application/json"]["schema"]["$ref"])
            for path, operations in api.items() for operation in operations.values()
            for status, answer in operation["responses"].items() if status in ("400", "422")]
    assert len(refs) > 2 * 20
    assert {ref for _, _, ref in refs} == {"#/components/schemas/ErrorResponse"}
