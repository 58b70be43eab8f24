"""The manager over the Executor protocol: start, stop-and-save, cancel, re-attach. Each test runs against
two remote executors on the shared remote machinery: the fake (events pulled in the test's thread) and a
subprocess per job (``subprocess_executor.py``: a new executor in one file, pulled by its poller)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.errors import InvalidConfig, JobConflict
from app.jobs.executors import Executor, LocalThreadExecutor, RunState
from app.jobs.manager import SFTJobManager
from app.jobs.models import JobStatus
from app.sft.config import SFTConfig
from app.sft.events import EventKind
from app.jobs.executors.base import JobSpec
from app.store import SQLiteStore
from factories import wait_for
from fake_executor import REFUSED_SEED, FakeExecutor
from subprocess_executor import SubprocessExecutor, read_events


@pytest.fixture(params=["fake", "subprocess"])
def fake(request, tmp_path):
    """The executor under test, with the driving methods of ``FakeExecutor`` (emit, step, exit, detach, lose)."""
    if request.param == "fake":
        yield FakeExecutor()
        return
    executor = SubprocessExecutor(tmp_path / "runs", scripted=True)
    yield executor
    executor.shutdown()


@pytest.fixture
def on_fake(settings, db_path, fake):
    """``on_fake(**kwargs)``: a new manager (a new API process) over the same database and fake executor."""
    made: list[SFTJobManager] = []

    def make(**kwargs) -> SFTJobManager:
        kwargs.setdefault("settings", settings)
        manager = SFTJobManager(store=SQLiteStore(db_path), executor=fake, preflight=False, max_concurrent_jobs=1,
                                **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.store.close()


def _types(manager, job_id):
    return [e["type"] for e in manager.events(job_id, limit=1000)]


def test_both_executors_fill_the_protocol(fake):
    assert isinstance(fake, Executor) and isinstance(LocalThreadExecutor(), Executor)


def test_start_hands_over_the_whole_config_and_stores_the_handle(on_fake, fake, fake_config):
    manager = on_fake()
    job = manager.submit(fake_config)
    assert job.status is JobStatus.RUNNING
    run = fake.run(job.job_id)
    assert isinstance(run.spec.config, SFTConfig)  # the typed value, not validated again on the way
    assert set(run.spec.config.model_dump()) == set(SFTConfig.model_fields)  # every field, defaults included
    assert run.spec.config.model_dump(mode="json") == job.config and run.spec.output_dir == job.output_dir
    assert JobSpec.from_dict(run.spec.to_dict()) == run.spec  # what crosses a process boundary
    assert (run.spec.attempt, run.spec.resume_from) == (1, None)
    record = manager.store.load_jobs()[0]
    assert (record["executor"], record["handle"], record["training_seq"]) == (
        fake.name, {"run_id": f"{fake.name}-{job.job_id}-1"}, 0)


def test_reports_become_progress_metrics_events_and_status(on_fake, fake, fake_config):
    manager = on_fake()
    job_id = manager.submit(fake_config).job_id
    fake.emit(job_id, EventKind.PHASE, phase="loading_model")
    fake.emit(job_id, EventKind.MODEL_LOADED, base_model="tiny-model", parameters=1234)
    fake.emit(job_id, EventKind.TRAINING_STARTED, global_step=0, max_steps=3)
    fake.step(job_id, 1, 3, loss=2.0)
    assert manager.get_job(job_id).progress["current_step"] == 1
    fake.step(job_id, 2, 3, loss=1.5)
    fake.emit(job_id, EventKind.CHECKPOINT_SAVED, step=2, path="/x/checkpoint-2")
    fake.emit(job_id, EventKind.LOG, level="info", message="a line from the worker")
    fake.step(job_id, 3, 3, loss=1.0)
    fake.exit(job_id, "completed", result={"global_step": 3, "adapter_path": "/x/adapter", "stopped": False})

    status = manager.get_job_status(job_id)
    assert status["status"] == "completed" and status["result"]["global_step"] == 3
    assert status["progress"]["percent"] == 100.0 and status["progress"]["metrics"]["loss"] == 1.0
    assert [p["step"] for p in manager.metrics(job_id)] == [1, 2, 3]
    assert _types(manager, job_id) == ["created", "queued", "started", "model_loaded", "metrics", "metrics",
                                       "checkpoint_saved", "metrics", "completed"]
    assert any("a line from the worker" in line for line in manager.logs.read(job_id))
    assert manager.store.load_jobs()[0]["training_seq"] == 12  # the EXITED event, the last of 12


def test_stop_asks_the_run_to_save_and_its_exit_ends_the_job(on_fake, fake, fake_config):
    manager = on_fake()
    job_id = manager.submit(fake_config).job_id
    assert manager.stop_job(job_id) is JobStatus.STOPPING
    assert fake.run(job_id).stop_requested
    fake.exit(job_id, "stopped", result={"stopped": True, "adapter_path": "/x/adapter", "global_step": 1})
    assert manager.get_job(job_id).status is JobStatus.STOPPED
    assert manager.events(job_id)[-1]["message"] == "Stopped; the adapter trained so far is saved"


def test_cancel_fails_the_job_and_later_reports_change_nothing(on_fake, fake, fake_config):
    manager = on_fake()
    job_id = manager.submit(fake_config).job_id
    assert manager.cancel_job(job_id) is JobStatus.FAILED
    status = manager.get_job_status(job_id)
    assert status["error_detail"]["category"] == "cancelled"
    fake.step(job_id, 1, 3, loss=2.0)
    fake.exit(job_id, "completed", result={"global_step": 3})
    assert manager.get_job_status(job_id) == status
    assert manager.metrics(job_id) == []
    with pytest.raises(JobConflict):
        manager.cancel_job(job_id)


def test_a_run_that_does_not_stop_within_its_grace_is_cancelled(on_fake, fake, fake_config):
    manager = on_fake()
    job_id = manager.submit(fake_config).job_id
    fake.stop_grace_seconds = 0.0
    assert manager.stop_job(job_id) is JobStatus.STOPPING
    fake.poll_once()  # the poll after the grace period (the subprocess executor's poller may get there first)
    wait_for(lambda: manager.get_job(job_id).status is JobStatus.FAILED, timeout=10, message="the hard cancel")
    job = manager.get_job(job_id)
    assert job.error_detail["category"] == "cancelled" and fake.run(job_id).state is RunState.EXITED
    assert job.error == ("cancelled: the job did not stop within 0 s of the stop request; its run was killed "
                         "without saving (its last checkpoint is kept)")


def test_a_run_lost_while_attached_fails_its_job(on_fake, fake, fake_config):
    manager = on_fake()
    job_id = manager.submit(fake_config).job_id
    fake.emit(job_id, EventKind.TRAINING_STARTED, global_step=0, max_steps=3)
    fake.lose(job_id)
    fake.poll_once()
    wait_for(lambda: manager.get_job(job_id).status is JobStatus.FAILED, timeout=10, message="the lost run")
    detail = manager.get_job(job_id).error_detail
    assert detail["category"] == "interrupted"
    assert detail["message"].startswith(f"interrupted: the job's {fake.name} run died; resume the job to continue")


def test_reattach_after_a_restart_continues_without_gaps_or_duplicates(on_fake, fake, fake_config):
    first = on_fake()
    job_id = first.submit(fake_config).job_id
    fake.emit(job_id, EventKind.TRAINING_STARTED, global_step=0, max_steps=4)
    fake.step(job_id, 1, 4, loss=2.0)
    fake.emit(job_id, EventKind.CHECKPOINT_SAVED, step=1, path="/x/checkpoint-1")
    fake.step(job_id, 2, 4)  # a step without metrics: consumed, but nothing durable records it
    fake.detach()  # the API process dies here
    fake.step(job_id, 3, 4, loss=1.5)  # while no manager listens

    second = on_fake()
    assert fake.reattached == [(job_id, 4)]  # the checkpoint (event 4) was the last one stored
    job = second.get_job(job_id)
    assert job.status is JobStatus.RUNNING and job.progress["current_step"] == 3
    fake.step(job_id, 4, 4, loss=1.0)
    fake.exit(job_id, "completed", result={"global_step": 4})

    assert second.get_job(job_id).status is JobStatus.COMPLETED
    assert [p["step"] for p in second.metrics(job_id)] == [1, 3, 4]
    assert _types(second, job_id) == ["created", "queued", "started", "metrics", "checkpoint_saved", "metrics",
                                      "metrics", "completed"]
    assert [a["status"] for a in second.get_job(job_id).attempts] == ["completed"]


def test_a_stopping_job_reattached_is_asked_to_stop_again(on_fake, fake, fake_config):
    first = on_fake()
    job_id = first.submit(fake_config).job_id
    first.stop_job(job_id)
    fake.detach()
    fake.run(job_id).stop_requested = False
    second = on_fake()
    assert second.get_job(job_id).status is JobStatus.STOPPING and fake.run(job_id).stop_requested


def test_a_run_that_ended_while_the_server_was_down_ends_the_job_on_reattach(on_fake, fake, fake_config):
    first = on_fake()
    job_id = first.submit(fake_config).job_id
    fake.detach()
    fake.exit(job_id, "completed", result={"global_step": 3})
    second = on_fake()
    assert second.get_job(job_id).status is JobStatus.COMPLETED
    assert _types(second, job_id)[-1] == "completed"


def test_a_lost_run_is_interrupted_and_resumed(on_fake, fake, fake_config):
    first = on_fake()
    job_id = first.submit(fake_config).job_id
    fake.detach()
    fake.lose(job_id)
    second = on_fake()
    assert fake.reattached == []
    assert "interrupted" in _types(second, job_id)
    # Queued again automatically: it starts at once on the free slot, as attempt 2.
    assert second.get_job(job_id).status is JobStatus.RUNNING and fake.run(job_id).spec.attempt == 2


def test_a_job_of_another_executor_is_not_reattached(on_fake, fake, fake_config, settings, db_path):
    first = on_fake()
    job_id = first.submit(fake_config).job_id
    fake.detach()
    first.store.update_job(job_id, executor="ray")
    second = on_fake(settings=settings.model_copy(update={"auto_resume_interrupted": False}))
    assert fake.reattached == []
    assert second.get_job(job_id).error_detail["category"] == "interrupted"


def test_the_executor_refuses_at_submit_naming_the_field(on_fake, fake, fake_config):
    manager = on_fake()
    with pytest.raises(InvalidConfig) as exc:
        manager.create_job(fake_config | {"seed": REFUSED_SEED})
    assert exc.value.detail == f"config.seed: seed {REFUSED_SEED} cannot run on the {fake.name} cluster"
    assert exc.value.errors == [{"field": "config.seed", "type": "invalid_config",
                                 "message": f"seed {REFUSED_SEED} cannot run on the {fake.name} cluster"}]
    assert manager.jobs == {}


def test_a_run_the_executor_cannot_start_fails_the_job(on_fake, fake_config):
    manager = on_fake()
    job = manager.submit(fake_config, callbacks=[object()])
    assert job.status is JobStatus.FAILED
    assert job.error_detail["category"] == "config" and "callbacks" in job.error


def test_health_reports_the_executor(on_fake, fake, client_for):
    client = client_for(on_fake())
    assert client.get("/health").json()["executor"] == {"name": fake.name, "status": "up", "runs": 0}


def test_thread_executor_cancel_abandons_the_thread():
    import threading

    from app.jobs.executors.base import JobSpec

    release = threading.Event()
    reports = []

    def runner(run, emit):
        release.wait(10)
        emit("step", {"step": 1, "max_steps": 1})
        return {"stopped": run.stop_event.is_set()}

    executor = LocalThreadExecutor(runner=runner)
    spec = JobSpec(job_id="j", config={"base_model": "m", "dataset_name": "d", "max_steps": 1, "output_dir": "/tmp/x"},
                   output_dir="/tmp/x")
    handle = executor.start(spec, lambda job_id, event: reports.append((job_id, event)))
    assert handle["thread"] == "sft-job-j" and executor.state("j") is RunState.RUNNING
    run = executor.run_of("j")
    executor.cancel("j")
    assert run.stop_event.is_set() and executor.state("j") is RunState.EXITED
    release.set()
    run.thread.join(10)
    assert [(job_id, e.kind, e.payload["status"]) for job_id, e in reports] == [("j", EventKind.EXITED, "failed")]
    assert reports[0][1].payload["error_detail"]["category"] == "cancelled"
    assert executor.state("j") is RunState.UNKNOWN
    assert executor.reattach(spec, handle, reports.append, after_seq=0) is False


def test_the_subprocess_executor_trains_a_real_job(settings, db_path, tiny_config, tmp_path):
    """The one-file executor runs ``run_training`` in its subprocess (the real trainer, as the thread and
    Ray executors do): the job trains, and every event it numbered arrives through the shared pull."""
    executor = SubprocessExecutor(tmp_path / "runs")
    manager = SFTJobManager(store=SQLiteStore(db_path), executor=executor, settings=settings, max_concurrent_jobs=1)
    try:
        job_id = manager.submit({**tiny_config, "max_steps": 2}).job_id
        final = manager.wait_for_job(job_id, timeout=120)
        assert final["status"] == "completed", final["error"]
        assert final["result"]["global_step"] == 2 and Path(final["result"]["adapter_path"]).is_dir()
        assert [p["step"] for p in manager.metrics(job_id) if "loss" in p] == [1, 2]
        assert _types(manager, job_id)[-1] == "completed" and "model_loaded" in _types(manager, job_id)
        events = read_events(executor.root / f"subprocess-{job_id}-1")
        assert manager.store.load_jobs()[0]["training_seq"] == len(events) == events[-1]["seq"]
    finally:
        executor.shutdown()
        manager.store.close()
