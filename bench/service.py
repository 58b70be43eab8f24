"""The service under test: a real ``uvicorn`` process, and the HTTP calls the benchmark makes to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"completed", "failed", "stopped"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_status_mb(pid: int, key: str) -> float:
    """The ``key`` line of /proc/PID/status (a size in kB) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} for pid {pid}")


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS of /proc/PID/status)."""
    return _proc_status_mb(pid, "VmRSS")


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of ``pid`` in MiB (VmHWM) since it started or since ``reset_peak_rss``."""
    return _proc_status_mb(pid, "VmHWM")


def reset_peak_rss(pid: int) -> bool:
    """Reset ``pid``'s VmHWM to its current RSS (Linux ``clear_refs`` 5); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU used by other processes since ``start()``, in cores (0 on a quiet machine): the machine's busy
    CPU time (/proc/stat) minus ``own()``, the CPU seconds of the processes measured and of this benchmark,
    per wall second."""

    def __init__(self, own: Callable[[], float]):
        self.own = own
        self.start()

    def start(self) -> None:
        self._t, self._busy, self._own = time.perf_counter(), machine_busy_seconds(), self.own()

    def cores(self) -> float:
        others = (machine_busy_seconds() - self._busy) - (self.own() - self._own)
        return max(0.0, others) / max(time.perf_counter() - self._t, 1e-9)


