"""The queue, stops, terminal states, failures, restart recovery, idempotency and deletion."""

from __future__ import annotations

import pytest

from app.api.sft_job_manager import INTERRUPTED_ERROR, JobStatus
from app.core.errors import JobConflict
from app.store import SQLiteStore
from factories import wait_for


def _status(manager, job_id: str) -> JobStatus:
    return manager.get_job(job_id).status


def _submit_n(manager, config, n: int) -> list[str]:
    return [manager.submit(config | {"seed": i}).job_id for i in range(n)]


# Queue


def test_queue_is_fifo_with_one_slot(manager, gate, fake_config):
    a, b, c = _submit_n(manager, fake_config, 3)
    wait_for(lambda: gate.running == {a}, timeout=10, message="a to run")
    assert [_status(manager, j) for j in (a, b, c)] == [JobStatus.RUNNING, JobStatus.PENDING, JobStatus.PENDING]
    assert [manager.get_job(j).queue_position for j in (a, b, c)] == [None, 1, 2]

    gate.release(a)
    wait_for(lambda: gate.running == {b}, timeout=10, message="b to run")
    assert manager.get_job(c).queue_position == 1
    assert manager.get_job(b).queue_position is None
    gate.release(b)
    gate.release(c)
    wait_for(lambda: _status(manager, c) is JobStatus.COMPLETED, timeout=10, message="c to complete")
    assert gate.started == [a, b, c]
    assert [_status(manager, j) for j in (a, b)] == [JobStatus.COMPLETED, JobStatus.COMPLETED]


def test_submit_reports_queue_position(client, fake_config):
    first = client.post("/api/sft/train", json={"config": fake_config}).json()
    second = client.post("/api/sft/train", json={"config": fake_config | {"seed": 1}}).json()
    third = client.post("/api/sft/train", json={"config": fake_config | {"seed": 2}}).json()
    assert (first["status"], first["queue_position"]) == ("running", None)
    assert (second["status"], second["queue_position"]) == ("pending", 1)
    assert (third["status"], third["queue_position"]) == ("pending", 2)
    assert client.get(f"/api/sft/jobs/{third['job_id']}").json()["queue_position"] == 2


def test_stopping_a_queued_job_moves_the_ones_behind_it_up(manager, gate, fake_config):
    a, b, c = _submit_n(manager, fake_config, 3)
    assert manager.stop_job(b) is JobStatus.STOPPED
    assert manager.get_job(c).queue_position == 1
    gate.release(a)
    wait_for(lambda: gate.running == {c}, timeout=10, message="c to run")
    assert b not in gate.started


def test_two_slots_run_two_jobs_at_once(make_manager, fake_config):
    manager = make_manager(max_concurrent_jobs=2)
    gate = manager.runner
    a, b, c = _submit_n(manager, fake_config, 3)
    wait_for(lambda: gate.running == {a, b}, timeout=10, message="a and b to run together")
    assert _status(manager, c) is JobStatus.PENDING
    assert manager.get_job(c).queue_position == 1
    gate.release(b)
    wait_for(lambda: gate.running == {a, c}, timeout=10, message="c to take b's slot")
    assert _status(manager, a) is JobStatus.RUNNING
    assert gate.started == [a, b, c]


# Stops


def test_stop_pending_job_stops_at_once(manager, fake_config):
    a, b = _submit_n(manager, fake_config, 2)
    assert manager.stop_job(b) is JobStatus.STOPPED
    job = manager.get_job(b)
    assert job.completed_at is not None
    assert job.started_at is None
    assert job.queue_position is None
    assert manager.store.load_jobs()[1]["status"] == "stopped"


def test_stop_running_job_goes_through_stopping(client, manager, gate, fake_config):
    job_id = manager.submit(fake_config).job_id
    wait_for(lambda: job_id in gate.running, timeout=10, message="the job to run")
    # Hold the runner after it sees the stop, so `stopping` can be observed.
    gate.before_return = lambda job, emit: gate.gate("hold").wait(10)
    response = client.post(f"/api/sft/jobs/{job_id}/stop")
    assert response.status_code == 200
    assert response.json() == {
        "message": f"Job {job_id} stopping: it stops at the next step and saves its adapter",
        "status": "stopping",
    }
    assert client.get(f"/api/sft/jobs/{job_id}").json()["status"] == "stopping"
    assert manager.store.load_jobs()[0]["status"] == "stopping"
    gate.release("hold")
    wait_for(lambda: _status(manager, job_id) is JobStatus.STOPPED, timeout=10, message="stopped")
    job = manager.get_job(job_id)
    assert job.result["stopped"] is True
    assert [e["type"] for e in manager.events(job_id)][-2:] == ["stopping", "stopped"]
    assert manager.events(job_id)[-1]["message"] == "Stopped; the adapter trained so far is saved"


