"""SFTJob and SFTJobManager: jobs, their queue, their threads, their records.

The manager imports no FastAPI. Its seams are injectable: ``store`` (persistence), ``runner``
(what a job's thread runs) and ``max_concurrent_jobs``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..core import joblogs
from ..core.errors import ConfigNotFound, InvalidConfig, JobConflict, JobNotFound
from ..core.settings import Settings, settings as default_settings
from ..sft.checkpoints import latest_checkpoint, list_checkpoints
from ..sft.config import SFTConfig
from ..sft.data import check_dataset
from ..sft.errors import DatasetError, ModelError, SFTError
from ..sft.models import check_model, default_device, module_names
from ..store import SQLiteStore

logger = logging.getLogger(__name__)

INTERRUPTED_ERROR = "interrupted: the server stopped while this job was running"


class JobStatus(str, Enum):
    """Where a job is in its life. Terminal states never change, except by an explicit resume."""

    #: Created, waiting for a free training slot.
    PENDING = "pending"
    #: Its thread is loading, preparing data or training.
    RUNNING = "running"
    #: A stop was asked; training ends at the next step boundary and saves.
    STOPPING = "stopping"
    #: Trained to its target; the result holds the adapter path.
    COMPLETED = "completed"
    #: Ended by an error; ``error`` says why.
    FAILED = "failed"
    #: Ended by a stop; what was trained so far is saved.
    STOPPED = "stopped"

    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED)


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat()


EventSink = Callable[[str, dict[str, Any]], None]
Runner = Callable[["SFTJob", EventSink], dict[str, Any]]


class SFTJob:
    """One training job: its config, lifecycle, result and the thread that runs it."""

    def __init__(
        self,
        config: dict[str, Any],
        callbacks: list[Any] | None = None,
        *,
        job_id: str | None = None,
        status: JobStatus = JobStatus.PENDING,
        created_at: str | None = None,
        seq: int = 0,
    ):
        self.job_id = job_id or str(uuid.uuid4())
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
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        #: Checkpoint the current attempt continues from (None: from the first step).
        self.resume_from: str | None = None

    @property
    def sft_config(self) -> SFTConfig:
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
            "progress": _public_progress(self.progress) or None,
            "attempts": self.attempts,
            "config": self.config,
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
            "progress": self.progress,
            "attempts": self.attempts,
            "idempotency_key": self.idempotency_key,
            "request_hash": self.request_hash,
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
        return job


class SFTJobManager:
    """Creates, queues, runs, stops and remembers SFT jobs and saved configs.

    Args:
        store: persistence; default a SQLite file under the settings' data directory.
        runner: ``runner(job, emit) -> result dict`` run in the job's thread; default trains with
            ``app.sft.SFTTrainer``. It must return when ``job.stop_event`` is set.
        max_concurrent_jobs: jobs that run at once; the rest wait ``pending`` in FIFO order.
        settings: paths, limits and permissions; default the process-wide settings.
        preflight: check the model and dataset at submit (tests of the queue may turn it off).
    """

    def __init__(
        self,
        *,
        store: SQLiteStore | None = None,
        runner: Runner | None = None,
        max_concurrent_jobs: int | None = None,
        settings: Settings | None = None,
        preflight: bool = True,
    ):
        self.settings = settings or default_settings
        self.store = store or SQLiteStore(self.settings.resolved_database_path)
        self.runner = runner or self._train
        self.max_concurrent_jobs = max_concurrent_jobs or self.settings.max_concurrent_jobs
        self.preflight = preflight
        self.logs = joblogs.install(self.settings.resolved_data_dir / "logs")
        self.jobs: dict[str, SFTJob] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self._queue: deque[str] = deque()
        self._running: set[str] = set()
        self._lock = threading.RLock()
        self._event_lock = threading.Lock()
        self._event_seq: dict[str, int] = {}
        self._recover()

    # Start-up

    def _recover(self) -> None:
        """Load records; queue pending jobs again; resume (or fail) the ones a dead process was running."""
        for record in self.store.load_jobs():
            job = SFTJob.from_record(record)
            self.jobs[job.job_id] = job
            self._event_seq[job.job_id] = self.store.max_event_seq(job.job_id)
            if job.status in (JobStatus.RUNNING, JobStatus.STOPPING):
                resumes = _automatic_resumes(job)
                if (self.settings.auto_resume_interrupted and job.status is JobStatus.RUNNING
                        and resumes < self.settings.max_auto_resumes):
                    self._requeue(job, attempt_status="interrupted", reason=INTERRUPTED_ERROR)
                else:
                    message = INTERRUPTED_ERROR
                    if self.settings.auto_resume_interrupted and job.status is JobStatus.RUNNING:
                        message = (f"{INTERRUPTED_ERROR}, again after {resumes} automatic resume(s) "
                                   f"(SFT_MAX_AUTO_RESUMES={self.settings.max_auto_resumes}): it may be what stops "
                                   "the server (out of memory?), so it is not resumed again by itself; check its "
                                   "config and resume it by hand")
                    self._finish(job, JobStatus.FAILED, error=message,
                                 error_detail={"category": "interrupted", "message": message, "log_tail": []})
            elif job.status is JobStatus.PENDING:
                self._queue.append(job.job_id)
        self._next_seq = self.store.max_job_seq()
        for config in self.store.load_configs():
            self.configs[config["config_id"]] = config
        with self._lock:
            self._schedule()

    # Jobs

    def create_job(
        self,
        config: dict[str, Any] | SFTConfig,
        callbacks: list[Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> str:
        """Validate and pre-flight ``config``, record a pending job, return its id.

        Raises:
            InvalidConfig: the config, its model or its dataset cannot run (nothing is recorded).
            JobConflict: ``idempotency_key`` was used for a different request.
        """
        raw = config.model_dump(exclude_unset=True) if isinstance(config, SFTConfig) else dict(config)
        request_hash = _hash(raw)
        with self._lock:
            if idempotency_key is not None:
                existing = self._by_idempotency_key(idempotency_key)
                if existing is not None:
                    self._check_same_request(existing, idempotency_key, request_hash)
                    return existing.job_id
        job_id = str(uuid.uuid4())
        validated = self.validate_config(raw, job_id=job_id)
        with self._lock:
            if idempotency_key is not None:
                # Another request with this key may have been recorded while this one was validated.
                existing = self._by_idempotency_key(idempotency_key)
                if existing is not None:
                    self._check_same_request(existing, idempotency_key, request_hash)
                    return existing.job_id
            self._check_output_dir_free(validated["output_dir"])
            _create_output_dir(validated["output_dir"])
            self._next_seq += 1
            job = SFTJob(validated, callbacks, job_id=job_id, seq=self._next_seq)
            job.idempotency_key = idempotency_key
            job.request_hash = request_hash
            self.store.insert_job(job.record())
            self.jobs[job_id] = job
            self._event_seq[job_id] = 0
            self._emit(job, "created", f"Job created: {validated['base_model']} on {validated['dataset_name']}")
        return job_id

    def start_job(self, job_id: str) -> None:
        """Queue a pending job; it starts as soon as a training slot is free."""
        with self._lock:
            job = self._get(job_id)
            if job.status is not JobStatus.PENDING:
                raise JobConflict(f"Job {job_id} is {job.status.value}; only a pending job can be started")
            if job_id in self._queue:
                return
            self._queue.append(job_id)
            ahead = len(self._queue) - 1 + len(self._running) - self.max_concurrent_jobs
            self._emit(job, "queued", "Queued: a training slot is free" if ahead < 0 else
                       f"Queued at position {len(self._queue)}: waiting for a free training slot")
            self._schedule()

    def submit(self, config: dict[str, Any] | SFTConfig, callbacks: list[Any] | None = None, *,
               idempotency_key: str | None = None) -> SFTJob:
        """Create and start a job (idempotent on ``idempotency_key``)."""
        job_id = self.create_job(config, callbacks, idempotency_key=idempotency_key)
        with self._lock:
            job = self._get(job_id)
            if job.status is JobStatus.PENDING and job_id not in self._queue:
                self.start_job(job_id)
            return job

    def stop_job(self, job_id: str) -> JobStatus:
        """Stop a job: a pending one at once, a running one at its next step boundary.

        Raises:
            JobNotFound: no such job.
            JobConflict: the job has already ended.
        """
        with self._lock:
            job = self._get(job_id)
            if job.status.is_terminal():
                raise JobConflict(f"Job {job_id} has already ended ({job.status.value}); nothing to stop")
            job.stop_event.set()
            if job.status is JobStatus.PENDING:
                if job_id in self._queue:
                    self._queue.remove(job_id)
                self._finish(job, JobStatus.STOPPED, message="Stopped before it started")
                self._update_queue_positions()
            elif job.status is JobStatus.RUNNING:
                job.status = JobStatus.STOPPING
                self.store.update_job(job_id, status=job.status.value)
                self._emit(job, "stopping", "Stop requested: training ends at the next step and saves")
            return job.status

    def resume_job(self, job_id: str) -> SFTJob:
        """Queue a stopped or failed job again; it continues from its latest checkpoint.

        Without a checkpoint it trains again from the first step. Each run is one entry of ``attempts``.

        Raises:
            JobNotFound: no such job.
            JobConflict: the job is not stopped or failed.
        """
        with self._lock:
            job = self._get(job_id)
            if job.status not in (JobStatus.STOPPED, JobStatus.FAILED):
                raise JobConflict(
                    f"Job {job_id} is {job.status.value}; only a stopped or failed job can be resumed"
                )
            self._check_output_dir_free(job.output_dir, besides=job_id)
            self._requeue(job, attempt_status=None, reason="Resume requested")
            self._schedule()
            return job

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """The job's checkpoints, oldest first."""
        return list_checkpoints(self.get_job(job_id).output_dir)

    def _requeue(self, job: SFTJob, *, attempt_status: str | None, reason: str) -> None:
        """Put an ended (or interrupted) job back in the queue for another attempt. Caller holds the lock."""
        if job.attempts and job.attempts[-1]["ended_at"] is None:
            job.attempts[-1].update(ended_at=utcnow(), status=attempt_status)
        job.status = JobStatus.PENDING
        job.completed_at = None
        job.error = None
        job.error_detail = None
        job.stop_event = threading.Event()
        latest = latest_checkpoint(job.output_dir)
        where = f"from checkpoint {latest[1].name} (step {latest[0]})" if latest \
            else "from the first step (no checkpoint)"
        self.store.update_job(job.job_id, status=job.status.value, completed_at=None, error=None,
                              error_detail=None, attempts=job.attempts)
        if attempt_status == "interrupted":
            self._emit(job, "interrupted", INTERRUPTED_ERROR, level="warning")
        self._emit(job, "resumed", f"{reason}: resuming {where}")
        self._queue.append(job.job_id)
        self._update_queue_positions()

    def get_job(self, job_id: str) -> SFTJob:
        """The job object. Raises JobNotFound."""
        with self._lock:
            return self._get(job_id)

    def get_job_status(self, job_id: str) -> dict[str, Any]:
        """The job's status dict. Raises JobNotFound."""
        with self._lock:
            return self._get(job_id).to_dict()

    def list_jobs(self, *, status: str | None = None, limit: int | None = None, offset: int = 0,
                  newest_first: bool = False) -> list[dict[str, Any]]:
        """Jobs in creation order (or newest first), optionally of one status, paged."""
        return [job.to_dict() for job in self.select_jobs(status=status, limit=limit, offset=offset,
                                                          newest_first=newest_first)[0]]

    def select_jobs(self, *, status: str | None = None, limit: int | None = None, offset: int = 0,
                    newest_first: bool = False) -> tuple[list[SFTJob], int]:
        """A page of jobs and the total that match."""
        with self._lock:
            jobs = list(self.jobs.values())
        if status is not None:
            wanted = JobStatus(status)
            jobs = [job for job in jobs if job.status is wanted]
        if newest_first:
            jobs.reverse()
        end = None if limit is None else offset + limit
        return jobs[offset:end], len(jobs)

    def delete_job(self, job_id: str) -> None:
        """Forget a finished job's record, events and metrics; its files stay on disk."""
        with self._lock:
            job = self._get(job_id)
            if not job.status.is_terminal():
                raise JobConflict(f"Job {job_id} is {job.status.value}; stop it before deleting it")
            self.store.delete_job(job_id)
            self.logs.forget(job_id)
            del self.jobs[job_id]
            self._event_seq.pop(job_id, None)

    def wait_for_job(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job ends (or ``timeout`` passes); return its status dict."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.status.is_terminal():
                return job.to_dict()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Job {job_id} is still {job.status.value} after {timeout}s")
            time.sleep(0.05)

    def counts(self) -> dict[str, int]:
        with self._lock:
            statuses = [job.status.value for job in self.jobs.values()]
        return {status.value: statuses.count(status.value) for status in JobStatus}

    # Events and metrics

    def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        self.get_job(job_id)
        return self.store.events(job_id, after=after, limit=limit)

    def last_event_seq(self, job_id: str) -> int:
        """Number of the job's latest event (0 for none or an unknown job), from memory: cheap to poll."""
        return self._event_seq.get(job_id, 0)

    def event_cursor(self, job_id: str) -> tuple[int, bool]:
        """The job's latest event number and whether it has ended (True once deleted), read together.

        ``_finish`` sets a terminal status and writes its terminal event under the manager lock, so a
        reader that sees the job ended here also sees that event's number.
        """
        with self._lock:
            job = self.jobs.get(job_id)
            return self._event_seq.get(job_id, 0), job is None or job.status.is_terminal()

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        self.get_job(job_id)
        return self.store.metrics(job_id)

    # Configs

    def save_config(self, name: str, config: dict[str, Any]) -> str:
        """Save a named config template; every key must be an SFTConfig field. Returns its id."""
        if not name or not name.strip():
            raise InvalidConfig("name: must not be empty")
        if not name.isprintable():
            raise InvalidConfig("name: must be printable text (no control characters, tabs or line breaks)")
        _check_partial_config(config)
        with self._lock:
            for saved in self.configs.values():
                if saved["name"] == name:
                    raise JobConflict(f"A config named {name!r} already exists ({saved['config_id']})")
            config_id = str(uuid.uuid4())
            record = {"config_id": config_id, "name": name, "config": dict(config), "created_at": utcnow()}
            self.store.insert_config(config_id, name, record["config"], record["created_at"])
            self.configs[config_id] = record
        return config_id

    def get_config(self, config_id: str) -> dict[str, Any]:
        """A saved config ``{config_id, name, config, created_at}``. Raises ConfigNotFound."""
        with self._lock:
            if config_id not in self.configs:
                raise ConfigNotFound(config_id)
            return dict(self.configs[config_id])

    def list_configs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(config) for config in self.configs.values()]

    def delete_config(self, config_id: str) -> None:
        with self._lock:
            if config_id not in self.configs:
                raise ConfigNotFound(config_id)
            self.store.delete_config(config_id)
            del self.configs[config_id]

    def config_from_template(self, config_id: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """A saved config with ``overrides`` applied on top (validated at submit)."""
        return {**self.get_config(config_id)["config"], **(overrides or {})}

    # Validation and pre-flight

    def validate_config(self, raw: dict[str, Any], *, job_id: str) -> dict[str, Any]:
        """Validate ``raw`` and check that it can run; return the config as the job will keep it.

        Raises:
            InvalidConfig: with a detail naming the field (and file and line for a dataset).
        """
        try:
            config = SFTConfig.model_validate(raw)
        except ValidationError as exc:
            raise InvalidConfig(format_validation_error(exc.errors())) from None
        output_dir = self.resolve_output_dir(config.output_dir, job_id=job_id)
        if config.trust_remote_code and not self.settings.allow_remote_code:
            raise InvalidConfig(
                "config.trust_remote_code: this server does not allow remote code (set SFT_ALLOW_REMOTE_CODE=true)"
            )
        try:
            config.resolve_precision(default_device())
        except SFTError as exc:
            raise InvalidConfig(f"config.precision: {exc}") from None
        _check_trackers(config.report_to)
        if self.preflight:
            self._preflight(config)
        return {**config.model_dump(mode="json", exclude_unset=True), "output_dir": str(output_dir)}

    def _preflight(self, config: SFTConfig) -> None:
        try:
            ref = check_model(config.base_model, cache_dir=self.settings.resolved_model_cache_dir,
                              allowed_roots=self.settings.resolved_model_roots)
        except ModelError as exc:
            raise InvalidConfig(f"config.base_model: {exc}") from None
        if config.use_lora and config.lora_target_modules != "all-linear" and not config.trust_remote_code:
            _check_target_modules(config, ref)
        roots = self.settings.resolved_dataset_roots
        try:
            fmt = check_dataset(config.dataset_name, config.dataset_split, dataset_format=config.dataset_format,
                                column_mapping=config.column_mapping, allowed_roots=roots)
        except DatasetError as exc:
            raise InvalidConfig(f"config.dataset_name: {exc}") from None
        if config.eval_dataset_name:
            try:
                check_dataset(config.eval_dataset_name, config.eval_dataset_split, dataset_format=fmt,
                              column_mapping=config.column_mapping, allowed_roots=roots)
            except DatasetError as exc:
                raise InvalidConfig(f"config.eval_dataset_name: {exc}") from None

    def resolve_output_dir(self, output_dir: str | None, *, job_id: str) -> Path:
        """A job's output directory inside the output root (relative paths are taken from it)."""
        root = self.settings.resolved_output_root
        if output_dir is None:
            return root / job_id
        path = Path(output_dir).expanduser()
        resolved = (path if path.is_absolute() else root / path).resolve()
        if not resolved.is_relative_to(root) or resolved == root:
            raise InvalidConfig(
                f"config.output_dir: {output_dir!r} resolves outside the output root {root}; "
                "use a relative path (it is taken from the output root) or leave it unset"
            )
        return resolved

    def _check_output_dir_free(self, output_dir: str, *, besides: str | None = None) -> None:
        """JobConflict when ``output_dir`` is, contains or lies inside the directory of another job
        that exists (any status: a finished job's adapter must not be overwritten). Caller holds the lock."""
        for job in self.jobs.values():
            other = job.config.get("output_dir")
            if job.job_id == besides or not other:
                continue
            if other == output_dir:
                raise JobConflict(f"output_dir {output_dir} is in use by job {job.job_id} ({job.status.value})")
            if output_dir.startswith(other.rstrip("/") + "/"):
                raise JobConflict(f"output_dir {output_dir} is inside the output_dir of job {job.job_id} "
                                  f"({job.status.value}): {other}")
            if other.startswith(output_dir.rstrip("/") + "/"):
                raise JobConflict(f"output_dir {output_dir} contains the output_dir of job {job.job_id} "
                                  f"({job.status.value}): {other}")

    def _check_same_request(self, existing: SFTJob, key: str, request_hash: str) -> None:
        if existing.request_hash != request_hash:
            raise JobConflict(f"Idempotency-Key {key} was used for a different request (job {existing.job_id})")

    # Running

    def _schedule(self) -> None:
        """Start queued jobs while slots are free. Caller holds the lock."""
        while self._queue and len(self._running) < self.max_concurrent_jobs:
            job = self.jobs[self._queue.popleft()]
            self._running.add(job.job_id)
            job.status = JobStatus.RUNNING
            job.started_at = job.started_at or utcnow()
            job.queue_position = None
            resume = latest_checkpoint(job.output_dir) if job.attempts else None
            job.resume_from = str(resume[1]) if resume else None
            job.attempts.append({"attempt": len(job.attempts) + 1, "started_at": utcnow(), "ended_at": None,
                                 "status": None, "resumed_from_step": resume[0] if resume else None})
            job.progress = {"phase": "starting"}
            self.store.update_job(job.job_id, status=job.status.value, started_at=job.started_at,
                                  attempts=job.attempts, progress=job.progress)
            self._emit(job, "started", f"Job started (attempt {len(job.attempts)}): loading the model")
            job.thread = threading.Thread(target=self._run, args=(job,), name=f"sft-job-{job.job_id}",
                                          daemon=True)
            job.thread.start()
        self._update_queue_positions()

    def _update_queue_positions(self) -> None:
        for position, job_id in enumerate(self._queue, start=1):
            self.jobs[job_id].queue_position = position

    def _run(self, job: SFTJob) -> None:
        """A job thread's body: any exception becomes ``failed`` with a clear message."""
        final, result, error, detail = JobStatus.COMPLETED, None, None, None
        _lower_thread_priority()
        self.logs.bind(job.job_id)
        try:
            result = self.runner(job, lambda kind, payload: self._on_training_event(job, kind, payload))
            if result.get("stopped"):
                final = JobStatus.STOPPED
        except BaseException as exc:  # noqa: BLE001 - a job's failure must become its state
            final = JobStatus.FAILED
            logger.exception("job %s failed", job.job_id)
            detail = classify_error(exc)
            detail["log_tail"] = self.logs.tail(job.job_id, 20)
            error = detail["message"]
            exc.__traceback__ = None  # its frames would keep the model alive
        finally:
            self.logs.unbind()
            with self._lock:
                self._running.discard(job.job_id)
                message = None
                if final is JobStatus.STOPPED:
                    message = "Stopped; the adapter trained so far is saved" if result and result.get(
                        "adapter_path") else "Stopped before training began"
                self._finish(job, final, result=result, error=error, error_detail=detail, message=message)
                self._schedule()

    def _finish(self, job: SFTJob, status: JobStatus, *, result: dict[str, Any] | None = None,
                error: str | None = None, error_detail: dict[str, Any] | None = None,
                message: str | None = None) -> None:
        """Move a job into a terminal state, stamp it, persist it. Caller holds the lock (or is alone)."""
        if job.status.is_terminal():
            return
        job.status = status
        job.completed_at = utcnow()
        job.result = result if result is not None else job.result
        job.error = error
        job.error_detail = error_detail
        job.callbacks = []
        job.thread = None
        job.queue_position = None
        if job.progress:
            job.progress = {**job.progress, "phase": status.value}
        if job.attempts and job.attempts[-1]["ended_at"] is None:
            job.attempts[-1].update(ended_at=job.completed_at, status=status.value)
        self.store.update_job(job.job_id, status=status.value, completed_at=job.completed_at,
                              result=job.result, error=error, error_detail=error_detail,
                              progress=_public_progress(job.progress), attempts=job.attempts)
        level = "error" if status is JobStatus.FAILED else "info"
        default = {JobStatus.COMPLETED: "Training completed", JobStatus.FAILED: f"Failed: {error}",
                   JobStatus.STOPPED: "Stopped"}[status]
        self._emit(job, status.value, message or default, level=level,
                   data={"result": job.result} if job.result else None)

    def _emit(self, job: SFTJob, kind: str, message: str, *, level: str = "info",
              data: dict[str, Any] | None = None) -> int:
        # Its own lock, not the manager's: a training thread writing an event must not hold up
        # API requests that only read jobs. Numbering and insert stay together so a reader that
        # has seen event N never misses an event numbered below N.
        with self._event_lock:
            seq = self._event_seq.get(job.job_id, 0) + 1
            self._event_seq[job.job_id] = seq
            now = utcnow()
            self.store.add_event(job.job_id, seq, now, kind, level, message, data)
        self.logs.write(job.job_id, f"{now} {level.upper()} event {kind}: {message}")
        return seq

    def _on_training_event(self, job: SFTJob, kind: str, payload: dict[str, Any]) -> None:
        """Turn what the trainer reports into progress, metrics and events."""
        progress = job.progress
        if kind == "phase":
            progress["phase"] = payload["phase"]
        elif kind == "model_loaded":
            self._emit(job, "model_loaded", f"Model {payload.get('base_model')} loaded "
                       f"({payload.get('parameters', 0):,} parameters)", data=payload)
        elif kind == "dataset_ready":
            self._emit(job, "dataset_ready", f"Dataset ready: {payload['train_rows']} training rows, "
                       f"{payload['eval_rows']} eval rows ({payload['dataset_format']})", data=payload)
        elif kind == "training_started":
            cfg = job.sft_config
            progress.update(phase="training", started_monotonic=time.monotonic(), start_step=payload["global_step"],
                            rows_per_step=cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps)
            _update_step_progress(progress, {"step": payload["global_step"], "max_steps": payload["max_steps"]})
        elif kind == "step":
            _update_step_progress(progress, payload)
        elif kind in ("metrics", "eval"):
            self._record_metrics(job, kind, payload)
        elif kind == "checkpoint_saved":
            self._emit(job, "checkpoint_saved", f"Checkpoint saved at step {payload['step']}", data=payload)
        job.progress = progress

    def _record_metrics(self, job: SFTJob, kind: str, payload: dict[str, Any]) -> None:
        progress = job.progress
        step = int(payload.get("step", 0))
        keys = ("loss", "learning_rate", "grad_norm", "eval_loss", "num_tokens", "epoch")
        point = {k: payload[k] for k in keys if k in payload}
        if not point or "train_runtime" in payload:
            return
        point["step"] = step
        if "started_monotonic" in progress:
            point["elapsed_seconds"] = round(time.monotonic() - progress["started_monotonic"], 3)
        attempt = len(job.attempts)
        self.store.add_metric(job.job_id, step, attempt, {**point, "attempt": attempt})
        latest = progress.setdefault("metrics", {})
        latest.update({k: v for k, v in point.items() if k not in ("step", "elapsed_seconds", "num_tokens")})
        if "num_tokens" in point:
            progress["tokens_seen"] = point["num_tokens"]
        self.store.update_job(job.job_id, progress=_public_progress(progress))
        if kind == "eval":
            self._emit(job, "eval", f"Step {step}: eval_loss {point.get('eval_loss', float('nan')):.4f}",
                       data=point)
        else:
            loss = point.get("loss")
            text = f"Step {step}/{progress.get('max_steps', '?')}" + (f": loss {loss:.4f}" if loss is not None else "")
            self._emit(job, "metrics", text, data=point)

    def _train(self, job: SFTJob, emit: EventSink) -> dict[str, Any]:
        """The default runner: train with ``app.sft.SFTTrainer``."""
        from ..sft.trainer import SFTTrainer

        trainer = SFTTrainer(
            job.sft_config,
            callbacks=job.callbacks,
            stop_event=job.stop_event,
            on_event=emit,
            model_cache_dir=self.settings.resolved_model_cache_dir,
            allowed_dataset_roots=self.settings.resolved_dataset_roots,
            allowed_model_roots=self.settings.resolved_model_roots,
            resume_from_checkpoint=job.resume_from,
        )
        return trainer.train().to_dict()

    # Helpers

    def _get(self, job_id: str) -> SFTJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _by_idempotency_key(self, key: str) -> SFTJob | None:
        return next((job for job in self.jobs.values() if job.idempotency_key == key), None)


def _automatic_resumes(job: SFTJob) -> int:
    """How many times in a row the job was resumed because a server died under it: the attempts
    before the current one that ended ``interrupted`` (a manual resume follows a stopped or failed one)."""
    count = 0
    for attempt in reversed(job.attempts[:-1]):
        if attempt.get("status") != "interrupted":
            break
        count += 1
    return count


#: Niceness of job threads. Training keeps every core busy; at a lower priority than the API's
#: threads, requests still get CPU at once while the job uses all the rest (docs/benchmarks.md).
JOB_THREAD_NICENESS = 10


def _lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: niceness is per thread, and the OpenMP
    workers torch starts from this thread inherit it)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), JOB_THREAD_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


