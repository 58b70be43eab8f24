"""Typed results of the SFT API.

Each result keeps the server's JSON in ``raw`` (fields a newer server adds are there too), and
reads only the fields it knows, so a client stays usable against a newer server.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")

#: Job statuses after which nothing more happens (until a resume).
TERMINAL_STATUSES = frozenset({"completed", "failed", "stopped"})


def _known(cls: type[T], body: dict[str, Any], /, **parsed: Any) -> T:
    """``cls`` from the keys of ``body`` it has fields for; ``parsed`` replaces nested values."""
    names = {f.name for f in fields(cls)} - {"raw"}
    values = {name: body[name] for name in names if name in body}
    return cls(**{**values, **parsed}, raw=body)


@dataclass(frozen=True)
class Health:
    status: str
    version: str
    max_concurrent_jobs: int
    jobs: dict[str, int] = field(default_factory=dict)
    #: "cuda" or "cpu": where jobs train (None from servers that do not say).
    device: str | None = None
    #: The server's CUDA memory in MiB (memory_allocated_mb, memory_reserved_mb, ...); None without a GPU.
    gpu: dict[str, float] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Health:
        return _known(cls, data)


@dataclass(frozen=True)
class JobStart:
    """What ``train`` and ``resume`` answer."""

    job_id: str
    status: str
    queue_position: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStart:
        return _known(cls, data)


@dataclass(frozen=True)
class Progress:
    phase: str | None = None
    current_step: int | None = None
    max_steps: int | None = None
    epoch: float | None = None
    percent: float | None = None
    eta_seconds: float | None = None
    steps_per_second: float | None = None
    tokens_per_second: float | None = None
    samples_per_second: float | None = None
    tokens_seen: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        return _known(cls, data, metrics=data.get("metrics") or {})

    @property
    def loss(self) -> float | None:
        """The latest logged training loss."""
        return self.metrics.get("loss")


@dataclass(frozen=True)
class JobError:
    category: str
    message: str
    log_tail: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobError:
        return _known(cls, data)


@dataclass(frozen=True)
class Job:
    job_id: str
    status: str
    created_at: str
    config: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    error_detail: JobError | None = None
    result: dict[str, Any] | None = None
    queue_position: int | None = None
    progress: Progress | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        detail, progress = data.get("error_detail"), data.get("progress")
        return _known(cls, data, error_detail=JobError.from_dict(detail) if detail else None,
                      progress=Progress.from_dict(progress) if progress else None)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def adapter_path(self) -> str | None:
        """Where the server saved the adapter (or the full model), once the job has one."""
        return (self.result or {}).get("adapter_path")


@dataclass(frozen=True)
class JobList:
    jobs: list[Job]
    total: int
    offset: int
    limit: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobList:
        return _known(cls, data, jobs=[Job.from_dict(job) for job in data["jobs"]])


@dataclass(frozen=True)
class StopResult:
    message: str
    status: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StopResult:
        return _known(cls, data)


@dataclass(frozen=True)
class Event:
    """One entry of a job's event log; ``seq`` is its SSE id."""

    seq: int
    time: str
    type: str
    level: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return _known(cls, data, data=data.get("data") or {})

    @property
    def is_terminal(self) -> bool:
        """The job ended with this event (completed, failed or stopped)."""
        return self.type in TERMINAL_STATUSES


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    next_after: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventPage:
        return _known(cls, data, events=[Event.from_dict(event) for event in data["events"]])


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: str
    created_at: str
    eval_loss: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return _known(cls, data)


@dataclass(frozen=True)
class SavedConfig:
    config_id: str
    name: str
    config: dict[str, Any]
    created_at: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SavedConfig:
        return _known(cls, data)


@dataclass(frozen=True)
class ConfigSaved:
    config_id: str
    name: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfigSaved:
        return _known(cls, data)


@dataclass(frozen=True)
class Generation:
    completion: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    base_completion: str | None = None
    base_completion_tokens: int | None = None
    base_latency_ms: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Generation:
        return _known(cls, data)


@dataclass(frozen=True)
class Score:
    exact_match: float
    n: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        return _known(cls, data)


@dataclass(frozen=True)
class Evaluation:
    job_id: str
    dataset_name: str
    split: str
    base: Score
    tuned: Score
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        return _known(cls, data, base=Score.from_dict(data["base"]), tuned=Score.from_dict(data["tuned"]))


@dataclass(frozen=True)
class Merge:
    merged_path: str
    size_bytes: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Merge:
        return _known(cls, data)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str
    path: str
    ready: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return _known(cls, data)
