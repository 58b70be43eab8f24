"""Section 3: submit and list latency with 0, 100 and 1,000 stored jobs (the plan's levels)."""

from __future__ import annotations

import os
import time

from .harness import Bench, log
from .service import Service
from .stats import summary_ms


def make_blocker(server: Service, bench: Bench) -> str:
    """Occupy the only training slot without using CPU, so that later jobs stay pending.

    The blocker's output directory holds a named pipe where its ``config.yaml`` goes: the job's thread
    waits in ``open()`` (GIL released) until the pipe is read, which this benchmark never does.
    """
    gate = server.output_root / "bench-blocker"
    gate.mkdir(parents=True, exist_ok=True)
    os.mkfifo(gate / "config.yaml")
    job_id, _ = server.submit(bench.config(1, output_dir="bench-blocker"))
    server.wait_quiet(timeout=120)  # its thread imports the trainer (transformers, torch) before it blocks
    job = server.job(job_id)
    if job["status"] != "running" or (job.get("progress") or {}).get("phase") != "starting":
        raise RuntimeError(f"the blocker job did not block: {job['status']} {job.get('progress')}")
    return job_id


def scale_section(bench: Bench, server: Service) -> dict:
    plan = bench.plan
    client = server.client
    config = bench.config(bench.plan.steps)
    levels = []

    def list_page() -> float:
        started = time.perf_counter()
        response = client.get("/api/sft/jobs", params={"limit": 100})
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed

    def submit_and_stop() -> float:
        job_id, elapsed = server.submit(config)
        status = server.stop_job(job_id)
        if status != "stopped":
            raise RuntimeError(f"job {job_id} was {status} after a stop: it should have been pending")
        return elapsed

    other = server.other_load()
    blocker = None
    stored = 0  # the blocker counts as a stored job
    fill_latencies: list[float] = []
    for level in plan.scale_levels:
        if stored < level:
            log(f"scale: storing {level} jobs")
        while stored < level:
            if blocker is None:
                blocker = make_blocker(server, bench)
            else:
                fill_latencies.append(submit_and_stop())
            stored += 1
        if server.total_jobs() != stored:
            raise RuntimeError(f"{server.total_jobs()} jobs stored, expected {stored}")
        at_list = stored
        list_page()  # one unmeasured request first
        lists = [list_page() for _ in range(plan.scale_lists)]
        if blocker is None:
            blocker = make_blocker(server, bench)
            stored += 1
        at_submit = stored
        submits = []
        for _ in range(plan.scale_submits):
            submits.append(submit_and_stop())
            stored += 1
        levels.append({"level": level, "stored_at_list": at_list, "stored_at_submit": at_submit,
                       "list": summary_ms(lists), "submit": summary_ms(submits)})
        log(f"scale: {level} jobs: list p50 {levels[-1]['list']['p50']:.1f} ms, "
            f"submit p50 {levels[-1]['submit']['p50']:.1f} ms")
    return {"levels": levels, "fill_submit": summary_ms(fill_latencies), "page_size": 100,
            "other_cores": other.cores()}
