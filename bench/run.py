"""Benchmark harness of the SFT job service: ``make bench`` (full) or ``bench/run.py --smoke`` (seconds).

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
   Ray's start-up cost (``bench/ray_bench.py``).

and writes ``docs/benchmarks.md`` (machine, one table per section, each target met or missed).
Full mode uses the bundled SmolLM2-135M-Instruct on the bundled json-extract data; ``--smoke`` uses a
tiny random model and tiny counts so the whole harness runs in ``make test``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from bare_sft import RESULT_PREFIX  # noqa: E402
from page import page_section  # noqa: E402
from ray_bench import ray_section  # noqa: E402
from report import DISTURBED_CORES, render  # noqa: E402
from service import TERMINAL, JobRun, OtherLoad, Service  # noqa: E402
from stats import median, summary_ms  # noqa: E402

DEMO_YAML = ROOT / "backend" / "config" / "examples" / "demo.yaml"
#: demo.yaml fields and the bench/bare_sft.py options that mirror them (base_model, dataset_name and max_steps
#: are given separately). A demo.yaml field outside these stops the benchmark: the baseline would not mirror it.
BARE_OPTIONS = {"per_device_train_batch_size": "--batch-size", "learning_rate": "--learning-rate",
                "max_length": "--max-length", "seed": "--seed", "lora_r": "--lora-r", "lora_alpha": "--lora-alpha",
                "lora_dropout": "--lora-dropout"}
BUNDLED_MODEL = "smollm2-135m-instruct"
BUNDLED_DATASET = "bundled:json-extract"
TRAIN_JSONL = ROOT / "backend" / "app" / "demo" / "json_extract" / "train.jsonl"
DEFAULT_GPU_MODEL = "HuggingFaceTB/SmolLM2-360M-Instruct"

SECTIONS = ("overhead", "latency", "scale", "memory", "knobs", "gpu", "page", "chat", "auth", "ray")
#: The Plan counts that a command-line option (--pairs, --memory-jobs...) overrides.
COUNT_OPTIONS = ("pairs", "steps", "memory_jobs", "memory_steps", "knob_steps", "latency_idle_requests",
                 "scale_submits", "scale_lists", "chat_rounds", "auth_requests", "ray_steps")

# Targets of the issues.
TARGET_STEPS_RATIO = 0.97  # service ÷ bare TRL steps/s on a CUDA GPU (issue 11 measured on CPU only)
TARGET_STEPS_VS_BARE_CPU = 1.25  # on CPU the service trains with ordinary cross-entropy (loss_path auto)
TARGET_STEPS_VS_LIMIT = 0.95
TARGET_TTR_VS_BARE = 0.8
TARGET_RSS_VS_BARE = 1.0
TARGET_EXTRA_TTR_S = 2.0
TARGET_P99_TRAINING_MS = 25.0
TARGET_P99_FACTOR = 3.0
TARGET_SUBMIT_P50_MS = 10.0
TARGET_LIST_P50_MS = 20.0
TARGET_RSS_FACTOR = 1.1
TARGET_CHAT_RATIO = 1.1
TARGET_AUTH_P50_MS = 1.0  # GET /jobs/{id} p50 with a key minus without keys
TARGET_RAY_STEPS_RATIO = 0.9  # Ray executor ÷ thread executor steps/s, same job (issue 13)

#: Causes found by profiling (py-spy) for targets this harness has missed on the reference machine.
#: Appended to a missed target's "why" line; the measured figures come first.
_CPU_CONTENTION = (
    "Cause found by profiling (py-spy, and A/B runs of this section on the 2-core reference machine): torch "
    "trains with one intra-op thread per core, so while a job trains both cores are busy and the API's threads "
    "wait for CPU time. It is not the GIL: a 1 ms switch interval (sys.setswitchinterval) changed nothing. "
    "Before job threads ran at niceness 10 (app.api.sft_job_manager.JOB_THREAD_NICENESS), p99 was 13-17 ms "
    "(3.5-4.2x idle); renicing the training threads to +10 by hand gave 8.4-9.0 ms at unchanged steps/s, and "
    "OMP_NUM_THREADS=1 gave 5.8 ms but slower training. If this is missed again, check that the job thread and "
    "its OpenMP workers run at niceness 10 (ps -L -o tid,ni,pcpu -p SERVER_PID) and that no other process "
    "competes for the cores (the other-load figure above)."
)
_POLLING = (
    "Causes found by profiling: the service's own per-step work does not show (py-spy: its callbacks are "
    "absent from the job thread's samples). Polling does: a GET /api/sft/jobs/{id} costs about 2.5 ms of API-"
    "thread time while a job trains, and with torch's OpenMP threads on both cores every preemption stalls "
    "the step (20 polls a second: see section 1's profiling note for what that cost). If the benchmark ran "
    "with --poll, that is the cost shown. Otherwise check the other-load column: this VM's run-to-run noise "
    "(identical runs ranged 0.23-0.28 steps/s) is as large as the target's margin."
)
KNOWN_CAUSES: dict[str, str] = {
    "steps_ratio": _POLLING,
    "ttr": "The training part of the gap is the steps/s gap above.",
    "ttr_vs_bare": "The training part of the gap is the steps/s gap above.",
    "steps_vs_limit": _POLLING,
    "gpu_ratio": _POLLING,
    "p99_job": _CPU_CONTENTION,
    "p99_list": _CPU_CONTENTION,
    "p99_factor_job": _CPU_CONTENTION,
    "p99_factor_list": _CPU_CONTENTION,
}

#: What profiling found beyond the targets, shown under the sections they explain (not re-measured each run).
NOTES: dict[str, str] = {
    "overhead": (
        "Per forward + backward of a demo batch (one thread, CPU time, the 2-core reference machine): 9.97 s "
        "through TRL 1.16's fused LM head, which on CPU projects every position (prompt and padding included) "
        "and computes entropy and top-1 for each; 7.65 s with cross-entropy over the full logits; 6.59 s with "
        "cross-entropy over the trained tokens only, which the service (loss_path auto on CPU) and the limit "
        "train with. The service's per-step bookkeeping (progress, metrics and events into SQLite, a line of "
        "log.jsonl) costs 0.4 ms of CPU a step, under 0.1 % of one, so it is not batched. "
        "Earlier runs of this harness polled the job's status 20 times a second instead of following its "
        "event stream and measured 0.90 steps/s ratio and +3.7 s to result (both missed): with the job "
        "threads at niceness 10, so that API requests stay fast while a job trains, every poll takes CPU "
        "from the training step. A client that polls once a second, or follows the SSE stream as this "
        "benchmark does now, does not pay it; `bench/run.py --poll 0.05` measures it again."
    ),
    "latency": (
        "Full garbage collections over the server's heap (~500k objects once torch, transformers and TRL "
        "are imported) held the GIL for 0.2-0.5 s each: accelerate's `Accelerator.free_memory()` when "
        "`Trainer.train` starts and the service's `gc.collect()` when a job ends (py-spy `--gil`); requests "
        "waited up to 575 ms outside the training phase. `app.sft.models.load_ml_stack` now freezes the "
        "import-time objects (`gc.freeze()`) before the first model is created, so later collections skip "
        "them (0.25 s to microseconds in isolation). What remains slow is the first job of a server: it "
        "imports the stack in its thread and runs the one collection before the freeze."
    ),
    "memory": (
        "Before `release_memory` called `malloc_trim(0)`, no model stayed alive but the RSS after a job sat "
        "at about 2.1 GiB (glibc kept the heap the job freed); calling it by hand in the server (gdb) took "
        "it to 573 MiB. The service now does it after every job."
    ),
    "chat": (
        "A streamed completion runs `model.generate` in a thread of its own (transformers' "
        "`TextIteratorStreamer`); /generate and the non-streamed /v1 call run it in the server's long-lived "
        "request threads. On the 2-core machine under load, the same generation ran 4-7× faster in a fresh "
        "thread (tiny model in one process: 1.6 s in the main thread, 0.2 s in a new one; a 64×64 matmul loop "
        "2.7 s vs 0.16 s), so the streamed total can be well under /generate's. The non-streamed /v1 call "
        "runs the same code as /generate (`app.sft.generation._complete`); its ratio is that path's noise."
    ),
    "knobs": (
        "Packing is slower per token here with bare TRL as well (bench/bare_sft.py --packing: 95 vs 161 "
        "tokens/s, peak RSS 7.9 vs 3.3 GiB): on CPU, rows packed to 256 tokens cost more than the short padded "
        "rows of this dataset save. It is TRL and torch on this machine, not the service."
    ),
}


@dataclasses.dataclass
class Plan:
    """How much of everything to run."""

    mode: str
    # At ~3-5 s a step on 2 cores, the 3 rounds of 3 runs of 20 steps take about 10 of make bench's 15 minutes;
    # the other sections run as few steps as their figures need.
    pairs: int = 3
    steps: int = 20
    latency_idle_requests: int = 300
    latency_interval: float = 0.02
    memory_jobs: int = 5
    memory_steps: int = 3
    knob_steps: int = 4
    scale_levels: tuple[int, ...] = (0, 100, 1000)
    scale_submits: int = 30
    scale_lists: int = 60
    chat_rounds: int = 10
    chat_tokens: int = 32
    auth_requests: int = 2000
    ray_steps: int = 10
    #: None: wait for a job by following its SSE event stream; seconds: poll GET /jobs/{id} that often.
    poll: float | None = None
    sections: tuple[str, ...] = SECTIONS


def smoke_plan() -> Plan:
    return Plan(mode="smoke", pairs=1, steps=2, latency_idle_requests=15, latency_interval=0.01,
                memory_jobs=2, memory_steps=8, knob_steps=2, scale_levels=(0, 5, 10), scale_submits=3,
                scale_lists=5, chat_rounds=2, chat_tokens=8, auth_requests=40, ray_steps=4)


# Machine


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {name: pkg(name) for name in ("torch", "transformers", "trl", "peft", "fastapi", "uvicorn")},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": (commit or "unknown") + (" (with uncommitted changes)" if dirty else ""),
        "load_start": os.getloadavg(),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cuda_info(env: dict[str, str]) -> dict[str, Any]:
    """Whether torch sees a CUDA GPU (asked in a subprocess, so this process never imports torch)."""
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()):
        return {"available": False, "reason": "no CUDA GPU (no NVIDIA driver)"}
    code = ("import json, torch; ok = torch.cuda.is_available(); print(json.dumps({'available': ok, "
            "'name': torch.cuda.get_device_name(0) if ok else None, "
            "'bf16': bool(ok and torch.cuda.is_bf16_supported())}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable GPU
        return {"available": False, "reason": f"no CUDA GPU (torch check failed: {exc})"}
    if not info["available"]:
        info["reason"] = "no CUDA GPU (torch.cuda.is_available() is false)"
    return info


# Set-up


def base_env(threads: int | None) -> dict[str, str]:
    """The environment of the server and of the bare script: the same for both."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFT_")}
    env.update(HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "backend"), env.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    return env


