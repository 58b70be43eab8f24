"""Checkpoints, resume (by hand and after a restart), and failure categories."""

from __future__ import annotations

import math

import pytest

from app.api.sft_job_manager import INTERRUPTED_ERROR, JobStatus, SFTJobManager
from app.core.settings import Settings
from app.sft import SFTCallback
from app.store import SQLiteStore
from factories import wait_for


class StopAtStep(SFTCallback):
    """Asks the job to stop during step ``step`` (so it ends exactly there)."""

    def __init__(self, step: int):
        self.step = step
        self.job = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step - 1:
            self.job.stop_event.set()


@pytest.fixture
def training_manager(make_manager):
    """``training_manager(**kwargs)``: a manager with the real trainer and pre-flight, wound down after the test."""

    def make(**kwargs) -> SFTJobManager:
        kwargs.setdefault("runner", None)  # None: the manager's own trainer
        kwargs.setdefault("preflight", True)
        return make_manager(**kwargs)

    return make


def run_stopped_at(manager, config, step):
    stopper = StopAtStep(step)
    job_id = manager.create_job(config, callbacks=[stopper])
    stopper.job = manager.get_job(job_id)
    manager.start_job(job_id)
    return manager.wait_for_job(job_id, timeout=120)


def loss_by_step(points):
    return {p["step"]: p["loss"] for p in points if "loss" in p}


def test_resume_continues_the_loss_curve(training_manager, tiny_config):
    manager = training_manager()
    config = {**tiny_config, "max_steps": 10}
    reference = manager.wait_for_job(manager.submit(config).job_id, timeout=120)
    assert reference["status"] == "completed"

    stopped = run_stopped_at(manager, config, 4)
    assert stopped["status"] == "stopped" and stopped["result"]["global_step"] == 4
    job_id = stopped["job_id"]
    assert [c["step"] for c in manager.checkpoints(job_id)] == [4]

    manager.resume_job(job_id)
    final = manager.wait_for_job(job_id, timeout=120)
    assert final["status"] == "completed"
    assert final["result"]["global_step"] == 10
    assert [a["status"] for a in final["attempts"]] == ["stopped", "completed"]
    assert final["attempts"][1]["resumed_from_step"] == 4

    points = manager.metrics(job_id)
    second = [p for p in points if p["attempt"] == 2 and "loss" in p]
    assert min(p["step"] for p in second) == 5
    expected, resumed = loss_by_step(manager.metrics(reference["job_id"])), loss_by_step(second)
    for step in range(5, 11):
        assert math.isclose(resumed[step], expected[step], rel_tol=1e-3), step
    types = [e["type"] for e in manager.events(job_id, limit=1000)]
    assert "resumed" in types and types[-1] == "completed"


def test_resume_refuses_running_and_completed(training_manager, make_manager, tmp_path, tiny_config, fake_config):
    from app.core.errors import JobConflict

    manager = training_manager()
    done = manager.wait_for_job(manager.submit(tiny_config).job_id, timeout=120)
    with pytest.raises(JobConflict, match=f"Job {done['job_id']} is completed; only a stopped or failed job"):
        manager.resume_job(done["job_id"])

    held = make_manager(store=SQLiteStore(tmp_path / "held.db"))  # its GateRunner holds the job running
    running = held.submit(fake_config).job_id
    wait_for(lambda: running in held.runner.running, message="the job to run")
    with pytest.raises(JobConflict, match=f"Job {running} is running; only a stopped or failed job"):
        held.resume_job(running)


def test_resume_route_and_checkpoints_route(training_manager, client_for, tiny_config):
    manager = training_manager()
    stopped = run_stopped_at(manager, {**tiny_config, "max_steps": 6}, 2)
    client = client_for(manager)
    listed = client.get(f"/api/sft/jobs/{stopped['job_id']}/checkpoints").json()["checkpoints"]
    assert [c["step"] for c in listed] == [2]
    response = client.post(f"/api/sft/jobs/{stopped['job_id']}/resume")
    assert response.status_code == 200 and response.json()["job_id"] == stopped["job_id"]
    assert manager.wait_for_job(stopped["job_id"], timeout=120)["result"]["global_step"] == 6
    again = client.post(f"/api/sft/jobs/{stopped['job_id']}/resume")
    assert again.status_code == 409
    assert client.post("/api/sft/jobs/nope/resume").json() == {"detail": "Job nope not found"}


