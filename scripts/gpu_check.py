"""GPU check (``make gpu-check``): the CUDA paths through the running service, and its speed against bare TRL.

One prepared run on one NVIDIA GPU, well under 10 minutes. It builds a Llama-shaped model with random
weights from a config (~250M parameters; no download), starts the service as ``make run`` does (a real
uvicorn process), and through its HTTP API:

1. trains a LoRA job (``precision: auto``, which must pick bf16), a QLoRA job (NF4 on CUDA) and a full
   fine-tune, each to ``completed`` with its artifact and a falling loss on the repeated demo data; after
   each, the server's CUDA memory (``/health``) is back to within a few MiB of before;
2. runs two jobs at once with ``SFT_MAX_CONCURRENT_JOBS=2`` on the one GPU;
3. generates on the GPU (``/generate`` with ``compare_base``) and merges the QLoRA job into a
   full-precision base (``/merge``), then loads the merged model without bitsandbytes;
4. measures the overhead against ``bench/bare_sft.py``: the same 100-step LoRA job, alternating, 3 pairs
   (steps/s ratio, tokens/s, peak GPU memory, model FLOPs utilisation); the service's two loss paths
   (``loss_path``: plain cross-entropy and TRL's own) when the server has that field; and the knobs
   (packing, padding-free, gradient checkpointing, Liger kernels) on the bare script.

Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` after every check, so an interrupted run
still reports what it did. ``--smoke`` runs the same code on a tiny model with a few steps (CPU is fine):
the way to try this script before spending GPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bare_sft import RESULT_PREFIX  # noqa: E402
from service import Service  # noqa: E402

DEMO_TRAIN = ROOT / "backend" / "app" / "demo" / "json_extract" / "train.jsonl"
#: NVIDIA's datasheet figure for dense bf16 on an H100/H200 SXM; the run also measures a matmul's rate.
DATASHEET_BF16_FLOPS = 989e12
#: How far the server's allocated CUDA memory may be from its value before a job, once the job ended.
MEMORY_SLACK_MB = 8.0
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the GPU run, or ``--smoke`` on any machine."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    steps: int  # the overhead pairs' and knobs' job (bench/bare_sft.py's length)
    job_steps: int  # the LoRA / QLoRA / full / concurrent jobs
    batch_size: int
    pairs: int
    loss_path_runs: int
    loss_fall: float  # the last fifth of a job's losses must average below this share of the first fifth's
    deadline_s: float  # checks not started by then are skipped, and the report says so


GPU_PLAN = Plan(hidden=1024, layers=16, heads=16, kv_heads=4, steps=100, job_steps=60, batch_size=16, pairs=3,
                loss_path_runs=2, loss_fall=0.8, deadline_s=500)
SMOKE_PLAN = Plan(hidden=64, layers=2, heads=4, kv_heads=2, steps=6, job_steps=16, batch_size=4, pairs=1,
                  loss_path_runs=1, loss_fall=0.99, deadline_s=1200)


def log(message: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Report:
    """The checks and measurements so far; written to JSON and Markdown after each one."""

    def __init__(self, out: Path, plan: Plan, smoke: bool):
        self.out = out
        self.started = time.monotonic()
        self.plan = plan
        self.data: dict[str, Any] = {"smoke": smoke, "plan": plan.__dict__, "machine": {}, "checks": [],
                                     "overhead": {}, "loss_path": {}, "knobs": [], "skipped": []}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @contextmanager
    def check(self, name: str):
        """Record ``name``: passed when the block ends, failed (with the error) when it raises."""
        entry: dict[str, Any] = {"name": name, "ok": False, "details": {}}
        if self.elapsed() > self.plan.deadline_s:
            self.data["skipped"].append(name)
            log(f"SKIP {name}: past the {self.plan.deadline_s:.0f} s deadline")
            self.write()
            yield None
            return
        started = time.monotonic()
        log(f"check: {name}")
        try:
            yield entry["details"]
            entry["ok"] = True
        except Exception as exc:  # a failed check is a result: record it and go on with the next
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-3000:]
            log(f"FAIL {name}: {entry['error']}")
        entry["seconds"] = round(time.monotonic() - started, 1)
        self.data["checks"].append(entry)
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2, default=str))
        (self.out / "gpu_check.md").write_text(render_markdown(self.data))


# The model


def build_model(path: Path, plan: Plan) -> dict[str, Any]:
    """A random Llama-shaped model and a byte-level BPE tokenizer trained on the demo data, saved to ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = []
    for line in DEMO_TRAIN.read_text().splitlines():
        texts += [message["content"] for message in json.loads(line)["messages"]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok.train_from_iterator(texts * 2, trainer=trainers.BpeTrainer(
        vocab_size=4096, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                        bos_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=plan.hidden, intermediate_size=plan.hidden * 4,
        num_hidden_layers=plan.layers, num_attention_heads=plan.heads, num_key_value_heads=plan.kv_heads,
        max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    parameters = model.num_parameters()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    return {"parameters": parameters, "vocab_size": len(tokenizer), "hidden_size": plan.hidden,
            "layers": plan.layers, "path": str(path)}


# The machine


def machine_info(env: dict[str, str]) -> dict[str, Any]:
    """Device, driver and package versions, and a bf16 matmul's measured rate (asked in a subprocess, so
    this process never holds a CUDA context)."""
    code = r"""
import json, time, importlib.metadata as md
import torch
info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda}
for name in ("transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "liger-kernel", "fastapi",
             "uvicorn", "pydantic"):
    try:
        info[name] = md.version(name)
    except md.PackageNotFoundError:
        info[name] = None
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                capability=f"{props.major}.{props.minor}", bf16_supported=torch.cuda.is_bf16_supported())
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    info["measured_bf16_flops"] = 2 * n**3 * 10 / (start.elapsed_time(end) / 1000)
print(json.dumps(info))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"could not read the machine: {out.stderr[-2000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    info["python"] = platform.python_version()
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia_smi"] = f"not available ({exc})"
    return info


# Through the service


class Check:
    """The service under test and the model it trains."""

    def __init__(self, report: Report, server: Service, model_dir: Path, plan: Plan, env: dict[str, str],
                 work: Path):
        self.report, self.server, self.model_dir, self.plan, self.env, self.work = (
            report, server, model_dir, plan, env, work)
        self.schema_fields = set(server.client.get("/api/sft/config-schema").json()["properties"])
        self.jobs: dict[str, dict[str, Any]] = {}

    def config(self, *, steps: int | None = None, **overrides: Any) -> dict[str, Any]:
        """The demo recipe (README) on the random model; LoRA unless overridden."""
        config = {"base_model": str(self.model_dir), "dataset_name": "bundled:json-extract",
                  "max_steps": steps or self.plan.job_steps, "per_device_train_batch_size": self.plan.batch_size,
                  "learning_rate": 1e-3, "max_length": 256, "lora_dropout": 0.0, "seed": 42}
        config.update(overrides)
        if config.get("use_lora") is False:
            config.pop("lora_dropout")
        return config

    def gpu_allocated(self) -> float | None:
        gpu = self.server.client.get("/health").json().get("gpu")
        return None if gpu is None else gpu["memory_allocated_mb"]

    def wait(self, job_id: str, timeout: float = 300.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.server.job(job_id)
            if job["status"] in ("completed", "failed", "stopped"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(0.25)

    def losses(self, job_id: str) -> list[float]:
        metrics = self.server.client.get(f"/api/sft/jobs/{job_id}/metrics").json()["metrics"]
        return [m["loss"] for m in metrics if "loss" in m]

    def train(self, details: dict[str, Any], name: str, config: dict[str, Any], *,
              expect_precision: str | None = None) -> dict[str, Any]:
        """Train ``config`` to the end and check: completed, artifact saved, loss fell, memory freed."""
        before = self.gpu_allocated()
        job_id, _ = self.server.submit(config)
        job = self.wait(job_id)
        after = self.gpu_allocated()
        result = job.get("result") or {}
        losses = self.losses(job_id)
        details.update(job_id=job_id, status=job["status"], error=job.get("error"),
                       precision=result.get("precision"), artifact=result.get("artifact"),
                       adapter_path=result.get("adapter_path"), steps=result.get("global_step"),
                       train_runtime_s=result.get("train_runtime"),
                       tokens_per_second=result.get("train_tokens_per_second"),
                       peak_gpu_memory_mb=result.get("peak_gpu_memory_mb"),
                       first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
                       gpu_allocated_before_mb=before, gpu_allocated_after_mb=after)
        self.jobs[name] = details
        if job["status"] != "completed":
            raise AssertionError(f"{name} ended {job['status']}: {job.get('error')}")
        if not result.get("adapter_path") or not Path(result["adapter_path"]).is_dir():
            raise AssertionError(f"{name}: no artifact at {result.get('adapter_path')}")
        check_loss_fell(losses, self.plan.loss_fall)
        if expect_precision and result.get("precision") != expect_precision:
            raise AssertionError(f"{name}: trained in {result.get('precision')}, expected {expect_precision}")
        check_memory_freed(before, after)
        return job


def check_loss_fell(losses: list[float], share: float) -> None:
    if len(losses) < 2:
        raise AssertionError(f"too few logged losses to see a trend: {losses}")
    k = max(1, len(losses) // 5)
    head, tail = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    if not tail < share * head:
        raise AssertionError(f"the loss did not fall: first {k} mean {head:.4f}, last {k} mean {tail:.4f}")


def check_memory_freed(before: float | None, after: float | None) -> None:
    if before is None or after is None:
        return  # no GPU (smoke run on a CPU)
    if abs(after - before) > MEMORY_SLACK_MB:
        raise AssertionError(f"CUDA memory allocated {before:.1f} MiB before the job, {after:.1f} MiB after")


def training_checks(check: Check, report: Report, cuda: bool) -> None:
    with report.check("LoRA job, precision auto (bf16 on the GPU)") as d:
        if d is not None:
            check.train(d, "lora", check.config(), expect_precision="bf16" if cuda else "fp32")
    with report.check("QLoRA job (4-bit NF4 base)") as d:
        if d is not None:
            check.train(d, "qlora", check.config(use_qlora=True))
    with report.check("full fine-tuning job") as d:
        if d is not None:
            check.train(d, "full", check.config(use_lora=False, learning_rate=3e-4))
    with report.check("two jobs at once on one GPU (SFT_MAX_CONCURRENT_JOBS=2)") as d:
        if d is not None:
            before = check.gpu_allocated()
            ids = [check.server.submit(check.config(seed=seed))[0] for seed in (1, 2)]
            jobs = [check.wait(job_id) for job_id in ids]
            after = check.gpu_allocated()
            d.update(jobs=[{"job_id": j["job_id"], "status": j["status"], "started_at": j["started_at"],
                            "completed_at": j["completed_at"], "error": j.get("error")} for j in jobs],
                     gpu_allocated_before_mb=before, gpu_allocated_after_mb=after)
            failed = [j for j in jobs if j["status"] != "completed"]
            if failed:
                raise AssertionError(f"{len(failed)} of 2 ended {failed[0]['status']}: {failed[0].get('error')}")
            # Both ran at once: each started before the other completed.
            a, b = jobs
            d["overlapped"] = a["started_at"] < b["completed_at"] and b["started_at"] < a["completed_at"]
            if not d["overlapped"]:
                raise AssertionError("the two jobs did not train at the same time")
            check_memory_freed(before, after)


def model_checks(check: Check, report: Report, cuda: bool) -> None:
    with report.check("/generate on the GPU, with compare_base") as d:
        if d is not None:
            lora = check.jobs.get("lora", {}).get("job_id")
            if lora is None:
                raise AssertionError("no LoRA job to generate with")
            body = {"messages": [{"role": "user", "content": "Extract the contact as JSON: Marta Quispe, 41, "
                                  "lives in Cusco."}], "max_new_tokens": 32, "compare_base": True}
            latencies = []
            for _ in range(2):  # the first call loads the models
                response = check.server.client.post(f"/api/sft/jobs/{lora}/generate", json=body, timeout=300)
                if response.status_code != 200:
                    raise AssertionError(f"/generate answered {response.status_code}: {response.text}")
                latencies.append(response.json()["latency_ms"])
            answer = response.json()
            gpu = check.server.client.get("/health").json().get("gpu")
            d.update(completion=answer["completion"][:200], base_completion=(answer["base_completion"] or "")[:200],
                     completion_tokens=answer["completion_tokens"], latency_ms=latencies,
                     base_latency_ms=answer["base_latency_ms"], gpu_after=gpu)
            if answer["completion_tokens"] < 1:
                raise AssertionError("no tokens generated")
            if cuda and (gpu is None or gpu["memory_allocated_mb"] <= 0):
                raise AssertionError(f"the models are not on the GPU: {gpu}")
    with report.check("/merge of the QLoRA job into a full-precision base") as d:
        if d is not None:
            qlora = check.jobs.get("qlora", {}).get("job_id")
            if qlora is None:
                raise AssertionError("no QLoRA job to merge")
            response = check.server.client.post(f"/api/sft/jobs/{qlora}/merge", timeout=600)
            if response.status_code != 200:
                raise AssertionError(f"/merge answered {response.status_code}: {response.text}")
            merged = Path(response.json()["merged_path"])
            d.update(response.json())
            d.update(verify_merged(merged, check.env))


def verify_merged(path: Path, env: dict[str, str]) -> dict[str, Any]:
    """The merged model has no quantization config, full-precision weights, and loads and runs without
    bitsandbytes (in a subprocess that blocks its import)."""
    config = json.loads((path / "config.json").read_text())
    if "quantization_config" in config:
        raise AssertionError(f"the merged model keeps a quantization_config: {config['quantization_config']}")
    code = r"""
import json, sys
sys.modules["bitsandbytes"] = None  # importing it now fails: the merged model must not need it
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
dtypes = sorted({str(p.dtype) for p in model.parameters()})
with torch.no_grad():
    logits = model(torch.tensor([[1, 2, 3, 4]])).logits
print(json.dumps({"dtypes": dtypes, "finite": bool(torch.isfinite(logits).all()),
                  "linear_types": sorted({type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__})}))
"""
    out = subprocess.run([sys.executable, "-c", code, str(path)], env={**env, "CUDA_VISIBLE_DEVICES": ""},
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise AssertionError(f"the merged model does not load without bitsandbytes: {out.stderr[-1500:]}")
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    if not loaded["finite"]:
        raise AssertionError("the merged model's logits are not finite")
    if any(dtype not in ("torch.float32", "torch.bfloat16", "torch.float16") for dtype in loaded["dtypes"]):
        raise AssertionError(f"the merged weights are not full precision: {loaded['dtypes']}")
    if loaded["linear_types"] != ["Linear"]:
        raise AssertionError(f"the merged model has non-plain linear layers: {loaded['linear_types']}")
    return {"merged_loads_without_bitsandbytes": True, **loaded}


# Speed: the service against bench/bare_sft.py


def run_bare(check: Check, tag: str, *, precision: str, flags: list[str] = ()) -> dict[str, Any]:
    out = check.work / f"bare-{tag}"
    cmd = [sys.executable, str(ROOT / "bench" / "bare_sft.py"), "--model", str(check.model_dir),
           "--output-dir", str(out), "--max-steps", str(check.plan.steps), "--precision", precision,
           "--batch-size", str(check.plan.batch_size), "--learning-rate", "1e-3", "--max-length", "256",
           "--lora-dropout", "0.0", "--seed", "42", *flags]
    started = time.perf_counter()
    process = subprocess.run(cmd, env=check.env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"bare_sft.py {' '.join(flags)} failed ({process.returncode}): {process.stderr[-2500:]}")
    result = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    result["ttr_s"] = round(time.perf_counter() - started, 2)
    return result


def run_service(check: Check, **overrides: Any) -> dict[str, Any]:
    started = time.perf_counter()
    job_id, _ = check.server.submit(check.config(steps=check.plan.steps, **overrides))
    job = check.wait(job_id, timeout=600)
    if job["status"] != "completed":
        raise RuntimeError(f"service job ended {job['status']}: {job.get('error')}")
    result = job["result"]
    return {"steps_per_s": round(result["global_step"] / result["train_runtime"], 4),
            "train_tokens_per_second": result["train_tokens_per_second"], "train_loss": result["train_loss"],
            "peak_gpu_memory_mb": result.get("peak_gpu_memory_mb"), "precision": result.get("precision"),
            "loss_path": result.get("loss_path"),
            "train_runtime": result["train_runtime"], "ttr_s": round(time.perf_counter() - started, 2),
            "job_id": job_id}


def mfu(tokens_per_second: float | None, parameters: int, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: 6 x parameters x tokens/s over the peak bf16 rate."""
    if not tokens_per_second or not peak_flops:
        return None
    return round(6 * parameters * tokens_per_second / peak_flops, 4)


def speed_checks(check: Check, report: Report, *, precision: str, parameters: int, cuda: bool) -> None:
    peak = report.data["machine"].get("measured_bf16_flops")
    with report.check(f"overhead vs bare TRL: {check.plan.pairs} alternating pairs of {check.plan.steps} steps") as d:
        if d is not None:
            pairs = []
            for i in range(check.plan.pairs):
                bare = run_bare(check, f"pair{i}", precision=precision)
                service = run_service(check)
                pairs.append({"bare": bare, "service": service,
                              "steps_per_s_ratio": round(service["steps_per_s"] / bare["steps_per_s"], 4)})
                log(f"pair {i + 1}: bare {bare['steps_per_s']:.3f} steps/s, service {service['steps_per_s']:.3f}")
            ratio = statistics.median(p["steps_per_s_ratio"] for p in pairs)
            summary = {
                "pairs": pairs,
                "median_steps_per_s_ratio": ratio,
                "target": 0.97,
                "met": ratio >= 0.97,
            }
            for side in ("bare", "service"):
                tps = statistics.median(p[side]["train_tokens_per_second"] for p in pairs)
                summary[side] = {
                    "steps_per_s": statistics.median(p[side]["steps_per_s"] for p in pairs),
                    "tokens_per_second": tps,
                    "peak_gpu_memory_mb": max((p[side]["peak_gpu_memory_mb"] or 0) for p in pairs) or None,
                    "ttr_s": statistics.median(p[side]["ttr_s"] for p in pairs),
                    "mfu_vs_datasheet": mfu(tps, parameters, DATASHEET_BF16_FLOPS if cuda else None),
                    "mfu_vs_measured": mfu(tps, parameters, peak),
                }
            report.data["overhead"] = summary
            d.update(median_steps_per_s_ratio=ratio)
            if not summary["met"]:
                raise AssertionError(f"service / bare TRL steps/s median {ratio:.3f} < 0.97")
    if "loss_path" in check.schema_fields:
        with report.check("loss paths on this device: cross_entropy vs trl") as d:
            if d is not None:
                runs: dict[str, list[dict[str, Any]]] = {"cross_entropy": [], "trl": []}
                for _ in range(check.plan.loss_path_runs):
                    for path in runs:
                        runs[path].append(run_service(check, loss_path=path))
                summary = {path: {
                    "tokens_per_second": statistics.median(r["train_tokens_per_second"] for r in rs),
                    "steps_per_s": statistics.median(r["steps_per_s"] for r in rs),
                    "peak_gpu_memory_mb": max((r["peak_gpu_memory_mb"] or 0) for r in rs) or None,
                    "train_loss": [r["train_loss"] for r in rs],
                    "trained_with": sorted({r["loss_path"] for r in rs}),
                } for path, rs in runs.items()}
                summary["cross_entropy_over_trl_steps_per_s"] = round(
                    summary["cross_entropy"]["steps_per_s"] / summary["trl"]["steps_per_s"], 4)
                report.data["loss_path"] = summary
                d.update(summary)
    else:
        report.data["loss_path"] = {"status": "not run: this server's SFTConfig has no loss_path field"}
    knobs = [("packing", ["--packing"]), ("padding-free", ["--padding-free"]),
             ("gradient checkpointing", ["--gradient-checkpointing"])]
    if cuda:
        knobs.append(("Liger kernels", ["--use-liger-kernel"]))
    for name, flags in knobs:
        with report.check(f"knob on bare TRL: {name}") as d:
            if d is not None:
                result = run_bare(check, name.split()[0], precision=precision, flags=flags)
                entry = {"name": name, "flags": flags, "steps_per_s": result["steps_per_s"],
                         "tokens_per_second": result["train_tokens_per_second"],
                         "peak_gpu_memory_mb": result["peak_gpu_memory_mb"], "train_loss": result["train_loss"]}
                report.data["knobs"].append(entry)
                d.update(entry)


# Report


def render_markdown(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    lines = ["# GPU check" + (" (smoke run, not a GPU measurement)" if data.get("smoke") else ""), ""]
    lines += [f"- Device: {m.get('gpu', 'no CUDA GPU')} ({m.get('gpu_memory_gib', '?')} GiB, compute capability "
              f"{m.get('capability', '?')}); nvidia-smi: {m.get('nvidia_smi', '?')}",
              f"- Versions: Python {m.get('python')}, torch {m.get('torch')} (CUDA {m.get('cuda')}), transformers "
              f"{m.get('transformers')}, trl {m.get('trl')}, peft {m.get('peft')}, accelerate {m.get('accelerate')}, "
              f"datasets {m.get('datasets')}, bitsandbytes {m.get('bitsandbytes')}, liger-kernel "
              f"{m.get('liger-kernel')}",
              f"- Measured bf16 matmul rate (8192³, 10 products): "
              + (f"{m['measured_bf16_flops'] / 1e12:.0f} TFLOP/s" if m.get("measured_bf16_flops") else "n/a"),
              f"- Model: random Llama-shaped, {data.get('model', {}).get('parameters', 0):,} parameters "
              f"(hidden {data.get('model', {}).get('hidden_size')}, {data.get('model', {}).get('layers')} layers, "
              f"vocab {data.get('model', {}).get('vocab_size')}), the demo data (`bundled:json-extract`), batch "
              f"{data['plan']['batch_size']}, max_length 256, learning rate 1e-3",
              f"- Run took {data.get('elapsed_s')} s", ""]
    checks = data.get("checks", [])
    passed = sum(c["ok"] for c in checks)
    lines += [f"## Checks: {passed} of {len(checks)} passed"
              + (f", {len(data['skipped'])} skipped (deadline)" if data.get("skipped") else ""), "",
              "| check | result | details |", "|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['name']} | {'pass' if c['ok'] else 'FAIL'} | {_details(c)} |")
    for name in data.get("skipped", []):
        lines.append(f"| {name} | skipped | the run's deadline passed before it started |")
    o = data.get("overhead") or {}
    if o:
        lines += ["", f"## Overhead against bare TRL ({len(o['pairs'])} alternating pairs, "
                  f"{data['plan']['steps']} steps each)", "",
                  "| | steps/s | tokens/s | peak GPU memory | time to result | MFU (datasheet 989 TFLOP/s) | "
                  "MFU (measured matmul rate) |", "|---|---|---|---|---|---|---|"]
        for side in ("bare", "service"):
            s = o[side]
            lines.append(f"| {'bare TRL script' if side == 'bare' else 'service'} | {s['steps_per_s']:.3f} | "
                         f"{s['tokens_per_second']:.0f} | {_mb(s['peak_gpu_memory_mb'])} | {s['ttr_s']:.1f} s | "
                         f"{_pct(s['mfu_vs_datasheet'])} | {_pct(s['mfu_vs_measured'])} |")
        lines += ["", f"Median service ÷ bare steps/s: **{o['median_steps_per_s_ratio']:.3f}** (target ≥ 0.97: "
                  f"{'met' if o['met'] else 'NOT met'}); per pair: "
                  + ", ".join(f"{p['steps_per_s_ratio']:.3f}" for p in o["pairs"]) + "."]
    lp = data.get("loss_path") or {}
    if "cross_entropy" in lp:
        lines += ["", "## Loss path on this GPU (service)", "", "| loss_path | steps/s | tokens/s | peak GPU memory |",
                  "|---|---|---|---|"]
        for path in ("cross_entropy", "trl"):
            s = lp[path]
            lines.append(f"| `{path}` | {s['steps_per_s']:.3f} | {s['tokens_per_second']:.0f} | "
                         f"{_mb(s['peak_gpu_memory_mb'])} |")
        lines += ["", f"cross_entropy ÷ trl steps/s: {lp['cross_entropy_over_trl_steps_per_s']:.3f}; train losses "
                  f"cross_entropy {lp['cross_entropy']['train_loss']}, trl {lp['trl']['train_loss']}; the service's "
                  f"`auto` trained with {sorted({p['service'].get('loss_path') for p in o.get('pairs', [])})}."]
    elif lp:
        lines += ["", f"Loss path: {lp.get('status')}."]
    if data.get("knobs"):
        base = o.get("bare", {}) if o else {}
        lines += ["", "## Knobs (bare TRL script, same job)", "", "| knob | tokens/s | vs baseline | peak GPU memory |",
                  "|---|---|---|---|"]
        if base:
            lines.append(f"| none (baseline: the pairs' median) | {base['tokens_per_second']:.0f} | 1.00× | "
                         f"{_mb(base['peak_gpu_memory_mb'])} |")
        for k in data["knobs"]:
            ratio = (f"{k['tokens_per_second'] / base['tokens_per_second']:.2f}×"
                     if base and k.get("tokens_per_second") else "")
            lines.append(f"| {k['name']} | {k['tokens_per_second'] or 0:.0f} | {ratio} | "
                         f"{_mb(k['peak_gpu_memory_mb'])}{' ¹' if k.get('note') else ''} |")
        notes = sorted({k["note"] for k in data["knobs"] if k.get("note")})
        lines += ["", *(f"¹ {note}." for note in notes)] if notes else []
    return "\n".join(lines) + "\n"


def _details(check: dict[str, Any]) -> str:
    if not check["ok"]:
        return (check.get("error") or "").replace("|", "\\|").replace("\n", " ")[:400]
    d = check["details"]
    keys = ("status", "precision", "steps", "first_loss", "last_loss", "tokens_per_second", "peak_gpu_memory_mb",
            "gpu_allocated_before_mb", "gpu_allocated_after_mb", "overlapped", "latency_ms", "completion_tokens",
            "size_bytes", "dtypes", "median_steps_per_s_ratio")
    parts = []
    for key in keys:
        if d.get(key) is not None:
            value = d[key]
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "; ".join(parts).replace("|", "\\|")


def _mb(value: float | None) -> str:
    return f"{value / 1024:.2f} GiB" if value else "n/a"


def _pct(value: float | None) -> str:
    return f"{value * 100:.1f} %" if value is not None else "n/a"


# Main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "gpu-check", help="report directory")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: <out>/work)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model and a few steps: try the script anywhere")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only print the Markdown of a run's gpu_check.json")
    args = parser.parse_args(argv)
    if args.render:
        print(render_markdown(json.loads(args.render.read_text())), end="")
        return 0

    plan = SMOKE_PLAN if args.smoke else GPU_PLAN
    args.out.mkdir(parents=True, exist_ok=True)
    work = (args.work or args.out / "work").resolve()
    work.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, plan, args.smoke)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFT_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "backend"), env.get("PYTHONPATH")]))

    report.data["machine"] = machine_info(env)
    cuda = bool(report.data["machine"].get("cuda_available"))
    if not cuda and not args.smoke:
        report.write()
        log("no CUDA GPU: run on an NVIDIA GPU machine, or pass --smoke to try the script here")
        return 2
    precision = "bf16" if cuda and report.data["machine"].get("bf16_supported") else ("fp16" if cuda else "fp32")
    data_dir = work / "service"
    model_dir = data_dir / "models" / "gpu-check-llama"
    log(f"building the model in {model_dir}")
    report.data["model"] = build_model(model_dir, plan)
    report.write()
    server = Service(data_dir, env=env, settings={"max_concurrent_jobs": 2})
    log("starting the service")
    server.start(timeout=300)
    try:
        check = Check(report, server, model_dir, plan, env, work)
        training_checks(check, report, cuda)
        model_checks(check, report, cuda)
        speed_checks(check, report, precision=precision, parameters=report.data["model"]["parameters"], cuda=cuda)
    finally:
        server.stop()
        report.write()
        log_tail = (data_dir / "server.log").read_text(errors="replace")[-20000:] if (
            data_dir / "server.log").exists() else ""
        (args.out / "server-log-tail.txt").write_text(log_tail)
    failed = [c["name"] for c in report.data["checks"] if not c["ok"]]
    log(f"done in {report.elapsed():.0f} s: {len(report.data['checks']) - len(failed)} passed, {len(failed)} failed, "
        f"{len(report.data['skipped'])} skipped")
    print(render_markdown(report.data))
    return 1 if failed or report.data["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