def prepare_bundled_model(cache_dir: Path, env: dict[str, str]) -> Path:
    """Convert the bundled GGUF once into ``cache_dir`` (as the service does) and return the directory."""
    target = cache_dir / BUNDLED_MODEL
    if (target / "config.json").exists():
        return target
    log(f"converting the bundled model into {target} (once)")
    code = ("import sys; from pathlib import Path; from app.sft.models import resolve_model, ensure_converted; "
            f"ensure_converted(resolve_model({BUNDLED_MODEL!r}, cache_dir=Path(sys.argv[1])))")
    subprocess.run([sys.executable, "-c", code, str(cache_dir)], env=env, check=True, cwd=ROOT)
    return target


def build_tiny_model(path: Path) -> Path:
    sys.path.insert(0, str(ROOT / "backend" / "tests"))
    sys.path.insert(0, str(ROOT / "backend"))
    from factories import build_tiny_model as build  # the test suite's tiny random Llama

    return build(path)


def demo_config() -> dict[str, Any]:
    """The demo job (backend/config/examples/demo.yaml), the config every section trains."""
    import yaml

    config = yaml.safe_load(DEMO_YAML.read_text())
    unmirrored = set(config) - set(BARE_OPTIONS) - {"base_model", "dataset_name", "max_steps"}
    if unmirrored:
        raise SystemExit(f"{DEMO_YAML} sets {', '.join(sorted(unmirrored))}, which bench/bare_sft.py does not "
                         "take: add it there (and to BARE_OPTIONS) so that both sides train the same thing")
    return config


