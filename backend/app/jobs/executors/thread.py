"""``LocalThreadExecutor``: each run is a daemon thread of the API process (the embedded default).

A thread cannot be killed: ``cancel`` sets its stop probe, marks the run abandoned, reports it
``failed`` (category ``cancelled``) at once and drops whatever the thread reports afterwards. Runs
die with the process, so ``reattach`` is always False and the manager treats them as interrupted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...core.joblogs import JobLogRouter
from ...sft.device import device_memory
from ...sft.errors import ConfigError
from ...sft.planner import DeviceMemory
from ...sft.events import EventKind, TrainingEvent
from .base import FailureCategory, JobFailure, JobSpec, Report, RunState
from .training import run_to_exit, run_training

#: Niceness of job threads. Training keeps every core busy; at a lower priority than the API's
#: threads, requests still get CPU at once while the job uses all the rest (docs/benchmarks.md).
JOB_THREAD_NICENESS = 10

CANCELLED_MESSAGE = "cancelled: the run was ended without saving"


@dataclass
class ThreadRun:
    """One run of the thread executor; what a custom ``runner(run, emit)`` receives.

    ``job_id``, ``config`` (the whole resolved config as a dict), ``output_dir`` and ``resume_from``
    come from the spec; ``stop_event`` is the run's stop probe; ``callbacks`` its in-process callbacks.
    """

    spec: JobSpec
    report: Report
    callbacks: list[Any] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    abandoned: bool = False
    exited: bool = False

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def config(self) -> dict[str, Any]:
        return self.spec.config.model_dump(mode="json")

    @property
    def output_dir(self) -> str:
        return self.spec.output_dir

    @property
    def resume_from(self) -> str | None:
        return self.spec.resume_from

    def sink(self, event: TrainingEvent) -> None:
        """Report ``event`` unless the run was abandoned (a cancelled thread's late events are dropped)."""
        if self.abandoned:
            return
        if event.kind is EventKind.EXITED:
            self.exited = True
        self.report(self.spec.job_id, event)

    def emit(self, kind: str | EventKind | TrainingEvent, payload: dict[str, Any] | None = None) -> None:
        """What a custom runner reports with: ``emit(TrainingEvent)`` or ``emit("metrics", {...})``."""
        self.sink(kind if isinstance(kind, TrainingEvent) else TrainingEvent(EventKind(kind), payload or {}))


#: ``runner(run, emit) -> result dict``: trains ``run`` (returning when ``run.stop_event`` is set),
#: reporting through ``emit``; raising fails the run.
Runner = Callable[[ThreadRun, Callable[..., None]], dict[str, Any]]


class LocalThreadExecutor:
    """Runs each job in a daemon thread at lowered CPU priority.

    Args:
        runner: what a run's thread does instead of ``run_training`` (tests: a controllable runner).
        logs: routes each run thread's log records to its job's log file.
        device: 'cuda' or 'cpu' for ``run_training`` (default: the best this machine has).
    """

    name = "thread"

    def __init__(self, *, runner: Runner | None = None, logs: JobLogRouter | None = None,
                 device: str | None = None):
        self.runner = runner
        self.logs = logs
        self.device = device
        self._runs: dict[str, ThreadRun] = {}
        self._lock = threading.Lock()

    def check(self, spec: JobSpec) -> None:
        """Anything the API process can train, a thread can, on one device: several workers or GPUs
        need a cluster."""
        workers, gpus = spec.config.num_workers, spec.config.num_gpus_per_worker
        if workers > 1:
            raise ConfigError(f"{workers} workers need SFT_EXECUTOR=ray; the thread executor trains a job in one "
                              "process", field="num_workers")
        if gpus is not None and gpus > 1:
            raise ConfigError(f"{gpus} GPUs per worker need SFT_EXECUTOR=ray; the thread executor trains a job on "
                              "one device", field="num_gpus_per_worker")

    def device_memory(self, spec: JobSpec, *, gpu_memory_gb: float | None = None) -> DeviceMemory:
        """This process' GPU, or on CPU the memory this machine has available (a thread trains here)."""
        return device_memory(gpu_memory_gb)

    def start(self, spec: JobSpec, report: Report, *, callbacks: list[Any] | None = None) -> dict[str, Any]:
        run = ThreadRun(spec, report, list(callbacks or []))
        run.thread = threading.Thread(target=self._body, args=(run,), name=f"sft-job-{spec.job_id}", daemon=True)
        with self._lock:
            self._runs[spec.job_id] = run
        run.thread.start()
        return {"thread": run.thread.name, "pid": os.getpid()}

    def run_of(self, job_id: str) -> ThreadRun | None:
        """The run of ``job_id`` while its thread lives (for the seed's ``SFTJob.thread``/``stop_event``)."""
        return self._runs.get(job_id)

    def stop(self, job_id: str) -> None:
        run = self._runs.get(job_id)
        if run is not None:
            run.stop_event.set()

    def cancel(self, job_id: str) -> None:
        run = self._runs.get(job_id)
        if run is None or run.abandoned or run.exited:
            return
        run.abandoned = True  # first: nothing the thread reports from now on reaches the manager
        run.stop_event.set()
        run.report(job_id, JobFailure(FailureCategory.CANCELLED, CANCELLED_MESSAGE).exited())

    def state(self, job_id: str) -> RunState:
        run = self._runs.get(job_id)
        if run is None:
            return RunState.UNKNOWN
        return RunState.EXITED if run.exited or run.abandoned else RunState.RUNNING

    def reattach(self, spec: JobSpec, handle: dict[str, Any], report: Report, *, after_seq: int) -> bool:
        """A thread does not outlive its process: there is never a run to re-attach to."""
        return False

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "status": "up", "runs": len(self._runs)}

    def shutdown(self) -> None:
        """Threads are daemons: they end with the process."""

    def _body(self, run: ThreadRun) -> None:
        lower_thread_priority()
        if self.logs is not None:
            self.logs.bind(run.job_id)
        try:
            if self.runner is None:
                run_training(run.spec, run.sink, stop_event=run.stop_event, callbacks=run.callbacks,
                             device=self.device)
            else:
                run_to_exit(run.job_id, run.sink, lambda: self.runner(run, run.emit))
        finally:
            if self.logs is not None:
                self.logs.unbind()
            with self._lock:
                if self._runs.get(run.job_id) is run:
                    del self._runs[run.job_id]


def lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: niceness is per thread, and the OpenMP
    workers torch starts from this thread inherit it)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), JOB_THREAD_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass
