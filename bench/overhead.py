"""Section 1: the same demo run as a bare TRL script (a), as a service job (b) and as a minimal PyTorch + PEFT
loop (c, the limit: a plain forward + backward), alternating; medians and ratios."""

from __future__ import annotations

from typing import Any

from .harness import Bench, log
from .report import DISTURBED_CORES
from .service import JobRun, Service
from .stats import median


def service_run_summary(run: JobRun) -> dict[str, Any]:
    return {
        "job_id": run.job_id,
        "ttr_s": run.wall_s,
        "submit_ms": run.submit_s * 1000,
        "steps_per_s": run.steps_per_s,
        "train_runtime": run.result["train_runtime"],
        "global_step": run.result["global_step"],
        "train_loss": run.result["train_loss"],
        "loss_path": run.result.get("loss_path"),
        "train_tokens_per_second": run.result.get("train_tokens_per_second"),
        "steady_tokens_per_second": run.steady_tokens_per_second,
        "stages": run.stages(),
        "peak_rss_mb": run.peak_rss_mb,
        "other_cores": run.other_cores,
    }


#: The bare script's stages (its JSON line), in the order they run.
BARE_STAGES = ("import_s", "load_s", "data_s", "build_s", "train_wall_s", "save_s")


def overhead_pairs(bench: Bench, server: Service, *, pairs: int, steps: int, tag: str,
                   model: str | None = None) -> dict:
    """Alternate bare TRL (a), service (b) and limit (c) runs of the same config, ``pairs`` rounds; medians and
    ratios (b ÷ a: ``ratio``; b ÷ c: ``limit_ratio``).

    ``model``: a model directory that every runner trains instead of the run's model."""
    runs = []
    overrides = {} if model is None else {"base_model": model}
    for i in range(pairs):
        server.wait_quiet()  # nothing left running in the server while the scripts train
        log(f"{tag}: round {i + 1}/{pairs}: bare TRL")
        a = bench.run_bare(steps, tag=f"{tag}-{i + 1}", model=model)
        log(f"{tag}: round {i + 1}/{pairs}: service job")
        b = service_run_summary(server.run_job(bench.config(steps, **overrides), poll=bench.plan.poll,
                                               sample_rss=True))
        server.wait_quiet()
        log(f"{tag}: round {i + 1}/{pairs}: limit (PyTorch + PEFT loop)")
        c = bench.run_bare(steps, tag=f"{tag}-{i + 1}", model=model, script="limit_sft.py")
        runs.append({"a": a, "b": b, "c": c, "ratio": b["steps_per_s"] / a["steps_per_s"],
                     "limit_ratio": b["steps_per_s"] / c["steps_per_s"], "extra_ttr_s": b["ttr_s"] - a["ttr_s"],
                     "ttr_ratio": b["ttr_s"] / a["ttr_s"], "limit_ttr_ratio": b["ttr_s"] / c["ttr_s"]})
        log(f"{tag}: round {i + 1}: bare {a['steps_per_s']:.3f} steps/s {a['ttr_s']:.1f}s, "
            f"service {b['steps_per_s']:.3f} steps/s {b['ttr_s']:.1f}s, "
            f"limit {c['steps_per_s']:.3f} steps/s {c['ttr_s']:.1f}s")

    def med(runner: str, key: str) -> float:
        return median([r[runner][key] for r in runs])

    return {
        "steps": steps,
        "runs": runs,
        "median_ratio": median([r["ratio"] for r in runs]),
        "median_limit_ratio": median([r["limit_ratio"] for r in runs]),
        "median_ttr_ratio": median([r["ttr_ratio"] for r in runs]),
        "median_limit_ttr_ratio": median([r["limit_ttr_ratio"] for r in runs]),
        "median_extra_ttr_s": median([r["extra_ttr_s"] for r in runs]),
        **{f"median_{x}_{key}": med(x, key) for x in "abc" for key in ("steps_per_s", "ttr_s", "peak_rss_mb")},
        "median_a_stages": median_stages([{k: r["a"][k] for k in BARE_STAGES} for r in runs]),
        "median_b_stages": median_stages([r["b"]["stages"] for r in runs]),
        "median_c_stages": median_stages([{k: r["c"][k] for k in BARE_STAGES} for r in runs]),
        "median_b_submit_ms": median([r["b"]["submit_ms"] for r in runs]),
        "loss_path": runs[0]["b"]["loss_path"] if runs else None,
        "same_loss": all(abs(r["a"]["train_loss"] - r[x]["train_loss"]) < 1e-4 for r in runs for x in "bc"),
        "disturbed": [i + 1 for i, r in enumerate(runs)
                      if max(r[x]["other_cores"] for x in "abc") > DISTURBED_CORES],
    }


def median_stages(stage_dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in stage_dicts[0] if all(k in d for d in stage_dicts)] if stage_dicts else []
    return {k: median([d[k] for d in stage_dicts]) for k in keys}