class Bench:
    """Everything one benchmark run needs: the plan, the model, the environment, a work directory."""

    def __init__(self, plan: Plan, *, model_ref: str, model_dir: Path, env: dict[str, str], work: Path,
                 cache_dir: Path, dataset: str, data_path: Path, precision: str):
        self.plan = plan
        self.model_ref = model_ref  # what the service is given (the bundled alias in full mode)
        self.model_dir = model_dir  # the same model as a directory, for the bare script
        self.env = env
        self.work = work
        self.cache_dir = cache_dir
        self.dataset = dataset
        self.data_path = data_path
        self.precision = precision
        self.demo = demo_config()
        self._servers = 0

    def config(self, steps: int, **overrides: Any) -> dict[str, Any]:
        """The demo job (backend/config/examples/demo.yaml) on this run's model, with ``steps`` steps."""
        return {**self.demo, "base_model": self.model_ref, "dataset_name": self.dataset, "max_steps": steps,
                "precision": self.precision, **overrides}

    def server(self, name: str, **settings: Any) -> Service:
        self._servers += 1
        return Service(self.work / f"server-{self._servers}-{name}", env=self.env, settings={
            "max_concurrent_jobs": 1,
            "model_cache_dir": str(self.cache_dir),
            "dataset_roots": [str(self.work)],
            # The bench's own configs name models anywhere on this machine (--tiny-model, --gpu-model, the
            # Hugging Face cache): it trusts its own paths.
            "model_roots": ["/"],
            **settings,
        })

    def run_bare(self, steps: int, *, tag: str, model: str | None = None, script: str = "bare_sft.py") -> dict:
        """Run bench/bare_sft.py (or ``script``, which takes the same options: limit_sft.py); ``ttr_s`` is launch
        to its JSON line."""
        name = script.removesuffix("_sft.py")
        out = self.work / f"{name}-{tag}"
        cmd = [sys.executable, str(BENCH / script), "--model", model or str(self.model_dir),
               "--output-dir", str(out), "--data", str(self.data_path), "--max-steps", str(steps),
               "--precision", self.precision]
        for field, option in BARE_OPTIONS.items():
            if field in self.demo:
                cmd += [option, str(self.demo[field])]
        stderr = (self.work / f"{name}-{tag}.log").open("w")
        # Other than the bare script (a child: counted once it has been waited for) and this benchmark.
        other = OtherLoad(lambda: _children_cpu() + time.process_time())
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        result = None
        try:
            for line in process.stdout:
                if line.startswith(RESULT_PREFIX):
                    result = json.loads(line.removeprefix(RESULT_PREFIX))
                    result["ttr_s"] = time.perf_counter() - started
        except BaseException:
            process.kill()
            raise
        finally:
            process.wait()
        stderr.close()
        if result is not None:
            result["other_cores"] = other.cores()
        if process.returncode != 0 or result is None:
            tail = (self.work / f"{name}-{tag}.log").read_text()[-2000:]
            raise RuntimeError(f"bench/{script} failed ({process.returncode}):\n{tail}")
        return result


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# 1. Training overhead


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