class Service:
    """``python -m uvicorn app.main:app --app-dir backend --workers 1`` with ``SFT_*`` settings, as ``make run``.

    Its output goes to ``<data_dir>/server.log`` (uvicorn's access log included, as in ``make run``).
    """

    def __init__(self, data_dir: Path, *, env: dict[str, str], settings: dict[str, Any] | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "SFT_DATA_DIR": str(self.data_dir)}
        for key, value in (settings or {}).items():
            self.env[f"SFT_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        self.process: subprocess.Popen | None = None
        self.client: httpx.Client | None = None
        self._log = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def output_root(self) -> Path:
        return self.data_dir / "outputs"

    def start(self, timeout: float = 120.0) -> Service:
        self._log = (self.data_dir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(ROOT / "backend"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            env=self.env, cwd=str(ROOT), stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=60.0)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.data_dir}/server.log")
            try:
                if self.client.get("/health").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not answer /health within {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def other_load(self) -> OtherLoad:
        """Other load (see ``OtherLoad``) from now on: the server and this benchmark are the measured ones."""
        return OtherLoad(lambda: cpu_seconds(self.pid) + time.process_time())

    def wait_quiet(self, *, window: float = 0.5, max_cpu: float = 0.03, timeout: float = 60.0) -> None:
        """Wait until the server uses under ``max_cpu`` of a core over ``window`` seconds (imports done...)."""
        deadline = time.monotonic() + timeout
        before = cpu_seconds(self.pid)
        while time.monotonic() < deadline:
            time.sleep(window)
            now = cpu_seconds(self.pid)
            if now - before < max_cpu * window:
                return
            before = now

    # API

    def submit(self, config: dict[str, Any]) -> tuple[str, float]:
        """POST /train; returns the job id and the request's latency in seconds."""
        started = time.perf_counter()
        response = self.client.post("/api/sft/train", json={"config": config})
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"POST /train answered {response.status_code}: {response.text}")
        return response.json()["job_id"], elapsed

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/sft/jobs/{job_id}")
        response.raise_for_status()
        return response.json()

    def stop_job(self, job_id: str) -> str:
        response = self.client.post(f"/api/sft/jobs/{job_id}/stop")
        response.raise_for_status()
        return response.json()["status"]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/api/sft/jobs/{job_id}/events", params={"limit": 1000})
        response.raise_for_status()
        return response.json()["events"]

    def total_jobs(self) -> int:
        response = self.client.get("/api/sft/jobs", params={"limit": 1})
        response.raise_for_status()
        return response.json()["total"]

    def run_job(self, config: dict[str, Any], *, poll: float | None = None, timeout: float = 1800.0,
                sample_rss: bool = False) -> JobRun:
        """Submit ``config`` and wait for it to end: follow its SSE event stream (as a client watching a
        job does), or, with ``poll``, poll GET /jobs/{id} every ``poll`` s.

        ``wall_s`` runs from just before the POST to the terminal event (or the poll that sees the job
        ended). With ``sample_rss``, ``peak_rss_mb`` is the server's peak RSS during the run (VmHWM reset
        before it; sampled every 50 ms from /proc where the reset is not allowed).
        """
        run = JobRun()
        exact_peak = sample_rss and reset_peak_rss(self.pid)
        sampler = _RssSampler(self.pid) if sample_rss and not exact_peak else None
        other = self.other_load()
        started = time.perf_counter()
        run.job_id, run.submit_s = self.submit(config)
        if poll is None:
            self._follow_events(run.job_id, timeout=timeout)
            run.wall_s = time.perf_counter() - started
            job = self.job(run.job_id)
        else:
            deadline = time.monotonic() + timeout
            while True:
                job = self.job(run.job_id)
                if job["status"] in TERMINAL:
                    run.wall_s = time.perf_counter() - started
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {run.job_id} still {job['status']} after {timeout}s")
                time.sleep(poll)
        run.job = job
        run.other_cores = other.cores()
        if exact_peak:
            run.peak_rss_mb = peak_rss_mb(self.pid)
        elif sampler is not None:
            run.peak_rss_mb = sampler.stop()
        if job["status"] != "completed":
            raise RuntimeError(f"job {run.job_id} ended {job['status']}: {job.get('error')}")
        run.events = self.events(run.job_id)
        response = self.client.get(f"/api/sft/jobs/{run.job_id}/metrics")
        response.raise_for_status()
        run.metrics = response.json()["metrics"]
        return run

    def _follow_events(self, job_id: str, *, timeout: float) -> str:
        """Read the job's SSE stream until its terminal event; returns that event's type."""
        headers = {"Accept": "text/event-stream"}
        with self.client.stream("GET", f"/api/sft/jobs/{job_id}/events", headers=headers,
                                timeout=httpx.Timeout(60.0, read=timeout)) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("event: ") and line.removeprefix("event: ") in TERMINAL:
                    return line.removeprefix("event: ")
        raise RuntimeError(f"the event stream of job {job_id} closed before its terminal event")


class _RssSampler:
    """The peak RSS of ``pid``, sampled from /proc every ``interval`` s in a thread (no request to it)."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._done.wait(self.interval)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return max(self.peak, rss_mb(self.pid))


@dataclass
class JobRun:
    """One job as the benchmark saw it."""

    job_id: str = ""
    submit_s: float = 0.0
    wall_s: float = 0.0
    job: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_mb: float | None = None
    #: CPU used by other processes than the server and the benchmark during the job, in cores (0 = quiet).
    other_cores: float | None = None

    @property
    def result(self) -> dict[str, Any]:
        return self.job.get("result") or {}

    @property
    def steps_per_s(self) -> float:
        return self.result["global_step"] / self.result["train_runtime"]

    @property
    def steady_tokens_per_second(self) -> float | None:
        """Tokens/s from the end of step 1 to the last step (the per-step metrics), so runs of different
        lengths compare: the first step's warm-up is left out."""
        points = [m for m in self.metrics if "num_tokens" in m and "elapsed_seconds" in m]
        if len(points) < 2:
            return None
        first, last = points[0], points[-1]
        seconds = last["elapsed_seconds"] - first["elapsed_seconds"]
        return (last["num_tokens"] - first["num_tokens"]) / seconds if seconds > 0 else None

    def stages(self) -> dict[str, float]:
        """Seconds between the job's events: queue, model load, data, then build + train + save."""
        times: dict[str, datetime] = {}
        for event in self.events:
            times.setdefault(event["type"], datetime.fromisoformat(event["time"]))
        out: dict[str, float] = {}

        def span(name: str, a: str, b: str) -> None:
            if a in times and b in times:
                out[name] = round((times[b] - times[a]).total_seconds(), 3)

        span("queue_s", "created", "started")
        span("load_s", "started", "model_loaded")
        span("data_s", "model_loaded", "dataset_ready")
        span("build_train_save_s", "dataset_ready", "completed")
        if "build_train_save_s" in out:
            out["build_save_s"] = round(out["build_train_save_s"] - self.result.get("train_runtime", 0.0), 3)
        return out
