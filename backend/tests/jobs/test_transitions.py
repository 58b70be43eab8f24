"""The status transition table: every move it allows passes, every other one is refused — through
``JobRecords.set_status``, the one place a job's status changes (and is stored)."""

from __future__ import annotations

import itertools

import pytest

from app.core import joblogs
from app.core.errors import JobConflict
from app.jobs.events import EventLog
from app.jobs.models import RESUMABLE, TRANSITIONS, IllegalTransition, JobStatus, SFTJob, check_transition
from app.jobs.records import JobRecords
from app.store import SQLiteStore

ALL_MOVES = list(itertools.product(JobStatus, JobStatus))
ALLOWED = [(a, b) for a, b in ALL_MOVES if b in TRANSITIONS[a]]
REFUSED = [(a, b) for a, b in ALL_MOVES if b not in TRANSITIONS[a]]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    store = SQLiteStore(":memory:")
    yield JobRecords(EventLog(store, joblogs.install(tmp_path_factory.mktemp("logs"))))
    store.close()


def _stored_status(records: JobRecords, job: SFTJob) -> str:
    return next(r["status"] for r in records.store.load_jobs() if r["job_id"] == job.job_id)


def test_terminal_states_have_no_moves_of_their_own():
    assert {s for s in JobStatus if s.is_terminal()} == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED}
    assert all(not TRANSITIONS[s] for s in JobStatus if s.is_terminal())


@pytest.mark.parametrize(("current", "new"), ALLOWED, ids=[f"{a.value}->{b.value}" for a, b in ALLOWED])
def test_allowed_move(records, current, new):
    job = SFTJob({"base_model": "m"}, status=current)
    records.add(job)
    records.set_status(job, new)
    assert job.status is new and _stored_status(records, job) == new.value


@pytest.mark.parametrize(("current", "new"), REFUSED, ids=[f"{a.value}->{b.value}" for a, b in REFUSED])
def test_illegal_move_is_refused(records, current, new):
    job = SFTJob({"base_model": "m"}, status=current)
    records.add(job)
    with pytest.raises(IllegalTransition) as exc:
        records.set_status(job, new)
    assert isinstance(exc.value, JobConflict)  # a 409 if it ever reached a request
    assert exc.value.detail.startswith(f"a job cannot go from {current.value} to {new.value}")
    assert job.status is current and _stored_status(records, job) == current.value


@pytest.mark.parametrize(("current", "new"), ALL_MOVES, ids=[f"{a.value}->{b.value}" for a, b in ALL_MOVES])
def test_resume_moves_only_a_stopped_or_failed_job_back_to_pending(current, new):
    resumable = current in RESUMABLE and new is JobStatus.PENDING
    if resumable or new in TRANSITIONS[current]:
        check_transition(current, new, resume=True)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, new, resume=True)
    if current is JobStatus.COMPLETED:
        with pytest.raises(IllegalTransition):
            check_transition(current, JobStatus.PENDING, resume=True)