# 2. Latency


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


# 3. Scale


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


def auth_section(bench: Bench) -> dict:
    """p50 of GET /api/sft/jobs/{id} on a server without keys and on one with SFT_AUTH=keys (sending its key),
    in alternating blocks so that both see the same machine."""
    off, keyed = bench.server("auth-off"), bench.server("auth-keys", auth="keys")
    made = subprocess.run([sys.executable, "-m", "app", "keys", "create", "--name", "bench"],
                          env={**keyed.env, "PYTHONPATH": str(ROOT / "backend")}, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        raise RuntimeError(f"python -m app keys create failed: {made.stderr[-2000:]}")
    with off, keyed:
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


# 5. Knobs


def knobs_section(bench: Bench) -> dict:
    """The demo job with both knobs off, with packing, with gradient checkpointing: each the first job of a
    fresh server, so that its peak RSS is its own (a server keeps the heap its earlier jobs freed)."""
    plan = bench.plan
    runs = []
    shared = bench.server("knobs").start() if plan.mode == "smoke" else None  # smoke: seconds matter more
    try:
        for name, overrides in (("baseline", {}), ("packing", {"packing": True}),
                                ("gradient checkpointing", {"gradient_checkpointing": True})):
            log(f"knobs: {name}")
            server = shared or bench.server(f"knobs-{name.split()[0]}").start()
            try:
                run = server.run_job(bench.config(plan.knob_steps, **overrides), poll=plan.poll, sample_rss=True)
            finally:
                if server is not shared:
                    server.stop()
            runs.append({"name": name, "packing": bool(overrides.get("packing")),
                         "gradient_checkpointing": bool(overrides.get("gradient_checkpointing")),
                         **service_run_summary(run)})
    finally:
        if shared is not None:
            shared.stop()
    return {"steps": plan.knob_steps, "runs": runs}


# 6. GPU


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


# 7. Chat through the OpenAI-compatible API


CHAT_PROMPT = [{"role": "user", "content": "Extract the contact as JSON: Ada Lovelace, 36, lives in London."}]


def chat_section(bench: Bench, server: Service) -> dict:
    """The same greedy completion through /generate, /v1/chat/completions and its stream, alternating.

    /generate answers once the completion is whole, so its first token is its total. The streamed
    first token is the first chunk with text (transformers' streamer hands over whole words).
    """
    plan = bench.plan
    run = server.run_job(bench.config(1), poll=plan.poll)
    job = server.client.get(f"/v1/fine_tuning/jobs/{run.job_id}").json()
    model = job["fine_tuned_model"]
    generate = {"messages": CHAT_PROMPT, "max_new_tokens": plan.chat_tokens}
    chat = {"model": model, "messages": CHAT_PROMPT, "max_completion_tokens": plan.chat_tokens, "temperature": 0}
    log(f"chat: {plan.chat_rounds} rounds of /generate, /v1/chat/completions, and its stream ({model})")

    def post(path: str, body: dict) -> tuple[float, dict]:
        started = time.perf_counter()
        response = server.client.post(path, json=body)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text}")
        return elapsed, response.json()

    def stream() -> tuple[float, float, str]:
        started, first, text = time.perf_counter(), None, ""
        with server.client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content")
                if delta and first is None:
                    first = time.perf_counter() - started
                text += delta or ""
        return first if first is not None else time.perf_counter() - started, time.perf_counter() - started, text

    post(f"/api/sft/jobs/{run.job_id}/generate", generate)  # loads the model once, for all three
    times: dict[str, list[float]] = {"generate": [], "chat": [], "stream_first": [], "stream_total": []}
    same = True
    for _ in range(plan.chat_rounds):
        elapsed, generated = post(f"/api/sft/jobs/{run.job_id}/generate", generate)
        times["generate"].append(elapsed)
        elapsed, answer = post("/v1/chat/completions", chat)
        times["chat"].append(elapsed)
        first, total, text = stream()
        times["stream_first"].append(first)
        times["stream_total"].append(total)
        same = same and generated["completion"] == answer["choices"][0]["message"]["content"] == text
    medians = {key: median(values) * 1000 for key, values in times.items()}
    return {"model": model, "rounds": plan.chat_rounds, "tokens": plan.chat_tokens,
            "completion_tokens": generated["completion_tokens"], "same_text": same, "median_ms": medians,
            "ratio_chat": medians["chat"] / medians["generate"],
            "ratio_stream_total": medians["stream_total"] / medians["generate"],
            "ratio_stream_first": medians["stream_first"] / medians["generate"]}


