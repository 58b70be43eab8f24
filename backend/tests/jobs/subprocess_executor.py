"""A remote executor in one file, on the shared remote machinery: each run is a subprocess.

``SubprocessExecutor`` fills in ``RemoteExecutor``'s hooks and nothing else: ``launch`` starts
``python subprocess_executor.py <run dir>``, whose worker (``main`` below) numbers its events with
an ``EventBuffer`` and appends them to ``events.jsonl``; ``pull`` reads the lines after the last one
consumed; a ``stop`` file asks the worker to stop; ``kill`` kills its process; a run whose directory
is gone, or whose process died before its last event, is lost. The runs outlive the executor (a new
API process re-attaches by the run id in the handle).

The worker either trains (``run_training``, as the thread and Ray executors do) or, for the executor
protocol tests, plays a script: it emits the events the test appends to ``commands.jsonl``
(``emit``/``step``/``exit``, the same driving methods as ``FakeExecutor``'s; the test scaffolding
``Driving`` is the one thing it takes from outside this file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.jobs.executors import JobSpec, RunState
from app.jobs.executors.remote import EventBuffer, RemoteExecutor, RemoteRun, RunLost
from app.sft.errors import ConfigError
from app.sft.events import EventKind, TrainingEvent
from fake_executor import Driving

#: A config seed the executor refuses at submit (as the fake does, to test ``check``).
REFUSED_SEED = 666


@dataclass
class Worker:
    """One run's subprocess: its directory and its process."""

    run_dir: Path
    proc: subprocess.Popen


