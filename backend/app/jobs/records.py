"""The jobs, in memory and in the store, and the one place a job's status changes: ``set_status``.

``JobRecords`` keeps every ``SFTJob`` by id, with two indexes a submit asks (the idempotency key and
the output directory), and writes each change to the ``JobStore``. ``set_status`` applies the
transition table, stamps ``started_at`` / ``completed_at`` and persists the status with the fields
that change with it in one write. Callers hold the manager's lock.
"""

from __future__ import annotations

import bisect
from typing import Any, Protocol

from ..core.errors import JobConflict, JobNotFound
from ..store import JobStore
from .events import EventLog, JobEventType
from .models import JobStatus, SFTJob, check_transition, utcnow
from .progress import public_progress


class Outbox(Protocol):
    """What a change of a job sends out (``webhooks.Webhooks``): the outbox rows the store writes in the same
    transaction as the change, asked under the manager's lock (no I/O), and a wake-up once they are committed."""

    def for_status(self, job: SFTJob, old: JobStatus, new: JobStatus, fields: dict[str, Any]) -> list[dict[str, Any]]: ...

    def for_event(self, job: SFTJob, kind: JobEventType, data: dict[str, Any] | None) -> list[dict[str, Any]]: ...

    def notify(self) -> None: ...


class NoOutbox:
    """Nothing goes out."""

    def for_status(self, job: SFTJob, old: JobStatus, new: JobStatus, fields: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def for_event(self, job: SFTJob, kind: JobEventType, data: dict[str, Any] | None) -> list[dict[str, Any]]:
        return []

    def notify(self) -> None:
        pass


class JobRecords:
    """Every job by id, and the writes of its record. ``store`` is the event log's (it may be swapped);
    ``outbox`` adds the webhook deliveries of a change to the change's own write."""

    def __init__(self, event_log: EventLog, outbox: Outbox | None = None):
        self.event_log = event_log
        self.outbox: Outbox = outbox or NoOutbox()
        self.jobs: dict[str, SFTJob] = {}
        self._by_key: dict[str, str] = {}
        self._by_dir: dict[str, str] = {}
        self._dirs: list[str] = []  # the keys of _by_dir, sorted: "which directory lies inside this one"
        self.next_seq = 0

    @property
    def store(self) -> JobStore:
        return self.event_log.store

    def load(self) -> list[SFTJob]:
        """Read every stored job (and where its events' numbering goes on); return them in creation order."""
        for record in self.store.load_jobs():
            self._index(SFTJob.from_record(record))
            self.event_log.load(record["job_id"])
        self.next_seq = self.store.max_job_seq()
        return list(self.jobs.values())

    def add(self, job: SFTJob) -> None:
        """Store a new job."""
        self.store.insert_job(job.record())
        self._index(job)

    def get(self, job_id: str) -> SFTJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def remove(self, job_id: str) -> None:
        """Forget a job: its record, events and metrics (its files stay on disk)."""
        job = self.jobs.pop(job_id)
        self.store.delete_job(job_id)
        self.event_log.forget(job_id)
        if job.idempotency_key is not None:
            self._by_key.pop(job.idempotency_key, None)
        directory = _dir(job)
        if directory and self._by_dir.get(directory) == job_id:
            del self._by_dir[directory]
            self._dirs.remove(directory)

    def select(self, *, owner: str | None = None, status: JobStatus | None = None,
               everyone: bool = True) -> list[SFTJob]:
        """The jobs of ``owner`` (everyone's when None and ``everyone``), optionally of one status, oldest first."""
        return [job for job in self.jobs.values() if (job.owner == owner or (owner is None and everyone))
                and (status is None or job.status is status)]

    def by_idempotency_key(self, key: str) -> SFTJob | None:
        job_id = self._by_key.get(key)
        return None if job_id is None else self.jobs.get(job_id)

    def check_output_dir_free(self, output_dir: str, *, besides: str | None = None, owner: str | None = None) -> None:
        """JobConflict when ``output_dir`` is, contains or lies inside the directory of a job (any status:
        a finished job's adapter must not be overwritten); ``besides`` is a job id to skip. A job of another
        ``owner`` than the one asking is not identified (no id, status or path of it). Index lookups: the
        directory, its parents, and the directories sorted just after it."""
        clashes = [(self._by_dir.get(output_dir), "is in use by")]
        parent = output_dir.rstrip("/")
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            clashes.append((self._by_dir.get(parent) or self._by_dir.get(parent + "/"), "is inside the output_dir of"))
        prefix = output_dir.rstrip("/") + "/"
        for other in self._dirs[bisect.bisect_left(self._dirs, prefix):]:
            if not other.startswith(prefix):
                break
            clashes.append((self._by_dir[other], "contains the output_dir of"))
        for job_id, clash in clashes:
            if job_id is None or job_id == besides:
                continue
            job = self.jobs[job_id]
            if job.owner != owner:
                raise JobConflict(f"output_dir {output_dir} {clash} another job; choose another output_dir")
            detail = f"output_dir {output_dir} {clash} job {job_id} ({job.status.value})"
            raise JobConflict(detail if clash == "is in use by" else f"{detail}: {_dir(job)}")

    def set_status(self, job: SFTJob, new: JobStatus, *, resume: bool = False, **fields: Any) -> None:
        """Move ``job`` to ``new`` (the transition table decides; a terminal job moves only by ``resume``),
        stamp its times and store the status with ``fields`` (other attributes of the job) and the webhook
        deliveries the move causes in one write.

        Raises:
            IllegalTransition: the table has no such move.
        """
        check_transition(job.status, new, resume=resume)
        if new is JobStatus.RUNNING and job.started_at is None:
            fields.setdefault("started_at", utcnow())
        elif new.is_terminal():
            fields.setdefault("completed_at", utcnow())
        elif new is JobStatus.PENDING:
            fields["completed_at"] = None
        outbox = self.outbox.for_status(job, job.status, new, fields)
        job.status = new
        self.update(job, resume=resume, outbox=outbox, status=new, **fields)
        if outbox:
            self.outbox.notify()

    def update(self, job: SFTJob, *, resume: bool = False, outbox: list[dict[str, Any]] | None = None,
               **fields: Any) -> None:
        """Set ``fields`` on the job and store them (the job's progress as users see it), with ``outbox``."""
        stored: dict[str, Any] = {}
        for name, value in fields.items():
            if name != "status":
                setattr(job, name, value)
            stored[name] = value.value if isinstance(value, JobStatus) else value
            if name == "progress":
                stored[name] = public_progress(value)
        self.store.update_job(job.job_id, resume=resume, outbox=outbox or (), **stored)

    def emit(self, job: SFTJob, kind: JobEventType, message: str, *, level: str = "info",
             data: dict[str, Any] | None = None) -> int:
        """Add an event to the job's log (with the webhook deliveries it causes); return its number."""
        outbox = self.outbox.for_event(job, kind, data)
        seq = self.event_log.emit(job.job_id, kind, message, level=level, data=data, outbox=outbox)
        if outbox:
            self.outbox.notify()
        return seq

    def _index(self, job: SFTJob) -> None:
        self.jobs[job.job_id] = job
        if job.idempotency_key is not None:
            self._by_key[job.idempotency_key] = job.job_id
        directory = _dir(job)
        if directory and directory not in self._by_dir:
            self._by_dir[directory] = job.job_id
            bisect.insort(self._dirs, directory)


def _dir(job: SFTJob) -> str | None:
    return job.config.get("output_dir")