# Targets


def targets(results: dict) -> list[dict[str, Any]]:
    """One row per target of the issue: figure, value, target, met, and why when missed."""
    rows: list[dict[str, Any]] = []

    def add(key: str, section: str, figure: str, value: str, target: str, met: bool, why: str | None = None):
        if not met:
            why = " ".join(filter(None, [why, KNOWN_CAUSES.get(key)]))
        rows.append({"key": key, "section": section, "figure": figure, "value": value, "target": target,
                     "met": met, "why": None if met else why})

    o = results.get("overhead")
    if o:
        a, b, c = o["median_a_steps_per_s"], o["median_b_steps_per_s"], o["median_c_steps_per_s"]
        per_step_ms = (1 / b - 1 / a) * 1000
        # On CPU the service trains with ordinary cross-entropy, bare TRL through its fused head (issue 11).
        vs_bare = TARGET_STEPS_VS_BARE_CPU if results.get("precision", "fp32") == "fp32" else TARGET_STEPS_RATIO
        add("steps_ratio", "overhead", "steps/s, service ÷ bare TRL (median ratio)", f"{o['median_ratio']:.3f}",
            f"≥ {vs_bare}", o["median_ratio"] >= vs_bare,
            f"service {b:.3f} vs bare {a:.3f} steps/s: {per_step_ms:+.0f} ms per step.")
        add("steps_vs_limit", "overhead", "steps/s, service ÷ limit (median ratio)",
            f"{o['median_limit_ratio']:.3f}", f"≥ {TARGET_STEPS_VS_LIMIT}",
            o["median_limit_ratio"] >= TARGET_STEPS_VS_LIMIT,
            f"service {b:.3f} vs limit {c:.3f} steps/s: {(1 / b - 1 / c) * 1000:+.0f} ms per step.")
        add("ttr_vs_bare", "overhead", "time to adapter, service ÷ bare TRL (median ratio)",
            f"{o['median_ttr_ratio']:.3f}", f"≤ {TARGET_TTR_VS_BARE}", o["median_ttr_ratio"] <= TARGET_TTR_VS_BARE,
            f"service {o['median_b_ttr_s']:.1f} s vs bare {o['median_a_ttr_s']:.1f} s.")
        rss_a, rss_b = o["median_a_peak_rss_mb"], o["median_b_peak_rss_mb"]
        if rss_a and rss_b:
            add("rss_vs_bare", "overhead", "peak RSS during the job, service ÷ bare TRL (medians)",
                f"{rss_b / rss_a:.3f}", f"≤ {TARGET_RSS_VS_BARE}", rss_b / rss_a <= TARGET_RSS_VS_BARE,
                f"service {rss_b:.0f} MiB (the server process: imports and what it keeps between jobs included) "
                f"vs bare {rss_a:.0f} MiB.")
        train_a = median([r["a"]["train_runtime"] for r in o["runs"]])
        train_b = median([r["b"]["train_runtime"] for r in o["runs"]])
        add("ttr", "overhead", "time to result, service − bare (median)", f"{o['median_extra_ttr_s']:+.1f} s",
            f"≤ +{TARGET_EXTRA_TTR_S:.0f} s", o["median_extra_ttr_s"] <= TARGET_EXTRA_TTR_S,
            f"service {o['median_b_ttr_s']:.1f} s vs bare {o['median_a_ttr_s']:.1f} s: training (train_runtime) "
            f"{train_b - train_a:+.1f} s, everything else "
            f"{(o['median_b_ttr_s'] - train_b) - (o['median_a_ttr_s'] - train_a):+.1f} s (service: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in o["median_b_stages"].items() if k != "build_train_save_s")
            + "; bare: " + ", ".join(f"{k} {v:.1f} s" for k, v in o["median_a_stages"].items()
                                     if k != "train_wall_s") + ").")
    lat = results.get("latency")
    if lat:
        for key, name in (("job", "GET /api/sft/jobs/{id}"), ("list", "GET /api/sft/jobs")):
            idle, training = lat["idle"][key], lat["training"][key]
            if not training["n"]:
                continue
            slowest = "; ".join(f"{v['ms']:.0f} ms (job {v['job']}, {v['into_training_s']:.1f} s into training)"
                                for v in training["slowest"][:3])
            add(f"p99_{key}", "latency", f"{name} p99 while training", f"{training['p99']:.1f} ms",
                f"< {TARGET_P99_TRAINING_MS:.0f} ms", training["p99"] < TARGET_P99_TRAINING_MS,
                f"p50 {training['p50']:.1f} ms, p95 {training['p95']:.1f} ms over {training['n']} requests; "
                f"slowest: {slowest}.")
            factor = training["p99"] / idle["p99"]
            add(f"p99_factor_{key}", "latency", f"{name} p99 training ÷ idle", f"{factor:.1f}×",
                f"≤ {TARGET_P99_FACTOR:.0f}×", factor <= TARGET_P99_FACTOR,
                f"idle p99 {idle['p99']:.1f} ms, training p99 {training['p99']:.1f} ms.")
    a = results.get("auth")
    if a:
        add("auth_cost", "auth", "GET /jobs/{id} p50 with a key − without keys", f"{a['p50_cost_ms']:+.2f} ms",
            f"< {TARGET_AUTH_P50_MS:.0f} ms", a["p50_cost_ms"] < TARGET_AUTH_P50_MS,
            f"p50 {a['keys']['p50']:.2f} ms with a key vs {a['off']['p50']:.2f} ms without keys.")
    s = results.get("scale")
    if s:
        for level in s["levels"]:
            sub = level["submit"]
            add(f"submit_{level['level']}", "scale", f"POST /train p50 with {level['level']:,} stored jobs",
                f"{sub['p50']:.1f} ms", f"< {TARGET_SUBMIT_P50_MS:.0f} ms", sub["p50"] < TARGET_SUBMIT_P50_MS,
                f"p95 {sub['p95']:.1f} ms over {sub['n']} submits (pre-flight of the model and dataset included).")
        top = s["levels"][-1]
        add("list_top", "scale", f"GET /jobs?limit=100 p50 with {top['level']:,} stored jobs",
            f"{top['list']['p50']:.1f} ms", f"< {TARGET_LIST_P50_MS:.0f} ms",
            top["list"]["p50"] < TARGET_LIST_P50_MS,
            f"p95 {top['list']['p95']:.1f} ms; with {s['levels'][0]['level']} jobs p50 "
            f"{s['levels'][0]['list']['p50']:.1f} ms.")
    m = results.get("memory")
    if m and len(m["after_mb"]) >= 2:
        first, last = m["after_mb"][0], m["after_mb"][-1]
        growth = [round(b - a) for a, b in zip(m["after_mb"], m["after_mb"][1:])]
        add("rss", "memory", f"RSS after job {len(m['after_mb'])} ÷ after job 1", f"{last / first:.3f}",
            f"≤ {TARGET_RSS_FACTOR}", last / first <= TARGET_RSS_FACTOR,
            f"{first:.0f} MiB after job 1, {last:.0f} MiB after job {len(m['after_mb'])}; "
            f"change per job {growth} MiB.")
    c = results.get("chat")
    if c:
        ms = c["median_ms"]
        for key, figure, value in (("chat_ratio", "POST /v1/chat/completions ÷ /generate (median total)",
                                    c["ratio_chat"]),
                                   ("chat_stream_ratio", "streamed /v1/chat/completions ÷ /generate (median total)",
                                    c["ratio_stream_total"])):
            add(key, "chat", figure, f"{value:.2f}×", f"≤ {TARGET_CHAT_RATIO}×", value <= TARGET_CHAT_RATIO,
                f"/generate {ms['generate']:.0f} ms, /v1 {ms['chat']:.0f} ms, streamed {ms['stream_total']:.0f} ms "
                f"(first token {ms['stream_first']:.0f} ms) for {c['completion_tokens']} tokens.")
    r = results.get("ray")
    if r:
        thread, ray = r["runs"]["thread"], r["runs"]["ray"]
        add("ray_steps_ratio", "ray", "steps/s, Ray executor ÷ thread executor", f"{r['ratio_steps_per_s']:.3f}",
            f"≥ {TARGET_RAY_STEPS_RATIO}", r["ratio_steps_per_s"] >= TARGET_RAY_STEPS_RATIO,
            f"Ray {ray['steps_per_s']:.3f} vs thread {thread['steps_per_s']:.3f} steps/s; time to result "
            f"{ray['ttr_s']:.1f} vs {thread['ttr_s']:.1f} s.")
    g = results.get("gpu")
    if g and g.get("status") == "run":
        add("gpu_ratio", "gpu", f"GPU steps/s, service ÷ bare ({g['model']})", f"{g['median_ratio']:.3f}",
            f"≥ {TARGET_STEPS_RATIO}", g["median_ratio"] >= TARGET_STEPS_RATIO,
            f"service {g['median_b_steps_per_s']:.3f} vs bare {g['median_a_steps_per_s']:.3f} steps/s.")
    return rows


