"""Section 9: what API keys cost, GET /api/sft/jobs/{id} on a server without keys and on one with keys."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

from .harness import ROOT, Bench
from .service import TERMINAL, Service
from .stats import summary_ms


def auth_section(bench: Bench, off: Service | None = None) -> dict:
    """p50 of GET /api/sft/jobs/{id} on a server without keys and on one with SFT_AUTH=keys (sending its key),
    in alternating blocks so that both see the same machine.

    ``off``: a running server without keys to use instead of a fresh one (smoke mode: seconds matter more)."""
    keyed = bench.server("auth-keys", auth="keys")
    made = subprocess.run([sys.executable, "-m", "app", "keys", "create", "--name", "bench"],
                          env={**keyed.env, "PYTHONPATH": str(ROOT / "backend")}, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        raise RuntimeError(f"python -m app keys create failed: {made.stderr[-2000:]}")
    with contextlib.ExitStack() as started:
        if off is None:
            off = started.enter_context(bench.server("auth-off"))
        started.enter_context(keyed)
        keyed.client.headers["Authorization"] = f"Bearer {made.stdout.strip()}"
        if keyed.client.get("/api/sft/jobs").status_code != 200:
            raise RuntimeError("the server with keys refused the benchmark's key")
        job_ids = {}
        for name, server in (("off", off), ("keys", keyed)):
            job_id, _ = server.submit(bench.config(1))
            server.client.post(f"/api/sft/jobs/{job_id}/stop")  # a 409 if it has already ended
            deadline = time.monotonic() + 600
            while server.job(job_id)["status"] not in TERMINAL:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} did not stop")
                time.sleep(0.2)
            server.wait_quiet(timeout=120)
            job_ids[name] = job_id
        samples: dict[str, list[float]] = {"off": [], "keys": []}
        block = 50
        for _ in range(max(1, bench.plan.auth_requests // block)):
            for name, server in (("off", off), ("keys", keyed)):
                path = f"/api/sft/jobs/{job_ids[name]}"
                server.client.get(path).raise_for_status()  # unmeasured: the connection is warm
                for _ in range(block):
                    started = time.perf_counter()
                    response = server.client.get(path)
                    samples[name].append(time.perf_counter() - started)
                    response.raise_for_status()
    off_ms, keys_ms = summary_ms(samples["off"]), summary_ms(samples["keys"])
    return {"off": off_ms, "keys": keys_ms, "p50_cost_ms": keys_ms["p50"] - off_ms["p50"], "block": block}
