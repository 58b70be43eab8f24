"""Path fields over HTTP: every bad path is a 400 at submit naming the field, nothing is recorded,
and a refusal outside the roots tells nothing about what is there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factories import contact_rows, write_jsonl
from job_helpers import error_detail

BAD_TEXT = {
    "nul": ("a\x00b.jsonl", "contains a NUL byte"),
    "long": ("x/" * 2500, "is 5,000 characters long; a path may have at most 4,096"),
    "component": ("n" * 300, "has a path component of 300 bytes; a file or directory name may have at most 255 bytes"),
    "surrogate": ("\udc80x", "is not valid text (it contains an unpaired surrogate)"),
}
SURROGATE_IN_BODY = ("holds an unpaired UTF-16 surrogate (a \\ud800-\\udfff escape that is not half of a pair); "
                     "send valid Unicode text")



@pytest.fixture
def good_config(tiny_model_dir: Path, chat_jsonl: Path) -> dict:
    return {"base_model": str(tiny_model_dir), "dataset_name": str(chat_jsonl), "max_steps": 2}


def post(client, url: str, body: dict):
    """POST ``body`` as ASCII JSON (an unpaired surrogate travels as its \\u escape, as a client may send it)."""
    return client.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})


def refused(client, manager, config: dict) -> str:
    response = post(client, "/api/sft/train", {"config": config})
    assert response.status_code == 400, response.text
    assert manager.jobs == {} and manager.store.load_jobs() == []
    return response.json()["detail"]


@pytest.mark.parametrize("field", ["base_model", "dataset_name", "eval_dataset_name", "output_dir"])
@pytest.mark.parametrize("case", list(BAD_TEXT))
def test_unusable_path_text_is_a_400_naming_the_field(checked_client, checked, good_config, field, case):
    value, reason = BAD_TEXT[case]
    detail = refused(checked_client, checked, good_config | {field: value})
    if case == "surrogate":  # refused at the edge, for every body, before any field is read (#23 item 5)
        reason = SURROGATE_IN_BODY
    assert detail == f"config.{field}: {reason}"


@pytest.mark.parametrize("field", ["dataset_name", "eval_dataset_name"])
def test_bundled_escapes_are_400s(checked_client, checked, good_config, tmp_path_factory, field):
    outside = tmp_path_factory.mktemp("outside")
    write_jsonl(outside / "train.jsonl", contact_rows(3))
    for name in (f"bundled:{outside}", "bundled:../../../../etc", "bundled:json-extract/.."):
        detail = refused(checked_client, checked, good_config | {field: name})
        assert detail.startswith(f"config.{field}: {name}: no bundled dataset '{name}'")


def test_model_outside_the_model_roots(checked_client, checked, good_config, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside-model")
    (outside / "m.gguf").write_bytes(b"GGUF")
    roots = ", ".join(str(r) for r in checked.settings.resolved_model_roots)
    for name in (outside / "m.gguf", outside / "missing.gguf", outside, outside / "missing"):
        assert refused(checked_client, checked, good_config | {"base_model": str(name)}) == (
            f"config.base_model: '{name}': local models must be under an allowed root ({roots})")


def test_eval_dataset_symlinked_out_of_the_root(checked_client, checked, good_config, tmp_path, tmp_path_factory):
    outside = write_jsonl(tmp_path_factory.mktemp("outside") / "rows.jsonl", contact_rows(3))
    (tmp_path / "eval.jsonl").symlink_to(outside)
    roots = ", ".join(str(r) for r in checked.settings.resolved_dataset_roots)
    assert refused(checked_client, checked, good_config | {"eval_dataset_name": str(tmp_path / "eval.jsonl")}) == (
        f"config.eval_dataset_name: {tmp_path / 'eval.jsonl'}: local datasets must be under an allowed root ({roots})")


def test_output_dir_that_cannot_be_created_is_refused_at_submit(client, manager, fake_config, settings):
    root = settings.resolved_output_root
    root.mkdir(parents=True, exist_ok=True)
    (root / "a-file").write_text("x")
    response = client.post("/api/sft/train", json={"config": fake_config | {"output_dir": "a-file/run"}})
    assert response.status_code == 400
    assert error_detail(response) == (f"config.output_dir: {root / 'a-file' / 'run'} cannot be created "
                                      "(Not a directory)")
    assert manager.jobs == {}


@pytest.mark.parametrize("case", list(BAD_TEXT))
def test_evaluate_dataset_with_unusable_text_is_a_400(client, manager, fake_config, case):
    job = manager.submit(fake_config)
    manager.runner.release(job.job_id)
    manager.wait_for_job(job.job_id, timeout=10)
    value, reason = BAD_TEXT[case]
    response = post(client, "/api/sft/evaluate", {"job_id": job.job_id, "dataset_name": value})
    if case == "surrogate":  # refused at the edge, naming the field, without a 500 (#23 item 5)
        assert response.status_code == 400, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["dataset_name"]
        assert response.json()["detail"] == f"dataset_name: {SURROGATE_IN_BODY}"
        return
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("dataset_name: ") and reason in response.json()["detail"]


def test_evaluate_dataset_outside_the_roots_is_a_400_that_reveals_nothing(client, manager, fake_config,
                                                                         tmp_path_factory):
    job = manager.submit(fake_config)
    manager.runner.release(job.job_id)
    manager.wait_for_job(job.job_id, timeout=10)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "train.jsonl").write_text('{"private-header": 1}\n')
    details = []
    for name in (f"bundled:{outside}", str(outside), str(outside / "train.jsonl"), str(outside / "nope.jsonl")):
        response = client.post("/api/sft/evaluate", json={"job_id": job.job_id, "dataset_name": name,
                                                          "split": "train"})
        assert response.status_code == 400 and "private-header" not in response.text
        details.append(response.json()["detail"].replace(name, "X"))
    assert details[1] == details[2] == details[3]
    assert "must be under an allowed root" in details[1] and "no bundled dataset" in details[0]


# Bounds that only exhaust memory


def test_batch_times_length_beyond_the_bound_is_a_400(client, manager, fake_config):
    response = client.post("/api/sft/train", json={"config": fake_config | {"per_device_train_batch_size": 512,
                                                                            "max_length": 4096}})
    assert response.status_code == 400 and manager.jobs == {}
    assert response.json()["detail"] == (
        "config: per_device_train_batch_size × max_length = 512 × 4,096 = 2,097,152 tokens per device batch, "
        "above the bound of 262,144; lower one of them (use gradient_accumulation_steps for a larger effective "
        "batch)")


# Checks made at submit, not after the job starts


def test_unknown_lora_target_modules_are_a_400_at_submit(checked_client, checked, good_config):
    assert refused(checked_client, checked, good_config | {"lora_target_modules": ["q_proj", "qproj", "attn"]}) == (
        "config.lora_target_modules: qproj, attn match no module of " + good_config["base_model"] +
        " (its linear layers: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj; or use 'all-linear')")
    ok = checked_client.post("/api/sft/train", json={"config": good_config | {
        "lora_target_modules": ["q_proj", "self_attn.v_proj", "model.layers.0.mlp.up_proj"]}})
    assert ok.status_code == 200, ok.text


def test_report_to_a_tracker_that_is_not_installed_is_a_400(client, manager, fake_config, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("wandb", "tensorboard", "tensorboardX") else real(name, *a))
    for target, package in (("wandb", "wandb"), ("tensorboard", "tensorboard")):
        response = client.post("/api/sft/train", json={"config": fake_config | {"report_to": [target]}})
        assert response.status_code == 400 and manager.jobs == {}
        assert response.json()["detail"] == (f"config.report_to: {target} is not installed on this server "
                                             f"(pip install {package}); install it or leave it out of report_to")
