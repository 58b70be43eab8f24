"""``RayExecutor``: each job is a detached, named Ray actor (``ray_worker.JobRun``) on a Ray cluster.

The API process is only a Ray driver: it creates the job's actor with the job's resources, and
the shared remote machinery (``remote.RemoteExecutor``) pulls the actor's numbered events every
``poll_seconds``, reports them, stops and cancels runs and maps lost ones; this module keeps only
what is Ray's (connecting, placement, actors, and reading Ray's errors). The actor is killed once
its last event is in. A crash in training takes down the actor's process, not the API; an API that
restarts (even ``kill -9``) finds the actor by name and pulls the events after the last one it
stored. Runs outlive the API only on a cluster started on its own (``ray start --head``): a Ray
that ``ray.init()`` started inside the API process (``SFT_RAY_ADDRESS`` empty) ends with it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ...core.errors import ServiceBusy
from ...sft.distributed import qlora_placement_problem
from ...sft.errors import ConfigError, SFTError
from .base import FailureCategory, JobFailure, JobSpec

if TYPE_CHECKING:
    from ...sft.planner import DeviceMemory
from .remote import RemoteExecutor, RemoteRun, RunLost

logger = logging.getLogger(__name__)

#: The Ray namespace the service's actors live in (named actors are looked up in it after a restart).
NAMESPACE = "sft-service"

#: Environment variables of the API process that a run on the cluster also gets.
FORWARDED_ENV = ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN", "TOKENIZERS_PARALLELISM")


class RayUnavailable(SFTError):
    """The Ray cluster cannot be reached (or was never connected)."""

    category = "executor_down"


@dataclass
class _Actor:
    """Where a run is on the cluster: its actor, and how many Ray Train workers it coordinates."""

    actor: Any
    workers: int = 1


class RayExecutor(RemoteExecutor):
    """Runs jobs on a Ray cluster.

    Args:
        address: the cluster: ``host:port`` of its GCS (``ray start --head`` prints it), ``auto``
            (the cluster this machine belongs to), ``ray://host:10001`` (Ray Client), or empty (start a
            Ray inside this process; its jobs end with it).
        stop_grace_seconds: how long a stopped run may take to save before it is cancelled hard.
        poll_seconds: how often the actors are asked for new events.
    """

    name = "ray"
    cancelled_message = "cancelled: Ray killed the job's worker; nothing was saved since its last checkpoint"
    kill_phrase = "Ray killed its worker"

    def __init__(self, *, address: str = "", stop_grace_seconds: float = 300.0, poll_seconds: float = 0.25):
        super().__init__(stop_grace_seconds=stop_grace_seconds, poll_seconds=poll_seconds)
        self.address = address.strip()
        self.error: str | None = None
        self._pending: dict[str, Any] = {}  # job id -> the ObjectRef of its actor's pull in flight
        self._gpu_memory: dict[str, int | None] = {}  # node id -> its smallest GPU's memory in bytes
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
        self.start_polling()

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
        qlora = qlora_placement_problem(spec.config, gpus)
        if qlora:
            raise ConfigError(qlora, field="use_qlora")
        if fit < workers:
            raise ConfigError(f"{workers} workers of {_number(gpus)} GPUs and {_number(cpus)} CPUs asked, but {has}: "
                              f"{fit} such workers fit at once", field="num_workers")

    # Memory (the fit planner's device)

    def device_memory(self, spec: JobSpec, *, gpu_memory_gb: float | None = None) -> DeviceMemory | None:
        """What one worker of ``spec`` gets: its GPUs' memory (``gpu_memory_gb`` each, or what the GPU nodes'
        ``nvidia-smi`` says, the smallest), or on CPU the memory Ray schedules on the largest node shared by the
        workers placed there. None when it cannot be told (the fit check is then skipped, never guessed).

        Ray's resources carry no GPU memory, so it is read once per node by a task that holds no resource
        (a task holding a GPU would wait behind the jobs training on it, and a submit with it).
        """
        from ...sft.planner import GIB, DeviceMemory

        place = self.placement(spec)
        nodes = [node for node in self._ray().nodes() if node.get("Alive")]
        gpus, workers = place["num_gpus_per_worker"], place["num_workers"]
        if gpus:
            gpu_nodes = [node for node in nodes if node["Resources"].get("GPU", 0) >= gpus]
            per_gpu = int(gpu_memory_gb * GIB) if gpu_memory_gb else self._smallest_gpu_memory(gpu_nodes)
            if per_gpu is None:
                return None
            slots = sum(int(node["Resources"].get("GPU", 0) // gpus) for node in gpu_nodes)
            return DeviceMemory("cuda", per_gpu * gpus, f"each worker's {_number(gpus)} GPU(s)", max_workers=slots)
        memories = [int(node["Resources"].get("memory", 0)) for node in nodes]
        if not any(memories):
            return None
        per_node = max(1, math.ceil(workers / len(nodes)))
        slots = sum(int(node["Resources"].get("CPU", 0) // place["num_cpus_per_worker"]) for node in nodes)
        return DeviceMemory("cpu", max(memories) // per_node, "the Ray node's schedulable memory per worker",
                            max_workers=max(slots, 1))

    def _smallest_gpu_memory(self, nodes: list[dict[str, Any]]) -> int | None:
        ray = self._ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        for node in nodes:
            if node["NodeID"] not in self._gpu_memory:
                probe = ray.remote(num_cpus=0)(_gpu_memory_bytes).options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                try:
                    self._gpu_memory[node["NodeID"]] = ray.get(probe.remote(), timeout=15)
                except Exception as exc:  # noqa: BLE001 - no answer: unknown, never a refusal
                    # Kept as unknown: every later submit would otherwise wait the 15 s again.
                    logger.warning("could not read the GPU memory of Ray node %s: %s", node["NodeID"], exc)
                    self._gpu_memory[node["NodeID"]] = None
                    return None
        sizes = [self._gpu_memory[node["NodeID"]] for node in nodes]
        return None if not sizes or None in sizes else min(sizes)

    # Runs (the hooks of RemoteExecutor)

    def start(self, spec: JobSpec, report, *, callbacks: list[Any] | None = None) -> dict[str, Any]:
        if callbacks:
            raise ConfigError("in-process Python callbacks cannot run on a Ray cluster; use the thread executor "
                              "(SFT_EXECUTOR=thread) for jobs that pass callbacks", field="callbacks")
        return super().start(spec, report)

    def launch(self, spec: JobSpec) -> tuple[_Actor, dict[str, Any]]:
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
        self._pending.pop(spec.job_id, None)
        return _Actor(actor, place["num_workers"]), {"actor": name, "namespace": NAMESPACE, "address": self.address,
                                                     "placement": place}

    def find(self, spec: JobSpec, handle: dict[str, Any]) -> _Actor | None:
        if self.error:
            return None
        import ray

        try:
            actor = ray.get_actor(handle["actor"], namespace=handle.get("namespace", NAMESPACE))
        except (ValueError, KeyError):
            return None
        self._pending.pop(spec.job_id, None)
        return _Actor(actor, handle.get("placement", {}).get("num_workers", 1))

    def pull(self, runs: list[RemoteRun]) -> dict[str, list[dict[str, Any]] | RunLost]:
        """One ``pull`` in flight per actor; the answers that come within ``poll_seconds``."""
        import ray

        for run in runs:
            if run.spec.job_id not in self._pending:
                self._pending[run.spec.job_id] = run.remote.actor.pull.remote(run.last_seq)
        refs = {self._pending[run.spec.job_id]: run.spec.job_id for run in runs}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.poll_seconds)
        answers: dict[str, list[dict[str, Any]] | RunLost] = {}
        for ref in ready:
            job_id = refs[ref]
            del self._pending[job_id]
            try:
                answers[job_id] = ray.get(ref)
            except ray.exceptions.ActorUnavailableError:
                # Unreachable for now (its node is failing, or a network blip): Ray says whether it died
                # in a later answer, with the reason.
                continue
            except Exception as exc:  # noqa: BLE001 - the actor is gone: the job is over
                answers[job_id] = RunLost(exc)
        return answers

    def ask_stop(self, run: RemoteRun) -> None:
        run.remote.actor.stop.remote()

    def kill(self, run: RemoteRun) -> None:
        import ray

        self._pending.pop(run.spec.job_id, None)
        if run.remote.workers > 1:
            # Killing the actor would take Ray Train's controller with it, leaving its placement group
            # behind (Ray's own cleaner needs the dashboard's state API); the actor ends the run instead.
            run.remote.actor.abort.remote()
        else:
            ray.kill(run.remote.actor, no_restart=True)

    def finished(self, run: RemoteRun) -> None:
        import ray

        self._pending.pop(run.spec.job_id, None)
        ray.kill(run.remote.actor, no_restart=True)

    def lost_failure(self, cause: BaseException) -> JobFailure:
        return lost_run_failure(cause)

    def where(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Where a run's actor is: node, process, ``CUDA_VISIBLE_DEVICES``."""
        import ray

        return ray.get(self._runs[job_id].remote.actor.where.remote(), timeout=timeout)

    def health(self) -> dict[str, Any]:
        if self.error:
            return {"name": self.name, "status": "down", "address": self.address, "error": self.error}
        try:
            nodes = self.cluster()
        except Exception as exc:  # noqa: BLE001 - a lost cluster is a health answer, not a 500
            return {"name": self.name, "status": "down", "address": self.address, "error": str(exc)}
        return {"name": self.name, "status": "up", "address": self.address or "(local)", "nodes": len(nodes),
                "cpus": sum(n["CPU"] for n in nodes), "gpus": sum(n["GPU"] for n in nodes), "runs": len(self._runs)}