def _update_step_progress(progress: dict[str, Any], payload: dict[str, Any]) -> None:
    step, max_steps = payload["step"], payload["max_steps"] or 0
    progress.update(current_step=step, max_steps=max_steps, epoch=payload.get("epoch"))
    if max_steps:
        progress["percent"] = round(100.0 * step / max_steps, 1)
    started = progress.get("started_monotonic")
    done = step - progress.get("start_step", 0)
    if started is not None and done > 0:
        elapsed = time.monotonic() - started
        progress["eta_seconds"] = round(elapsed / done * max(max_steps - step, 0), 1)
        progress["steps_per_second"] = round(done / elapsed, 3) if elapsed > 0 else None
        if progress["steps_per_second"] and progress.get("rows_per_step"):
            progress["samples_per_second"] = round(progress["steps_per_second"] * progress["rows_per_step"], 2)
        if progress.get("tokens_seen"):
            progress["tokens_per_second"] = round(progress["tokens_seen"] / elapsed, 1)


#: Progress keys the manager keeps for its own arithmetic, not shown to users.
_PRIVATE_PROGRESS = ("started_monotonic", "start_step", "rows_per_step")


def _public_progress(progress: dict[str, Any]) -> dict[str, Any]:
    snapshot = dict(progress)  # one C-level copy: the job's thread may be adding keys meanwhile
    return {k: v for k, v in snapshot.items() if k not in _PRIVATE_PROGRESS}


