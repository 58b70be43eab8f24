"""The status transition table: every move it allows passes, every other one is refused."""

from __future__ import annotations

import itertools

import pytest

from app.core.errors import JobConflict
from app.jobs.models import RESUMABLE, TRANSITIONS, IllegalTransition, JobStatus, SFTJob, check_transition, move

ALL_MOVES = list(itertools.product(JobStatus, JobStatus))
ALLOWED = [(a, b) for a, b in ALL_MOVES if b in TRANSITIONS[a]]
REFUSED = [(a, b) for a, b in ALL_MOVES if b not in TRANSITIONS[a]]


def test_terminal_states_have_no_moves_of_their_own():
    assert {s for s in JobStatus if s.is_terminal()} == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED}
    assert all(not TRANSITIONS[s] for s in JobStatus if s.is_terminal())


@pytest.mark.parametrize(("current", "new"), ALLOWED, ids=[f"{a.value}->{b.value}" for a, b in ALLOWED])
def test_allowed_move(current, new):
    job = SFTJob({"base_model": "m"}, status=current)
    move(job, new)
    assert job.status is new


@pytest.mark.parametrize(("current", "new"), REFUSED, ids=[f"{a.value}->{b.value}" for a, b in REFUSED])
def test_illegal_move_is_refused(current, new):
    job = SFTJob({"base_model": "m"}, status=current)
    with pytest.raises(IllegalTransition) as exc:
        move(job, new)
    assert isinstance(exc.value, JobConflict)  # a 409 if it ever reached a request
    assert exc.value.detail.startswith(f"a job cannot go from {current.value} to {new.value}")
    assert job.status is current


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