def lost_run_failure(exc: BaseException) -> JobFailure:
    """Why a run's actor died, as a failed job's error."""
    text = str(exc)
    lowered = text.lower()
    # The phrases of Ray 2.60's ActorDiedError causes: its memory monitor's kill, a node's death.
    if "low on memory" in lowered or "outofmemoryerror" in lowered or "memory monitor" in lowered:
        category = FailureCategory.OUT_OF_MEMORY
        message = ("out of memory: Ray killed the job's worker to keep its node alive. Lower "
                   "per_device_train_batch_size or max_length, enable gradient_checkpointing, or use QLoRA")
    elif "node has died" in lowered or "node died" in lowered or "node was lost" in lowered:
        category = FailureCategory.INTERRUPTED
        message = ("interrupted: the Ray node running the job was lost; resume the job to continue from its last "
                   "checkpoint")
    else:
        category = FailureCategory.INTERRUPTED
        message = "interrupted: the job's Ray worker died; resume the job to continue from its last checkpoint"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return JobFailure(category, f"{message} ({first[:300]})")


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


def _gpu_memory_bytes() -> int | None:
    """On a Ray node: its smallest GPU's total memory (nvidia-smi sees every GPU, whatever the task holds)."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sizes = [int(float(line)) * 1024 * 1024 for line in out.split() if line.strip()]
    return min(sizes) if sizes else None


def _number(value: float) -> str:
    return f"{value:g}"
