"""A FakeExecutor for the manager's unit tests: runs that live outside the manager, driven by the test.

It is a remote executor on the shared machinery (``app.jobs.executors.remote``): each run numbers its
events in an ``EventBuffer`` and keeps them, and the executor pulls them (``poll_once``) right after
the test adds one, in the test's thread, instead of from a poller. A manager that re-attaches pulls
the ones after the last it consumed. ``detach()`` plays the API process dying (runs go on, nobody
pulls); ``lose(job_id)`` plays a run lost with its node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.jobs.executors import JobSpec, Report, RunState
from app.jobs.executors.remote import EventBuffer, RemoteExecutor, RemoteRun, RunLost
from app.sft.errors import ConfigError
from app.sft.events import EventKind, TrainingEvent

#: A config seed the fake refuses at submit (to test ``check``).
REFUSED_SEED = 666


class Driving:
    """What a test drives a run with, on top of the executor's ``emit(job_id, kind, **payload)``; and a
    re-attach that records itself and pulls at once what the run said while nobody listened (a test
    reads the job right after its restart). Mixed in before ``RemoteExecutor``."""

    reattached: list[tuple[str, int]]

    def reattach(self, spec: JobSpec, handle: dict[str, Any], report: Report, *, after_seq: int) -> bool:
        if not super().reattach(spec, handle, report, after_seq=after_seq):
            return False
        self.reattached.append((spec.job_id, after_seq))
        self.poll_once()
        return True

    def step(self, job_id: str, step: int, max_steps: int, *, loss: float | None = None) -> None:
        self.emit(job_id, EventKind.STEP, step=step, max_steps=max_steps, epoch=step / max_steps)
        if loss is not None:
            self.emit(job_id, EventKind.METRICS, step=step, max_steps=max_steps, loss=loss, learning_rate=1e-3)

    def exit(self, job_id: str, status: str, **payload: Any) -> None:
        self.emit(job_id, EventKind.EXITED, status=status, **payload)


@dataclass
class FakeRun:
    """The run's side, on the fake cluster."""

    spec: JobSpec
    events: EventBuffer = field(default_factory=EventBuffer)
    stop_requested: bool = False
    state: RunState = RunState.RUNNING


class FakeExecutor(Driving, RemoteExecutor):
    name = "fake"
    waiting_after_seconds = float("inf")  # pulled in the test's own thread: never "waiting for the cluster"

    def __init__(self) -> None:
        super().__init__(stop_grace_seconds=3600)
        self.runs: dict[str, FakeRun] = {}  # by run id (the handle)
        self.reattached: list[tuple[str, int]] = []

    # The hooks

    def check(self, spec: JobSpec) -> None:
        if spec.config.seed == REFUSED_SEED:
            raise ConfigError(f"seed {REFUSED_SEED} cannot run on the fake cluster", field="seed")

    def launch(self, spec: JobSpec) -> tuple[FakeRun, dict[str, Any]]:
        run_id = f"fake-{spec.job_id}-{spec.attempt}"
        self.runs[run_id] = FakeRun(spec)
        return self.runs[run_id], {"run_id": run_id}

    def find(self, spec: JobSpec, handle: dict[str, Any]) -> FakeRun | None:
        return self.runs.get(handle.get("run_id", ""))

    def pull(self, runs: list[RemoteRun]) -> dict[str, list[dict[str, Any]] | RunLost]:
        alive = list(self.runs.values())
        return {run.spec.job_id: run.remote.events.pull(run.last_seq) if run.remote in alive
                else RunLost(RuntimeError("the fake node died")) for run in runs}

    def ask_stop(self, run: RemoteRun) -> None:
        run.remote.stop_requested = True

    def kill(self, run: RemoteRun) -> None:
        run.remote.state = RunState.EXITED

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "status": "up", "runs": len(self.runs)}

    # What the test drives

    def run(self, job_id: str) -> FakeRun:
        run = self._find(job_id)
        assert run is not None, f"no run of {job_id}"
        return run

    def emit(self, job_id: str, kind: EventKind, **payload: Any) -> None:
        """The run of ``job_id`` produces an event (pulled at once by an attached manager)."""
        run = self.run(job_id)
        run.events.add(TrainingEvent(kind, payload))
        if kind is EventKind.EXITED:
            run.state = RunState.EXITED
        self.poll_once()

    def detach(self) -> None:
        """The API process died: runs go on, nobody pulls their events."""
        self._runs.clear()

    def lose(self, job_id: str) -> None:
        """The run is gone (its node died with it)."""
        self.runs = {k: r for k, r in self.runs.items() if r.spec.job_id != job_id}

    def _find(self, job_id: str) -> FakeRun | None:
        matches = [run for run in self.runs.values() if run.spec.job_id == job_id]
        return matches[-1] if matches else None
