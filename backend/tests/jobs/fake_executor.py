"""A FakeExecutor for the manager's unit tests: runs that live outside the manager, driven by the test.

It behaves as an executor whose runs outlive the API process (as a cluster's do): each run numbers
its events from 1 and keeps them, so a manager that re-attaches can ask for the ones after the
last it consumed. ``detach()`` plays the API process dying (events keep coming, nobody hears them);
``lose(job_id)`` plays a run lost with its node. Events are delivered synchronously in the test's thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.jobs.executors import JobSpec, Report, RunState
from app.sft.errors import ConfigError
from app.sft.events import EventKind, TrainingEvent

#: A config seed the fake refuses at submit (to test ``check``).
REFUSED_SEED = 666


@dataclass
class FakeRun:
    spec: JobSpec
    report: Report | None
    callbacks: list[Any]
    events: list[TrainingEvent] = field(default_factory=list)
    stop_requested: bool = False
    state: RunState = RunState.RUNNING


class FakeExecutor:
    name = "fake"

    def __init__(self) -> None:
        self.runs: dict[str, FakeRun] = {}  # by run id (the handle)
        self.reattached: list[tuple[str, int]] = []

    # The protocol

    def check(self, spec: JobSpec) -> None:
        if spec.config.seed == REFUSED_SEED:
            raise ConfigError(f"seed {REFUSED_SEED} cannot run on the fake cluster", field="seed")

    def start(self, spec: JobSpec, report: Report, *, callbacks: list[Any] | None = None) -> dict[str, Any]:
        if callbacks:
            raise ConfigError("in-process callbacks cannot run on the fake cluster", field="callbacks")
        run_id = f"fake-{spec.job_id}-{spec.attempt}"
        self.runs[run_id] = FakeRun(spec, report, list(callbacks or []))
        return {"run_id": run_id}

    def stop(self, job_id: str) -> None:
        self.run(job_id).stop_requested = True

    def cancel(self, job_id: str) -> None:
        self.exit(job_id, "failed", error_detail={"category": "cancelled", "message": "cancelled", "log_tail": []})

    def state(self, job_id: str) -> RunState:
        run = self._find(job_id)
        return RunState.UNKNOWN if run is None else run.state

    def reattach(self, spec: JobSpec, handle: dict[str, Any], report: Report, *, after_seq: int) -> bool:
        run = self.runs.get(handle.get("run_id", ""))
        if run is None:
            return False
        self.reattached.append((spec.job_id, after_seq))
        run.report = report
        for event in run.events:
            if event.seq > after_seq:
                report(spec.job_id, event)
        return True

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "status": "up", "runs": len(self.runs)}

    def shutdown(self) -> None:
        pass

    # What the test drives

    def run(self, job_id: str) -> FakeRun:
        run = self._find(job_id)
        assert run is not None, f"no run of {job_id}"
        return run

    def emit(self, job_id: str, kind: EventKind, **payload: Any) -> TrainingEvent:
        """The run of ``job_id`` produces an event (heard only by an attached manager)."""
        run = self.run(job_id)
        event = TrainingEvent(kind, payload, seq=len(run.events) + 1)
        run.events.append(event)
        if kind is EventKind.EXITED:
            run.state = RunState.EXITED
        if run.report is not None:
            run.report(job_id, event)
        return event

    def step(self, job_id: str, step: int, max_steps: int, *, loss: float | None = None) -> None:
        self.emit(job_id, EventKind.STEP, step=step, max_steps=max_steps, epoch=step / max_steps)
        if loss is not None:
            self.emit(job_id, EventKind.METRICS, step=step, max_steps=max_steps, loss=loss, learning_rate=1e-3)

    def exit(self, job_id: str, status: str, **payload: Any) -> None:
        self.emit(job_id, EventKind.EXITED, status=status, **payload)

    def detach(self) -> None:
        """The API process died: runs go on, nobody hears them."""
        for run in self.runs.values():
            run.report = None

    def lose(self, job_id: str) -> None:
        """The run is gone (its node died with it)."""
        self.runs = {k: r for k, r in self.runs.items() if r.spec.job_id != job_id}

    def _find(self, job_id: str) -> FakeRun | None:
        matches = [run for run in self.runs.values() if run.spec.job_id == job_id]
        return matches[-1] if matches else None
