"""How the manager runs jobs: it starts them on its executor, consumes what they report, recovers them.

``RunControl`` is the part of ``SFTJobManager`` that faces the executor: scheduling queued jobs onto
free slots, ending them, re-attaching after a restart, and the one report channel,
``_on_report(job_id, TrainingEvent)``, that turns training events into status, progress, metrics and
the event log (a dispatch on ``EventKind``). Callers hold the manager's lock where a method says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from pydantic import ValidationError

from ..core.joblogs import JobLogRouter
from ..core.settings import Settings
from ..sft.checkpoints import latest_checkpoint
from ..sft.config import SFTConfig
from ..sft.events import EventKind, TrainingEvent
from ..store import SQLiteStore
from .events import EventLog
from .executors import Executor, JobSpec
from .executors.training import classify_error, train
from .models import INTERRUPTED_ERROR, JobStatus, SFTJob, move, utcnow
from .preflight import complete_config
from .progress import advance, metric_point, public_progress

logger = logging.getLogger(__name__)

#: Event kinds whose sequence number needs no write of its own: progress-only kinds write nothing (a
#: re-attached run replays them, which changes nothing durable, so no write per step), and the others
#: store it with the write their handling makes anyway.
_SEQ_NOT_WRITTEN_ALONE = frozenset({EventKind.PHASE, EventKind.STEP, EventKind.TRAINING_STARTED,
                                    EventKind.METRICS, EventKind.EVAL, EventKind.EXITED})


class RunControl:
    """Starting, ending, recovering jobs and consuming their runs' reports (a base of ``SFTJobManager``)."""

    settings: Settings
    executor: Executor
    event_log: EventLog
    logs: JobLogRouter
    jobs: dict[str, SFTJob]
    max_concurrent_jobs: int
    _queue: deque[str]
    _running: set[str]
    _lock: threading.RLock
    _next_seq: int
    _dispatch: dict[EventKind, Any]

    @property
    def store(self) -> SQLiteStore:
        return self.event_log.store

    @store.setter
    def store(self, store: SQLiteStore) -> None:
        self.event_log.store = store

    def _handlers(self) -> dict[EventKind, Any]:
        return {
            EventKind.PHASE: self._on_progress,
            EventKind.STEP: self._on_progress,
            EventKind.TRAINING_STARTED: self._on_progress,
            EventKind.MODEL_LOADED: self._on_model_loaded,
            EventKind.DATASET_READY: self._on_dataset_ready,
            EventKind.METRICS: self._on_metrics,
            EventKind.EVAL: self._on_metrics,
            EventKind.CHECKPOINT_SAVED: self._on_checkpoint_saved,
            EventKind.LOG: self._on_log,
            EventKind.EXITED: self._on_exited,
        }

    # Start-up

    def _recover(self) -> None:
        """Load records; queue pending jobs again; re-attach to runs still alive, and resume (or fail)
        the ones a dead process was running."""
        for record in self.store.load_jobs():
            job = SFTJob.from_record(record)
            self._complete_old_config(job)
            self.jobs[job.job_id] = job
            self.event_log.load(job.job_id)
        self._next_seq = self.store.max_job_seq()
        self.templates.load()
        with self._lock:
            for job in list(self.jobs.values()):
                if job.status in (JobStatus.RUNNING, JobStatus.STOPPING):
                    if not self._reattach(job):
                        self._interrupted(job)
                elif job.status is JobStatus.PENDING:
                    self._queue.append(job.job_id)
            self._schedule()

    def _complete_old_config(self, job: SFTJob) -> None:
        """A record from before configs were stored whole gets its defaults once, and is stored again."""
        if set(SFTConfig.model_fields) <= set(job.config):
            return
        try:
            job.config = complete_config(job.config)
        except ValidationError as exc:
            logger.warning("job %s: its stored config no longer validates, kept as it is: %s", job.job_id, exc)
            return
        job.__dict__.pop("sft_config", None)
        self.store.update_job(job.job_id, config=job.config)

    def _reattach(self, job: SFTJob) -> bool:
        """Continue a run the executor still has (events after the last one consumed). Caller holds the lock."""
        if job.executor != self.executor.name or job.handle is None:
            return False
        self._running.add(job.job_id)
        try:
            attached = self.executor.reattach(self._spec(job), job.handle, self._on_report,
                                              after_seq=job.training_seq)
        except Exception:  # noqa: BLE001 - a broken executor must not stop the server from starting
            logger.exception("job %s: re-attaching failed", job.job_id)
            attached = False
        if not attached:
            self._running.discard(job.job_id)
            return False
        if not job.status.is_terminal():
            logger.info("job %s: re-attached to its %s run after event %s", job.job_id, job.executor,
                        job.training_seq)
            if job.status is JobStatus.STOPPING:
                self.executor.stop(job.job_id)
        return True

    def _interrupted(self, job: SFTJob) -> None:
        """A job whose run died with the server: queued again (within the auto-resume budget) or failed."""
        resumes = _automatic_resumes(job)
        auto = self.settings.auto_resume_interrupted and job.status is JobStatus.RUNNING
        if auto and resumes < self.settings.max_auto_resumes:
            self._requeue(job, attempt_status="interrupted", reason=INTERRUPTED_ERROR)
            return
        message = INTERRUPTED_ERROR
        if auto:
            message = (f"{INTERRUPTED_ERROR}, again after {resumes} automatic resume(s) "
                       f"(SFT_MAX_AUTO_RESUMES={self.settings.max_auto_resumes}): it may be what stops "
                       "the server (out of memory?), so it is not resumed again by itself; check its "
                       "config and resume it by hand")
        self._finish(job, JobStatus.FAILED, error=message,
                     error_detail={"category": "interrupted", "message": message, "log_tail": []})

    def _requeue(self, job: SFTJob, *, attempt_status: str | None, reason: str) -> None:
        """Put an ended (or interrupted) job back in the queue for another attempt. Caller holds the lock."""
        if job.attempts and job.attempts[-1]["ended_at"] is None:
            job.attempts[-1].update(ended_at=utcnow(), status=attempt_status)
        move(job, JobStatus.PENDING, resume=attempt_status is None)
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

    # Running

    def _spec(self, job: SFTJob) -> JobSpec:
        return self._spec_of(job.job_id, job.config, attempt=max(len(job.attempts), 1), resume_from=job.resume_from)

    def _spec_of(self, job_id: str, config: dict[str, Any], *, attempt: int, resume_from: str | None) -> JobSpec:
        settings = self.settings
        return JobSpec(job_id=job_id, config=config, output_dir=config["output_dir"], attempt=attempt,
                       resume_from=resume_from, model_cache_dir=str(settings.resolved_model_cache_dir),
                       dataset_roots=[str(p) for p in settings.resolved_dataset_roots],
                       model_roots=[str(p) for p in settings.resolved_model_roots])

    def _schedule(self) -> None:
        """Start queued jobs while slots are free. Caller holds the lock."""
        while self._queue and len(self._running) < self.max_concurrent_jobs:
            job = self.jobs[self._queue.popleft()]
            self._running.add(job.job_id)
            move(job, JobStatus.RUNNING)
            job.started_at = job.started_at or utcnow()
            job.queue_position = None
            resume = latest_checkpoint(job.output_dir) if job.attempts else None
            job.resume_from = str(resume[1]) if resume else None
            job.attempts.append({"attempt": len(job.attempts) + 1, "started_at": utcnow(), "ended_at": None,
                                 "status": None, "resumed_from_step": resume[0] if resume else None})
            job.progress = {"phase": "starting"}
            job.executor, job.handle, job.training_seq = self.executor.name, None, 0
            self.store.update_job(job.job_id, status=job.status.value, started_at=job.started_at,
                                  attempts=job.attempts, progress=job.progress, executor=job.executor,
                                  handle=None, training_seq=0)
            self._emit(job, "started", f"Job started (attempt {len(job.attempts)}): loading the model")
            self._start(job)
        self._update_queue_positions()

    def _start(self, job: SFTJob) -> None:
        """Hand the job to the executor; a refusal fails the job. Caller holds the lock."""
        try:
            handle = self.executor.start(self._spec(job), self._on_report, callbacks=job.callbacks)
        except Exception as exc:  # noqa: BLE001 - a run that cannot start is a failed job, not a 500
            logger.exception("job %s: the %s executor could not start it", job.job_id, self.executor.name)
            self._running.discard(job.job_id)
            detail = classify_error(exc)
            self._finish(job, JobStatus.FAILED, error=detail["message"], error_detail=detail)
            return
        job.handle = handle
        run = getattr(self.executor, "run_of", lambda _: None)(job.job_id)
        if run is not None:  # an in-process run: the seed's SFTJob.thread and stop_event are its own
            job.thread, job.stop_event = run.thread, run.stop_event
        if not job.status.is_terminal():
            self.store.update_job(job.job_id, handle=handle)

    def _update_queue_positions(self) -> None:
        for position, job_id in enumerate(self._queue, start=1):
            self.jobs[job_id].queue_position = position

    def _finish(self, job: SFTJob, status: JobStatus, *, result: dict[str, Any] | None = None,
                error: str | None = None, error_detail: dict[str, Any] | None = None,
                message: str | None = None) -> None:
        """Move a job into a terminal state, stamp it, persist it. Caller holds the lock (or is alone).
        A job that has already ended stays as it is (a late report of an abandoned run)."""
        if job.status.is_terminal():
            return
        move(job, status)
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
                              progress=public_progress(job.progress), attempts=job.attempts,
                              training_seq=job.training_seq)
        level = "error" if status is JobStatus.FAILED else "info"
        default = {JobStatus.COMPLETED: "Training completed", JobStatus.FAILED: f"Failed: {error}",
                   JobStatus.STOPPED: "Stopped"}[status]
        self._emit(job, status.value, message or default, level=level,
                   data={"result": job.result} if job.result else None)

    def _emit(self, job: SFTJob, kind: str, message: str, *, level: str = "info",
              data: dict[str, Any] | None = None) -> int:
        return self.event_log.emit(job.job_id, kind, message, level=level, data=data)

    # The report channel: training events -> status, progress, metrics, the event log

    def _on_report(self, job_id: str, event: TrainingEvent) -> None:
        """What every executor calls with each event of a run (on whatever thread it has)."""
        job = self.jobs.get(job_id)
        if job is None or job.status.is_terminal():
            return
        if event.seq is not None:
            if event.seq <= job.training_seq:
                return  # consumed before a restart: a re-attached run's replay starts after it
            job.training_seq = event.seq
        self._dispatch[event.kind](job, event)
        if event.seq is not None and event.kind not in _SEQ_NOT_WRITTEN_ALONE:
            self.store.update_job(job_id, training_seq=event.seq)

    def _on_progress(self, job: SFTJob, event: TrainingEvent) -> None:
        rows = _rows_per_step(job) if event.kind is EventKind.TRAINING_STARTED else None
        job.progress = advance(job.progress, event, now=time.monotonic(), rows_per_step=rows)

    def _on_model_loaded(self, job: SFTJob, event: TrainingEvent) -> None:
        payload = event.payload
        self._emit(job, "model_loaded", f"Model {payload.get('base_model')} loaded "
                   f"({payload.get('parameters', 0):,} parameters)", data=payload)

    def _on_dataset_ready(self, job: SFTJob, event: TrainingEvent) -> None:
        payload = event.payload
        self._emit(job, "dataset_ready", f"Dataset ready: {payload['train_rows']} training rows, "
                   f"{payload['eval_rows']} eval rows ({payload['dataset_format']})", data=payload)

    def _on_checkpoint_saved(self, job: SFTJob, event: TrainingEvent) -> None:
        self._emit(job, "checkpoint_saved", f"Checkpoint saved at step {event.payload['step']}", data=event.payload)

    def _on_log(self, job: SFTJob, event: TrainingEvent) -> None:
        payload = event.payload
        self.logs.write(job.job_id, f"{payload.get('level', 'INFO').upper()} {payload.get('message', '')}")

    def _on_metrics(self, job: SFTJob, event: TrainingEvent) -> None:
        now = time.monotonic()
        point = metric_point(job.progress, event.payload, now=now)
        if point is None:
            return
        job.progress = progress = advance(job.progress, event, now=now)
        attempt = len(job.attempts)
        self.store.add_metric(job.job_id, point["step"], attempt, {**point, "attempt": attempt})
        self.store.update_job(job.job_id, progress=public_progress(progress), training_seq=job.training_seq)
        step = point["step"]
        if event.kind is EventKind.EVAL:
            self._emit(job, "eval", f"Step {step}: eval_loss {point.get('eval_loss', float('nan')):.4f}",
                       data=point)
        else:
            loss = point.get("loss")
            text = f"Step {step}/{progress.get('max_steps', '?')}" + (f": loss {loss:.4f}" if loss is not None else "")
            self._emit(job, "metrics", text, data=point)

    def _on_exited(self, job: SFTJob, event: TrainingEvent) -> None:
        payload = event.payload
        status = JobStatus(payload["status"])
        result, detail, error, message = payload.get("result"), payload.get("error_detail"), None, None
        if status is JobStatus.FAILED:
            detail = dict(detail or {"category": "internal", "message": "the run failed", "log_tail": []})
            if not detail.get("log_tail"):
                detail["log_tail"] = self.logs.tail(job.job_id, 20)
            error = detail["message"]
        elif status is JobStatus.STOPPED:
            message = "Stopped; the adapter trained so far is saved" if result and result.get(
                "adapter_path") else "Stopped before training began"
        with self._lock:
            self._running.discard(job.job_id)
            self._finish(job, status, result=result, error=error, error_detail=detail, message=message)
            self._schedule()

    def _train(self, run: Any, emit: Any) -> dict[str, Any]:
        """The default runner: train ``run`` with ``app.sft.SFTTrainer`` (a custom runner may call it)."""
        return train(run.spec, emit, stop_event=run.stop_event, callbacks=run.callbacks)


def _rows_per_step(job: SFTJob) -> int:
    config = job.sft_config
    return config.per_device_train_batch_size * config.gradient_accumulation_steps


def _automatic_resumes(job: SFTJob) -> int:
    """How many times in a row the job was resumed because a server died under it: the attempts
    before the current one that ended ``interrupted`` (a manual resume follows a stopped or failed one)."""
    count = 0
    for attempt in reversed(job.attempts[:-1]):
        if attempt.get("status") != "interrupted":
            break
        count += 1
    return count
