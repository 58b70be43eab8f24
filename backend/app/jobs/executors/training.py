"""The one training function every executor runs: a ``JobSpec`` in, ``TrainingEvent``s out.

A thread calls it in the API process; a Ray worker calls it on whatever node holds the job. It
never raises: any exception becomes the ``EXITED`` event with ``status: failed`` and a classified
error, so an executor only has to carry events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ...sft.errors import SFTError
from ...sft.events import EventKind, EventSink, TrainingEvent
from .base import FailureCategory, JobFailure, JobSpec

logger = logging.getLogger(__name__)


def run_training(spec: JobSpec, sink: EventSink, *, stop_event: threading.Event,
                 callbacks: list[Any] | None = None, device: str | None = None) -> TrainingEvent:
    """Train ``spec`` to the end (or until ``stop_event`` is set); report every event to ``sink``,
    the last being ``EXITED``, which is also returned."""
    return run_to_exit(spec.job_id, sink, lambda: train(spec, sink, stop_event=stop_event, callbacks=callbacks,
                                                         device=device))


def train(spec: JobSpec, sink: EventSink, *, stop_event: threading.Event,
          callbacks: list[Any] | None = None, device: str | None = None) -> dict[str, Any]:
    """Train ``spec`` with ``SFTTrainer``; return its result dict (raises what the trainer raises)."""
    from pathlib import Path

    from ...sft.trainer import DEFAULT_MODEL_CACHE_DIR, SFTTrainer
    from ..bases import prepare_base

    model_roots = [Path(p) for p in spec.model_roots] if spec.model_roots is not None else None
    # A base made from an earlier job's adapter is merged here, in the run, never in the submit request.
    prepare_base(spec.config, sink, cache_dir=Path(spec.model_cache_dir or DEFAULT_MODEL_CACHE_DIR),
                 model_roots=model_roots)
    trainer = SFTTrainer(
        spec.config,
        callbacks=callbacks,
        stop_event=stop_event,
        on_event=sink,
        model_cache_dir=spec.model_cache_dir,
        allowed_dataset_roots=[Path(p) for p in spec.dataset_roots] if spec.dataset_roots is not None else None,
        allowed_model_roots=model_roots,
        resume_from_checkpoint=spec.resume_from,
        device=device,
    )
    return trainer.train().to_dict()


def run_to_exit(job_id: str, sink: EventSink, body: Callable[[], dict[str, Any]]) -> TrainingEvent:
    """Run ``body`` (which returns a result dict) and report how it ended as the ``EXITED`` event:
    ``stopped`` when the result says so, ``completed`` otherwise, ``failed`` with a classified error
    when it raised. Never raises."""
    try:
        result = body()
        status = "stopped" if result.get("stopped") else "completed"
        exited = TrainingEvent(EventKind.EXITED, {"status": status, "result": result})
    except BaseException as exc:  # noqa: BLE001 - a run's failure must become its last event
        logger.exception("job %s failed", job_id)
        exited = classify(exc).exited()
        exc.__traceback__ = None  # its frames would keep the model alive
    sink(exited)
    return exited


def classify(exc: BaseException) -> JobFailure:
    """A failed run's error: a category, a message a user can act on (the log tail is the manager's)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, SFTError):
        return JobFailure(FailureCategory(exc.category), text)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError":
        return JobFailure(FailureCategory.OUT_OF_MEMORY, f"out of memory: {text}. Lower per_device_train_batch_size "
                          "or max_length, enable gradient_checkpointing, or use QLoRA")
    return JobFailure(FailureCategory.INTERNAL, f"{type(exc).__name__}: {text}")


def classify_error(exc: BaseException) -> dict[str, Any]:
    """``classify(exc)`` as the ``error_detail`` dict (the seed module re-exports it)."""
    return classify(exc).to_dict()
