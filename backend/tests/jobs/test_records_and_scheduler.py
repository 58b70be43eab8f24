"""The manager's small parts on their own: the scheduler (no threads), the records' one ``set_status`` and
output-directory index, the store's guard on ended jobs, and a resume's announcement."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core import joblogs
from app.core.errors import JobConflict
from app.jobs.events import EventLog
from app.jobs.manager import SFTJobManager
from app.jobs.models import IllegalTransition, JobStatus, SFTJob
from app.jobs.records import JobRecords
from app.jobs.scheduler import Scheduler
from app.store import JobStore, SQLiteStore, TerminalJob
from fake_executor import FakeExecutor


def test_the_scheduler_is_fifo_over_its_slots():
    scheduler = Scheduler(2)
    # a and b fit the free slots; c and d wait (positions count the queue as it is: a and b not started yet)
    assert [scheduler.enqueue(job) for job in "abcd"] == [None, None, 3, 4]
    assert scheduler.enqueue("c") == 3 and list(scheduler.queue) == ["a", "b", "c", "d"]  # queued once
    assert [scheduler.next_ready(), scheduler.next_ready(), scheduler.next_ready()] == ["a", "b", None]
    assert scheduler.positions() == {"c": 1, "d": 2} and "c" in scheduler and "a" not in scheduler
    assert scheduler.dequeue("c") and not scheduler.dequeue("c")
    scheduler.release("a")
    assert scheduler.next_ready() == "d" and scheduler.next_ready() is None and scheduler.running == {"b", "d"}
    scheduler.slots = 3
    scheduler.claim("e")  # a re-attached run takes a slot without queueing
    assert scheduler.enqueue("f") == 1 and scheduler.next_ready() is None


@pytest.fixture
def records(tmp_path) -> JobRecords:
    store = SQLiteStore(tmp_path / "r.db")
    yield JobRecords(EventLog(store, joblogs.install(tmp_path / "logs")))
    store.close()


def _job(records: JobRecords, output_dir: str) -> SFTJob:
    job = SFTJob({"base_model": "m", "dataset_name": "d", "max_steps": 1, "output_dir": output_dir})
    records.add(job)
    return job


def test_set_status_applies_the_table_stamps_times_and_stores_the_move(records):
    job = _job(records, "/out/a")
    records.set_status(job, JobStatus.RUNNING, progress={"phase": "starting", "started_monotonic": 1.0})
    started = job.started_at
    assert started and job.completed_at is None
    stored = records.store.load_jobs()[0]
    assert (stored["status"], stored["started_at"], stored["progress"]) == ("running", started, {"phase": "starting"})
    records.set_status(job, JobStatus.STOPPING)
    with pytest.raises(IllegalTransition):
        records.set_status(job, JobStatus.PENDING, resume=True)  # a resume moves only an ended job
    records.set_status(job, JobStatus.FAILED, error="boom")
    assert job.completed_at and records.store.load_jobs()[0]["completed_at"] == job.completed_at
    with pytest.raises(IllegalTransition):
        records.set_status(job, JobStatus.RUNNING)
    records.set_status(job, JobStatus.PENDING, resume=True)
    records.set_status(job, JobStatus.RUNNING)
    assert job.started_at == started and job.completed_at is None  # the first start is the job's start
    assert records.store.load_jobs()[0]["completed_at"] is None


def test_the_store_refuses_to_move_an_ended_job_except_on_resume(records):
    store = records.store
    assert isinstance(store, JobStore)
    # Everything public of the SQLite store is in the protocol (what another store must have too).
    assert {n for n in vars(SQLiteStore) if not n.startswith("_")} <= {n for n in vars(JobStore) if not n.startswith("_")}
    job = _job(records, "/out/a")
    store.update_job(job.job_id, status="stopped")
    with pytest.raises(TerminalJob, match="only a resume moves it"):
        store.update_job(job.job_id, status="running")
    store.update_job(job.job_id, status="stopped", training_seq=3)  # no move, and other fields write
    store.update_job(job.job_id, error="kept")
    store.update_job(job.job_id, status="pending", resume=True)
    assert [(r["status"], r["training_seq"], r["error"]) for r in store.load_jobs()] == [("pending", 3, "kept")]


def test_output_dirs_are_looked_up_in_an_index(records):
    job = _job(records, "/out/a/b")
    for other, reason in (("/out/a/b", "is in use by"), ("/out/a/b/c", "is inside the output_dir of"),
                          ("/out/a", "contains the output_dir of"), ("/out", "contains the output_dir of")):
        with pytest.raises(JobConflict, match=f"output_dir {other} {reason} job {job.job_id}"):
            records.check_output_dir_free(other)
        records.check_output_dir_free(other, besides=job.job_id)
    for free in ("/out/a/bc", "/out/a/a", "/out/ab", "/other"):
        records.check_output_dir_free(free)
    for other in ("/out/a/b", "/out/a/b/c", "/out/a"):  # another user's job is not identified
        with pytest.raises(JobConflict) as exc:
            records.check_output_dir_free(other, owner="bob")
        assert job.job_id not in exc.value.detail and exc.value.detail.endswith("another job; choose another output_dir")
    records.remove(job.job_id)
    records.check_output_dir_free("/out/a/b")


def test_resuming_a_job_that_never_started_announces_no_checkpoint(settings, db_path, fake_config):
    """Issue #23, item 12: its directory may hold a checkpoint it does not use (it trains from the first step)."""
    fake = FakeExecutor()
    manager = SFTJobManager(store=SQLiteStore(db_path), executor=fake, preflight=False, max_concurrent_jobs=1,
                            settings=settings)
    try:
        job_id = manager.create_job(fake_config)
        checkpoint = Path(manager.get_job(job_id).output_dir) / "checkpoints" / "checkpoint-3"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text("{}")
        manager.stop_job(job_id)
        manager.resume_job(job_id)
        resumed = [e["message"] for e in manager.events(job_id) if e["type"] == "resumed"]
        assert resumed == ["Resume requested: resuming from the first step (no checkpoint)"]
        assert fake.run(job_id).spec.resume_from is None
        assert manager.get_job(job_id).attempts[0]["resumed_from_step"] is None
    finally:
        manager.store.close()