def classify_error(exc: BaseException) -> dict[str, Any]:
    """A failed job's error: a category, a message a user can act on, and the log tail."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, SFTError):
        category = exc.category
        message = text
    elif isinstance(exc, MemoryError) or "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError":
        category = "out_of_memory"
        message = (f"out of memory: {text}. Lower per_device_train_batch_size or max_length, "
                   "enable gradient_checkpointing, or use QLoRA")
    else:
        category = "internal"
        message = f"{type(exc).__name__}: {text}"
    return {"category": category, "message": message, "log_tail": []}


def format_validation_error(errors: list[dict[str, Any]], prefix: str = "config.") -> str:
    """One clause per problem, each naming the field: ``config.lora_r: Input should be ...``."""
    known = list(SFTConfig.model_fields)
    parts = []
    for error in errors:
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            message = "unknown field" + (f" (did you mean {close[0]}?)" if close else "")
        field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "config")
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def _check_partial_config(config: dict[str, Any]) -> None:
    """A template may leave fields out, but the ones it has must be valid."""
    unknown = [key for key in config if key not in SFTConfig.model_fields]
    if unknown:
        known = list(SFTConfig.model_fields)
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"config.{key}: unknown field" + (f" (did you mean {close[0]}?)" if close else ""))
        raise InvalidConfig("; ".join(hints))
    try:
        SFTConfig.model_validate({"base_model": "x", "dataset_name": "x", "max_steps": 1, **config})
    except ValidationError as exc:
        field_errors = [e for e in exc.errors() if e["loc"]]
        if field_errors:
            raise InvalidConfig(format_validation_error(field_errors)) from None


#: Python packages each ``report_to`` target needs (any one of them).
TRACKER_PACKAGES = {"wandb": ("wandb",), "tensorboard": ("tensorboard", "tensorboardX")}


def _check_trackers(report_to: list[str]) -> None:
    for target in report_to:
        packages = TRACKER_PACKAGES[target]
        if not any(importlib.util.find_spec(p) is not None for p in packages):
            raise InvalidConfig(f"config.report_to: {target} is not installed on this server "
                                f"(pip install {packages[0]}); install it or leave it out of report_to")


def _check_target_modules(config: SFTConfig, ref: Any) -> None:
    """lora_target_modules against the model's module names, where they can be read cheaply (a local,
    converted or cached model); otherwise the trainer checks them when it loads the model."""
    names = module_names(ref)
    if names is None:
        return
    unknown = names.unknown(list(config.lora_target_modules))
    if unknown:
        raise InvalidConfig(f"config.lora_target_modules: {', '.join(unknown)} match no module of "
                            f"{config.base_model} (its linear layers: {', '.join(names.linear) or 'none'}; "
                            "or use 'all-linear')")


def _create_output_dir(output_dir: str) -> None:
    """Create a job's output directory at submit, so a name the file system refuses is a 400 now."""
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidConfig(f"config.output_dir: {output_dir} cannot be created ({exc.strerror or exc})") from None


def _hash(value: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


_default_manager: SFTJobManager | None = None
_default_lock = threading.Lock()


def get_sft_job_manager() -> SFTJobManager:
    """The process-wide manager, created (and its records recovered) on first use."""
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            _default_manager = SFTJobManager()
        return _default_manager


def __getattr__(name: str) -> Any:
    # ``from app.api.sft_job_manager import sft_job_manager`` (the seed's import) builds the
    # singleton then, not when the module is imported, so importing opens no database.
    if name == "sft_job_manager":
        return get_sft_job_manager()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