def test_stop_finished_job_is_409(client, manager, gate, fake_config):
    job_id = manager.submit(fake_config).job_id
    gate.release(job_id)
    wait_for(lambda: _status(manager, job_id) is JobStatus.COMPLETED, timeout=10, message="completed")
    response = client.post(f"/api/sft/jobs/{job_id}/stop")
    assert response.status_code == 409
    assert response.json() == {"detail": f"Job {job_id} has already ended (completed); nothing to stop"}


def test_terminal_states_never_change(manager, gate, fake_config):
    done, failed, stopped = _submit_n(manager, fake_config, 3)
    gate.fail[failed] = RuntimeError("boom")
    manager.stop_job(stopped)
    gate.release(done)
    gate.release(failed)
    wait_for(lambda: _status(manager, failed) is JobStatus.FAILED, timeout=10, message="failed")
    before = {j: manager.get_job_status(j) for j in (done, failed, stopped)}
    for job_id, expected in ((done, "completed"), (failed, "failed"), (stopped, "stopped")):
        with pytest.raises(JobConflict) as exc:
            manager.stop_job(job_id)
        assert exc.value.detail == f"Job {job_id} has already ended ({expected}); nothing to stop"
        with pytest.raises(JobConflict):
            manager.start_job(job_id)
        job = manager.get_job(job_id)
        manager.runs.finish(job, JobStatus.COMPLETED)  # a late finish is ignored
    assert {j: manager.get_job_status(j) for j in (done, failed, stopped)} == before
    assert [r["status"] for r in manager.store.load_jobs()] == ["completed", "failed", "stopped"]


def test_runner_exception_fails_the_job_with_its_message(manager, gate, fake_config):
    job_id = manager.submit(fake_config).job_id
    gate.fail[job_id] = RuntimeError("boom")
    gate.release(job_id)
    wait_for(lambda: _status(manager, job_id) is JobStatus.FAILED, timeout=10, message="failed")
    status = manager.get_job_status(job_id)
    assert status["error"] == "RuntimeError: boom"
    assert status["error_detail"]["category"] == "internal"
    assert status["error_detail"]["message"] == "RuntimeError: boom"
    assert manager.events(job_id)[-1]["type"] == "failed"
    assert manager.events(job_id)[-1]["message"] == "Failed: RuntimeError: boom"


# Restart recovery


def _crash(manager) -> None:
    """Make ``manager`` act like a killed process: from now on it starts and records nothing."""
    with manager._lock:
        manager.scheduler.queue.clear()
        manager.max_concurrent_jobs = 0
        manager.store = SQLiteStore(":memory:")


def test_restart_requeues_pending_and_fails_running(make_manager, db_path, fake_config, settings):
    settings = settings.model_copy(update={"auto_resume_interrupted": False})
    first = make_manager(settings=settings)
    a, b, c = _submit_n(first, fake_config, 3)
    config_id = first.save_config("kept", {"max_steps": 7})
    wait_for(lambda: first.runner.running == {a}, timeout=10, message="a to run")
    _crash(first)

    # A new process on the same database, while `a` was mid-run in the old one.
    second = make_manager(store=SQLiteStore(db_path), settings=settings)
    gate = second.runner
    job = second.get_job(a)
    assert job.status is JobStatus.FAILED
    assert job.error == "interrupted: the server stopped while this job was running"
    assert job.error_detail["category"] == "interrupted"
    assert second.events(a)[-1]["type"] == "failed"
    wait_for(lambda: gate.running == {b}, timeout=10, message="b to run in the new process")
    assert second.get_job(c).status is JobStatus.PENDING
    assert second.get_job(c).queue_position == 1
    assert second.get_config(config_id)["config"] == {"max_steps": 7}
    records = {r["job_id"]: r for r in SQLiteStore(db_path).load_jobs()}
    assert records[a]["status"] == "failed"
    assert records[a]["error"] == INTERRUPTED_ERROR


