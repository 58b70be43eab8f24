"""What every section shares: the plan (how much to run), the run's model, environment and work directory
(``Bench``), its servers and its bare-script runs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .bare_sft import RESULT_PREFIX
from .service import OtherLoad, Service

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

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

SECTIONS = ("overhead", "latency", "scale", "memory", "knobs", "gpu", "page", "chat", "auth", "ray", "fsdp",
            "efficiency", "dpo", "eval")
#: Sections --smoke runs only when --sections names them: fsdp's smoke run would time little but Ray's start-up
#: (the test suite trains FSDP jobs in backend/tests/api/test_api_fsdp.py).
SMOKE_SKIPS = ("fsdp",)
#: The Plan counts that a command-line option (--pairs, --memory-jobs...) overrides.
COUNT_OPTIONS = ("pairs", "steps", "memory_jobs", "memory_steps", "knob_steps", "latency_idle_requests",
                 "scale_submits", "scale_lists", "chat_rounds", "auth_requests", "ray_steps", "fsdp_steps",
                 "dpo_steps")


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
    #: Steps of each job of the fsdp section (~150M parameters, full fine-tuning: a few seconds a step on CPU).
    fsdp_steps: int = 4
    #: The eval section (bench/eval_bench.py): the demo job's steps, an eval every eval_every of them, on eval_rows
    #: held-out rows with eval_new_tokens each.
    eval_train_steps: int = 40
    eval_every: int = 10
    eval_rows: int = 50
    eval_new_tokens: int = 48
    #: None: wait for a job by following its SSE event stream; seconds: poll GET /jobs/{id} that often.
    poll: float | None = None
    sections: tuple[str, ...] = SECTIONS
    dpo_steps: int = 10  # the DPO section's runs (bench/dpo.py): a DPO step trains two sequences per pair


def smoke_plan() -> Plan:
    return Plan(mode="smoke", pairs=1, steps=2, latency_idle_requests=15, latency_interval=0.01,
                memory_jobs=2, memory_steps=8, knob_steps=2, scale_levels=(0, 5, 10), scale_submits=3,
                scale_lists=5, chat_rounds=2, chat_tokens=8, auth_requests=40, ray_steps=4, fsdp_steps=2,
                dpo_steps=3, eval_train_steps=4, eval_every=2, eval_rows=4, eval_new_tokens=8)


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

    def run_bare(self, steps: int, *, tag: str, model: str | None = None, script: str = "bare_sft.py",
                 precision: str | None = None, data: Path | None = None) -> dict:
        """Run bench/bare_sft.py (or ``script``, which takes the same options: limit_sft.py, bare_dpo.py,
        limit_dpo.py) on ``data`` (default the demo rows); ``ttr_s`` is launch to its JSON line. ``precision``:
        instead of the run's."""
        name = script.removesuffix("_sft.py").removesuffix(".py")
        out = self.work / f"{name}-{tag}"
        cmd = [sys.executable, str(BENCH / script), "--model", model or str(self.model_dir),
               "--output-dir", str(out), "--data", str(data or self.data_path), "--max-steps", str(steps),
               "--precision", precision or self.precision]
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
