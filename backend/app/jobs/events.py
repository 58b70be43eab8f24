"""The job event log: numbered, persisted events per job of the kinds ``JobEventType`` names, and a
follower for live streams (SSE).

Each job's events are numbered from 1. ``emit`` numbers and stores an event under one lock, so a
reader that has seen event N never misses one numbered below N; the newest number per job is kept
in memory, so a follower polls a dict and reads the store only when there is something new.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import Enum
from typing import Any

from ..core.joblogs import JobLogRouter
from ..store import JobStore
from .models import utcnow


class JobEventType(str, Enum):
    """The kinds of a job's events (``type`` in the API), in the order a job usually has them."""

    #: The job was recorded (submit).
    CREATED = "created"
    #: It waits for a training slot.
    QUEUED = "queued"
    #: An attempt began on the executor.
    STARTED = "started"
    #: The run entered a phase it tells the user about: ``merging_base`` (an earlier job's adapter merged
    #: into its base, the base this job trains), ``base_ready``.
    PHASE = "phase"
    #: The run loaded the base model.
    MODEL_LOADED = "model_loaded"
    #: The run prepared its datasets.
    DATASET_READY = "dataset_ready"
    #: Training metrics of a step.
    METRICS = "metrics"
    #: Evaluation metrics of a step.
    EVAL = "eval"
    #: The run wrote a checkpoint.
    CHECKPOINT_SAVED = "checkpoint_saved"
    #: How efficiently the run trained (real tokens/s, padding share, peak memory, MFU, hints).
    EFFICIENCY = "efficiency"
    #: A stop was asked; the run ends at its next step and saves.
    STOPPING = "stopping"
    #: The server died under the run (before it is queued again).
    INTERRUPTED = "interrupted"
    #: The job was queued for another attempt (by hand or after an interruption).
    RESUMED = "resumed"
    #: The job ended: trained to its target.
    COMPLETED = "completed"
    #: The job ended: an error, a cancel or a lost run.
    FAILED = "failed"
    #: The job ended: stopped.
    STOPPED = "stopped"


#: Event types that end a job's stream (their values: what the store and the API hold).
TERMINAL_EVENTS = frozenset(t.value for t in (JobEventType.COMPLETED, JobEventType.FAILED, JobEventType.STOPPED))


class EventLog:
    """Numbers, stores and follows job events. ``store`` may be swapped (the manager owns it)."""

    def __init__(self, store: JobStore, logs: JobLogRouter):
        self.store = store
        self.logs = logs
        # Its own lock, not the manager's: a training thread writing an event must not hold up
        # API requests that only read jobs.
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}

    def load(self, job_id: str) -> None:
        """Continue ``job_id``'s numbering from what the store holds."""
        self._seq[job_id] = self.store.max_event_seq(job_id)

    def forget(self, job_id: str) -> None:
        self._seq.pop(job_id, None)

    def emit(self, job_id: str, kind: JobEventType, message: str, *, level: str = "info",
             data: dict[str, Any] | None = None, outbox: list[dict[str, Any]] | None = None) -> int:
        """Record an event (with ``outbox``, the webhook deliveries it causes); return its number. The job's
        log gets the line too."""
        kind = JobEventType(kind).value
        with self._lock:
            seq = self._seq.get(job_id, 0) + 1
            self._seq[job_id] = seq
            now = utcnow()
            self.store.add_event(job_id, seq, now, kind, level, message, data, outbox=outbox or ())
        self.logs.write(job_id, f"{now} {level.upper()} event {kind}: {message}")
        return seq

    def last_seq(self, job_id: str) -> int:
        """Number of the job's latest event (0 for none or an unknown job), from memory: cheap to poll."""
        return self._seq.get(job_id, 0)

    def page(self, job_id: str, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.events(job_id, after=after, limit=limit)

    async def follow(
        self,
        job_id: str,
        after: int,
        *,
        cursor: Callable[[str], tuple[int, bool]],
        exists: Callable[[str], bool | None],
        disconnected: Callable[[], Awaitable[bool]],
        poll_seconds: float = 0.05,
        keepalive_seconds: float = 15.0,
    ) -> AsyncIterator[dict[str, Any] | None]:
        """Yield the job's events numbered above ``after`` as they come (``None`` when a keep-alive is
        due) until its terminal event, its deletion or the client's disconnection.

        Args:
            cursor: ``cursor(job_id) -> (newest event number, ended)``, read together (the manager's).
            exists: ``exists(job_id)``: None once the job is gone, else whether it has ended (cheap).
            disconnected: whether the client went away.
        """
        last = after
        idle = 0.0
        while True:
            if self.last_seq(job_id) > last:
                events = await asyncio.to_thread(self.store.events, job_id, after=last, limit=500)
                for event in events:
                    last = event["seq"]
                    yield event
                    if event["type"] in TERMINAL_EVENTS:
                        return
                if events:
                    idle = 0.0
                    continue
            else:
                ended = exists(job_id)
                if ended is None:
                    return
                if ended:
                    newest, over = await asyncio.to_thread(cursor, job_id)
                    if over and newest <= last:
                        return
                if await disconnected():
                    return
            idle += poll_seconds
            if idle >= keepalive_seconds:
                idle = 0.0
                yield None
            await asyncio.sleep(poll_seconds)
