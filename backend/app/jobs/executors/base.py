"""The seam between the job manager, which decides, and whatever trains, which runs.

The manager hands an executor a small, serialisable ``JobSpec``; the executor starts the run
(a thread here, a Ray actor on a cluster), and reports back through one channel: a ``Report``
callable that receives ``TrainingEvent``s, the last of which is ``EventKind.EXITED``. The
executor never touches job records, statuses or the event log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ...sft.events import EventKind, TrainingEvent

if TYPE_CHECKING:
    from ...sft.config import SFTConfig
    from ...sft.planner import DeviceMemory


@dataclass(frozen=True)
class JobSpec:
    """What a run needs, and nothing of the service; ``to_dict`` / ``from_dict`` carry it across a
    process boundary (the only place its config is serialised and validated again).

    Attributes:
        job_id: the job this run belongs to.
        config: the job's resolved ``SFTConfig`` (a dict given here is validated into one).
        output_dir: where the run writes checkpoints and its adapter or model.
        attempt: 1 for the first run of a job, +1 for each resume.
        resume_from: a checkpoint directory to continue from, or None for the first step.
        model_cache_dir: where GGUF / bundled models are converted once.
        dataset_roots / model_roots: the path policy a run enforces (None: anywhere).
    """

    job_id: str
    config: SFTConfig
    output_dir: str
    attempt: int = 1
    resume_from: str | None = None
    model_cache_dir: str | None = None
    dataset_roots: list[str] | None = None
    model_roots: list[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.config, dict):
            from ...sft.config import SFTConfig

            object.__setattr__(self, "config", SFTConfig.model_validate(self.config))

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-safe data, its config every field of it."""
        return {**asdict(replace(self, config=None)), "config": self.config.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(**data)


class FailureCategory(str, Enum):
    """Why a run failed (``error_detail.category``): the training core's error kinds and the executors' own."""

    #: A bug or an error nobody classified; the message carries the exception.
    INTERNAL = "internal"
    #: The config cannot run (``ConfigError``).
    CONFIG = "config"
    #: The dataset cannot be read or has no usable rows (``DatasetError``).
    DATASET = "dataset"
    #: The base model cannot be loaded (``ModelError``).
    MODEL = "model"
    #: A request to a trained model was invalid (``RequestError``).
    REQUEST = "request"
    #: A trained artifact is missing or unusable.
    ARTIFACT = "artifact"
    #: A generation was stopped.
    STOPPED = "stopped"
    #: The run ran out of (GPU or host) memory.
    OUT_OF_MEMORY = "out_of_memory"
    #: A hard cancel ended the run without saving.
    CANCELLED = "cancelled"
    #: The run was lost with its server, process or node.
    INTERRUPTED = "interrupted"
    #: The executor (its cluster) could not be reached.
    EXECUTOR_DOWN = "executor_down"


@dataclass(frozen=True)
class JobFailure:
    """How a run failed: what a failed ``EXITED`` event carries as ``error_detail`` (as ``to_dict()``)."""

    category: FailureCategory
    message: str
    #: The last lines of the job's log (the manager fills them in when the run did not).
    log_tail: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category.value, "message": self.message, "log_tail": list(self.log_tail)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobFailure:
        """A failure as a run reported it; a category this version does not know (a worker of another
        release) is ``internal``, so the job still ends with the run's message."""
        try:
            category = FailureCategory(data.get("category", "internal"))
        except ValueError:
            category = FailureCategory.INTERNAL
        return cls(category, data.get("message") or "the run failed", list(data.get("log_tail") or []))

    def exited(self) -> TrainingEvent:
        """The ``EXITED`` event of a run that failed this way."""
        return TrainingEvent(EventKind.EXITED, {"status": "failed", "error_detail": self.to_dict()})


class RunState(str, Enum):
    """What an executor knows of one run."""

    #: Started and not yet over (loading, training or saving).
    RUNNING = "running"
    #: Waiting for resources the executor does not have free yet (a cluster's own queue).
    WAITING = "waiting"
    #: Over; its ``EXITED`` event has been (or is being) reported.
    EXITED = "exited"
    #: The executor has no such run (never started here, or lost with its process or node).
    UNKNOWN = "unknown"


#: The one channel back to the manager: ``report(job_id, event)``.
Report = Callable[[str, TrainingEvent], None]


@runtime_checkable
class Executor(Protocol):
    """Runs jobs. Implementations: ``LocalThreadExecutor`` (the default), ``RayExecutor``."""

    #: Short name shown in ``/health`` and job records: ``thread``, ``ray``.
    name: str

    def check(self, spec: JobSpec) -> None:
        """Refuse at submit what this executor can never run (e.g. more GPUs than the cluster has):
        raise ``app.sft.errors.ConfigError`` naming the field."""

    def device_memory(self, spec: JobSpec, *, gpu_memory_gb: float | None = None) -> DeviceMemory | None:
        """What one of the run's workers will have (the fit planner's device), or None when unknown.
        ``gpu_memory_gb``: the settings' figure for each GPU, used instead of asking the GPU."""

    def start(self, spec: JobSpec, report: Report, *, callbacks: list[Any] | None = None) -> dict[str, Any]:
        """Start a run; return a JSON-safe handle the manager stores to re-attach later.
        ``callbacks`` are in-process Python ``TrainerCallback``s (executors that run elsewhere
        refuse them with ``ConfigError``)."""

    def stop(self, job_id: str) -> None:
        """Ask the run to stop at its next step boundary and save what it trained."""

    def cancel(self, job_id: str) -> None:
        """End the run now, without saving (the hard stop after a stop's grace period)."""

    def state(self, job_id: str) -> RunState:
        """What the executor knows of the run."""

    def reattach(self, spec: JobSpec, handle: dict[str, Any], report: Report, *, after_seq: int) -> bool:
        """After an API restart: find the run ``handle`` names, and if it is still alive (or over but
        its events not all delivered) report its events numbered above ``after_seq``; False when
        the run is gone (the manager then marks the job interrupted)."""

    def health(self) -> dict[str, Any]:
        """``{"name": ..., "status": "up" | "down", ...}`` for ``/health``."""

    def shutdown(self) -> None:
        """Release what the executor holds (threads keep running as daemons; remote runs keep going)."""
