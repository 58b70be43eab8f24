"""``RayExecutor``: each job is a detached, named Ray actor (``ray_worker.JobRun``) on a Ray cluster.

The API process is only a Ray driver: it creates the job's actor with the job's resources, pulls
the actor's numbered events every ``poll_seconds`` and reports them, and kills the actor once its
last event is in. A crash in training takes down the actor's process, not the API; an API that
restarts (even ``kill -9``) finds the actor by name and pulls the events after the last one it
stored. Runs outlive the API only on a cluster started on its own (``ray start --head``): a Ray
that ``ray.init()`` started inside the API process (``SFT_RAY_ADDRESS`` empty) ends with it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ...core.errors import ServiceBusy
from ...sft.errors import ConfigError, SFTError
from ...sft.events import EventKind, TrainingEvent
from .base import FailureCategory, JobFailure, JobSpec, Report, RunState

logger = logging.getLogger(__name__)

#: The Ray namespace the service's actors live in (named actors are looked up in it after a restart).
NAMESPACE = "sft-service"

#: How long a new run's actor may take to answer before the job's phase says it waits for the cluster
#: (to place it: no node has its GPUs / CPUs free; or to start its process).
WAITING_AFTER_SECONDS = 2.0

#: Environment variables of the API process that a run on the cluster also gets.
FORWARDED_ENV = ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN", "TOKENIZERS_PARALLELISM")


class RayUnavailable(SFTError):
    """The Ray cluster cannot be reached (or was never connected)."""

    category = "executor_down"


@dataclass
class _Run:
    spec: JobSpec
    report: Report
    actor: Any
    workers: int = 1
    last_seq: int = 0
    answered: bool = False
    stop_deadline: float | None = None
    started: float = field(default_factory=time.monotonic)
    said_waiting: bool = False
    done: bool = False
    pending: Any = field(default=None, repr=False)


class RayExecutor:
    """Runs jobs on a Ray cluster.

    Args:
        address: the cluster: ``host:port`` of its GCS (``ray start --head`` prints it), ``auto``
            (the cluster this machine belongs to), ``ray://host:10001`` (Ray Client), or empty (start a
            Ray inside this process; its jobs end with it).
        stop_grace_seconds: how long a stopped run may take to save before it is cancelled hard.
        poll_seconds: how often the actors are asked for new events.
    """

    name = "ray"

    def __init__(self, *, address: str = "", stop_grace_seconds: float = 300.0, poll_seconds: float = 0.25):
        self.address = address.strip()
        self.stop_grace_seconds = stop_grace_seconds
        self.poll_seconds = poll_seconds
        self.error: str | None = None
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None
        self._connect()

    # Connection

    def _connect(self) -> None:
        """Join the cluster; on failure keep the reason for ``/health`` (the server still starts)."""
        try:
            import ray
        except ImportError:
            self.error = "SFT_EXECUTOR=ray needs the ray package: pip install 'sft-service[ray]'"
            logger.error(self.error)
            return
        if self.address.startswith(("http://", "https://")):
            self.error = (f"SFT_RAY_ADDRESS={self.address}: a Ray job-server (dashboard) address; give the "
                          "cluster's GCS address (host:6379) or its Ray Client address (ray://host:10001)")
            logger.error(self.error)
            return
        problem = _unreachable(self.address)
        if problem:
            self.error = f"the Ray cluster at {self.address} is unreachable: {problem}"
            logger.error(self.error)
            return
        import app

        runtime_env: dict[str, Any] = {"py_modules": [str(Path(app.__file__).parent)]}
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        if env:
            runtime_env["env_vars"] = env
        try:
            if not ray.is_initialized():
                ray.init(address=self.address or None, namespace=NAMESPACE, log_to_driver=False,
                         runtime_env=runtime_env, configure_logging=False)
            if not self.address:
                logger.warning("SFT_EXECUTOR=ray without SFT_RAY_ADDRESS: started a Ray inside this process; "
                               "its jobs end when this process does (start one with `ray start --head`)")
        except Exception as exc:  # noqa: BLE001 - any connection failure leaves the server up, executor down
            self.error = f"could not join the Ray cluster at {self.address or '(local)'}: {exc}"
            logger.error(self.error)
            return
        self._poller = threading.Thread(target=self._poll_forever, name="ray-executor-poller", daemon=True)
        self._poller.start()

    def _ray(self):
        if self.error:
            raise RayUnavailable(self.error)
        import ray

        return ray

    # Placement

    def cluster(self) -> list[dict[str, float]]:
        """The CPUs and GPUs of each live node."""
        ray = self._ray()
        return [{"CPU": float(node["Resources"].get("CPU", 0)), "GPU": float(node["Resources"].get("GPU", 0))}
                for node in ray.nodes() if node.get("Alive")]

    def placement(self, spec: JobSpec) -> dict[str, Any]:
        """The job's resources with the defaults resolved (1 GPU per worker when the cluster has GPUs)."""
        config = spec.config
        gpus = config.num_gpus_per_worker
        if gpus is None:
            gpus = 1 if any(node["GPU"] >= 1 for node in self.cluster()) else 0
        return {"num_workers": config.num_workers, "num_gpus_per_worker": gpus,
                "num_cpus_per_worker": float(config.num_cpus_per_worker),
                # Ray Train's own run state, beside the job's outputs (which every node must reach).
                "storage": str(Path(spec.output_dir) / "ray-train"),
                "name": actor_name(spec)}

    def check(self, spec: JobSpec) -> None:
        """Refuse a job the cluster can never place (more GPUs or CPUs per worker than any node has,
        or more workers than fit at once), saying what the cluster has. While the cluster cannot be
        reached nothing is accepted (503)."""
        if self.error:
            raise ServiceBusy(f"SFT_EXECUTOR=ray: {self.error}. Jobs are accepted again once it answers (GET /health)")
        nodes = self.cluster()
        place = self.placement(spec)
        gpus, cpus, workers = place["num_gpus_per_worker"], place["num_cpus_per_worker"], place["num_workers"]
        has = (f"the Ray cluster has {len(nodes)} node(s), {_number(sum(n['CPU'] for n in nodes))} CPUs and "
               f"{_number(sum(n['GPU'] for n in nodes))} GPUs in all, at most "
               f"{_number(max((n['CPU'] for n in nodes), default=0))} CPUs and "
               f"{_number(max((n['GPU'] for n in nodes), default=0))} GPUs on one node")
        if not any(n["GPU"] >= gpus for n in nodes):
            raise ConfigError(f"{_number(gpus)} GPUs per worker asked, but {has}", field="num_gpus_per_worker")
        if not any(n["CPU"] >= cpus for n in nodes):
            raise ConfigError(f"{_number(cpus)} CPUs per worker asked, but {has}", field="num_cpus_per_worker")
        fit = sum(min(math.floor(n["CPU"] / cpus) if cpus else workers,
                      math.floor(n["GPU"] / gpus) if gpus else workers) for n in nodes)
        if fit < workers:
            raise ConfigError(f"{workers} workers of {_number(gpus)} GPUs and {_number(cpus)} CPUs asked, but {has}: "
                              f"{fit} such workers fit at once", field="num_workers")

    # Runs

    def start(self, spec: JobSpec, report: Report, *, callbacks: list[Any] | None = None) -> dict[str, Any]:
        if callbacks:
            raise ConfigError("in-process Python callbacks cannot run on a Ray cluster; use the thread executor "
                              "(SFT_EXECUTOR=thread) for jobs that pass callbacks", field="callbacks")
        ray = self._ray()
        from .ray_worker import JobRun

        place = self.placement(spec)
        name = place["name"]
        try:  # a leftover of an earlier try of this same attempt: its events would mix with the new run's
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass
        single = place["num_workers"] == 1
        actor = ray.remote(JobRun).options(
            name=name, namespace=NAMESPACE, lifetime="detached", max_concurrency=8, max_restarts=0,
            # A multi-worker job's actor only coordinates; its workers hold the resources.
            num_cpus=place["num_cpus_per_worker"] if single else 0,
            num_gpus=place["num_gpus_per_worker"] if single else 0,
        ).remote(spec.to_dict(), place)
        with self._lock:
            self._runs[spec.job_id] = _Run(spec, report, actor, workers=place["num_workers"])
        return {"actor": name, "namespace": NAMESPACE, "address": self.address, "placement": place}

    def stop(self, job_id: str) -> None:
        with self._lock:
            run = self._runs.get(job_id)
            if run is None or run.done:
                return
            run.stop_deadline = time.monotonic() + self.stop_grace_seconds
        run.actor.stop.remote()

    def cancel(self, job_id: str, *, message: str | None = None) -> None:
        with self._lock:
            run = self._runs.get(job_id)
            if run is None or run.done:
                return
            run.done = True
            del self._runs[job_id]
        import ray

        if run.workers > 1:
            # Killing the actor would take Ray Train's controller with it, leaving its placement group
            # behind (Ray's own cleaner needs the dashboard's state API); the actor ends the run instead.
            run.actor.abort.remote()
        else:
            ray.kill(run.actor, no_restart=True)
        run.report(job_id, JobFailure(FailureCategory.CANCELLED, message or (
            "cancelled: Ray killed the job's worker; nothing was saved since its last checkpoint")).exited())

    def state(self, job_id: str) -> RunState:
        run = self._runs.get(job_id)
        if run is None:
            return RunState.UNKNOWN
        return RunState.RUNNING if run.answered else RunState.WAITING

    def where(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Where a run's actor is: node, process, ``CUDA_VISIBLE_DEVICES``."""
        import ray

        return ray.get(self._runs[job_id].actor.where.remote(), timeout=timeout)

    def reattach(self, spec: JobSpec, handle: dict[str, Any], report: Report, *, after_seq: int) -> bool:
        if self.error:
            return False
        import ray

        try:
            actor = ray.get_actor(handle["actor"], namespace=handle.get("namespace", NAMESPACE))
        except (ValueError, KeyError):
            return False
        with self._lock:
            self._runs[spec.job_id] = _Run(spec, report, actor, workers=handle.get("placement", {}).get("num_workers", 1),
                                           last_seq=after_seq)
        return True

    def health(self) -> dict[str, Any]:
        if self.error:
            return {"name": self.name, "status": "down", "address": self.address, "error": self.error}
        try:
            nodes = self.cluster()
        except Exception as exc:  # noqa: BLE001 - a lost cluster is a health answer, not a 500
            return {"name": self.name, "status": "down", "address": self.address, "error": str(exc)}
        return {"name": self.name, "status": "up", "address": self.address or "(local)", "nodes": len(nodes),
                "cpus": sum(n["CPU"] for n in nodes), "gpus": sum(n["GPU"] for n in nodes), "runs": len(self._runs)}

    def shutdown(self) -> None:
        """Stop pulling events; the runs keep going on the cluster (a new API process re-attaches)."""
        self._closed.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    # Event delivery

    def _poll_forever(self) -> None:
        while not self._closed.is_set():
            try:
                busy = self._poll_once()
            except Exception:  # noqa: BLE001 - the poller must outlive any one bad answer
                logger.exception("ray executor: polling failed")
                busy = False
            if not busy:
                self._closed.wait(self.poll_seconds)

    def _poll_once(self) -> bool:
        """Pull each run's new events; report them in order. True when some run had events."""
        import ray

        with self._lock:
            runs = [run for run in self._runs.values() if not run.done]
        for run in runs:
            if run.pending is None:
                run.pending = run.actor.pull.remote(run.last_seq)
            if not run.answered and not run.said_waiting and time.monotonic() - run.started > WAITING_AFTER_SECONDS:
                # Not placed yet, most likely (in Ray's queue until a node has its GPUs / CPUs free). Not
                # numbered: the run's own events are.
                run.said_waiting = True
                run.report(run.spec.job_id, TrainingEvent(EventKind.PHASE, {"phase": "waiting_for_cluster"}))
            if run.stop_deadline is not None and time.monotonic() > run.stop_deadline:
                self.cancel(run.spec.job_id, message=(
                    f"cancelled: the job did not stop within {_number(self.stop_grace_seconds)} s of the stop "
                    "request; Ray killed its worker without saving (its last checkpoint is kept)"))
        pending = [run.pending for run in runs if run.pending is not None and not run.done]
        if not pending:
            return False
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=self.poll_seconds)
        ready = set(ready)
        busy = False
        for run in runs:
            if run.pending not in ready or run.done:
                continue
            ref, run.pending = run.pending, None
            try:
                events = ray.get(ref)
            except ray.exceptions.ActorUnavailableError:
                # Unreachable for now (its node is failing, or a network blip): Ray says whether it died
                # in a later answer, with the reason.
                continue
            except Exception as exc:  # noqa: BLE001 - the actor is gone: the job is over
                self._lost(run, exc)
                continue
            run.answered = True
            busy = busy or bool(events)
            for data in events:
                event = TrainingEvent.from_dict(data)
                run.last_seq = event.seq
                run.report(run.spec.job_id, event)
                if event.kind is EventKind.EXITED:
                    self._finished(run)
                    break
        return busy

    def _finished(self, run: _Run) -> None:
        import ray

        with self._lock:
            run.done = True
            if self._runs.get(run.spec.job_id) is run:
                del self._runs[run.spec.job_id]
        ray.kill(run.actor, no_restart=True)

    def _lost(self, run: _Run, exc: BaseException) -> None:
        """The actor died before its last event: an OOM kill, a lost node, a crash."""
        with self._lock:
            if run.done:
                return
            run.done = True
            if self._runs.get(run.spec.job_id) is run:
                del self._runs[run.spec.job_id]
        run.report(run.spec.job_id, TrainingEvent(EventKind.EXITED, {"status": "failed",
                                                                      "error_detail": lost_run_error(exc)}))


