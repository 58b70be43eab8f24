"""Sections 2 and 4: a fresh server's first jobs one after the other, its RSS after each, and the latency of
GET /jobs/{id} and GET /jobs while they train and then idle."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from .harness import Bench, log
from .service import TERMINAL, Service
from .stats import summary_ms


@dataclasses.dataclass
class Sample:
    endpoint: str  # "job" or "list"
    seconds: float
    job: int  # 1-based index of the job running (0 when idle)
    phase: str | None  # the job's phase as last seen before the request was sent
    into_training: float | None  # seconds since its training phase was first seen


def sample_latency(server: Service, job_id: str, *, interval: float, requests: int | None = None,
                   job_index: int = 0) -> tuple[list[Sample], str | None]:
    """Alternate GET /jobs/{id} and GET /jobs (keep-alive), one request every ``interval`` s.

    With ``requests``: that many of each. Without: until the job ends (the status polls tell). Returns the
    samples and the job's final status.
    """
    client = server.client
    urls = {"job": f"/api/sft/jobs/{job_id}", "list": "/api/sft/jobs"}
    samples: list[Sample] = []
    phase = None
    status = None
    training_since = None
    i = 0
    next_at = time.perf_counter()
    while True:
        which = "job" if i % 2 == 0 else "list"
        i += 1
        started = time.perf_counter()
        response = client.get(urls[which])
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"GET {urls[which]} answered {response.status_code}: {response.text}")
        into = started - training_since if training_since is not None else None
        samples.append(Sample(which, elapsed, job_index, phase, into))
        if which == "job":
            body = response.json()
            status = body["status"]
            phase = (body.get("progress") or {}).get("phase")
            if phase == "training" and training_since is None:
                training_since = time.perf_counter()
        if requests is not None and i >= 2 * requests:
            break
        if requests is None and status in TERMINAL:
            break
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    return samples, status


def latency_summary(samples: list[Sample]) -> dict:
    out: dict[str, Any] = {}
    for key in ("job", "list"):
        mine = [x for x in samples if x.endpoint == key]
        out[key] = summary_ms([x.seconds for x in mine])
        out[key]["slowest"] = [
            {"ms": round(x.seconds * 1000, 1), "job": x.job, "phase": x.phase,
             "into_training_s": None if x.into_training is None else round(x.into_training, 2)}
            for x in sorted(mine, key=lambda x: x.seconds, reverse=True)[:5]
        ]
    return out


# 2 and 4. Memory across jobs, and latency while they train


def memory_and_latency(bench: Bench, server: Service) -> tuple[dict, dict]:
    """A fresh server's first jobs, one after the other: its RSS after each; the latency of the status and list
    endpoints while they train (sampled every ``latency_interval``, which also tells when each job ends); then
    the same latency with nothing running."""
    plan = bench.plan
    server.wait_quiet()
    before = server.rss_mb()
    after = []
    running: list[Sample] = []
    job_id = None
    other = server.other_load()
    for i in range(plan.memory_jobs):
        log(f"memory and latency: job {i + 1}/{plan.memory_jobs}")
        job_id, _ = server.submit(bench.config(plan.memory_steps))
        samples, status = sample_latency(server, job_id, interval=plan.latency_interval, job_index=i + 1)
        running += samples
        if status != "completed":
            raise RuntimeError(f"memory job {job_id} ended {status}: {server.job(job_id)['error']}")
        time.sleep(0.5)
        after.append(server.rss_mb())
    other_training = other.cores()
    server.wait_quiet()
    log(f"latency: idle, {plan.latency_idle_requests} requests per endpoint")
    other.start()
    idle, _ = sample_latency(server, job_id, interval=plan.latency_interval, requests=plan.latency_idle_requests)
    other_idle = other.cores()
    memory = {"before_mb": before, "after_mb": after, "steps": plan.memory_steps}
    latency = {"idle": latency_summary(idle),
               "training": latency_summary([x for x in running if x.phase == "training"]),
               "running": latency_summary(running),
               "interval_ms": plan.latency_interval * 1000, "stored_jobs": server.total_jobs(),
               "steps": plan.memory_steps, "jobs": plan.memory_jobs,
               "other_cores": {"training": other_training, "idle": other_idle}}
    return memory, latency
