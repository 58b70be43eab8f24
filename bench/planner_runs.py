"""The planner against measured peaks: train a few configs in one child process and compare its peak RSS
(VmHWM, reset before each run, after the heap is settled) with what ``app.sft.planner`` estimates for them on CPU.

Shared by the planner's tests and the bench (``planner_error``). Each run trains rows that fill ``max_length``
(``long_text_rows``), so the measured peak is the planner's own worst case (every row full, every token trained).

    python -m bench.planner_runs CASES.json    # the child: prints one JSON line per case
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.service import peak_rss_mb, reset_peak_rss, rss_mb

#: Relative error the planner's estimates must stay within (bench target and tests).
PLANNER_TOLERANCE = 0.25


def long_text_rows(n: int = 16, words: int = 600) -> list[dict[str, str]]:
    """Plain-text rows longer than any test's max_length (every token is trained)."""
    vocab = "alpha beta gamma delta json name age city paris quick brown fox lazy dog hello world".split()
    return [{"text": " ".join(vocab[(i * 7 + j * 3) % len(vocab)] for j in range(words))} for i in range(n)]


def measure(cases: list[dict[str, Any]], *, model_cache_dir: str | Path, timeout: float = 600) -> list[dict[str, Any]]:
    """Train each case's ``config`` in one child process; return each case with ``measured_mb`` (its peak RSS)
    and ``estimated_mb`` (the planner's total for it on CPU), and ``error`` (estimated / measured - 1)."""
    with tempfile.TemporaryDirectory(prefix="planner-runs-") as tmp:
        data = Path(tmp) / "rows.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in long_text_rows()))
        spec = Path(tmp) / "cases.json"
        spec.write_text(json.dumps({"cases": cases, "dataset": str(data), "out": tmp,
                                    "model_cache_dir": str(model_cache_dir)}))
        done = subprocess.run([sys.executable, "-m", "bench.planner_runs", str(spec)], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"planner runs failed:\n{done.stderr[-3000:]}")
        measured = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [{**case, **m} for case, m in zip(cases, measured, strict=True)]


def _child(spec_path: str) -> None:
    import torch

    from app.sft.config import SFTConfig
    from app.sft.device import load_ml_stack, release_memory
    from app.sft.models import ensure_converted, resolve_model
    from app.sft.planner import ModelShape, estimate, read_model_config
    from app.sft.trainer import SFTTrainer

    torch.set_num_threads(1)
    load_ml_stack()
    spec = json.loads(Path(spec_path).read_text())
    cache = Path(spec["model_cache_dir"])
    for index, case in enumerate(spec["cases"]):
        raw = {"dataset_name": spec["dataset"], "dataset_format": "text", "logging_steps": 1, "learning_rate": 1e-4,
               **case["config"], "output_dir": str(Path(spec["out"]) / f"run-{index}")}
        config = SFTConfig.model_validate(raw)
        ref = resolve_model(config.base_model, cache_dir=cache)
        ensure_converted(ref)  # a bundled model is converted before the peak is reset: conversion is not training
        shape = ModelShape.from_config(read_model_config(ref.path), name=config.base_model)
        est = estimate(shape, config, device="cpu")
        # What an earlier run or a conversion freed and glibc kept is not this run's: hand it back first (CI once
        # read a tiny model's peak at 826 MB against 587 estimated; here 575-650).
        release_memory()
        before = rss_mb("self")
        reset_peak_rss("self")
        started = time.perf_counter()
        result = SFTTrainer(config, model_cache_dir=cache).train()
        measured = peak_rss_mb("self")
        print(json.dumps({"measured_mb": round(measured, 1), "before_mb": round(before, 1),
                          "estimated_mb": round(est.total / 2**20, 1),
                          "error": round(est.total / 2**20 / measured - 1, 4), "steps": result.global_step,
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1])
