"""``JobRuns``: how the manager's jobs run — started on the executor, ended, queued again, recovered.

It owns nothing it is not given: the records (``JobRecords``), the queue and slots (``Scheduler``),
the executor and the settings, and the manager's lock, which every method expects its caller to
hold (except ``run_ended``, the report handler's way in, which takes it). The executor reports
through ``self.report`` (a ``ReportHandler``), whose last event of a run lands in ``run_ended``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydantic import ValidationError

from ..core.joblogs import JobLogRouter
from ..core.settings import Settings
from ..sft.checkpoints import latest_checkpoint
from ..sft.config import SFTConfig
from .events import JobEventType
from .executors import Executor, JobSpec
from .executors.base import FailureCategory, JobFailure
from .executors.training import classify_error
from .models import INTERRUPTED_ERROR, JobStatus, SFTJob, utcnow
from .preflight import complete_config
from .records import JobRecords
from .reports import ReportHandler
from .scheduler import Scheduler

logger = logging.getLogger(__name__)

_DEFAULT_ENDINGS = {JobStatus.COMPLETED: "Training completed", JobStatus.STOPPED: "Stopped"}


class JobRuns:
    """Starts, ends, requeues and recovers the runs of ``records``' jobs on ``executor``."""

    def __init__(self, *, records: JobRecords, scheduler: Scheduler, executor: Executor, settings: Settings,
                 logs: JobLogRouter, lock: threading.RLock):
        self.records = records
        self.scheduler = scheduler
        self.executor = executor
        self.settings = settings
        self.lock = lock
        self.report = ReportHandler(records, logs, self.run_ended)

    def spec(self, job: SFTJob) -> JobSpec:
        """What the executor gets for ``job``'s current attempt."""
        return self.spec_of(job.job_id, job.sft_config, attempt=max(len(job.attempts), 1), resume_from=job.resume_from)

    def spec_of(self, job_id: str, config: SFTConfig, *, attempt: int, resume_from: str | None) -> JobSpec:
        settings = self.settings
        return JobSpec(job_id=job_id, config=config, output_dir=config.output_dir, attempt=attempt,
                       resume_from=resume_from, model_cache_dir=str(settings.resolved_model_cache_dir),
                       dataset_roots=[str(p) for p in settings.resolved_dataset_roots],
                       model_roots=[str(p) for p in settings.resolved_model_roots])

    # Starting

    def schedule(self) -> None:
        """Start queued jobs while slots are free."""
        while (job_id := self.scheduler.next_ready()) is not None:
            job = self.records.jobs[job_id]
            resume = latest_checkpoint(job.output_dir) if job.attempts else None
            attempts = [*job.attempts, {"attempt": len(job.attempts) + 1, "started_at": utcnow(), "ended_at": None,
                                        "status": None, "resumed_from_step": resume[0] if resume else None}]
            job.queue_position = None
            job.resume_from = str(resume[1]) if resume else None
            self.records.set_status(job, JobStatus.RUNNING, attempts=attempts, progress={"phase": "starting"},
                                    executor=self.executor.name, handle=None, training_seq=0)
            self.records.emit(job, JobEventType.STARTED,
                              f"Job started (attempt {len(job.attempts)}): loading the model")
            self._start(job)
        self.update_positions()

    def _start(self, job: SFTJob) -> None:
        """Hand the job to the executor; a refusal fails the job."""
        try:
            handle = self.executor.start(self.spec(job), self.report, callbacks=job.callbacks)
        except Exception as exc:  # noqa: BLE001 - a run that cannot start is a failed job, not a 500
            logger.exception("job %s: the %s executor could not start it", job.job_id, self.executor.name)
            self.scheduler.release(job.job_id)
            self.finish(job, JobStatus.FAILED, failure=JobFailure.from_dict(classify_error(exc)))
            return
        job.handle = handle
        run = getattr(self.executor, "run_of", lambda _: None)(job.job_id)
        if run is not None:  # an in-process run: the seed's SFTJob.thread and stop_event are its own
            job.thread, job.stop_event = run.thread, run.stop_event
        if not job.status.is_terminal():
            self.records.update(job, handle=handle)

    def update_positions(self) -> None:
        for job_id, position in self.scheduler.positions().items():
            self.records.jobs[job_id].queue_position = position

    # Ending

    def finish(self, job: SFTJob, status: JobStatus, *, result: dict[str, Any] | None = None,
               failure: JobFailure | None = None, message: str | None = None) -> None:
        """Move a job into a terminal state, stamp it, persist it and say so in its events. A job that
        has already ended stays as it is (a late report of an abandoned run)."""
        if job.status.is_terminal():
            return
        now, attempts = utcnow(), job.attempts
        if attempts and attempts[-1]["ended_at"] is None:
            attempts[-1].update(ended_at=now, status=status.value)
        job.callbacks = []
        job.thread = None
        job.queue_position = None
        self.records.set_status(
            job, status, result=result if result is not None else job.result,
            error=failure.message if failure else None, error_detail=failure.to_dict() if failure else None,
            progress={**job.progress, "phase": status.value} if job.progress else job.progress,
            attempts=attempts, training_seq=job.training_seq, completed_at=now)
        ending = message or (f"Failed: {job.error}" if status is JobStatus.FAILED else _DEFAULT_ENDINGS[status])
        self.records.emit(job, JobEventType(status.value), ending, level="error" if status is JobStatus.FAILED
                          else "info", data={"result": job.result} if job.result else None)

    def run_ended(self, job: SFTJob, status: JobStatus, *, result: dict[str, Any] | None = None,
                  error: str | None = None, error_detail: dict[str, Any] | None = None,
                  message: str | None = None) -> None:
        """A run's last event: end its job, free its slot, start the next."""
        with self.lock:
            self.scheduler.release(job.job_id)
            self.finish(job, status, result=result, message=message,
                        failure=JobFailure.from_dict(error_detail) if error_detail else None)
            self.schedule()

    def stop(self, job: SFTJob) -> None:
        """Stop a job: a pending one at once, a running one at its next step boundary (it saves)."""
        job.stop_event.set()
        if job.status is JobStatus.PENDING:
            self.scheduler.dequeue(job.job_id)
            self.finish(job, JobStatus.STOPPED, message="Stopped before it started")
            self.update_positions()
        elif job.status is JobStatus.RUNNING:
            self.records.set_status(job, JobStatus.STOPPING)
            self.records.emit(job, JobEventType.STOPPING, "Stop requested: training ends at the next step and saves")
            self.executor.stop(job.job_id)

    def cancel(self, job: SFTJob) -> None:
        """End a running job now, without saving (it fails, category ``cancelled``)."""
        self.executor.cancel(job.job_id)
        if not job.status.is_terminal():  # the executor had no run to end: end the job here
            self.scheduler.release(job.job_id)
            self.finish(job, JobStatus.FAILED, failure=JobFailure(
                FailureCategory.CANCELLED, "cancelled: the run was ended without saving"))
            self.schedule()

    # Another attempt

    def requeue(self, job: SFTJob, *, attempt_status: str | None, reason: str) -> None:
        """Put an ended (or interrupted) job back in the queue for another attempt."""
        if job.attempts and job.attempts[-1]["ended_at"] is None:
            job.attempts[-1].update(ended_at=utcnow(), status=attempt_status)
        job.stop_event = threading.Event()
        self.records.set_status(job, JobStatus.PENDING, resume=attempt_status is None, error=None,
                                error_detail=None, attempts=job.attempts)
        if attempt_status == "interrupted":
            self.records.emit(job, JobEventType.INTERRUPTED, INTERRUPTED_ERROR, level="warning")
        self.records.emit(job, JobEventType.RESUMED, f"{reason}: resuming {self.resume_point(job)}")
        self.scheduler.enqueue(job.job_id)
        self.update_positions()

    @staticmethod
    def resume_point(job: SFTJob) -> str:
        """Where the job's next attempt starts: its latest checkpoint, once it has run (``schedule``'s rule:
        a job that never started trains from the first step, whatever its directory holds)."""
        latest = latest_checkpoint(job.output_dir) if job.attempts else None
        return f"from checkpoint {latest[1].name} (step {latest[0]})" if latest \
            else "from the first step (no checkpoint)"

    # Start-up

    def recover(self) -> None:
        """Load records; queue pending jobs again; re-attach to runs still alive, and resume (or fail)
        the ones a dead process was running."""
        for job in self.records.load():
            self._complete_old_config(job)
        for job in list(self.records.jobs.values()):
            if job.status in (JobStatus.RUNNING, JobStatus.STOPPING):
                if not self._reattach(job):
                    self._interrupted(job)
            elif job.status is JobStatus.PENDING:
                self.scheduler.enqueue(job.job_id)
        self.schedule()

    def _complete_old_config(self, job: SFTJob) -> None:
        """A record from before configs were stored whole gets its defaults once, and is stored again."""
        if set(SFTConfig.model_fields) <= set(job.config):
            return
        try:
            config = complete_config(job.config)
        except ValidationError as exc:
            logger.warning("job %s: its stored config no longer validates, kept as it is: %s", job.job_id, exc)
            return
        job.__dict__.pop("sft_config", None)
        self.records.update(job, config=config)

    def _reattach(self, job: SFTJob) -> bool:
        """Continue a run the executor still has (events after the last one consumed)."""
        if job.executor != self.executor.name or job.handle is None:
            return False
        self.scheduler.claim(job.job_id)
        try:
            attached = self.executor.reattach(self.spec(job), job.handle, self.report, after_seq=job.training_seq)
        except Exception:  # noqa: BLE001 - a broken executor must not stop the server from starting
            logger.exception("job %s: re-attaching failed", job.job_id)
            attached = False
        if not attached:
            self.scheduler.release(job.job_id)
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
            self.requeue(job, attempt_status="interrupted", reason=INTERRUPTED_ERROR)
            return
        message = INTERRUPTED_ERROR
        if auto:
            message = (f"{INTERRUPTED_ERROR}, again after {resumes} automatic resume(s) "
                       f"(SFT_MAX_AUTO_RESUMES={self.settings.max_auto_resumes}): it may be what stops "
                       "the server (out of memory?), so it is not resumed again by itself; check its "
                       "config and resume it by hand")
        self.finish(job, JobStatus.FAILED, failure=JobFailure(FailureCategory.INTERRUPTED, message))


def _automatic_resumes(job: SFTJob) -> int:
    """How many times in a row the job was resumed because a server died under it: the attempts
    before the current one that ended ``interrupted`` (a manual resume follows a stopped or failed one)."""
    count = 0
    for attempt in reversed(job.attempts[:-1]):
        if attempt.get("status") != "interrupted":
            break
        count += 1
    return count