def _leave_running(settings, db_path, tiny_config) -> str:
    """Record a job as running, as a process killed mid-training leaves it (no thread ever starts)."""
    manager = SFTJobManager(settings=settings, store=SQLiteStore(db_path), preflight=False,
                            runner=lambda job, emit: {})
    job_id = manager.create_job(tiny_config)
    manager.store.update_job(job_id, status="running", attempts=[
        {"attempt": 1, "started_at": "t", "ended_at": None, "status": None, "resumed_from_step": None}])
    manager.store.close()
    return job_id


def test_interrupted_job_resumes_after_restart(training_manager, settings, db_path, tiny_config):
    job_id = _leave_running(settings, db_path, tiny_config)
    restarted = training_manager()
    final = restarted.wait_for_job(job_id, timeout=120)
    assert final["status"] == "completed"
    assert [a["status"] for a in final["attempts"]] == ["interrupted", "completed"]
    types = [e["type"] for e in restarted.events(job_id, limit=1000)]
    assert types.index("interrupted") < types.index("resumed") < types.index("completed")


def test_interrupted_job_fails_without_auto_resume(training_manager, settings, db_path, tiny_config):
    job_id = _leave_running(settings, db_path, tiny_config)
    no_resume = Settings(**{**settings.model_dump(), "auto_resume_interrupted": False})
    restarted = training_manager(settings=no_resume)
    status = restarted.get_job_status(job_id)
    assert status["status"] == "failed" and status["error"] == INTERRUPTED_ERROR
    assert status["error_detail"]["category"] == "interrupted"


# Failure categories


def failed(manager, config):
    status = manager.wait_for_job(manager.submit(config).job_id, timeout=120)
    assert status["status"] == "failed"
    return status


def test_dataset_failure(training_manager, tiny_config, chat_jsonl):
    manager = training_manager()
    job_id = manager.create_job(tiny_config)
    chat_jsonl.write_text('{"messages": "not a list"}\n')  # the file changes after the pre-flight
    manager.start_job(job_id)
    status = manager.wait_for_job(job_id, timeout=120)
    assert status["error_detail"]["category"] == "dataset"
    assert status["error"] == f"{chat_jsonl}, line 1: field 'messages' must be a non-empty list of turns"
    assert status["error_detail"]["log_tail"]


def test_model_failure(training_manager, tmp_path, tiny_config):
    manager = training_manager(preflight=False)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    status = failed(manager, {**tiny_config, "base_model": str(broken)})
    assert status["error_detail"]["category"] == "model"
    assert status["error"].startswith(f"could not load the tokenizer from {broken}")


def test_config_failure(training_manager, tiny_config):
    # Without the pre-flight, as for a Hub model not in the cache: the trainer finds it when it loads.
    manager = training_manager(preflight=False)
    status = failed(manager, {**tiny_config, "lora_target_modules": ["no_such_proj"]})
    assert status["error_detail"]["category"] == "config"
    assert "the trainer refused this config" in status["error"] and "no_such_proj" in status["error"]
    assert status["error"].endswith("(lora_target_modules; its linear layers: down_proj, gate_proj, k_proj, "
                                    "o_proj, q_proj, up_proj, v_proj)")


def _raising(exc):
    def runner(job, emit):
        raise exc
    return runner


def test_out_of_memory_failure(training_manager, tiny_config):
    manager = training_manager(runner=_raising(MemoryError("CPU RAM exhausted")))
    status = failed(manager, tiny_config)
    assert status["error_detail"]["category"] == "out_of_memory"
    assert status["error"].startswith("out of memory: CPU RAM exhausted. Lower per_device_train_batch_size")


def test_internal_failure(training_manager, tiny_config):
    manager = training_manager(runner=_raising(RuntimeError("boom")))
    status = failed(manager, tiny_config)
    assert status["error_detail"]["category"] == "internal" and status["error"] == "RuntimeError: boom"
    assert manager.get_job(status["job_id"]).status is JobStatus.FAILED


def test_progress_while_training(training_manager, tiny_config):
    manager = training_manager()
    final = manager.wait_for_job(manager.submit({**tiny_config, "max_steps": 6}).job_id, timeout=120)
    progress = final["progress"]
    assert progress["current_step"] == 6 and progress["max_steps"] == 6 and progress["percent"] == 100.0
    assert progress["phase"] == "completed"
    assert progress["steps_per_second"] > 0 and progress["samples_per_second"] > 0
    assert progress["tokens_per_second"] > 0 and "loss" in progress["metrics"]
    wait_for(lambda: manager.metrics(final["job_id"]), message="metrics")
    assert [p["step"] for p in manager.metrics(final["job_id"]) if "loss" in p] == [1, 2, 3, 4, 5, 6]
