"""How efficiently a run trained: real tokens/s, padding share, peak memory, model FLOPs utilisation, hints.

``EfficiencyTracker`` watches a built trainer (each training micro-batch's token counts, each optimizer step's
time, the process' memory) and turns what it saw into the ``efficiency`` dict of the run's result.

Model FLOPs count the work the job needs, not what the kernels happen to do (padding, recomputation under
gradient checkpointing, the logits of untrained positions are not counted):

* every linear layer of the body, per real token: 2 × params forward, 2 × backward for the input's gradient, and
  2 × more for the weight gradient when it trains (full fine-tuning: 6 ×; frozen under LoRA: 4 ×);
* LoRA's own A and B matrices, per real token: 6 × their parameters (they train);
* the LM head, per trained token (only those are projected for the loss): 4 × or 6 × vocab × hidden as above;
* attention, per sequence of s real tokens: QKᵀ and AV cost 4 × attention width per (query, key) pair, a causal
  sequence has s(s+1)/2 pairs, and the backward pass costs twice the forward: 3 × 2 × n_layers × width × s(s+1).

The device's peak for the dtype trained in comes from ``GPU_PEAK_TFLOPS`` on a known GPU, and on a CPU from a
matmul micro-benchmark run once per machine (CPU model, flags, threads, torch version) and cached in the model
cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CPU_BF16_MIN_HIDDEN_SIZE
from .device import cpu_bf16_units, cpu_identity, peak_rss_mb

#: Dense (no sparsity) tensor-core peaks in TFLOP/s by dtype, from NVIDIA's datasheets: H100 / H200 (SXM; the
#: H100 PCIe and NVL figures are lower), A100 (SXM and PCIe), L4, L40S, A10, and the Ada Lovelace whitepaper for
#: the RTX 4090 (FP16/BF16 with FP32 accumulate). fp32 is the non-tensor-core figure: PyTorch trains fp32 without
#: TF32 by default. Matched by substring of ``torch.cuda.get_device_name()``, first match wins.
GPU_PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 51.2}),
    ("H100 NVL", {"bf16": 835.5, "fp16": 835.5, "fp32": 60.0}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.1, "fp16": 362.1, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3}),
    ("A10", {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2}),
    ("4090", {"bf16": 165.2, "fp16": 165.2, "fp32": 82.6}),
)

#: Side of the square matmul the CPU peak is measured with, and how long each dtype is timed.
_BENCH_SIZE = 1024
_BENCH_SECONDS = 0.3
#: Padding share from which the report suggests packing, and the memory share below which gradient
#: checkpointing is flagged as unneeded.
_PADDING_HINT = 0.15
_CHECKPOINTING_MEMORY_HINT = 0.5
_MIB = 1024 * 1024


# FLOPs


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs count needs of a model: its body's linear parameters and its attention's size."""

    n_layers: int
    #: Query heads × head dimension (the width of QKᵀ and AV).
    attention_width: int
    hidden_size: int
    vocab_size: int
    #: Parameters of the body's linear layers (attention and MLP projections; no embeddings, no LM head).
    body_linear_params: int
    #: Parameters of the LoRA A and B matrices (0 for full fine-tuning).
    lora_params: int = 0

    @classmethod
    def of_model(cls, model: Any) -> ModelShape:
        """Read the shape off a loaded model (a PEFT-wrapped one included): linear layers are counted as loaded."""
        import torch

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config.get_text_config()
        head = base.get_output_embeddings()
        body = lora = 0
        for name, module in base.named_modules():
            if not isinstance(module, torch.nn.Linear) or module is head:
                continue
            if {"lora_A", "lora_B"} & set(name.split(".")):
                lora += module.in_features * module.out_features
            else:
                body += module.in_features * module.out_features
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(n_layers=config.num_hidden_layers, attention_width=heads * head_dim,
                   hidden_size=config.hidden_size, vocab_size=head.out_features if head is not None
                   else config.vocab_size, body_linear_params=body, lora_params=lora)


@dataclass
class TokenCounts:
    """Token counts of the training micro-batches a run processed."""

    #: Positions the model ran over (padding included).
    processed: int = 0
    #: Real (attention-masked) tokens.
    real: int = 0
    #: Tokens whose next-token label is trained.
    trained: int = 0
    #: Σ s(s+1) over the real sequences (s: a sequence's real length): the causal attention pairs, doubled.
    attention_pairs2: int = 0

    @property
    def padding_share(self) -> float | None:
        return None if not self.processed else 1 - self.real / self.processed


def training_flops(shape: ModelShape, counts: TokenCounts, *, lora: bool) -> float:
    """Model FLOPs of training on ``counts`` (forward and backward); see the module docstring."""
    per_param = 4 if lora else 6
    body = per_param * shape.body_linear_params * counts.real
    adapters = 6 * shape.lora_params * counts.real
    head = per_param * shape.vocab_size * shape.hidden_size * counts.trained
    attention = 3 * 2 * shape.n_layers * shape.attention_width * counts.attention_pairs2
    return float(body + adapters + head + attention)