def lost_run_error(exc: BaseException) -> dict[str, Any]:
    """Why a run's actor died, as a failed job's error."""
    text = str(exc)
    lowered = text.lower()
    # The phrases of Ray 2.60's ActorDiedError causes: its memory monitor's kill, a node's death.
    if "low on memory" in lowered or "outofmemoryerror" in lowered or "memory monitor" in lowered:
        category, message = "out_of_memory", ("out of memory: Ray killed the job's worker to keep its node alive. "
                                              "Lower per_device_train_batch_size or max_length, enable "
                                              "gradient_checkpointing, or use QLoRA")
    elif "node has died" in lowered or "node died" in lowered or "node was lost" in lowered:
        category, message = "interrupted", ("interrupted: the Ray node running the job was lost; "
                                            "resume the job to continue from its last checkpoint")
    else:
        category, message = "interrupted", ("interrupted: the job's Ray worker died; resume the job to "
                                            "continue from its last checkpoint")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return {"category": category, "message": f"{message} ({first[:300]})", "log_tail": []}


def actor_name(spec: JobSpec) -> str:
    """The actor of one attempt of one job (a resume is a new actor)."""
    return f"sft-job-{spec.job_id}-{spec.attempt}"


def _unreachable(address: str) -> str | None:
    """Why nothing listens at ``address`` (a fast TCP probe: Ray's own connect retries for minutes)."""
    if not address or address == "auto":
        return None
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"


def _number(value: float) -> str:
    return f"{value:g}"