class SubprocessExecutor(Driving, RemoteExecutor):
    """Runs each job in its own Python process under ``root``.

    Args:
        root: where each run gets its directory (``<root>/<run id>``).
        scripted: the workers play the test's script instead of training.
    """

    name = "subprocess"

    def __init__(self, root: Path, *, scripted: bool = False, poll_seconds: float = 0.02,
                 stop_grace_seconds: float = 300.0):
        super().__init__(stop_grace_seconds=stop_grace_seconds, poll_seconds=poll_seconds)
        self.root = Path(root)
        self.scripted = scripted
        self.reattached: list[tuple[str, int]] = []
        #: Every worker's process by run directory: the "cluster" side, which outlives a manager (a test's
        #: new manager, on the same executor, finds its runs here as a restarted API finds a cluster's).
        self.procs: dict[Path, subprocess.Popen] = {}
        # Held through a whole pull-and-report, so a test that sees an event pulled knows it was handled.
        self._poll_lock = threading.RLock()
        self.start_polling()

    # The hooks

    def check(self, spec: JobSpec) -> None:
        if spec.config.seed == REFUSED_SEED:
            raise ConfigError(f"seed {REFUSED_SEED} cannot run on the {self.name} cluster", field="seed")

    def launch(self, spec: JobSpec) -> tuple[Worker, dict[str, Any]]:
        run_id = f"{self.name}-{spec.job_id}-{spec.attempt}"
        run_dir = self.root / run_id
        if run_dir.exists():  # a leftover of an earlier try of this attempt
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "spec.json").write_text(json.dumps({"spec": spec.to_dict(), "scripted": self.scripted}))
        (run_dir / "commands.jsonl").touch()
        import app

        env = {**os.environ, "PYTHONPATH": str(Path(app.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
        with open(run_dir / "stderr.txt", "wb") as stderr:
            proc = subprocess.Popen([sys.executable, __file__, str(run_dir)], env=env, stdout=subprocess.DEVNULL,
                                    stderr=stderr)
        self.procs[run_dir] = proc
        return Worker(run_dir, proc), {"run_id": run_id}

    def find(self, spec: JobSpec, handle: dict[str, Any]) -> Worker | None:
        run_dir = self.root / handle.get("run_id", "-")
        proc = self.procs.get(run_dir)
        return Worker(run_dir, proc) if proc is not None and (run_dir / "spec.json").exists() else None

    def pull(self, runs: list[RemoteRun]) -> dict[str, list[dict[str, Any]] | RunLost]:
        answers: dict[str, list[dict[str, Any]] | RunLost] = {}
        for run in runs:
            worker = run.remote
            code = worker.proc.poll()  # before reading the events: an EXITED written before it ended is seen
            if not (worker.run_dir / "spec.json").exists():
                answers[run.spec.job_id] = RunLost(RuntimeError(f"its directory {worker.run_dir} is gone"))
                continue
            events = read_events(worker.run_dir, after=run.last_seq)
            if code is not None and not any(e["kind"] == EventKind.EXITED.value for e in events):
                answers[run.spec.job_id] = RunLost(RuntimeError(f"its process exited with code {code}"))
            else:
                answers[run.spec.job_id] = events
        return answers

    def ask_stop(self, run: RemoteRun) -> None:
        (run.remote.run_dir / "stop").touch()

    def kill(self, run: RemoteRun) -> None:
        _kill(run.remote)

    def finished(self, run: RemoteRun) -> None:
        run.remote.proc.wait(timeout=30)

    def poll_once(self) -> bool:
        with self._poll_lock:
            return super().poll_once()

    def shutdown(self) -> None:
        super().shutdown()
        for run_dir, proc in self.procs.items():
            _kill(Worker(run_dir, proc))

    # What the test drives (``emit``, and ``step`` / ``exit`` from ``Driving``, as on the fake)

    def run(self, job_id: str) -> RunView:
        dirs = sorted(self.root.glob(f"{self.name}-{job_id}-*"), key=lambda d: int(d.name.rsplit("-", 1)[1]))
        assert dirs, f"no run of {job_id}"
        return RunView(dirs[-1])

    def emit(self, job_id: str, kind: EventKind, **payload: Any) -> None:
        """The run of ``job_id`` produces an event; return once it is written and, when a manager is
        attached, handled. A run that was killed says nothing."""
        from factories import wait_for

        view = self.run(job_id)
        if view.killed:
            return
        with open(view.run_dir / "commands.jsonl", "a") as commands:
            commands.write(json.dumps({"kind": kind.value, "payload": payload}) + "\n")
        count = view.commands
        wait_for(lambda: len(read_events(view.run_dir)) >= count, timeout=30, message=f"event {count} written")
        attached = self._runs.get(job_id)
        if attached is not None and attached.remote.run_dir == view.run_dir:
            wait_for(lambda: attached.done or attached.last_seq >= count, timeout=30, message=f"event {count} pulled")
            with self._poll_lock:  # the pull that took it has reported it
                pass

    def detach(self) -> None:
        """The API process died: runs go on, nobody pulls their events."""
        with self._poll_lock:
            self._runs.clear()

    def lose(self, job_id: str) -> None:
        """The run is gone (its node died with it)."""
        view = self.run(job_id)
        _kill(Worker(view.run_dir, self.procs.pop(view.run_dir)))
        shutil.rmtree(view.run_dir)


class RunView:
    """What a test sees of a run: its spec, whether it was asked to stop or killed."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.spec = JobSpec.from_dict(json.loads((run_dir / "spec.json").read_text())["spec"])

    @property
    def stop_requested(self) -> bool:
        return (self.run_dir / "stop").exists()

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        (self.run_dir / "stop").touch() if value else (self.run_dir / "stop").unlink(missing_ok=True)

    @property
    def killed(self) -> bool:
        return (self.run_dir / "killed").exists()

    @property
    def state(self) -> RunState:
        exited = any(e["kind"] == EventKind.EXITED.value for e in read_events(self.run_dir))
        return RunState.EXITED if exited or self.killed else RunState.RUNNING

    @property
    def commands(self) -> int:
        return len((self.run_dir / "commands.jsonl").read_text().splitlines())


def read_events(run_dir: Path, *, after: int = 0) -> list[dict[str, Any]]:
    """The run's events numbered above ``after`` (whole lines only: the last may be half written)."""
    try:
        text = (run_dir / "events.jsonl").read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]
    return [json.loads(line) for line in lines[after:]]


def _kill(worker: Worker) -> None:
    if worker.proc.poll() is None:
        (worker.run_dir / "killed").touch()
        worker.proc.kill()
    worker.proc.wait(timeout=30)


# The worker: ``python subprocess_executor.py <run dir>``


def main(run_dir: Path) -> None:
    task = json.loads((run_dir / "spec.json").read_text())
    spec = JobSpec.from_dict(task["spec"])
    buffer = EventBuffer()
    events = open(run_dir / "events.jsonl", "a")
    lock = threading.Lock()

    def sink(event: TrainingEvent) -> None:
        with lock:
            events.write(json.dumps(buffer.add(event)) + "\n")
            events.flush()

    stop_event = threading.Event()

    def watch_stop() -> None:
        while not stop_event.is_set():
            if (run_dir / "stop").exists():
                stop_event.set()
            time.sleep(0.05)

    threading.Thread(target=watch_stop, daemon=True).start()
    if not task["scripted"]:
        from app.jobs.executors.training import run_training

        run_training(spec, sink, stop_event=stop_event)
        return
    done = 0
    while True:
        lines = (run_dir / "commands.jsonl").read_text().split("\n")[:-1]
        for line in lines[done:]:
            event = TrainingEvent.from_dict(json.loads(line))
            sink(event)
            if event.kind is EventKind.EXITED:
                return
        done = len(lines)
        time.sleep(0.01)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