def count_batch(inputs: dict[str, Any]) -> TokenCounts:
    """The token counts of one collated micro-batch: padded rows (``attention_mask``) or padding-free / packed
    rows (``position_ids`` restarting at 0 for each sequence)."""
    import torch

    labels = inputs.get("labels")
    if "attention_mask" in inputs and inputs["attention_mask"] is not None:
        mask = inputs["attention_mask"]
        lengths = mask.sum(dim=1)
        processed = mask.numel()
    else:
        positions = inputs["position_ids"].flatten()
        starts = torch.nonzero(positions == 0).flatten()
        ends = torch.cat([starts[1:], torch.tensor([positions.numel()], device=positions.device)])
        lengths = ends - starts
        processed = positions.numel()
    lengths = lengths.to(torch.int64)
    trained = int((labels[..., 1:] != -100).sum()) if labels is not None else int(lengths.sum())
    return TokenCounts(processed=int(processed), real=int(lengths.sum()), trained=trained,
                       attention_pairs2=int((lengths * (lengths + 1)).sum()))


# Device peaks


def _measure_matmul_tflops(dtype_name: str) -> float:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    a = torch.randn(_BENCH_SIZE, _BENCH_SIZE).to(dtype)
    b = torch.randn(_BENCH_SIZE, _BENCH_SIZE).to(dtype)
    with torch.no_grad():
        torch.mm(a, b)  # first call: oneDNN primitive creation, page faults
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < _BENCH_SECONDS or runs < 2:
            torch.mm(a, b)
            runs += 1
    return 2 * _BENCH_SIZE**3 * runs / elapsed / 1e12


_peaks_lock = threading.Lock()
_peaks_memo: dict[str, float] = {}


def cpu_peak_tflops(dtype_name: str, cache_dir: Path | None) -> tuple[float, str]:
    """This CPU's matmul peak for ``dtype_name`` in TFLOP/s and what it is, measured once per process.

    Keyed by CPU model, flags, torch's intra-op threads and torch version; ``cache_dir/device_peaks.json`` keeps
    the best measurement any process made on the machine (another process' load only lowers a measurement).
    """
    import torch

    model, flags = cpu_identity()
    threads = torch.get_num_threads()
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    key = f"{model}|flags:{digest}|threads:{threads}|torch:{torch.__version__}|{dtype_name}"
    source = f"measured: {_BENCH_SIZE}² {dtype_name} matmul on {model}, {threads} thread(s)"
    path = Path(cache_dir) / "device_peaks.json" if cache_dir is not None else None
    with _peaks_lock:
        stored: dict[str, float] = {}
        if path is not None and path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError):
                stored = {}
        if key not in _peaks_memo or key not in stored:
            # A measurement on a busy machine comes out low: each process measures once and the cache keeps
            # the best seen, so the figure converges on the machine's peak.
            measured = _peaks_memo.get(key) or round(_measure_matmul_tflops(dtype_name), 4)
            _peaks_memo[key] = stored[key] = max(measured, stored.get(key, 0.0))
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_text(json.dumps(stored, indent=1))
                tmp.replace(path)
        return max(stored[key], _peaks_memo[key]), source


def gpu_peak_tflops(device_name: str, dtype_name: str) -> tuple[float | None, str]:
    """The table's peak for ``device_name`` (``torch.cuda.get_device_name()``) and dtype; None when unknown."""
    for fragment, peaks in GPU_PEAK_TFLOPS:
        if fragment.lower() in device_name.lower():
            return peaks.get(dtype_name), f"datasheet: NVIDIA {fragment} {dtype_name} dense"
    return None, f"unknown GPU {device_name!r}: no peak in the table"


# Memory


def current_rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _total_memory_mb(device: str) -> float | None:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / _MIB
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# The tracker


