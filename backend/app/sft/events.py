"""The one vocabulary of training events: what the training core reports while it runs.

``SFTTrainer`` produces them, an executor carries them (in-process for threads, serialised for a
cluster), and the job manager turns them into status, progress, metrics and the event log in one
place. Every event is a plain, JSON-safe record: ``TrainingEvent.to_dict()`` / ``from_dict()``
round-trip it across a process boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class EventKind(str, Enum):
    """The kinds of training events, in the order a run usually produces them."""

    #: The run entered a phase: ``loading_model``, ``preparing_dataset``, ``training``, ``saving``.
    PHASE = "phase"
    #: The base model is loaded: ``base_model``, ``parameters``, ``attention`` (its attention implementation:
    #: ``sdpa_fp32`` when a CPU trains in bf16, sft/attention.py).
    MODEL_LOADED = "model_loaded"
    #: The datasets are ready: ``dataset_format``, ``train_rows``, ``eval_rows``.
    DATASET_READY = "dataset_ready"
    #: The training loop began: ``global_step`` (non-zero on a resume), ``max_steps``.
    TRAINING_STARTED = "training_started"
    #: An optimizer step ended: ``step``, ``max_steps``, ``epoch``.
    STEP = "step"
    #: Training metrics were logged: ``step``, ``max_steps``, ``epoch`` and the logged values.
    METRICS = "metrics"
    #: Evaluation metrics were logged: ``step`` and the ``eval_*`` values.
    EVAL = "eval"
    #: A checkpoint was written: ``step``, ``path``.
    CHECKPOINT_SAVED = "checkpoint_saved"
    #: How efficiently the run trained, once training is over: the result's ``efficiency`` dict.
    EFFICIENCY = "efficiency"
    #: A line of the run's log, for executors whose runs live in another process: ``level``, ``message``.
    LOG = "log"
    #: The run is over (the last event of an attempt): ``status`` (``completed``, ``stopped`` or
    #: ``failed``), ``result`` (the ``SFTResult`` dict) or ``error_detail`` (category, message, log tail).
    EXITED = "exited"


@dataclass(frozen=True)
class TrainingEvent:
    """One event of one run. ``seq`` numbers a run's events from 1 where the producer lives in
    another process, so a consumer that re-attaches can ask for the events after the last it saw."""

    kind: EventKind
    payload: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "payload": self.payload, "seq": self.seq}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingEvent:
        return cls(EventKind(data["kind"]), dict(data.get("payload") or {}), data.get("seq"))


#: Where a run's events go.
EventSink = Callable[[TrainingEvent], None]
