"""Section 11 of ``make bench``: DPO. The same preference run as a bare TRL ``DPOTrainer`` script (a), as a
service job with ``method: dpo`` (b) and as a plain PyTorch + PEFT forward + backward of the same pairs (c, the
limit: ``bench/limit_dpo.py``), alternating, on the bundled demo preference set (``bundled:json-extract-prefs``);
medians and ratios. All three train the same thing: their per-step losses agree (``same_loss``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .harness import ROOT, Bench, log
from .overhead import service_run_summary
from .stats import median

#: The demo preference set's training pairs (OpenAI preference rows), as a file every runner reads.
PREFS_JSONL = ROOT / "backend" / "app" / "demo" / "json_extract_prefs" / "train.jsonl"


def dpo_section(bench: Bench, server) -> dict[str, Any]:
    steps, rounds = bench.plan.dpo_steps, bench.plan.pairs
    data = bench.work / "prefs.jsonl"
    data.write_bytes(PREFS_JSONL.read_bytes())  # inside the server's dataset roots
    config = bench.config(steps, method="dpo", dataset_name=str(data))
    log("dpo: warm-up job")
    server.run_job(bench.config(1, method="dpo", dataset_name=str(data)), poll=bench.plan.poll)
    runs = []
    for i in range(rounds):
        server.wait_quiet()
        log(f"dpo: round {i + 1}/{rounds}: bare TRL DPOTrainer")
        a = bench.run_bare(steps, tag=f"dpo-{i + 1}", script="bare_dpo.py", data=data)
        log(f"dpo: round {i + 1}/{rounds}: service job")
        run = server.run_job(config, poll=bench.plan.poll, sample_rss=True)
        b = {**service_run_summary(run), "step_losses": [m["loss"] for m in run.metrics if "loss" in m]}
        server.wait_quiet()
        log(f"dpo: round {i + 1}/{rounds}: limit (forward + backward)")
        c = bench.run_bare(steps, tag=f"dpo-{i + 1}", script="limit_dpo.py", data=data)
        runs.append({"a": a, "b": b, "c": c, "ratio": b["steps_per_s"] / a["steps_per_s"],
                     "limit_ratio": b["steps_per_s"] / c["steps_per_s"],
                     "trl_vs_limit": a["steps_per_s"] / c["steps_per_s"]})
        log(f"dpo: round {i + 1}: bare {a['steps_per_s']:.3f}, service {b['steps_per_s']:.3f}, "
            f"limit {c['steps_per_s']:.3f} steps/s")
    return {
        "steps": steps,
        "data": str(PREFS_JSONL.relative_to(ROOT)),
        "runs": runs,
        "median_ratio": median([r["ratio"] for r in runs]),
        "median_limit_ratio": median([r["limit_ratio"] for r in runs]),
        "median_trl_vs_limit": median([r["trl_vs_limit"] for r in runs]),
        **{f"median_{x}_steps_per_s": median([r[x]["steps_per_s"] for r in runs]) for x in "abc"},
        "same_loss": all(_close(r["a"]["step_losses"], r[x]["step_losses"]) for r in runs for x in "bc"),
    }


def _close(a: list[float], b: list[float], tolerance: float = 1e-3) -> bool:
    return len(a) == len(b) and all(abs(x - y) < tolerance for x, y in zip(a, b))
