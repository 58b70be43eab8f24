"""Benchmark harness of the SFT job service: ``make bench`` (full) or ``python -m bench --smoke`` (seconds).

Measures, against a real ``uvicorn`` server started the way ``make run`` starts it:

1. training overhead: the same demo run as a bare TRL script, as a service job and as a minimal PyTorch + PEFT
   loop (the limit: a plain forward + backward), alternating;
2. responsiveness: latency of GET /jobs/{id} and GET /jobs, idle and while a job trains;
3. submit and list latency with 0, 100 and 1,000 stored jobs;
4. server RSS after each of 5 sequential jobs;
5. tokens/s with packing and with gradient checkpointing;
6. the overhead ratio on a CUDA GPU with a larger model, when there is one;
7. the dashboard's first load (bytes, requests) and the time until a job page with 1,000 metric points
   has drawn its chart, in headless Chromium (``bench/page.py``);
8. latency of the OpenAI-compatible POST /v1/chat/completions (first token and total, streaming and not)
   against POST /api/sft/jobs/{id}/generate, same model and prompt;
9. what API keys cost: p50 of GET /api/sft/jobs/{id} on a server without keys and on one with keys;
10. the same job on the thread executor and on a local Ray (SFT_EXECUTOR=ray): steps/s, time to result and
   Ray's start-up cost (``bench/ray_bench.py``);
11. the fit planner's estimate against the measured peak of every training run above (``bench/planner_error.py``);
12. a full fine-tuning job sharded across 2 Ray workers with FSDP against the same job on 1 worker: peak memory
   per worker and steps/s (``bench/fsdp_bench.py``);
13. precision auto vs fp32 through the service and the limit, MFU against the device's peak, and the profile of a
   bf16 step (``bench/efficiency.py``);
14. DPO: a DPO job's steps/s against a bare TRL ``DPOTrainer`` script and a plain forward + backward of the
   same pairs (``bench/dpo.py``);
15. the demo job with and without per-checkpoint eval by a JSON-equality grader: training steps/s, the eval's own
   time, the score from the base to the last eval and the checkpoint kept (``bench/eval_bench.py``).

and writes ``docs/benchmarks.md`` (machine, one table per section, each target met or missed).
Full mode uses the bundled SmolLM2-135M-Instruct on the bundled json-extract data; ``--smoke`` uses a
tiny random model and tiny counts so the whole harness runs in ``make test``.

Each section is a module of this package (overhead, latency, scale, knobs, gpu, page, chat, auth, ray_bench), on
what they share (harness: the plan, ``Bench``; service: the server under test); targets.py judges the figures,
report.py writes them. This module only reads the options and runs the sections.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .auth import auth_section
from .chat import chat_section
from .dpo import dpo_section
from .efficiency import efficiency_section
from .eval_bench import eval_section
from .gpu import gpu_section
from .fsdp_bench import fsdp_section
from .harness import (BUNDLED_DATASET, BUNDLED_MODEL, COUNT_OPTIONS, DEFAULT_GPU_MODEL, ROOT, SECTIONS, SMOKE_SKIPS,
                      TRAIN_JSONL, Bench, Plan, base_env, log, prepare_bundled_model, smoke_plan)
from .knobs import knobs_section
from .latency import memory_and_latency
from .machine import cuda_info, machine_info
from .overhead import overhead_pairs
from .page import page_section
from .planner_error import planner_error
from .ray_bench import ray_section
from .report import render
from .scale import scale_section
from .targets import NOTES, targets
from .tiny_model import build_tiny_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model, tiny counts: seconds, not minutes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the Markdown report")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--sections", help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all; with "
                        f"--smoke all but {', '.join(SMOKE_SKIPS)})")
    parser.add_argument("--model-cache", type=Path,
                        default=Path(os.environ.get("SFT_MODEL_CACHE_DIR", ROOT / "data" / "models")),
                        help="where the bundled model is converted once (default: make run's, data/models)")
    parser.add_argument("--tiny-model", type=Path, help="smoke: an existing tiny model directory to use")
    parser.add_argument("--gpu-model", default=DEFAULT_GPU_MODEL,
                        help="the larger model of the GPU section (Hub id in the local cache, or a directory)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server and the bare script")
    parser.add_argument("--poll", type=float, help="poll a job's status every POLL seconds instead of following its SSE event stream "
                        "(shows what polling costs the training)")
    parser.add_argument("--keep-work", action="store_true", help="keep the work directory (server logs, outputs)")
    for name in COUNT_OPTIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help="override the mode's count")
    parser.add_argument("--scale-levels", help="comma-separated stored-job counts, e.g. 0,100,1000")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = smoke_plan() if args.smoke else Plan(mode="full")
    overridden = False
    for name in COUNT_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            setattr(plan, name, value)
            overridden = True
    if args.poll is not None:
        plan.poll = args.poll
        overridden = True
    if args.scale_levels:
        plan.scale_levels = tuple(int(x) for x in args.scale_levels.split(","))
        overridden = True
    default = [s for s in SECTIONS if not (args.smoke and s in SMOKE_SKIPS)]
    plan.sections = tuple(s for s in args.sections.split(",") if s) if args.sections else tuple(default)
    unknown = set(plan.sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
    if (overridden or set(plan.sections) != set(SECTIONS)) and not args.smoke:
        plan.mode = "reduced"

    started = time.perf_counter()
    machine = machine_info()
    threads = args.threads or (1 if args.smoke else None)
    env = base_env(threads)
    work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    log(f"{plan.mode} mode; work directory {work}")
    results: dict[str, Any] = {"mode": plan.mode, "plan": dataclasses.asdict(plan), "machine": machine,
                               "threads": threads, "section_seconds": {}}
    try:
        cuda = cuda_info(env) if "gpu" in plan.sections and not args.smoke else {
            "available": False, "reason": "not run in smoke mode" if args.smoke else "not run (--sections)"}
        # With a CUDA GPU every section trains in half precision, as a job on it would.
        precision = ("bf16" if cuda.get("bf16") else "fp16") if cuda.get("available") else "fp32"
        if args.smoke:
            model_dir = args.tiny_model or build_tiny_model(work / "tiny-model")
            model_ref = str(model_dir)
            model_label = "a tiny random Llama (bench/tiny_model.py)"
        else:
            model_dir = prepare_bundled_model(args.model_cache.resolve(), env)
            model_ref = BUNDLED_MODEL
            model_label = f"bundled {BUNDLED_MODEL} ({precision}, converted once into {model_dir})"
        bench = Bench(plan, model_ref=model_ref, model_dir=Path(model_dir), env=env, work=work,
                      cache_dir=args.model_cache.resolve(), dataset=BUNDLED_DATASET, data_path=TRAIN_JSONL,
                      precision=precision)
        results["model"] = model_label
        results["precision"] = precision
        results["config"] = bench.config(plan.steps)

        def timed(name: str, fn, *fn_args, **fn_kwargs):
            t = time.perf_counter()
            out = fn(*fn_args, **fn_kwargs)
            results["section_seconds"][name] = round(time.perf_counter() - t, 1)
            return out

        # Smoke: chat, knobs and auth's server without keys use the main server too; full mode gives each a fresh
        # server of its own.
        shares_main = {"chat", "knobs", "auth", "efficiency"} & set(plan.sections) if args.smoke else set()
        if {"memory", "overhead", "latency", "gpu"} & set(plan.sections) or shares_main:
            with bench.server("main") as server:
                if {"memory", "latency"} & set(plan.sections):
                    # The fresh server's first jobs: the first one also pays the server's imports.
                    results["memory"], results["latency"] = timed("memory and latency", memory_and_latency,
                                                                  bench, server)
                else:
                    log("warm-up job (imports and first model load in the server)")
                    server.run_job(bench.config(1), poll=plan.poll)
                if "overhead" in plan.sections:
                    results["overhead"] = timed("overhead", overhead_pairs, bench, server,
                                                pairs=plan.pairs, steps=plan.steps, tag="overhead")
                if "gpu" in plan.sections and cuda.get("available"):
                    results["gpu"] = timed("gpu", gpu_section, bench, server, cuda, args.gpu_model)
                if "chat" in shares_main:
                    results["chat"] = timed("chat", chat_section, bench, server)
                if "knobs" in shares_main:
                    results["knobs"] = timed("knobs", knobs_section, bench, server)
                if "auth" in shares_main:
                    results["auth"] = timed("auth", auth_section, bench, server)
                if "efficiency" in shares_main:
                    results["efficiency"] = timed("efficiency", efficiency_section, bench, server, warm_up=False)
        if "chat" in plan.sections and "chat" not in results:
            with bench.server("chat") as server:
                results["chat"] = timed("chat", chat_section, bench, server)
        if "knobs" in plan.sections and "knobs" not in results:
            results["knobs"] = timed("knobs", knobs_section, bench)
        if "gpu" not in results:
            results["gpu"] = {"status": "not run", "reason": cuda.get("reason")}
        if "scale" in plan.sections:
            with bench.server("scale") as server:
                results["scale"] = timed("scale", scale_section, bench, server)
        if "page" in plan.sections:
            results["page"] = timed("page", page_section, bench, repeats=2 if args.smoke else 5)
        if "auth" in plan.sections and "auth" not in results:
            results["auth"] = timed("auth", auth_section, bench)
        if "ray" in plan.sections:
            results["ray"] = timed("ray", ray_section, bench)
        if "fsdp" in plan.sections:
            results["fsdp"] = timed("fsdp", fsdp_section, bench)
        if {"overhead", "knobs"} & set(plan.sections):
            results["planner"] = planner_error(bench, results)  # no runs of its own: the runs above
        if "efficiency" in plan.sections and "efficiency" not in results:
            with bench.server("efficiency") as server:
                results["efficiency"] = timed("efficiency", efficiency_section, bench, server)
        if "dpo" in plan.sections:
            with bench.server("dpo") as server:
                results["dpo"] = timed("dpo", dpo_section, bench, server)
        if "eval" in plan.sections:
            results["eval"] = timed("eval", eval_section, bench)
    finally:
        if args.keep_work:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    results["duration_s"] = round(time.perf_counter() - started, 1)
    machine["load_end"] = os.getloadavg()
    results["targets"] = targets(results)
    results["notes"] = {k: v for k, v in NOTES.items() if k in results and not args.smoke}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    missed = [t for t in results["targets"] if not t["met"]]
    log(f"done in {results['duration_s']:.0f} s: {len(results['targets']) - len(missed)} targets met, "
        f"{len(missed)} missed; report {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
