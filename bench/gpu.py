"""Section 6: section 1 again on a CUDA GPU with a larger model, when there is one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .harness import Bench, log
from .overhead import overhead_pairs
from .service import Service


def gpu_section(bench: Bench, server: Service, cuda: dict, gpu_model: str) -> dict:
    """Section 1 again with ``gpu_model``, in the run's precision (bf16 or fp16: ``main`` chose it)."""
    local = local_model_dir(gpu_model, bench.env)
    if local is None:
        return {"status": "not run", "gpu": cuda.get("name"),
                "reason": f"{gpu_model} is neither a model directory nor in the local Hugging Face cache "
                "(download it first, or pass --gpu-model)"}
    log(f"gpu: {gpu_model} ({local}), {bench.precision}")
    result = overhead_pairs(bench, server, pairs=bench.plan.pairs, steps=bench.plan.steps, tag="gpu", model=local)
    return {"status": "run", "gpu": cuda.get("name"), "model": gpu_model, "precision": bench.precision, **result}


def local_model_dir(model: str, env: dict[str, str]) -> str | None:
    """``model`` as a local directory: itself, or its snapshot in the Hugging Face cache (no download)."""
    if Path(model).is_dir():
        return str(Path(model).resolve())
    code = ("import sys; from huggingface_hub import snapshot_download; "
            "print(snapshot_download(sys.argv[1], local_files_only=True))")
    out = subprocess.run([sys.executable, "-c", code, model], env=env, capture_output=True, text=True)
    path = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
    return path if path and (Path(path) / "config.json").exists() else None
