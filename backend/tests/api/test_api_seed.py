"""The seed's cases: the manager's basic calls, SFTJob, and each endpoint's success and failure."""

from __future__ import annotations

import pytest

from app.api.sft_job_manager import JobStatus, SFTJob
from app.core.errors import ConfigNotFound, InvalidConfig, JobConflict, JobNotFound
from factories import MISSING, wait_for
from job_helpers import error_detail


# SFTJobManager


def test_manager_init(manager, settings, gate):
    assert manager.jobs == {}
    assert manager.configs == {}
    assert manager.max_concurrent_jobs == 1
    assert manager.runner is gate
    assert manager.settings is settings
    assert manager.preflight is False


def test_create_job_without_callbacks(manager, fake_config):
    job_id = manager.create_job(fake_config)
    job = manager.get_job(job_id)
    assert job.status is JobStatus.PENDING
    assert job.callbacks == []
    assert job.config["base_model"] == "tiny-model"
    assert job.config["output_dir"] == str(manager.settings.resolved_output_root / job_id)
    assert manager.store.load_jobs()[0]["job_id"] == job_id


def test_create_job_with_callbacks(manager, fake_config):
    callback = object()
    job_id = manager.create_job(fake_config, callbacks=[callback])
    assert manager.get_job(job_id).callbacks == [callback]


def test_create_job_invalid_config_raises(manager):
    with pytest.raises(InvalidConfig) as exc:
        manager.create_job({"base_model": "m", "dataset_name": "d"})
    assert exc.value.detail == "config: set max_steps or num_train_epochs"
    assert manager.jobs == {}


def test_start_job(manager, gate, fake_config):
    job_id = manager.create_job(fake_config)
    manager.start_job(job_id)
    wait_for(lambda: job_id in gate.running, timeout=10, message="the job to run")
    assert manager.get_job(job_id).status is JobStatus.RUNNING
    gate.release(job_id)
    wait_for(lambda: manager.get_job(job_id).status is JobStatus.COMPLETED, timeout=10, message="completed")


def test_stop_job(manager, gate, fake_config):
    job_id = manager.submit(fake_config).job_id
    wait_for(lambda: job_id in gate.running, timeout=10, message="the job to run")
    assert manager.stop_job(job_id) is JobStatus.STOPPING
    wait_for(lambda: manager.get_job(job_id).status is JobStatus.STOPPED, timeout=10, message="stopped")


def test_get_job_status(manager, fake_config):
    job_id = manager.create_job(fake_config)
    status = manager.get_job_status(job_id)
    assert status["job_id"] == job_id
    assert status["status"] == "pending"
    assert status["started_at"] is None
    assert status["result"] is None


def test_list_jobs(manager, fake_config):
    ids = [manager.create_job(fake_config | {"seed": i}) for i in range(3)]
    assert [job["job_id"] for job in manager.list_jobs()] == ids
    assert [job["job_id"] for job in manager.list_jobs(newest_first=True)] == ids[::-1]


def test_save_config(manager):
    config_id = manager.save_config("small", {"max_steps": 5})
    assert manager.configs[config_id]["name"] == "small"
    assert manager.store.load_configs()[0]["config_id"] == config_id


def test_get_config(manager):
    config_id = manager.save_config("small", {"max_steps": 5, "lora_r": 8})
    saved = manager.get_config(config_id)
    assert saved["config_id"] == config_id
    assert saved["name"] == "small"
    assert saved["config"] == {"max_steps": 5, "lora_r": 8}
    assert saved["created_at"]


def test_list_configs(manager):
    first = manager.save_config("a", {"max_steps": 1})
    second = manager.save_config("b", {"max_steps": 2})
    assert [c["config_id"] for c in manager.list_configs()] == [first, second]


def test_get_job_status_not_found(manager):
    with pytest.raises(JobNotFound) as exc:
        manager.get_job_status(MISSING)
    assert exc.value.detail == f"Job {MISSING} not found"


def test_start_job_not_found(manager):
    with pytest.raises(JobNotFound):
        manager.start_job(MISSING)


def test_stop_job_not_found(manager):
    with pytest.raises(JobNotFound):
        manager.stop_job(MISSING)


def test_get_config_not_found(manager):
    with pytest.raises(ConfigNotFound) as exc:
        manager.get_config(MISSING)
    assert exc.value.detail == f"Config {MISSING} not found"


