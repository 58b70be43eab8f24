"""What runs on the Ray cluster: one detached actor per job, and Ray Train's loop for multi-worker jobs.

The actor (``JobRun``) holds the job's numbered ``TrainingEvent``s (an ``EventBuffer``) until the API pulls them, so an
API process that restarts asks for the events after the last one it stored and the stream goes on
without a gap. A one-worker job trains inside the actor (which holds the job's GPUs and CPUs); a
job of several workers trains under ``ray.train.torch.TorchTrainer`` started from the actor, and
rank 0 pushes its events to the actor. Either way the training is ``run_training``, the function the
thread executor runs.

This module is imported on the cluster's workers: it needs ``ray``, ``app.sft`` and nothing of
the API.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from typing import Any

import ray

from ...sft.events import EventKind, TrainingEvent
from .base import JobSpec
from .remote import EventBuffer
from .training import classify, run_training

#: Longest an actor whose run is over waits for the API to collect its last events before it exits
#: (an API that comes back later finds no run and marks the job interrupted; its outputs stay).
LINGER_SECONDS = 6 * 3600

#: How often a multi-worker run's rank 0 asks the actor whether a stop was requested.
STOP_POLL_SECONDS = 0.5

#: Loggers whose INFO lines become LOG events (the others: warnings and errors only).
_INFO_LOGGERS = ("app",)


class JobRun:
    """One job on the cluster. Runs as a detached, named Ray actor (a threaded one: ``pull`` and
    ``stop`` are served while training runs in the actor's own thread).

    Args:
        spec: the job's ``JobSpec`` as a dict.
        placement: ``num_workers``, ``num_gpus_per_worker``, ``num_cpus_per_worker`` (resolved),
            ``storage`` (where Ray Train keeps its run state) and ``name`` (this actor's name).
    """

    def __init__(self, spec: dict[str, Any], placement: dict[str, Any]):
        self.spec = JobSpec.from_dict(spec)
        self.placement = placement
        self._events = EventBuffer()
        self._stop = threading.Event()
        self._exited_at: float | None = None
        #: A multi-worker run's last event, held until Ray Train has torn its worker group down (the API
        #: kills this actor once it has the last event; a controller killed with it leaks its placement group).
        self._final: TrainingEvent | None = None
        self._workers: list[Any] = []
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sft-job-{self.spec.job_id}", daemon=True)
        self._thread.start()

    # Called by the API

    def pull(self, after_seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        """The events numbered above ``after_seq`` (at most ``limit``), oldest first."""
        return self._events.pull(after_seq, limit)

    def stop(self) -> None:
        """Ask the run to stop at its next step boundary and save."""
        self._stop.set()

    def where(self) -> dict[str, Any]:
        """Where the actor runs: node, process, the GPUs Ray gave it."""
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }

    # Called by rank 0 of a multi-worker run

    def push(self, event: dict[str, Any]) -> None:
        event = TrainingEvent.from_dict(event)
        if event.kind is EventKind.EXITED:
            self._final = event
        else:
            self._emit(event)

    def add_worker(self, worker) -> None:
        """A Ray Train worker of this run (the actor ``abort`` kills)."""
        self._workers.append(worker)

    def abort(self) -> None:
        """End a multi-worker run now: kill its Ray Train workers; the trainer then fails and tears
        down its worker group (placement group included), and this actor exits."""
        self._aborted.set()
        for worker in self._workers:
            ray.kill(worker, no_restart=True)

    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # The run

    def _emit(self, event: TrainingEvent) -> None:
        self._events.add(event)
        if event.kind is EventKind.EXITED:
            self._exited_at = time.monotonic()

    def _run(self) -> None:
        handler = _EventLogHandler(self._emit)
        logging.getLogger().addHandler(handler)
        logging.getLogger("app").setLevel(logging.INFO)
        try:
            where = self.where()
            self._emit(TrainingEvent(EventKind.LOG, {
                "level": "info",
                "message": f"running on Ray node {where['node_id'][:12]} (pid {where['pid']}, "
                           f"{self.placement['num_workers']} worker(s); GPUs {','.join(where['gpu_ids']) or 'none'})",
            }))
            if self.placement["num_workers"] == 1:
                run_training(self.spec, self._emit, stop_event=self._stop)
            else:
                self._run_workers()
        finally:
            logging.getLogger().removeHandler(handler)
        self._linger()

    def _run_workers(self) -> None:
        """Data-parallel training under Ray Train; rank 0's events come back through ``push``."""
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        gpus = self.placement["num_gpus_per_worker"]
        resources = {"CPU": self.placement["num_cpus_per_worker"]}
        if gpus:
            resources["GPU"] = gpus
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"spec": self.spec.to_dict(), "actor": self.placement["name"],
                               "namespace": ray.get_runtime_context().namespace},
            scaling_config=ScalingConfig(num_workers=self.placement["num_workers"], use_gpu=bool(gpus),
                                         resources_per_worker=resources),
            run_config=RunConfig(name=f"sft-{self.spec.job_id}-{self.spec.attempt}",
                                 storage_path=self.placement["storage"]),
        )
        try:
            trainer.fit()
            if self._final is None:
                raise RuntimeError("the training workers ended without reporting how")
            final = self._final
        except BaseException as exc:  # noqa: BLE001 - a worker group's failure must become the job's last event
            final = self._final or classify(exc).exited()
        self._emit(final)

    def _linger(self) -> None:
        """Keep the actor (and its events) until the API kills it after reading the last event."""
        while not self._aborted.is_set() and time.monotonic() - (self._exited_at or time.monotonic()) < LINGER_SECONDS:
            time.sleep(1)
        ray.kill(ray.get_runtime_context().current_actor)


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's loop on each worker: ``run_training`` on this worker's shard of every batch.

    torch.distributed is already set up by Ray Train (gloo on CPU, NCCL on GPU) with RANK /
    WORLD_SIZE / LOCAL_RANK in the environment; the HF trainer's accelerate state joins that
    process group and shards each global batch across the workers. Rank 0 writes the adapter, the
    checkpoints and the log, and reports the events; the other ranks write into a scratch folder.
    """
    from ray import train

    spec = JobSpec.from_dict(config["spec"])
    rank = train.get_context().get_world_rank()
    stop_event = threading.Event()
    actor = ray.get_actor(config["actor"], namespace=config["namespace"])
    ray.get(actor.add_worker.remote(ray.get_runtime_context().current_actor))
    if rank == 0:

        def sink(event: TrainingEvent) -> None:
            ray.get(actor.push.remote(event.to_dict()))

        import torch.distributed as dist

        sink(TrainingEvent(EventKind.LOG, {"level": "info", "message": f"Ray Train worker group: "
                                           f"{dist.get_world_size()} workers, torch.distributed {dist.get_backend()}"}))
        requested = threading.Event()
        poller = threading.Thread(target=_poll_stop, args=(actor, requested), daemon=True)
        poller.start()
        run_training(spec, sink, stop_event=stop_event, callbacks=[_SharedStop(requested, stop_event)])
        return
    with tempfile.TemporaryDirectory(prefix=f"sft-rank{rank}-") as scratch:
        data = spec.to_dict()
        spec = JobSpec.from_dict({**data, "output_dir": scratch, "config": {**data["config"], "output_dir": scratch}})
        exited = run_training(spec, lambda event: None, stop_event=stop_event,
                              callbacks=[_SharedStop(threading.Event(), stop_event)])
    if exited.payload.get("status") == "failed":
        raise RuntimeError(exited.payload["error_detail"]["message"])


def _poll_stop(actor, requested: threading.Event) -> None:
    while not requested.is_set():
        try:
            if ray.get(actor.stop_requested.remote(), timeout=30):
                requested.set()
                return
        except Exception:  # noqa: BLE001 - the actor gone: the job is over anyway
            return
        time.sleep(STOP_POLL_SECONDS)


def _shared_stop_callback_class():
    from transformers import TrainerCallback

    class SharedStop(TrainerCallback):
        """Every rank stops at the same step: rank 0's stop request is all-reduced at each step end
        (ranks that stopped at different steps would wait forever in the next gradient all-reduce)."""

        def __init__(self, requested: threading.Event, stop_event: threading.Event):
            self.requested = requested
            self.stop_event = stop_event

        def on_step_end(self, args, state, control, **kwargs):
            import torch
            import torch.distributed as dist

            flag = torch.tensor([1.0 if self.requested.is_set() else 0.0], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0:
                # The trainer's own stop callback (called before this one) sees it at the next step end,
                # on every rank.
                self.stop_event.set()

    return SharedStop


def _SharedStop(requested: threading.Event, stop_event: threading.Event):  # noqa: N802 - builds a callback
    return _shared_stop_callback_class()(requested, stop_event)


class _EventLogHandler(logging.Handler):
    """Turns the actor process' log records into LOG events (our INFO lines, everyone's warnings)."""

    def __init__(self, emit):
        super().__init__(logging.INFO)
        self.emit_event = emit
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and not record.name.startswith(_INFO_LOGGERS):
            return
        try:
            self.emit_event(TrainingEvent(EventKind.LOG, {"level": record.levelname.lower(),
                                                          "message": self.format(record)}))
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)
