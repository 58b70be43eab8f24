"""Section 11 of ``make bench``: a model sharded across 2 Ray workers with FSDP against the same job on 1 worker.

A Ray head is started on this machine (2 CPUs: one per worker), and one server with ``SFT_EXECUTOR=ray`` trains
the same full fine-tuning job of a random Llama twice: on 1 worker (which holds the whole model) and on 2 workers
with ``distributed_strategy: fsdp`` (each holds half of its parameters, gradients and AdamW state), with the
same global batch. The model is built for the section (``bench/tiny_model.py`` at hidden 1024, 16 layers: ~150M
parameters, a 320-token vocabulary and short rows), so that what sharding divides dominates a worker's memory:
full fine-tuning in fp32 holds 16 bytes a parameter (weights 4, gradients 4, AdamW's two moments 8), ~2.4 GB here,
against ~0.5 GB of imports (torch, transformers, Ray) every worker pays and activations of a few MB. LoRA would not
show it: its trainable parameters, gradients and optimizer state are a few percent of the model.

Peak memory per worker is each worker process' peak RSS (``ru_maxrss``), measured on the workers by the trainer
and kept in the job's ``result.parallelism.ranks`` (the 1-worker job trains inside its job actor, a fresh
process too). Steps/s is ``global_step ÷ train_runtime``, timed where the job trains. ``runs[...]["peak_rss_mb"]``
per run is what a memory planner's estimate can be compared with.
"""

from __future__ import annotations

import os
from typing import Any

from .ray_head import LocalRayHead
from .tiny_model import build_tiny_model

#: The section's model: hidden size and layers of the random Llama (~150M parameters); smoke: the tiny one.
FULL_SHAPE = {"hidden": 1024, "layers": 16}
SMOKE_SHAPE = {"hidden": 64, "layers": 2}


def fsdp_section(bench) -> dict[str, Any]:
    smoke = bench.plan.mode == "smoke"
    shape = SMOKE_SHAPE if smoke else FULL_SHAPE
    model_dir = build_tiny_model(bench.work / "fsdp-model", **shape)
    steps = bench.plan.fsdp_steps
    base = {"base_model": str(model_dir), "dataset_name": bench.dataset, "max_steps": steps, "use_lora": False,
            "learning_rate": 1e-4, "max_length": 128, "seed": 42, "precision": "fp32", "num_cpus_per_worker": 1}
    configs = {"1 worker": {**base, "per_device_train_batch_size": 2},
               "2 workers fsdp": {**base, "per_device_train_batch_size": 1, "num_workers": 2,
                                  "distributed_strategy": "fsdp"}}
    head = LocalRayHead(num_cpus=2).start()
    runs: dict[str, Any] = {}
    try:
        # Ray sets each worker's OMP_NUM_THREADS to its CPUs: one thread per worker on both sides.
        with bench.server("fsdp", executor="ray", ray_address=head.address) as server:
            for name, config in configs.items():
                run = server.run_job(config, poll=bench.plan.poll)
                job = run.job
                if job["status"] != "completed":
                    raise RuntimeError(f"the {name} job ended {job['status']}: {job.get('error')}")
                result = job["result"]
                ranks = result["parallelism"]["ranks"]
                runs[name] = {
                    "global_step": result["global_step"],
                    "train_runtime_s": result["train_runtime"],
                    "steps_per_s": result["global_step"] / result["train_runtime"],
                    "ttr_s": round(run.wall_s, 2),
                    "parameters": ranks[0]["parameters"],
                    "local_parameters": [rank["local_parameters"] for rank in ranks],
                    "peak_rss_mb_per_worker": [rank["peak_rss_mb"] for rank in ranks],
                    "peak_rss_mb": max(rank["peak_rss_mb"] for rank in ranks),
                    "fsdp_active": result["parallelism"]["fsdp_active"],
                    "other_cores": run.other_cores,
                    "config": config,
                }
    finally:
        head.stop()
    one, two = runs["1 worker"], runs["2 workers fsdp"]
    return {
        "steps": steps,
        "shape": shape,
        "cores": os.cpu_count() or 1,
        "runs": runs,
        "ratio_peak_rss": two["peak_rss_mb"] / one["peak_rss_mb"],
        "ratio_steps_per_s": two["steps_per_s"] / one["steps_per_s"],
    }
