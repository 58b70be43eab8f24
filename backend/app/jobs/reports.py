"""``ReportHandler``: the one channel every executor reports through, ``handler(job_id, TrainingEvent)``.

It turns a run's training events into the job's progress, metrics, log lines and event log (a
dispatch on ``EventKind``), and hands the last one (``EXITED``) to ``on_exit``, which ends the job and
frees its slot. Events numbered at or below the last one consumed (a re-attached run's replay) and
events of a job that has already ended (a cancelled run's late ones) change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sft_client.models import EfficiencyReport

from ..core.joblogs import JobLogRouter
from ..sft.events import EventKind, TrainingEvent
from .events import JobEventType
from .executors.base import FailureCategory, JobFailure
from .models import JobStatus, SFTJob
from .progress import GRADER_PREFIX, advance, metric_point
from .records import JobRecords

#: Event kinds whose sequence number needs no write of its own: progress-only kinds write nothing (a
#: re-attached run replays them, which changes nothing durable, so no write per step), and the others
#: store it with the write their handling makes anyway.
_SEQ_NOT_WRITTEN_ALONE = frozenset({EventKind.PHASE, EventKind.STEP, EventKind.TRAINING_STARTED,
                                    EventKind.METRICS, EventKind.EVAL, EventKind.EXITED})

#: ``on_exit(job, status, result=..., error=..., error_detail=..., message=...)``: end the job.
OnExit = Callable[..., None]


class ReportHandler:
    """Consumes runs' reports for ``records``; ``on_exit`` ends a job whose run is over."""

    def __init__(self, records: JobRecords, logs: JobLogRouter, on_exit: OnExit):
        self.records = records
        self.logs = logs
        self.on_exit = on_exit
        self._dispatch: dict[EventKind, Callable[[SFTJob, TrainingEvent], None]] = {
            EventKind.PHASE: self._phase,
            EventKind.STEP: self._progress,
            EventKind.TRAINING_STARTED: self._progress,
            EventKind.MODEL_LOADED: self._model_loaded,
            EventKind.DATASET_READY: self._dataset_ready,
            EventKind.METRICS: self._metrics,
            EventKind.EVAL: self._metrics,
            EventKind.CHECKPOINT_SAVED: self._checkpoint_saved,
            EventKind.EFFICIENCY: self._efficiency,
            EventKind.LOG: self._log,
            EventKind.EXITED: self._exited,
        }

    def __call__(self, job_id: str, event: TrainingEvent) -> None:
        """What every executor calls with each event of a run (on whatever thread it has)."""
        job = self.records.jobs.get(job_id)
        if job is None or job.status.is_terminal():
            return
        if event.seq is not None:
            if event.seq <= job.training_seq:
                return  # consumed before a restart: a re-attached run's replay starts after it
            job.training_seq = event.seq
        self._dispatch[event.kind](job, event)
        if event.seq is not None and event.kind not in _SEQ_NOT_WRITTEN_ALONE:
            self.records.update(job, training_seq=event.seq)

    def _progress(self, job: SFTJob, event: TrainingEvent) -> None:
        rows = _rows_per_step(job) if event.kind is EventKind.TRAINING_STARTED else None
        job.progress = advance(job.progress, event, now=time.monotonic(), rows_per_step=rows)

    def _phase(self, job: SFTJob, event: TrainingEvent) -> None:
        self._progress(job, event)
        if message := event.payload.get("message"):  # a phase the user is told about (merging the base)
            self.records.emit(job, JobEventType.PHASE, message, data=event.payload)
            if event.seq is not None:
                self.records.update(job, training_seq=event.seq)

    def _model_loaded(self, job: SFTJob, event: TrainingEvent) -> None:
        payload = event.payload
        self.records.emit(job, JobEventType.MODEL_LOADED, f"Model {payload.get('base_model')} loaded "
                          f"({payload.get('parameters', 0):,} parameters)", data=payload)

    def _dataset_ready(self, job: SFTJob, event: TrainingEvent) -> None:
        payload = event.payload
        self.records.emit(job, JobEventType.DATASET_READY, f"Dataset ready: {payload['train_rows']} training rows, "
                          f"{payload['eval_rows']} eval rows ({payload['dataset_format']})", data=payload)

    def _checkpoint_saved(self, job: SFTJob, event: TrainingEvent) -> None:
        self.records.emit(job, JobEventType.CHECKPOINT_SAVED, f"Checkpoint saved at step {event.payload['step']}",
                          data=event.payload)

    def _efficiency(self, job: SFTJob, event: TrainingEvent) -> None:
        self.records.emit(job, JobEventType.EFFICIENCY, EfficiencyReport.model_validate(event.payload).summary(), data=event.payload)

    def _log(self, job: SFTJob, event: TrainingEvent) -> None:
        payload = event.payload
        self.logs.write(job.job_id, f"{payload.get('level', 'INFO').upper()} {payload.get('message', '')}")

    def _metrics(self, job: SFTJob, event: TrainingEvent) -> None:
        now = time.monotonic()
        point = metric_point(job.progress, event.payload, now=now)
        if point is None:
            return
        progress = advance(job.progress, event, now=now)
        attempt = len(job.attempts)
        self.records.store.add_metric(job.job_id, point["step"], attempt, {**point, "attempt": attempt})
        self.records.update(job, progress=progress, training_seq=job.training_seq)
        step = point["step"]
        if event.kind is EventKind.EVAL:
            scores = [f"{key} {value:.4f}" for key, value in point.items() if key == "eval_loss"
                      or key.startswith(GRADER_PREFIX)]
            self.records.emit(job, JobEventType.EVAL, f"Step {step}: {', '.join(scores) or 'evaluated'}", data=point)
        else:
            loss = point.get("loss")
            text = f"Step {step}/{progress.get('max_steps', '?')}" + (f": loss {loss:.4f}" if loss is not None else "")
            self.records.emit(job, JobEventType.METRICS, text, data=point)

    def _exited(self, job: SFTJob, event: TrainingEvent) -> None:
        payload = event.payload
        status = JobStatus(payload["status"])
        result, detail, error, message = payload.get("result"), payload.get("error_detail"), None, None
        if status is JobStatus.FAILED:
            failure = JobFailure.from_dict(detail) if detail else JobFailure(FailureCategory.INTERNAL, "the run failed")
            if not failure.log_tail:
                failure = JobFailure(failure.category, failure.message, self.logs.tail(job.job_id, 20))
            detail, error = failure.to_dict(), failure.message
        elif status is JobStatus.STOPPED:
            message = "Stopped; the adapter trained so far is saved" if result and result.get(
                "adapter_path") else "Stopped before training began"
        self.on_exit(job, status, result=result, error=error, error_detail=detail, message=message)


def _rows_per_step(job: SFTJob) -> int:
    config = job.sft_config
    return config.per_device_train_batch_size * config.gradient_accumulation_steps
