"""SFTJobManager: the façade of the seed's public methods over small parts that each own one thing.

``JobRecords`` keeps the jobs and changes a status in one place; ``Scheduler`` owns the queue and the
slots; ``JobRuns`` runs jobs on the executor (its ``ReportHandler`` turns what runs report into status,
progress, metrics and events); ``ConfigTemplates`` keeps saved configs. The manager validates, decides
and holds the one lock; it imports no FastAPI and starts no threads. Seams: ``store``, ``executor``,
``runner`` (the thread executor's, for tests) and ``max_concurrent_jobs``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from typing import Any

from ..core import joblogs
from ..core.errors import InvalidConfig, JobConflict, QuotaExceeded
from ..core.settings import Settings, settings as default_settings
from ..sft.checkpoints import list_checkpoints
from ..sft.config import SFTConfig
from ..sft.errors import ConfigError
from ..store import JobStore, SQLiteStore
from .bases import check_deletable
from .events import EventLog, JobEventType
from .executors import Executor, create_executor
from .executors.training import train
from .fit import check_fit, plan_job
from .models import JobStatus, SFTJob
from .preflight import create_output_dir, resolve_config
from .records import JobRecords
from .runs import JobRuns
from .scheduler import Scheduler
from .templates import ConfigTemplates
from .webhooks import Webhooks


class SFTJobManager:
    """Creates, queues, starts, stops and remembers SFT jobs and saved configs.

    Args:
        store: persistence (a ``JobStore``); default a SQLite file under the settings' data directory.
        executor: where runs happen; default ``create_executor(settings)`` (the thread executor).
        runner: ``runner(run, emit) -> result dict`` for the thread executor's threads instead of the
            real trainer (tests); it must return when ``run.stop_event`` is set. Not with ``executor``.
        max_concurrent_jobs: jobs that run at once; the rest wait ``pending`` in FIFO order.
        settings: paths, limits and permissions; default the process-wide settings.
        preflight: check the model and dataset at submit (tests of the queue may turn it off).
    """

    def __init__(
        self,
        *,
        store: JobStore | None = None,
        runner: Any = None,
        executor: Executor | None = None,
        max_concurrent_jobs: int | None = None,
        settings: Settings | None = None,
        preflight: bool = True,
    ):
        if executor is not None and runner is not None:
            raise ValueError("pass a runner or an executor, not both (a runner is the thread executor's)")
        self.settings = settings or default_settings
        self.logs = joblogs.install(self.settings.resolved_data_dir / "logs")
        self.event_log = EventLog(store or SQLiteStore(self.settings.resolved_database_path), self.logs)
        self.executor = executor or create_executor(self.settings, logs=self.logs, runner=runner)
        self.preflight = preflight
        self.webhooks = Webhooks(lambda: self.store, self.settings)  # before recover(): its changes send too
        self.records = JobRecords(self.event_log, outbox=self.webhooks)
        self.scheduler = Scheduler(max_concurrent_jobs or self.settings.max_concurrent_jobs)
        self._lock = threading.RLock()
        self.runs = JobRuns(records=self.records, scheduler=self.scheduler, executor=self.executor,
                            settings=self.settings, logs=self.logs, lock=self._lock)
        self.templates = ConfigTemplates(lambda: self.store)
        with self._lock:
            self.runs.recover()
        self.templates.load()

    @property
    def store(self) -> JobStore:
        return self.event_log.store

    @store.setter
    def store(self, store: JobStore) -> None:
        self.event_log.store = store

    @property
    def jobs(self) -> dict[str, SFTJob]:
        """Every job by id (the records')."""
        return self.records.jobs

    @property
    def max_concurrent_jobs(self) -> int:
        return self.scheduler.slots

    @max_concurrent_jobs.setter
    def max_concurrent_jobs(self, slots: int) -> None:
        self.scheduler.slots = slots

    @property
    def runner(self) -> Any:
        """What the thread executor's threads run (the seed's ``manager.runner``)."""
        return getattr(self.executor, "runner", None) or self._train

    @property
    def configs(self) -> dict[str, dict[str, Any]]:
        return self.templates.configs

    # Jobs

    def create_job(
        self,
        config: dict[str, Any] | SFTConfig,
        callbacks: list[Any] | None = None,
        *,
        idempotency_key: str | None = None,
        owner: str | None = None,
        max_active: int | None = None,
    ) -> str:
        """Validate and pre-flight ``config``, record a pending job with its whole resolved config, return its id.

        Args:
            config: the request's fields, or an ``SFTConfig`` built from them (``preflight.build_config``):
                validated once either way.
            owner: the user the job belongs to (None: no keys, the admins').
            max_active: the most pending + running jobs ``owner`` may have (None: no limit).

        Raises:
            InvalidConfig: the config, its model or its dataset cannot run (nothing is recorded).
            JobConflict: ``idempotency_key`` was used for a different request.
            QuotaExceeded: ``owner`` already has ``max_active`` jobs pending or running.
        """
        # The request as it came (an SFTConfig: the fields it set) keys idempotency, before any validation.
        raw = config.model_dump(mode="json", exclude_unset=True) if isinstance(config, SFTConfig) else dict(config)
        request_hash = _hash(raw)
        with self._lock:
            if idempotency_key is not None:
                existing = self.records.by_idempotency_key(idempotency_key)
                if existing is not None:
                    _check_same_request(existing, idempotency_key, request_hash)
                    return existing.job_id
        job_id = str(uuid.uuid4())
        resolved, memory_plan = self.plan_config(config, job_id=job_id)
        with self._lock:
            if idempotency_key is not None:
                # Another request with this key may have been recorded while this one was validated.
                existing = self.records.by_idempotency_key(idempotency_key)
                if existing is not None:
                    _check_same_request(existing, idempotency_key, request_hash)
                    return existing.job_id
            if max_active is not None:
                self.check_quota(owner, max_active)
            self.records.check_output_dir_free(resolved.output_dir, owner=owner)
            create_output_dir(resolved.output_dir, fresh=owner is not None)
            self.records.next_seq += 1
            job = SFTJob(resolved, callbacks, job_id=job_id, seq=self.records.next_seq)
            job.idempotency_key = idempotency_key
            job.request_hash = request_hash
            job.owner = owner
            job.memory_plan = memory_plan
            self.records.add(job)
            self.records.emit(job, JobEventType.CREATED,
                              f"Job created: {resolved.base_model} on {resolved.dataset_name}")
        return job_id

    def validate_config(self, raw: dict[str, Any] | SFTConfig, *, job_id: str) -> SFTConfig:
        """``raw`` as the job will keep it: validated (unless it is an ``SFTConfig``), resolved,
        pre-flighted, checked by the executor, and by the fit planner against the executor's devices.

        Raises:
            InvalidConfig: with a detail naming the field (and file and line for a dataset).
        """
        return self.plan_config(raw, job_id=job_id)[0]

    def plan_config(self, raw: dict[str, Any] | SFTConfig, *, job_id: str) -> tuple[SFTConfig, dict[str, Any] | None]:
        """``validate_config``'s config, and its memory plan (None without pre-flight, or when the model's
        config cannot be read): what a job's record keeps. A job that cannot fit is refused here."""
        config = resolve_config(raw, job_id=job_id, settings=self.settings, preflight=self.preflight)
        spec = self._checked_spec(job_id, config)
        if not self.preflight:
            return config, None
        return check_fit(config, spec, settings=self.settings, executor=self.executor)

    def plan(self, raw: dict[str, Any] | SFTConfig) -> dict[str, Any]:
        """The memory plan of a config, checked like a submit but not submitted (``POST /api/sft/plan``).

        Raises:
            InvalidConfig: as ``create_job`` would, or when the model's config.json cannot be read.
        """
        job_id = f"plan-{uuid.uuid4()}"
        config = resolve_config(raw, job_id=job_id, settings=self.settings, preflight=self.preflight)
        return plan_job(config, self._checked_spec(job_id, config), settings=self.settings,
                        executor=self.executor).as_dict()

    def _checked_spec(self, job_id: str, config: SFTConfig):
        spec = self.runs.spec_of(job_id, config, attempt=1, resume_from=None)
        try:
            self.executor.check(spec)
        except ConfigError as exc:
            field = f"config.{exc.field}" if exc.field else None
            raise InvalidConfig(f"{field}: {exc}" if field else f"config: {exc}", field=field) from None
        return spec

    def start_job(self, job_id: str) -> None:
        """Queue a pending job; it starts as soon as a training slot is free."""
        with self._lock:
            job = self.records.get(job_id)
            if job.status is not JobStatus.PENDING:
                raise JobConflict(f"Job {job_id} is {job.status.value}; only a pending job can be started")
            if job_id in self.scheduler:
                return
            position = self.scheduler.enqueue(job_id)
            self.records.emit(job, JobEventType.QUEUED, "Queued: a training slot is free" if position is None else
                              f"Queued at position {position}: waiting for a free training slot")
            self.runs.schedule()

    def submit(self, config: dict[str, Any] | SFTConfig, callbacks: list[Any] | None = None, *,
               idempotency_key: str | None = None, owner: str | None = None,
               max_active: int | None = None) -> SFTJob:
        """Create and start a job (idempotent on ``idempotency_key``)."""
        job_id = self.create_job(config, callbacks, idempotency_key=idempotency_key, owner=owner,
                                 max_active=max_active)
        with self._lock:
            job = self.records.get(job_id)
            if job.status is JobStatus.PENDING and job_id not in self.scheduler:
                self.start_job(job_id)
            return job

    def stop_job(self, job_id: str) -> JobStatus:
        """Stop a job: a pending one at once, a running one at its next step boundary (it saves).

        Raises:
            JobNotFound: no such job.
            JobConflict: the job has already ended.
        """
        with self._lock:
            job = self._get_active(job_id, "stop")
            self.runs.stop(job)
            return job.status

    def cancel_job(self, job_id: str) -> JobStatus:
        """End a job now, without saving: a running one fails (category ``cancelled``); a pending one stops.

        Raises:
            JobNotFound: no such job.
            JobConflict: the job has already ended.
        """
        with self._lock:
            job = self._get_active(job_id, "cancel")
            if job.status is JobStatus.PENDING:
                self.runs.stop(job)
            else:
                self.runs.cancel(job)
            return job.status

    def _get_active(self, job_id: str, action: str) -> SFTJob:
        """The job, if it has not ended; JobConflict (``nothing to <action>``) if it has. Caller holds the lock."""
        job = self.records.get(job_id)
        if job.status.is_terminal():
            raise JobConflict(f"Job {job_id} has already ended ({job.status.value}); nothing to {action}")
        return job

    def resume_job(self, job_id: str) -> SFTJob:
        """Queue a stopped or failed job again; it continues from its latest checkpoint with its stored config.

        Without a checkpoint (or when it never started) it trains again from the first step. Each run
        is one entry of ``attempts``.

        Raises:
            JobNotFound: no such job.
            JobConflict: the job is not stopped or failed.
        """
        with self._lock:
            job = self.records.get(job_id)
            if job.status not in (JobStatus.STOPPED, JobStatus.FAILED):
                raise JobConflict(
                    f"Job {job_id} is {job.status.value}; only a stopped or failed job can be resumed"
                )
            self.records.check_output_dir_free(job.output_dir, besides=job_id, owner=job.owner)
            self.runs.requeue(job, attempt_status=None, reason="Resume requested")
            self.runs.schedule()
            return job

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """The job's checkpoints, oldest first."""
        return list_checkpoints(self.get_job(job_id).output_dir)

    def get_job(self, job_id: str) -> SFTJob:
        """The job object. Raises JobNotFound."""
        with self._lock:
            return self.records.get(job_id)

    def get_job_status(self, job_id: str) -> dict[str, Any]:
        """The job's status dict. Raises JobNotFound."""
        with self._lock:
            return self.records.get(job_id).to_dict()

    def list_jobs(self, *, status: str | None = None, limit: int | None = None, offset: int = 0,
                  newest_first: bool = False) -> list[dict[str, Any]]:
        """Jobs in creation order (or newest first), optionally of one status, paged."""
        return [job.to_dict() for job in self.select_jobs(status=status, limit=limit, offset=offset,
                                                          newest_first=newest_first)[0]]

    def select_jobs(self, *, status: str | None = None, limit: int | None = None, offset: int = 0,
                    newest_first: bool = False, owner: str | None = None) -> tuple[list[SFTJob], int]:
        """A page of jobs and the total that match (of one ``owner``, or everyone's when None)."""
        with self._lock:
            jobs = self.records.select(owner=owner, status=None if status is None else JobStatus(status))
        if newest_first:
            jobs.reverse()
        end = None if limit is None else offset + limit
        return jobs[offset:end], len(jobs)

    def delete_job(self, job_id: str) -> None:
        """Forget a finished job's record, events and metrics; its files stay on disk."""
        with self._lock:
            job = self.records.get(job_id)
            if not job.status.is_terminal():
                raise JobConflict(f"Job {job_id} is {job.status.value}; stop it before deleting it")
            check_deletable(job, self.records.select())  # a job that starts from it still needs its model
            self.records.remove(job_id)
            self.logs.forget(job_id)

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

    def counts(self, *, owner: str | None = None) -> dict[str, int]:
        """Jobs by status (of one ``owner``, or everyone's when None)."""
        with self._lock:
            statuses = [job.status for job in self.records.select(owner=owner)]
        return {status.value: statuses.count(status) for status in JobStatus}

    # Events and metrics

    def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        self.get_job(job_id)
        return self.event_log.page(job_id, after=after, limit=limit)

    def last_event_seq(self, job_id: str) -> int:
        """Number of the job's latest event (0 for none or an unknown job), from memory: cheap to poll."""
        return self.event_log.last_seq(job_id)

    def event_cursor(self, job_id: str) -> tuple[int, bool]:
        """The job's latest event number and whether it has ended (True once deleted), read together.

        ``JobRuns.finish`` sets a terminal status and writes its terminal event under the manager lock, so a
        reader that sees the job ended here also sees that event's number.
        """
        with self._lock:
            job = self.jobs.get(job_id)
            return self.event_log.last_seq(job_id), job is None or job.status.is_terminal()

    def follow_events(self, job_id: str, after: int, *, disconnected) -> Any:
        """The job's events above ``after`` as they come, for a live stream (see ``EventLog.follow``)."""

        def ended(job_id: str) -> bool | None:
            job = self.jobs.get(job_id)
            return None if job is None else job.status.is_terminal()

        return self.event_log.follow(job_id, after, cursor=self.event_cursor, exists=ended,
                                     disconnected=disconnected)

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        self.get_job(job_id)
        return self.store.metrics(job_id)

    # Configs

    def check_quota(self, owner: str | None, max_active: int) -> None:
        """Raise QuotaExceeded when ``owner`` has ``max_active`` jobs pending, running or stopping."""
        with self._lock:
            active = sum(1 for job in self.records.select(owner=owner, everyone=False) if not job.status.is_terminal())
        if active >= max_active:
            raise QuotaExceeded(f"{active} of your jobs are pending or running, the most one key may have "
                                f"(SFT_MAX_ACTIVE_JOBS_PER_KEY={max_active}); wait for one to end or stop one")

    def save_config(self, name: str, config: dict[str, Any], *, owner: str | None = None) -> str:
        """Save a named config template; every key must be an SFTConfig field. Returns its id."""
        return self.templates.save(name, config, owner=owner)

    def get_config(self, config_id: str) -> dict[str, Any]:
        """A saved config ``{config_id, name, config, created_at}``. Raises ConfigNotFound."""
        return self.templates.get(config_id)

    def list_configs(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        """Saved configs (of one ``owner``, or everyone's when None)."""
        return self.templates.list(owner=owner)

    def delete_config(self, config_id: str) -> None:
        self.templates.delete(config_id)

    def config_from_template(self, config_id: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """A saved config with ``overrides`` applied on top (validated at submit)."""
        return self.templates.apply(config_id, overrides)

    def _train(self, run: Any, emit: Any) -> dict[str, Any]:
        """The default runner: train ``run`` with ``app.sft.SFTTrainer`` (a custom runner may call it)."""
        return train(run.spec, emit, stop_event=run.stop_event, callbacks=run.callbacks)


def _check_same_request(existing: SFTJob, key: str, request_hash: str) -> None:
    if existing.request_hash != request_hash:
        raise JobConflict(f"Idempotency-Key {key} was used for a different request (job {existing.job_id})")


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
