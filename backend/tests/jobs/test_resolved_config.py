"""Validate once, carry the resolved config: what a job stores is what it trains, whatever the defaults become."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.jobs.models import JobStatus
from app.sft.config import SFTConfig
from app.store import SQLiteStore


@pytest.fixture
def lora_r_default_4():
    """A later release where ``lora_r`` defaults to 4 instead of 16."""
    field = SFTConfig.model_fields["lora_r"]
    old = field.default
    field.default = 4
    SFTConfig.model_rebuild(force=True)
    yield
    field.default = old
    SFTConfig.model_rebuild(force=True)


def test_a_job_keeps_its_whole_resolved_config(manager, client, fake_config):
    job_id = manager.create_job(fake_config)
    job = manager.get_job(job_id)
    assert isinstance(job.sft_config, SFTConfig) and job.sft_config is job.sft_config  # validated once
    assert set(job.config) == set(SFTConfig.model_fields)
    assert job.config["lora_r"] == 16 and job.config["output_dir"] == str(
        manager.settings.resolved_output_root / job_id)
    assert manager.store.load_jobs()[0]["config"] == job.config
    assert client.get(f"/api/sft/jobs/{job_id}").json()["config"] == job.config


def test_an_older_record_s_partial_config_is_completed_once_on_load(make_manager, db_path, fake_config):
    first = make_manager()
    job_id = first.create_job(fake_config)
    first.stop_job(job_id)  # ended, so the first manager has nothing left to record
    # What versions before this one stored: only the fields the request set, and the output_dir.
    partial = {**fake_config, "output_dir": first.get_job(job_id).output_dir}
    first.store.update_job(job_id, config=partial)

    second = make_manager(store=SQLiteStore(db_path))
    completed = second.get_job(job_id).config
    assert set(completed) == set(SFTConfig.model_fields)
    assert completed == SFTConfig.model_validate(partial).model_dump(mode="json")
    assert SQLiteStore(db_path).load_jobs()[0]["config"] == completed


def test_a_job_resumed_after_a_default_changed_trains_with_its_stored_value(
        make_manager, db_path, tiny_config, request):
    first = make_manager(runner=None, preflight=True)
    job_id = first.create_job(tiny_config | {"max_steps": 2})
    first.stop_job(job_id)  # stopped before it started: the resume trains it from the first step

    request.getfixturevalue("lora_r_default_4")
    assert SFTConfig.model_validate(tiny_config).lora_r == 4  # the new default is in force
    second = make_manager(store=SQLiteStore(db_path), runner=None, preflight=True)
    assert second.get_job(job_id).sft_config.lora_r == 16
    second.resume_job(job_id)
    final = second.wait_for_job(job_id, timeout=120)
    assert final["status"] == "completed" and final["config"]["lora_r"] == 16
    adapter = json.loads((Path(final["result"]["adapter_path"]) / "adapter_config.json").read_text())
    assert adapter["r"] == 16
    assert second.get_job(job_id).status is JobStatus.COMPLETED


def test_build_config_names_each_field_in_structured_errors():
    """What /v1's mapper calls: one structured error per problem, its ``field`` the path under the prefix."""
    from app.core.errors import InvalidConfig
    from app.jobs.preflight import build_config

    raw = {"base_model": "m", "dataset_name": "d", "max_steps": 0, "lora_rr": 3}
    with pytest.raises(InvalidConfig) as exc:
        build_config(raw)
    assert [e["field"] for e in exc.value.errors] == ["config.max_steps", "config.lora_rr"]
    assert exc.value.errors[1]["message"] == "unknown field (did you mean lora_r?)"
    assert exc.value.detail == ("config.max_steps: Input should be greater than or equal to 1; "
                                "config.lora_rr: unknown field (did you mean lora_r?)")
    with pytest.raises(InvalidConfig) as bare:
        build_config({"base_model": "m", "dataset_name": "d"}, prefix="")
    assert [(e["field"], e["message"]) for e in bare.value.errors] == [("config", "set max_steps or num_train_epochs")]
    config = build_config({"base_model": "m", "dataset_name": "d", "max_steps": 1})
    assert build_config(config) is config


def test_a_typed_config_is_validated_once_from_submit_to_the_executor(settings, db_path, fake_config, monkeypatch):
    from app.jobs.manager import SFTJobManager
    from fake_executor import FakeExecutor

    fake = FakeExecutor()
    manager = SFTJobManager(store=SQLiteStore(db_path), executor=fake, preflight=False, settings=settings)
    try:
        config = SFTConfig.model_validate(fake_config)
        calls = []
        validate = SFTConfig.model_validate.__func__
        monkeypatch.setattr(SFTConfig, "model_validate",
                            classmethod(lambda cls, *a, **k: calls.append(a) or validate(cls, *a, **k)))
        job = manager.submit(config)
        assert job.status is JobStatus.RUNNING and calls == []
        spec = fake.run(job.job_id).spec
        assert spec.config is job.sft_config and spec.config.output_dir == job.output_dir != config.output_dir
    finally:
        manager.store.close()
