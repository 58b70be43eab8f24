"""What the Ray tests share: a real local Ray head (bench/ray_head.py, which ``make bench`` starts too), job
specs, and a Report that collects a run's events."""

from __future__ import annotations

import threading
from pathlib import Path

from app.jobs.executors.base import JobSpec
from app.sft.config import SFTConfig
from app.sft.events import EventKind, TrainingEvent
from bench.ray_head import LocalRayHead  # noqa: F401 - the Ray tests' head
from factories import wait_for

#: A run on the cluster starts a fresh Python worker that imports torch and transformers: slow on a
#: loaded 2-core machine.
RUN_TIMEOUT = 240


class Events:
    """A Report that keeps what it is told, per job."""

    def __init__(self):
        self.by_job: dict[str, list[TrainingEvent]] = {}
        self.lock = threading.Lock()

    def __call__(self, job_id: str, event: TrainingEvent) -> None:
        with self.lock:
            self.by_job.setdefault(job_id, []).append(event)

    def of(self, job_id: str) -> list[TrainingEvent]:
        with self.lock:
            return list(self.by_job.get(job_id, []))

    def kinds(self, job_id: str) -> list[EventKind]:
        return [event.kind for event in self.of(job_id)]

    def exited(self, job_id: str, timeout: float = RUN_TIMEOUT) -> TrainingEvent:
        wait_for(lambda: EventKind.EXITED in self.kinds(job_id), timeout=timeout, interval=0.1,
                 message=f"job {job_id} to exit")
        return self.of(job_id)[-1]


def spec_for(config: dict, root: Path, job_id: str, **overrides) -> JobSpec:
    out = root / job_id
    resolved = SFTConfig.model_validate({**config, **overrides, "output_dir": str(out)})
    return JobSpec(job_id=job_id, config=resolved.model_dump(mode="json"), output_dir=str(out),
                   model_cache_dir=str(root / "model-cache"))


def assert_one_stream(events: list[TrainingEvent]) -> None:
    """The run's own events, numbered 1..n without a gap, the last one EXITED (the executor's
    unnumbered "waiting_for_cluster" phase aside)."""
    events = [event for event in events if event.seq is not None]
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert [event.kind for event in events].count(EventKind.EXITED) == 1
    assert events[-1].kind is EventKind.EXITED