def median_stages(stage_dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in stage_dicts[0] if all(k in d for d in stage_dicts)] if stage_dicts else []
    return {k: median([d[k] for d in stage_dicts]) for k in keys}


# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model, tiny counts: seconds, not minutes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the Markdown report")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {', '.join(SECTIONS)}")
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
    plan.sections = tuple(s for s in args.sections.split(",") if s)
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
            model_label = "a tiny random Llama (backend/tests/factories.py)"
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

        if {"memory", "overhead", "latency", "gpu"} & set(plan.sections):
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
        if "chat" in plan.sections:
            with bench.server("chat") as server:
                results["chat"] = timed("chat", chat_section, bench, server)
        if "knobs" in plan.sections:
            results["knobs"] = timed("knobs", knobs_section, bench)
        if "gpu" not in results:
            results["gpu"] = {"status": "not run", "reason": cuda.get("reason")}
        if "scale" in plan.sections:
            with bench.server("scale") as server:
                results["scale"] = timed("scale", scale_section, bench, server)
        if "page" in plan.sections:
            results["page"] = timed("page", page_section, bench, repeats=2 if args.smoke else 5)
        if "auth" in plan.sections:
            results["auth"] = timed("auth", auth_section, bench)
        if "ray" in plan.sections:
            results["ray"] = timed("ray", ray_section, bench)
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