class EfficiencyTracker:
    """Counts a trainer's training tokens, times its optimizer steps and samples its memory.

    ``attach(trainer)`` wraps the trainer's ``training_step`` (to count each micro-batch), adds a callback (to time
    each optimizer step from its begin to its end: forward, backward, clipping and the optimizer; not data loading,
    logging, evaluation or checkpoints) and, on CPU, a forward hook that samples the process' resident memory where
    activations peak (the end of each forward) as well as at each step end.
    """

    def __init__(self, *, device: str, precision: str, lora: bool, packing: bool, gradient_checkpointing: bool,
                 cache_dir: Path | None):
        self.device, self.precision, self.lora = device, precision, lora
        self.packing, self.gradient_checkpointing, self.cache_dir = packing, gradient_checkpointing, cache_dir
        self.counts = TokenCounts()
        self.step_seconds = 0.0
        self.steps = 0
        self.peak_rss = 0
        self._step_started: float | None = None
        self.shape: ModelShape | None = None

    def attach(self, trainer: Any) -> None:
        from transformers import TrainerCallback

        tracker = self
        self.shape = ModelShape.of_model(trainer.model)
        training_step = trainer.training_step

        def counted_training_step(model, inputs, *args, **kwargs):
            batch = count_batch(inputs)
            for name in ("processed", "real", "trained", "attention_pairs2"):
                setattr(tracker.counts, name, getattr(tracker.counts, name) + getattr(batch, name))
            return training_step(model, inputs, *args, **kwargs)

        trainer.training_step = counted_training_step

        class _Timing(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                tracker._step_started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                if tracker._step_started is not None:
                    tracker.step_seconds += time.perf_counter() - tracker._step_started
                    tracker.steps += 1
                    tracker._step_started = None
                tracker._sample_rss()

        trainer.add_callback(_Timing())
        if self.device != "cuda":
            trainer.model.register_forward_hook(lambda *_: tracker._sample_rss() if trainer.model.training else None)

    def _sample_rss(self) -> None:
        if self.device != "cuda":
            self.peak_rss = max(self.peak_rss, current_rss_bytes())

    def report(self) -> dict[str, Any]:
        """The ``efficiency`` dict of the run's result (see ``sft_client.models.EfficiencyReport``)."""
        counts, seconds = self.counts, self.step_seconds
        flops = training_flops(self.shape, counts, lora=self.lora) if self.shape else None
        achieved = flops / seconds / 1e12 if flops and seconds > 0 else None
        peak, peak_source = self._device_peak(self.precision)
        report: dict[str, Any] = {
            "device": self.device,
            "dtype": self.precision,
            "steps_timed": self.steps,
            "step_seconds": round(seconds, 3),
            "processed_tokens": counts.processed,
            "real_tokens": counts.real,
            "trained_tokens": counts.trained,
            "padding_share": _round(counts.padding_share, 4),
            "real_tokens_per_s": round(counts.real / seconds, 2) if seconds > 0 else None,
            "model_flops": flops,
            "achieved_tflops": _round(achieved, 4),
            "peak_tflops": _round(peak, 4),
            "peak_source": peak_source,
            "mfu": _round(achieved / peak if achieved and peak else None, 4),
            **self._memory(),
        }
        report["hints"] = self._hints(report)
        return report

    def _device_peak(self, dtype_name: str) -> tuple[float | None, str]:
        if self.device == "cuda":
            import torch

            return gpu_peak_tflops(torch.cuda.get_device_name(), dtype_name)
        return cpu_peak_tflops(dtype_name, self.cache_dir)

    def _memory(self) -> dict[str, Any]:
        memory: dict[str, Any] = {"peak_rss_mb": None, "process_peak_rss_mb": None, "peak_cuda_allocated_mb": None,
                                  "peak_cuda_reserved_mb": None}
        if self.device == "cuda":
            import torch

            memory["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / _MIB, 1)
            memory["peak_cuda_reserved_mb"] = round(torch.cuda.max_memory_reserved() / _MIB, 1)
        else:
            memory["peak_rss_mb"] = round(self.peak_rss / _MIB, 1) if self.peak_rss else None
            memory["process_peak_rss_mb"] = round(peak_rss_mb(), 1)  # VmHWM (ru_maxrss keeps an exec'ing parent's)
        total = _total_memory_mb(self.device)
        used = memory["peak_cuda_reserved_mb"] if self.device == "cuda" else memory["peak_rss_mb"]
        memory["device_memory_mb"] = round(total, 1) if total else None
        memory["peak_memory_share"] = round(used / total, 4) if used and total else None
        return memory

    def _hints(self, report: dict[str, Any]) -> list[dict[str, Any]]:
        hints: list[dict[str, Any]] = []
        padding = report["padding_share"]
        if padding is not None and padding >= _PADDING_HINT and not self.packing:
            gain = 1 / (1 - padding)
            hints.append({"setting": "packing", "expected_gain": round(gain, 2),
                          "text": f"{padding:.0%} of the tokens processed are padding: packing (packing: true) would "
                                  f"train ~{gain:.1f}× the real tokens per step"})
        units = cpu_bf16_units() if self.device != "cuda" else None
        wide = self.shape is not None and self.shape.hidden_size >= CPU_BF16_MIN_HIDDEN_SIZE
        if units and wide and self.precision == "fp32":
            fp32, _ = cpu_peak_tflops("fp32", self.cache_dir)
            bf16, _ = cpu_peak_tflops("bf16", self.cache_dir)
            if fp32 and bf16 > fp32:
                hints.append({"setting": "precision", "expected_gain": round(bf16 / fp32, 1),
                              "text": f"this CPU has {units}: its bf16 matmuls measured {bf16 / fp32:.1f}× the fp32 "
                                      "peak (precision: bf16 or auto); a whole step gains less, the matmuls' share"})
        share = report.get("peak_memory_share")
        if self.gradient_checkpointing and share is not None and share < _CHECKPOINTING_MEMORY_HINT:
            hints.append({"setting": "gradient_checkpointing", "expected_gain": 1.33,
                          "text": f"gradient checkpointing is on but memory peaked at {share:.0%} of the device's: "
                                  "turning it off saves the recomputed forward, ~1.33× the steps/s"})
        return hints


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
