"""Section 9 of ``make bench``: the same job on the thread executor and on a local Ray (SFT_EXECUTOR=ray).

A Ray head is started on this machine with ``ray start --head`` (all its cores), a server with the thread
executor and one with the Ray executor pointed at it each train the demo job once, and the section reports
each job's steps/s (``global_step ÷ train_runtime``, timed where it trains) and as the server received
its per-step metrics (from step 1 to the last: the Ray executor pulls them every 0.25 s), its time to
result (POST to the terminal event) and what Ray costs to start: the head, the server's connection to it, and the job's
own start on the cluster (a fresh worker process importing torch and transformers).
"""

from __future__ import annotations

import os
import time
from typing import Any

from .ray_head import LocalRayHead


def received_steps_per_s(metrics: list[dict[str, Any]]) -> float:
    """Steps/s as the server saw them arrive: from step 1's metric point to the last one."""
    points = [m for m in metrics if "loss" in m and "elapsed_seconds" in m]
    first, last = points[0], points[-1]
    return (last["step"] - first["step"]) / (last["elapsed_seconds"] - first["elapsed_seconds"])


def ray_section(bench) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    steps = bench.plan.ray_steps
    # The Ray job holds as many cores as the thread executor's job may use (Ray sets its worker's
    # OMP_NUM_THREADS to them): all of them, or the --threads the servers are given.
    threads = int(bench.env.get("OMP_NUM_THREADS") or cores)
    config = bench.config(steps, num_cpus_per_worker=threads)
    runs: dict[str, Any] = {}
    started = time.perf_counter()
    head = LocalRayHead(num_cpus=cores).start()
    head_start_s = time.perf_counter() - started
    try:
        for executor, settings in (("thread", {}), ("ray", {"executor": "ray", "ray_address": head.address})):
            server = bench.server(f"executor-{executor}")
            server.env.update({f"SFT_{key.upper()}": value for key, value in settings.items()})
            begun = time.perf_counter()
            with server:
                server_start_s = time.perf_counter() - begun
                if executor == "thread":
                    # The server's first job pays its imports of torch and transformers; a Ray job pays them
                    # in its worker every time, which is part of what this section measures.
                    server.run_job(bench.config(1), poll=bench.plan.poll)
                run = server.run_job(config, poll=bench.plan.poll)
                health = server.client.get("/health").json().get("executor") or {}
            result = run.job["result"]
            runs[executor] = {
                "server_start_s": round(server_start_s, 2),
                "ttr_s": round(run.wall_s, 2),
                "train_runtime_s": result["train_runtime"],
                "global_step": result["global_step"],
                "steps_per_s": result["global_step"] / result["train_runtime"],
                "received_steps_per_s": received_steps_per_s(run.metrics),
                "other_cores": run.other_cores,
                "executor": health.get("name"),
            }
    finally:
        head.stop()
    thread, ray = runs["thread"], runs["ray"]
    return {
        "steps": steps,
        "cores": cores,
        "threads": threads,
        "head_start_s": round(head_start_s, 2),
        "runs": runs,
        "ratio_steps_per_s": ray["steps_per_s"] / thread["steps_per_s"],
        "ratio_ttr": ray["ttr_s"] / thread["ttr_s"],
        # Outside the training loop: what the Ray job spends more than the thread job (worker start, imports,
        # model load in a fresh process, event delivery).
        "startup_cost_s": round((ray["ttr_s"] - ray["train_runtime_s"]) - (thread["ttr_s"] - thread["train_runtime_s"]), 2),
    }
