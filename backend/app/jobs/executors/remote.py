"""What every executor whose runs live outside the API process shares (a Ray actor, a subprocess, a
Kubernetes pod, a SLURM job): the run's side numbers its events and keeps them until they are pulled
(``EventBuffer``); the API's side (``RemoteExecutor``) pulls each run's events after the last it
consumed, reports them in order, turns a run that vanished into a failed job, asks a run to stop and
cancels it hard once the stop's grace period is over, and re-attaches to runs after a restart.

A new remote executor subclasses ``RemoteExecutor`` and fills in its hooks: ``launch`` (start a run,
return where it is and the handle to store), ``find`` (a stored handle's run, after a restart),
``pull`` (the runs' numbered events), ``ask_stop``, ``kill``, ``finished`` (clean up after the last
event) and ``lost_failure`` (why a run that vanished did).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ...sft.errors import ConfigError
from ...sft.events import EventKind, TrainingEvent
from .base import FailureCategory, JobFailure, JobSpec, Report, RunState

logger = logging.getLogger(__name__)


class EventBuffer:
    """The run's side: its events, numbered from 1 as they are added, kept until the API pulls them."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, event: TrainingEvent) -> dict[str, Any]:
        """Number ``event`` and keep it; return it as pulled (``TrainingEvent.to_dict()``)."""
        with self._lock:
            numbered = TrainingEvent(event.kind, event.payload, len(self._events) + 1).to_dict()
            self._events.append(numbered)
        return numbered

    def pull(self, after_seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        """The events numbered above ``after_seq`` (at most ``limit``), oldest first."""
        with self._lock:
            return self._events[after_seq:after_seq + limit]

    def __len__(self) -> int:
        return len(self._events)


@dataclass
class RemoteRun:
    """The API's side of one run: where it is (``remote``, the executor's own) and what was consumed."""

    spec: JobSpec
    report: Report
    remote: Any
    last_seq: int = 0
    #: The run has answered a pull (it was placed and started).
    answered: bool = False
    #: When a stop's grace period ends (monotonic), after which the run is cancelled hard.
    stop_deadline: float | None = None
    started: float = field(default_factory=time.monotonic)
    said_waiting: bool = False
    done: bool = False


class RunLost(Exception):
    """``pull``'s answer for a run that vanished before its last event: an OOM kill, a lost node, a crash."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class RemoteExecutor:
    """The shared half of remote executors; see the module's docstring for the hooks to fill in.

    Args:
        stop_grace_seconds: how long a stopped run may take to save before it is cancelled hard.
        poll_seconds: how often runs are asked for new events.
    """

    name = "remote"
    #: How long a new run may take to answer before the job's phase says it waits for the cluster.
    waiting_after_seconds = 2.0
    #: What a cancelled run's job says.
    cancelled_message = "cancelled: the job's run was killed; nothing was saved since its last checkpoint"
    #: How a job whose stop's grace ran out says its run ended.
    kill_phrase = "its run was killed"

    def __init__(self, *, stop_grace_seconds: float = 300.0, poll_seconds: float = 0.25):
        self.stop_grace_seconds = stop_grace_seconds
        self.poll_seconds = poll_seconds
        self._runs: dict[str, RemoteRun] = {}
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None

    # Hooks

    def launch(self, spec: JobSpec) -> tuple[Any, dict[str, Any]]:
        """Start a run of ``spec``; return where it is (kept as ``RemoteRun.remote``) and its JSON-safe handle."""
        raise NotImplementedError

    def find(self, spec: JobSpec, handle: dict[str, Any]) -> Any | None:
        """The run ``handle`` names, if it still exists (its ``remote``), else None."""
        raise NotImplementedError

    def pull(self, runs: list[RemoteRun]) -> dict[str, list[dict[str, Any]] | RunLost]:
        """Each answering run's events numbered above its ``last_seq`` (``TrainingEvent.to_dict()``s), or
        ``RunLost`` (with the cause) for a run that is gone, by job id; a run that has not answered yet
        is left out."""
        raise NotImplementedError

    def ask_stop(self, run: RemoteRun) -> None:
        """Ask the run to stop at its next step boundary and save."""
        raise NotImplementedError

    def kill(self, run: RemoteRun) -> None:
        """End the run now, without saving."""
        raise NotImplementedError

    def finished(self, run: RemoteRun) -> None:
        """The run's last event is in: release what is left of it."""

    def lost_failure(self, cause: BaseException) -> JobFailure:
        """Why a run that vanished did, as its job's failure."""
        return JobFailure(FailureCategory.INTERRUPTED, f"interrupted: the job's {self.name} run died; resume the job "
                          f"to continue from its last checkpoint ({str(cause)[:300] or type(cause).__name__})")

    # The Executor protocol (check, health and shutdown's extras are the subclass')

    def check(self, spec: JobSpec) -> None:
        """Anything the run's machine can train; a subclass refuses what its cluster cannot place."""

    def device_memory(self, spec: JobSpec, *, gpu_memory_gb: float | None = None) -> Any:
        """Unknown here (None: submit skips the fit check); a subclass that can see its workers says."""
        return None

    def start(self, spec: JobSpec, report: Report, *, callbacks: list[Any] | None = None) -> dict[str, Any]:
        if callbacks:
            raise ConfigError(f"in-process Python callbacks cannot run on the {self.name} executor; use the thread "
                              "executor (SFT_EXECUTOR=thread) for jobs that pass callbacks", field="callbacks")
        remote, handle = self.launch(spec)
        with self._lock:
            self._runs[spec.job_id] = RemoteRun(spec, report, remote)
        return handle

    def stop(self, job_id: str) -> None:
        with self._lock:
            run = self._runs.get(job_id)
            if run is None or run.done:
                return
            run.stop_deadline = time.monotonic() + self.stop_grace_seconds
        self.ask_stop(run)

    def cancel(self, job_id: str, *, message: str | None = None) -> None:
        with self._lock:
            run = self._runs.get(job_id)
            if run is None or run.done:
                return
            run.done = True
            del self._runs[job_id]
        self.kill(run)
        run.report(job_id, JobFailure(FailureCategory.CANCELLED, message or self.cancelled_message).exited())

    def state(self, job_id: str) -> RunState:
        run = self._runs.get(job_id)
        if run is None:
            return RunState.UNKNOWN
        return RunState.RUNNING if run.answered else RunState.WAITING

    def reattach(self, spec: JobSpec, handle: dict[str, Any], report: Report, *, after_seq: int) -> bool:
        remote = self.find(spec, handle)
        if remote is None:
            return False
        with self._lock:
            self._runs[spec.job_id] = RemoteRun(spec, report, remote, last_seq=after_seq)
        return True

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "status": "up", "runs": len(self._runs)}

    def shutdown(self) -> None:
        """Stop pulling events; the runs keep going (a new API process re-attaches)."""
        self._closed.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    # The poll loop

    def start_polling(self) -> None:
        """Pull events every ``poll_seconds`` in a daemon thread (until ``shutdown``)."""
        self._poller = threading.Thread(target=self._poll_forever, name=f"{self.name}-executor-poller", daemon=True)
        self._poller.start()

    def _poll_forever(self) -> None:
        while not self._closed.is_set():
            try:
                busy = self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must outlive any one bad answer
                logger.exception("%s executor: polling failed", self.name)
                busy = False
            if not busy:
                self._closed.wait(self.poll_seconds)

    def poll_once(self) -> bool:
        """Pull each run's new events and report them in order; cancel the runs whose stop's grace is
        over. True when some run had events."""
        with self._lock:
            runs = [run for run in self._runs.values() if not run.done]
        now = time.monotonic()
        for run in runs:
            if not run.answered and not run.said_waiting and now - run.started > self.waiting_after_seconds:
                # Not placed yet, most likely (in the cluster's queue until a node has its resources
                # free). Not numbered: the run's own events are.
                run.said_waiting = True
                run.report(run.spec.job_id, TrainingEvent(EventKind.PHASE, {"phase": "waiting_for_cluster"}))
            if run.stop_deadline is not None and now > run.stop_deadline:
                self.cancel(run.spec.job_id, message=(
                    f"cancelled: the job did not stop within {self.stop_grace_seconds:g} s of the stop "
                    f"request; {self.kill_phrase} without saving (its last checkpoint is kept)"))
        runs = [run for run in runs if not run.done]
        if not runs:
            return False
        answers = self.pull(runs)
        busy = False
        for run in runs:
            answer = answers.get(run.spec.job_id)
            if answer is None or run.done:
                continue
            if isinstance(answer, RunLost):
                self._lost(run, answer.cause)
                continue
            run.answered = True
            busy = busy or bool(answer)
            for data in answer:
                event = TrainingEvent.from_dict(data)
                run.last_seq = event.seq
                run.report(run.spec.job_id, event)
                if event.kind is EventKind.EXITED:
                    self._finished(run)
                    break
        return busy

    def _finished(self, run: RemoteRun) -> None:
        with self._lock:
            run.done = True
            if self._runs.get(run.spec.job_id) is run:
                del self._runs[run.spec.job_id]
        self.finished(run)

    def _lost(self, run: RemoteRun, cause: BaseException) -> None:
        with self._lock:
            if run.done:
                return
            run.done = True
            if self._runs.get(run.spec.job_id) is run:
                del self._runs[run.spec.job_id]
        run.report(run.spec.job_id, self.lost_failure(cause).exited())