def test_restart_fails_a_job_left_stopping(make_manager, db_path, fake_config):
    first = make_manager()
    gate = first.runner
    job_id = first.submit(fake_config).job_id
    wait_for(lambda: job_id in gate.running, timeout=10, message="the job to run")
    gate.before_return = lambda job, emit: gate.gate("hold").wait(10)
    first.stop_job(job_id)
    _crash(first)
    second = make_manager(store=SQLiteStore(db_path))
    assert second.get_job(job_id).status is JobStatus.FAILED
    assert second.get_job(job_id).error == INTERRUPTED_ERROR
    gate.release("hold")


def test_restart_keeps_finished_jobs_and_continues_sequence(make_manager, db_path, fake_config):
    first = make_manager()
    a = first.submit(fake_config).job_id
    first.runner.release(a)
    wait_for(lambda: _status(first, a) is JobStatus.COMPLETED, timeout=10, message="completed")
    _crash(first)
    second = make_manager(store=SQLiteStore(db_path))
    assert second.get_job_status(a)["status"] == "completed"
    assert second.get_job_status(a)["result"] == first.get_job_status(a)["result"]
    b = second.create_job(fake_config | {"seed": 9})
    assert [j["job_id"] for j in second.list_jobs()] == [a, b]
    assert second.get_job(b).seq == first.get_job(a).seq + 1


# Idempotency


def test_idempotency_key_same_body_same_job(client, manager, fake_config):
    headers = {"Idempotency-Key": "retry-1"}
    first = client.post("/api/sft/train", json={"config": fake_config}, headers=headers)
    second = client.post("/api/sft/train", json={"config": fake_config}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["job_id"] == second.json()["job_id"]
    assert len(manager.jobs) == 1


def test_idempotency_key_different_body_409(client, manager, fake_config):
    headers = {"Idempotency-Key": "retry-2"}
    job_id = client.post("/api/sft/train", json={"config": fake_config}, headers=headers).json()["job_id"]
    response = client.post("/api/sft/train", json={"config": fake_config | {"max_steps": 4}}, headers=headers)
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Idempotency-Key retry-2 was used for a different request (job {job_id})"
    }
    assert len(manager.jobs) == 1


def test_idempotency_key_survives_restart(make_manager, db_path, fake_config):
    first = make_manager()
    job_id = first.create_job(fake_config, idempotency_key="k")
    _crash(first)
    second = make_manager(store=SQLiteStore(db_path))
    assert second.create_job(fake_config, idempotency_key="k") == job_id


# Deletion


def test_delete_finished_job(client, manager, gate, fake_config):
    job_id = manager.submit(fake_config).job_id
    gate.release(job_id)
    wait_for(lambda: _status(manager, job_id) is JobStatus.COMPLETED, timeout=10, message="completed")
    output_dir = manager.get_job(job_id).output_dir
    response = client.delete(f"/api/sft/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json() == {"message": f"Job {job_id} deleted; its files stay in {output_dir}"}
    assert client.get(f"/api/sft/jobs/{job_id}").status_code == 404
    assert manager.store.load_jobs() == []
    assert manager.store.events(job_id) == []
    assert manager.logs.read(job_id) == []


def test_delete_running_job_is_409(client, manager, gate, fake_config):
    job_id = manager.submit(fake_config).job_id
    wait_for(lambda: job_id in gate.running, timeout=10, message="the job to run")
    response = client.delete(f"/api/sft/jobs/{job_id}")
    assert response.status_code == 409
    assert response.json() == {"detail": f"Job {job_id} is running; stop it before deleting it"}
    assert job_id in manager.jobs


def test_delete_missing_job_is_404(client):
    response = client.delete("/api/sft/jobs/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Job nope not found"}


def test_delete_config(client, manager):
    config_id = manager.save_config("gone", {"max_steps": 1})
    response = client.delete(f"/api/sft/configs/{config_id}")
    assert response.status_code == 200
    assert response.json() == {"message": f"Config {config_id} deleted"}
    assert client.get(f"/api/sft/configs/{config_id}").status_code == 404
    assert manager.store.load_configs() == []


def test_delete_missing_config_is_404(client):
    response = client.delete("/api/sft/configs/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Config nope not found"}


def test_output_dir_in_use_is_409(manager, fake_config):
    job_id = manager.submit(fake_config | {"output_dir": "shared"}).job_id
    with pytest.raises(JobConflict) as exc:
        manager.create_job(fake_config | {"output_dir": "shared", "seed": 1})
    out = manager.settings.resolved_output_root / "shared"
    assert exc.value.detail == f"output_dir {out} is in use by job {job_id} (running)"