# SFTJob


def test_sft_job_init():
    job = SFTJob({"base_model": "m"}, callbacks=None)
    assert len(job.job_id) == 36
    assert job.status is JobStatus.PENDING
    assert job.config == {"base_model": "m"}
    assert job.callbacks == []
    assert job.created_at
    assert job.started_at is job.completed_at is job.error is job.result is None
    assert not job.stop_event.is_set()


def test_sft_job_to_dict():
    job = SFTJob({"base_model": "m"}, job_id="j1")
    data = job.to_dict()
    assert {"job_id", "status", "created_at", "started_at", "completed_at", "error", "result"} <= set(data)
    assert data["job_id"] == "j1"
    assert data["status"] == "pending"


# Routes


def test_post_train_valid(client, manager, fake_config):
    response = client.post("/api/sft/train", json={"config": fake_config})
    assert response.status_code == 200
    body = response.json()
    # The one slot is free, so the job starts before the response is sent (and the gate holds it there).
    assert body["status"] == "running"
    assert len(body["job_id"]) == 36
    assert body["job_id"] in manager.jobs


def test_post_train_invalid(client, manager):
    response = client.post("/api/sft/train", json={"config": {"base_model": "m", "dataset_name": "d",
                                                              "max_steps": 0}})
    assert response.status_code == 400
    assert error_detail(response) == "config.max_steps: Input should be greater than or equal to 1"
    assert manager.jobs == {}


def test_get_job_found(client, manager, fake_config):
    job_id = manager.create_job(fake_config)
    response = client.get(f"/api/sft/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["job_id"] == job_id
    assert response.json()["status"] == "pending"


def test_get_job_not_found(client):
    response = client.get(f"/api/sft/jobs/{MISSING}")
    assert response.status_code == 404
    assert error_detail(response) == f"Job {MISSING} not found"


def test_list_jobs_route(client, manager, fake_config):
    job_id = manager.create_job(fake_config)
    response = client.get("/api/sft/jobs")
    assert response.status_code == 200
    body = response.json()
    assert [job["job_id"] for job in body["jobs"]] == [job_id]
    assert body["total"] == 1


def test_stop_route_found(client, manager, fake_config):
    job_id = manager.create_job(fake_config)
    response = client.post(f"/api/sft/jobs/{job_id}/stop")
    assert response.status_code == 200
    assert response.json() == {"message": f"Job {job_id} stopped", "status": "stopped"}


def test_stop_route_not_found(client):
    response = client.post(f"/api/sft/jobs/{MISSING}/stop")
    assert response.status_code == 404
    assert error_detail(response) == f"Job {MISSING} not found"


def test_post_config(client, manager):
    response = client.post("/api/sft/configs", json={"name": "small", "config": {"max_steps": 5}})
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "small"
    assert manager.get_config(body["config_id"])["config"] == {"max_steps": 5}


def test_post_config_invalid(client, manager):
    response = client.post("/api/sft/configs", json={"name": "bad", "config": {"lora_rr": 8}})
    assert response.status_code == 400
    assert error_detail(response) == "config.lora_rr: unknown field (did you mean lora_r?)"
    assert manager.configs == {}


def test_get_configs(client, manager):
    config_id = manager.save_config("small", {"max_steps": 5})
    response = client.get("/api/sft/configs")
    assert response.status_code == 200
    assert [c["config_id"] for c in response.json()] == [config_id]


def test_get_config_found(client, manager):
    config_id = manager.save_config("small", {"max_steps": 5})
    response = client.get(f"/api/sft/configs/{config_id}")
    assert response.status_code == 200
    assert response.json()["config"] == {"max_steps": 5}
    assert response.json()["name"] == "small"


def test_get_config_not_found_route(client):
    response = client.get(f"/api/sft/configs/{MISSING}")
    assert response.status_code == 404
    assert error_detail(response) == f"Config {MISSING} not found"


def test_start_job_that_is_not_pending_conflicts(manager, fake_config):
    job_id = manager.create_job(fake_config)
    manager.stop_job(job_id)
    with pytest.raises(JobConflict) as exc:
        manager.start_job(job_id)
    assert exc.value.detail == f"Job {job_id} is stopped; only a pending job can be started"
