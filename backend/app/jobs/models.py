"""A job and its status: ``SFTJob``, ``JobStatus`` and the one table of the moves a status may make
(``JobRecords.set_status`` applies it)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from enum import Enum
from functools import cached_property
from typing import Any

from ..core.errors import JobConflict
from ..sft.config import SFTConfig
from .fit import memory_report
from .progress import public_progress

INTERRUPTED_ERROR = "interrupted: the server stopped while this job was running"


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat()


class JobStatus(str, Enum):
    """Where a job is in its life. Terminal states never change, except by an explicit resume."""

    #: Created, waiting for a free training slot.
    PENDING = "pending"
    #: Its executor is loading, preparing data or training.
    RUNNING = "running"
    #: A stop was asked; training ends at the next step boundary and saves.
    STOPPING = "stopping"
    #: Trained to its target; the result holds the adapter path.
    COMPLETED = "completed"
    #: Ended by an error (or a hard cancel, or a server that died under it); ``error`` says why.
    FAILED = "failed"
    #: Ended by a stop; what was trained so far is saved.
    STOPPED = "stopped"

    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED})

#: Every move a status may make. A terminal status moves only by an explicit resume (``resume=True``),
#: and only back to ``pending``.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.STOPPED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset({JobStatus.STOPPING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED,
                                  # a server that died under it, when the job is queued again by itself
                                  JobStatus.PENDING}),
    JobStatus.STOPPING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.STOPPED: frozenset(),
}

#: Where an explicit resume may take a job from.
RESUMABLE = frozenset({JobStatus.STOPPED, JobStatus.FAILED})


class IllegalTransition(JobConflict):
    """A status move the transition table does not allow."""


def check_transition(current: JobStatus, new: JobStatus, *, resume: bool = False) -> None:
    """Raise ``IllegalTransition`` unless ``current -> new`` is in the table (or is an explicit resume
    of a stopped or failed job back to ``pending``)."""
    if resume and current in RESUMABLE and new is JobStatus.PENDING:
        return
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"a job cannot go from {current.value} to {new.value}"
                                + (" (ended jobs change only by a resume)" if current.is_terminal() else ""))


class SFTJob:
    """One training job: its resolved config, lifecycle, result, and the run its executor keeps.

    ``sft_config`` is the typed config the job trains with, every field resolved at submit; ``config``
    is the same as a JSON-safe dict (what the API shows and the store keeps).
    """

    def __init__(
        self,
        config: SFTConfig | dict[str, Any],
        callbacks: list[Any] | None = None,
        *,
        job_id: str | None = None,
        status: JobStatus = JobStatus.PENDING,
        created_at: str | None = None,
        seq: int = 0,
    ):
        self.job_id = job_id or str(uuid.uuid4())
        if isinstance(config, SFTConfig):
            self.__dict__["sft_config"] = config  # the cached_property's slot: never validated again
            self.config: dict[str, Any] = config.model_dump(mode="json")
        else:
            self.config = config
        self.callbacks = list(callbacks or [])
        self.status = JobStatus(status)
        self.created_at = created_at or utcnow()
        self.started_at: str | None = None
        self.completed_at: str | None = None
        self.error: str | None = None
        self.error_detail: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self.progress: dict[str, Any] = {}
        self.attempts: list[dict[str, Any]] = []
        self.seq = seq
        self.queue_position: int | None = None
        self.idempotency_key: str | None = None
        self.request_hash: str | None = None
        #: The user (API key name) the job belongs to; None: made without keys, the admins'.
        self.owner: str | None = None
        #: The executor that runs (or last ran) the job, and the handle its ``start`` returned.
        self.executor: str | None = None
        self.handle: dict[str, Any] | None = None
        #: Number of the last training event consumed from a sequenced executor (0: none).
        self.training_seq = 0
        #: An in-process executor's stop probe and thread (the seed's SFTJob fields; None elsewhere).
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        #: Checkpoint the current attempt continues from (None: from the first step).
        self.resume_from: str | None = None
        #: The fit planner's estimate made at submit (``FitPlan.as_dict``); None without pre-flight.
        self.memory_plan: dict[str, Any] | None = None

    @cached_property
    def sft_config(self) -> SFTConfig:
        """The typed config (validated once, for a job built from a dict)."""
        return SFTConfig.model_validate(self.config)

    @property
    def output_dir(self) -> str:
        return self.config["output_dir"]

    def to_dict(self) -> dict[str, Any]:
        """The job's status as the API returns it."""
        return {
            "job_id": self.job_id,
            "status": self.status.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "error": self.error,
            "result": self.result,
            "error_detail": self.error_detail,
            "queue_position": self.queue_position,
            "progress": public_progress(self.progress) or None,
            "attempts": self.attempts,
            "config": self.config,
            "memory_plan": self.memory_plan,
            "memory": memory_report(self.memory_plan, self.result),
        }

    def record(self) -> dict[str, Any]:
        """The job as the store keeps it."""
        return {
            "job_id": self.job_id,
            "seq": self.seq,
            "status": self.status.value,
            "config": self.config,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "error": self.error,
            "error_detail": self.error_detail,
            "result": self.result,
            "progress": public_progress(self.progress),
            "attempts": self.attempts,
            "idempotency_key": self.idempotency_key,
            "request_hash": self.request_hash,
            "executor": self.executor,
            "handle": self.handle,
            "training_seq": self.training_seq,
            "owner": self.owner,
            "memory_plan": self.memory_plan,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SFTJob:
        job = cls(record["config"], job_id=record["job_id"], status=JobStatus(record["status"]),
                  created_at=record["created_at"], seq=record["seq"])
        job.started_at = record["started_at"]
        job.completed_at = record["completed_at"]
        job.error = record["error"]
        job.error_detail = record["error_detail"]
        job.result = record["result"]
        job.progress = record["progress"] or {}
        job.attempts = record["attempts"] or []
        job.idempotency_key = record["idempotency_key"]
        job.request_hash = record["request_hash"]
        job.executor = record.get("executor")
        job.handle = record.get("handle")
        job.training_seq = record.get("training_seq") or 0
        job.owner = record.get("owner")
        job.memory_plan = record.get("memory_plan")
        return job
