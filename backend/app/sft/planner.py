"""The fit planner: a job's peak memory per worker, estimated from the model's ``config.json`` alone.

Pure arithmetic — no weights are loaded and torch is not imported. For a model shape, a config and a
device it adds up what one worker holds at its peak (each term in bytes, named in ``MemoryEstimate``):

- **weights**: every parameter in the dtype the trainer loads it in (trainer.py): the compute dtype for
  LoRA in bf16/fp16 (a GPU, or a CPU with AMX), fp32 for full fine-tuning (AMP keeps fp32 weights) and for LoRA
  in fp32; QLoRA stores
  the decoder's linear layers as 4-bit NF4 with double quantization (``NF4_BYTES_PER_PARAM``) and keeps the
  rest — embeddings, norms, the LM head — in the compute dtype.
- **trainable state**: the trained parameters' gradients and AdamW's two moments in the parameter's dtype
  (torch's AdamW keeps its state like the parameter): full fine-tuning and LoRA train fp32 parameters
  (PEFT upcasts adapters, ``autocast_adapter_dtype``), QLoRA bf16 ones (TRL 1.16 casts them back).
  LoRA adds ``r × (in + out)`` weights per adapted linear layer.
- **activations**: what autograd keeps per token and layer (``_layer_activation_units``), times batch ×
  length; with gradient checkpointing only each layer's input is kept, plus one layer recomputed.
- **logits**: the cross-entropy path projects the trained tokens only and holds their logits, their fp32
  log-softmax and its gradient (3 × tokens × vocabulary × 4 bytes); TRL's fused head works in chunks.
- **overhead**: the CUDA context and allocator slack on a GPU; on CPU the Python + torch + TRL process.
- **loading** (CPU): the checkpoint's memory-mapped pages beside the loaded weights, where loading peaks
  above training (a LoRA run with gradient checkpointing on a small batch).

FSDP shards the weights and the trainable state over ``num_workers`` (the activations, logits and
overhead stay whole on each worker) and adds the gathered layer it is computing with.
Estimates assume every row fills ``max_length`` and every token is trained: the worst case a
dataset can reach, so a job that passes is not refused later by longer rows.

``python -m app.sft.planner --table`` prints the README's memory table from ``REFERENCE_MODELS``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import SFTConfig
from .distributed import resolve_strategy as by_fit
from .errors import ModelError

GIB = 1024**3
MIB = 1024**2

#: NF4 with double quantization: 4 bits per weight, an 8-bit absmax per block of 64 and an fp32 constant per
#: 256 blocks (QLoRA paper, §2: 0.127 bits per parameter for the constants) -> 4.127 bits.
NF4_BYTES_PER_PARAM = (4 + 8 / 64 + 32 / (64 * 256)) / 8
#: A CUDA context and cuBLAS workspaces, which torch's allocator does not count, plus the caching
#: allocator's fragmentation: what nvidia-smi shows above torch.cuda.max_memory_allocated() on a training
#: job (0.6-1 GiB on an H100/H200 with torch 2.x).
CUDA_OVERHEAD_BYTES = 1 * GIB
#: The training process on CPU before any model: Python, torch, transformers, PEFT, TRL and datasets
#: imported (490 MiB RSS measured on the reference machine) plus the tokenizer, the tokenized dataset
#: and the trainer (a tiny model's whole run peaks at ~580 MiB there).
CPU_OVERHEAD_BYTES = 580 * MIB
#: Default share of a device's memory an estimate may fill before submit refuses it (settings
#: ``fit_margin``): estimates are within ±25 % of measured peaks, and refusing a job that would have fit
#: costs the user more than a job that fails with a clear OOM, so only estimates clearly above the device
#: are refused.
DEFAULT_FIT_MARGIN = 1.10

Device = Literal["cuda", "cpu"]
Strategy = Literal["ddp", "fsdp"]


class PlanError(ModelError):
    """The model's config.json cannot be read, or does not describe a decoder the planner knows."""


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that memory depends on (from its config.json)."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool = False
    num_experts: int = 1
    #: Bytes per parameter of the checkpoint's files (config.json's dtype).
    checkpoint_bytes: int = 2

    @classmethod
    def from_config(cls, config: dict[str, Any], *, name: str = "model") -> ModelShape:
        """Read a Hugging Face config.json (its text config for a vision-language model)."""
        config = config.get("text_config") or config

        def first(*keys: str, default: Any = None) -> Any:
            for key in keys:
                if config.get(key) is not None:
                    return config[key]
            if default is None:
                raise PlanError(f"{name}: config.json has none of {', '.join(keys)}; the planner cannot size it")
            return default

        hidden = int(first("hidden_size", "n_embd", "d_model"))
        heads = int(first("num_attention_heads", "n_head"))
        return cls(
            name=name,
            vocab_size=int(first("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(first("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
            num_layers=int(first("num_hidden_layers", "n_layer", "num_layers")),
            num_heads=heads,
            num_kv_heads=int(first("num_key_value_heads", "n_head_kv", default=heads)),
            head_dim=int(first("head_dim", default=hidden // heads)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            num_experts=int(first("num_local_experts", "num_experts", default=1)),
            checkpoint_bytes=4 if str(config.get("torch_dtype") or config.get("dtype")) == "float32" else 2,
        )

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_layers(self) -> dict[str, tuple[int, int]]:
        """Each decoder layer's linear layers, ``name -> (in, out)`` (Llama's names; a gated MLP)."""
        h, i = self.hidden_size, self.intermediate_size
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def linear_params(self) -> int:
        """Parameters of the decoder's linear layers (what QLoRA quantizes), all layers, all experts."""
        per_layer = 0
        for name, (n_in, n_out) in self.linear_layers().items():
            per_layer += n_in * n_out * (self.num_experts if name in _MLP else 1)
        return per_layer * self.num_layers

    def other_params(self) -> int:
        """Embeddings, norms and an untied LM head: what stays unquantized under QLoRA."""
        embed = self.vocab_size * self.hidden_size
        return embed * (1 if self.tie_word_embeddings else 2) + (2 * self.num_layers + 1) * self.hidden_size

    @property
    def params(self) -> int:
        return self.linear_params() + self.other_params()

    def lora_params(self, rank: int, targets: list[str] | str) -> int:
        """LoRA's trained parameters for ``targets`` ('all-linear': every linear layer but the head)."""
        total = 0
        for name, (n_in, n_out) in self.linear_layers().items():
            if targets == "all-linear" or any(name == t or t.endswith("." + name) for t in targets):
                total += rank * (n_in + n_out) * (self.num_experts if name in _MLP else 1)
        return total * self.num_layers


_MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class MemoryEstimate:
    """One worker's estimated peak memory, in bytes, term by term."""

    model: str
    device: Device
    strategy: Strategy
    num_workers: int
    precision: str
    method: Literal["lora", "qlora", "full"]
    params: int
    trainable_params: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    tokens_per_batch: int
    #: On CPU, what loading adds where it peaks above training: the checkpoint's memory-mapped file pages
    #: (resident while they are read) beside the weights already copied out of them.
    loading: int = 0

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.activations + self.logits
                + self.overhead + self.loading)

    def as_dict(self) -> dict[str, Any]:
        """The wire shape (``sft_client.models.MemoryPlan``'s ``estimate``): MiB, rounded."""
        data = asdict(self)
        for key in ("weights", "gradients", "optimizer", "activations", "logits", "overhead", "loading"):
            data[f"{key}_mb"] = round(data.pop(key) / MIB, 1)
        data["total_mb"] = round(self.total / MIB, 1)
        return data


def estimate(shape: ModelShape, config: SFTConfig, *, device: Device, num_workers: int | None = None,
             strategy: Strategy = "ddp", loss_path: str | None = None,
             precision: str | None = None, tokens_per_row: int | None = None) -> MemoryEstimate:
    """``config``'s peak memory per worker on ``device`` (see the module's docstring for each term).

    ``num_workers`` (default the config's) divides what FSDP shards; ``precision`` defaults to what
    ``auto`` resolves to on ``device`` without asking a GPU (bf16 on CUDA; on a CPU what the trainer picks for
    this CPU and the model's width: bf16 with AMX, else fp32). ``tokens_per_row``
    replaces the worst case (every row ``max_length`` tokens) where a run's rows are known (the bench).
    """
    workers = num_workers or config.num_workers
    if precision is None:
        precision = (config.precision if config.precision != "auto" else "bf16" if device == "cuda"
                     else config.resolve_precision("cpu", hidden_size=shape.hidden_size))
    compute = 2 if precision in ("bf16", "fp16") else 4
    method: Literal["lora", "qlora", "full"] = (
        "qlora" if config.use_qlora else "lora" if config.use_lora else "full")
    shard = workers if strategy == "fsdp" and workers > 1 else 1

    if method == "full":
        weights = shape.params * 4  # AMP keeps fp32 weights; CPU trains in fp32
        trainable, state_bytes = shape.params, 4
    else:
        trainable = shape.lora_params(config.lora_r, config.lora_target_modules)
        base = compute if device == "cuda" or precision == "bf16" else 4  # LoRA loads the base in the compute dtype
        if method == "qlora":
            frozen = math.ceil(shape.linear_params() * NF4_BYTES_PER_PARAM) + shape.other_params() * base
            state_bytes = 2  # TRL casts QLoRA's adapters to bf16
        else:
            frozen = shape.params * base
            state_bytes = 4  # PEFT upcasts adapters to fp32
        weights = frozen + trainable * state_bytes
    gradients = trainable * state_bytes
    optimizer = 2 * trainable * state_bytes
    if shard > 1:
        weights, gradients, optimizer = (math.ceil(weights / shard), math.ceil(gradients / shard),
                                         math.ceil(optimizer / shard))
        # FSDP all-gathers one decoder layer's parameters to compute with (and prefetches the next).
        weights += 2 * math.ceil((weights * shard - shape.other_params() * compute) / max(shape.num_layers, 1))
    tokens = config.per_device_train_batch_size * min(tokens_per_row or config.max_length, config.max_length)
    act_bytes = compute if device == "cuda" or precision == "bf16" else 4  # CPU autocast: bf16 matmul outputs
    activations = _activations(shape, config, tokens=tokens, act_bytes=act_bytes)
    path = loss_path or config.resolve_loss_path(device)
    logits = _logits(shape, tokens=tokens, act_bytes=act_bytes, loss_path=path)
    # Gradients exist from the first backward layer on while activations are freed layer by layer, and are
    # dropped before the next forward (set_to_none) unless micro-batches accumulate into them; the optimizer
    # step adds torch's foreach AdamW temporary (sqrt of the second moment: one more copy of the trained
    # parameters).
    step_peak = gradients + math.ceil(trainable * state_bytes / shard)
    if config.gradient_accumulation_steps > 1:
        activations_side = activations + logits + gradients
    else:
        activations_side = activations + logits + math.ceil(gradients / max(shape.num_layers, 1))
    # Report gradients as what the peak holds beside the rest, so the terms add up to the peak.
    if step_peak > activations_side:
        activations, logits, gradients = 0, 0, step_peak
    else:
        gradients = activations_side - activations - logits
    overhead = CUDA_OVERHEAD_BYTES if device == "cuda" else CPU_OVERHEAD_BYTES
    loading = 0
    if device == "cpu":
        # from_pretrained reads the safetensors memory-mapped: while it copies the last tensors out, the file's
        # pages (this worker's shard of them) are resident beside the loaded weights.
        training = weights + gradients + optimizer + activations + logits
        loading = max(0, weights + math.ceil(shape.params * shape.checkpoint_bytes / shard) - training)
    return MemoryEstimate(
        model=shape.name, device=device, strategy=strategy, num_workers=workers, precision=precision,
        method=method, params=shape.params, trainable_params=trainable, weights=weights, gradients=gradients,
        optimizer=optimizer, activations=activations, logits=logits, overhead=overhead, tokens_per_batch=tokens,
        loading=loading,
    )


def _layer_activation_units(shape: ModelShape, config: SFTConfig) -> float:
    """Values autograd keeps per token for one decoder layer (Llama: RMSNorm, rotary attention, SwiGLU MLP).

    Attention: the norm's input and output (2h), q, k, v (q + 2kv), their rotary copies (q + kv), the
    attention output that o_proj reads (q); the MLP: its norm (2h), gate and up outputs, SiLU(gate) and
    the product down_proj reads (4i). Under LoRA each adapted layer also keeps its dropout's output and
    mask (the layer's input, twice) and its rank-r intermediate.
    """
    h, i, q, kv = shape.hidden_size, shape.intermediate_size, shape.q_dim, shape.kv_dim
    units = 2 * h + q + 2 * kv + (q + kv) + q + 2 * h + 4 * i
    if config.use_lora:
        for name, (n_in, _) in shape.linear_layers().items():
            if config.lora_target_modules == "all-linear" or name in config.lora_target_modules:
                units += 2 * n_in + config.lora_r
    return units


def _activations(shape: ModelShape, config: SFTConfig, *, tokens: int, act_bytes: int) -> int:
    per_layer = _layer_activation_units(shape, config) * act_bytes
    # Attention: transformers' default SDPA runs fused kernels on CUDA (flash / memory-efficient) and on CPU
    # (torch's CPU flash attention), which keep a log-sum-exp per head, never the (heads × length) probabilities
    # (measured: the tiny model's run at 2 × 2,048 tokens peaks 30 MiB above its start on CPU).
    per_layer += shape.num_heads * act_bytes
    # Embedding output, final norm and the hidden states the head reads.
    outside = 4 * shape.hidden_size * act_bytes
    if config.gradient_checkpointing:
        # Each layer keeps its input; the layer being recomputed holds its whole activations once more
        # while its backward runs.
        return math.ceil(tokens * (shape.num_layers * shape.hidden_size * act_bytes + 2 * per_layer + outside))
    return math.ceil(tokens * (shape.num_layers * per_layer + outside))


def _logits(shape: ModelShape, *, tokens: int, act_bytes: int, loss_path: str) -> int:
    if loss_path == "trl":
        # TRL's fused head projects chunks of 1,024 tokens at a time (its logits, fp32 log-softmax, gradient).
        return 3 * min(tokens, 1024) * shape.vocab_size * 4
    # cross_entropy: the trained tokens' logits in the compute dtype, an fp32 copy when that is 16-bit,
    # the log-softmax cross-entropy keeps and the gradient of the logits.
    return tokens * shape.vocab_size * (act_bytes + (4 if act_bytes < 4 else 0) + 4 + 4)


@dataclass(frozen=True)
class DeviceMemory:
    """What one worker's device has: ``bytes`` of memory, described (``name``), on ``kind``."""

    kind: Device
    bytes: int
    #: Which memory, as a message names it before its size: "this GPU (NVIDIA H100 80GB HBM3)".
    name: str
    #: Workers the executor can place at once (1 for the thread executor): what suggestions may use.
    max_workers: int = 1


@dataclass(frozen=True)
class FitPlan:
    """An estimate against a device: whether it fits, and what would fit when it does not."""

    estimate: MemoryEstimate
    device: DeviceMemory | None
    margin: float
    fits: bool | None
    #: ``(what to change, the config field it changes)``, each a single change the planner found to fit.
    changes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def suggestions(self) -> list[str]:
        return [label for label, _ in self.changes]

    @property
    def field(self) -> str:
        """The config field a refusal names: the first change that fits, else the model itself."""
        return self.changes[0][1] if self.changes else "base_model"

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate.as_dict(), "estimated_peak_mb": round(self.estimate.total / MIB, 1),
                "device": None if self.device is None else {
                    "kind": self.device.kind, "name": self.device.name,
                    "memory_mb": round(self.device.bytes / MIB, 1), "max_workers": self.device.max_workers},
                "margin": self.margin, "fits": self.fits, "suggestions": self.suggestions,
                "message": self.message, "field": None if self.fits is not False else f"config.{self.field}"}

    @property
    def message(self) -> str:
        need = f"needs ~{_gib(self.estimate.total)} per {_unit(self.estimate.device)}"
        if self.device is None:
            return f"{need} (this server could not tell what its devices have)"
        has = f"{self.device.name}: {_gib(self.device.bytes)}"
        if self.fits:
            return f"{need}; {has}: it fits"
        hint = (f": use {_or_list(self.suggestions)}" if self.suggestions else
                ": no single change the planner tries fits it (fsdp over the workers this executor can place, QLoRA, "
                "LoRA, gradient_checkpointing, a smaller batch); use a smaller model or larger devices")
        return f"{need}; {has}{hint}"


def plan(shape: ModelShape, config: SFTConfig, device: DeviceMemory | None, *,
         margin: float = DEFAULT_FIT_MARGIN, strategy: Strategy | None = None) -> FitPlan:
    """Estimate ``config`` on ``device`` and, when it does not fit, what would (computed with ``estimate``).

    ``strategy`` (default: the config's, ``auto`` resolved by ``resolve_strategy``) is how its workers share.
    """
    kind: Device = device.kind if device else "cuda"
    if strategy is None:
        strategy = resolve_strategy(shape, config, device, margin=margin)
    est = estimate(shape, config, device=kind, strategy=strategy)
    if device is None:
        return FitPlan(est, None, margin, None)
    fits = _fits(est, device, margin)
    return FitPlan(est, device, margin, fits, [] if fits else _changes(shape, config, device, margin))


def resolve_strategy(shape: ModelShape, config: SFTConfig, device: DeviceMemory | None, *,
                     margin: float = DEFAULT_FIT_MARGIN) -> Strategy:
    """The config's strategy, ``auto`` resolved (``app.sft.distributed.resolve_strategy``): ddp when the model
    fits one worker, fsdp otherwise. Without a known device, one worker is assumed to hold it."""
    if config.distributed_strategy != "auto" or config.num_workers == 1 or device is None:
        return by_fit(config, fits_one_worker=True)
    one = estimate(shape, config, device=device.kind, strategy="ddp")
    return by_fit(config, fits_one_worker=_fits(one, device, margin))


def _fits(est: MemoryEstimate, device: DeviceMemory, margin: float) -> bool:
    return est.total <= device.bytes * margin


def _changes(shape: ModelShape, config: SFTConfig, device: DeviceMemory, margin: float) -> list[tuple[str, str]]:
    """Single changes that make ``config`` fit ``device`` (label, field), each checked with the planner itself."""
    found: list[tuple[str, str]] = []
    for workers in (2, 4, 8, 16, 32, 64):  # the fewest workers FSDP fits it over, where the executor has them
        if workers > device.max_workers:
            break
        change = {"num_workers": workers, "distributed_strategy": "fsdp"}
        if workers > config.num_workers and _fits(_try(shape, config, change, device, "fsdp"), device, margin):
            found.append((f"fsdp over {workers} workers", "num_workers"))
            break
    # Groups of alternatives: the first of a group that fits is suggested (LoRA before QLoRA for a full run).
    groups: list[list[tuple[str, dict[str, Any]]]] = []
    qlora = ("QLoRA (use_qlora: true)", {"use_lora": True, "use_qlora": True})
    if not config.use_lora:
        groups.append([("LoRA (use_lora: true)", {"use_lora": True}), *([qlora] if device.kind == "cuda" else [])])
    elif not config.use_qlora and device.kind == "cuda":
        groups.append([qlora])
    if not config.gradient_checkpointing:
        groups.append([("gradient_checkpointing: true", {"gradient_checkpointing": True})])
    strategy = "fsdp" if config.distributed_strategy == "fsdp" and config.num_workers > 1 else "ddp"
    for group in groups:
        for label, change in group:
            if _fits(_try(shape, config, change, device, strategy), device, margin):
                found.append((label, list(change)[-1]))
                break
    if not found:
        for batch in (config.per_device_train_batch_size // 2, config.per_device_train_batch_size // 4, 1):
            if 1 <= batch < config.per_device_train_batch_size:
                change = {"per_device_train_batch_size": batch,
                          "gradient_accumulation_steps": config.gradient_accumulation_steps
                          * math.ceil(config.per_device_train_batch_size / batch)}
                if _fits(_try(shape, config, change, device, strategy), device, margin):
                    found.append((f"per_device_train_batch_size: {batch} (with gradient_accumulation_steps: "
                                  f"{change['gradient_accumulation_steps']})", "per_device_train_batch_size"))
                    break
    return found


def _try(shape: ModelShape, config: SFTConfig, change: dict[str, Any], device: DeviceMemory,
         strategy: Strategy) -> MemoryEstimate:
    data = {**config.model_dump(exclude_unset=True), **change}
    if data.get("use_lora") is True and "use_lora" in change:
        data.pop("use_qlora", None)
    changed = SFTConfig.model_validate({"base_model": config.base_model, "dataset_name": config.dataset_name,
                                        **data})
    return estimate(shape, changed, device=device.kind, strategy=change.get("distributed_strategy", strategy))


def _gib(n: int) -> str:
    gib = n / GIB
    return f"{gib:.0f} GiB" if gib >= 10 else f"{gib:.1f} GiB" if gib >= 0.1 else f"{n / MIB:.0f} MiB"


def _unit(device: Device) -> str:
    return "GPU" if device == "cuda" else "worker (CPU memory)"


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


# Model configs

def read_model_config(folder: Path | str) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot read {path}: {exc}") from None


def model_shape(reference: str, *, cache_dir: Path, allowed_roots: list[Path] | None = None,
                hub: bool = True) -> ModelShape:
    """The shape of the model ``reference`` names, from its config.json: a local directory's, a converted
    GGUF or bundled model's (in the model cache), the local Hugging Face cache's, or — with ``hub`` — the
    config.json alone downloaded from the Hub. Never a weight.

    Raises:
        PlanError: the config cannot be had; the message says why and what to do.
    """
    from .models import resolve_model

    ref = resolve_model(reference, cache_dir=cache_dir, allowed_roots=allowed_roots)
    if ref.kind in ("bundled", "gguf", "local"):
        if not (Path(ref.path) / "config.json").is_file():
            raise PlanError(f"{reference} has not been converted from GGUF yet, so its config is not known: its "
                            "size is planned once a job or a generation has converted it")
        return ModelShape.from_config(read_model_config(ref.path), name=reference)
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(ref.path, "config.json")
    if isinstance(cached, str):
        return ModelShape.from_config(json.loads(Path(cached).read_text()), name=reference)
    if not hub:
        raise PlanError(f"{reference} is not in the local Hugging Face cache")
    from .hub import HUB_TIMEOUT_SECONDS, HubUnreachable, hub_problem

    try:
        problem = hub_problem(ref.path, repo_type="model")  # answers in seconds; the download would retry
        if problem:
            raise PlanError(f"model '{reference}' is {problem}")
        path = hf_hub_download(ref.path, "config.json", etag_timeout=HUB_TIMEOUT_SECONDS)
    except PlanError:
        raise
    except (HubUnreachable, Exception) as exc:  # connection errors come in many types
        raise PlanError(f"{reference}'s config.json is not in the local Hugging Face cache and the Hub could not "
                        f"be reached ({exc or type(exc).__name__}); use a local model directory or connect to the "
                        "Hub") from None
    return ModelShape.from_config(read_model_config(Path(path).parent), name=reference)


#: config.json numbers of real models (the Hub is not reached for them): the README's table.
REFERENCE_MODELS: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.2-1B": {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
                                "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                                "head_dim": 64, "tie_word_embeddings": True},
    "meta-llama/Llama-3.1-8B": {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
                                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                                "head_dim": 128, "tie_word_embeddings": False},
    "meta-llama/Llama-3.1-70B": {"vocab_size": 128256, "hidden_size": 8192, "intermediate_size": 28672,
                                 "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                                 "head_dim": 128, "tie_word_embeddings": False},
}

#: The table's job: 1 row of 2,048 tokens per GPU, gradient checkpointing on, LoRA r 16 on every linear layer.
TABLE_CONFIG = {"max_steps": 1, "per_device_train_batch_size": 1, "max_length": 2048,
                "gradient_checkpointing": True, "lora_r": 16}


def memory_table(models: dict[str, dict[str, Any]] | None = None) -> str:
    """A Markdown table of the estimated peak per GPU for LoRA / QLoRA / full fine-tuning, 1 and 8 workers."""
    methods = {"LoRA": {"use_lora": True}, "QLoRA": {"use_lora": True, "use_qlora": True}, "full": {"use_lora": False}}
    lines = ["| Model | Params | " + " | ".join(f"{m} (1 GPU)" for m in methods)
             + " | " + " | ".join(f"{m}, fsdp over 8" for m in methods) + " |",
             "|" + "---|" * (2 + 2 * len(methods))]
    for name, numbers in (models or REFERENCE_MODELS).items():
        shape = ModelShape.from_config(numbers, name=name)
        cells = []
        for workers, strategy in ((1, "ddp"), (8, "fsdp")):
            for change in methods.values():
                extra = {k: v for k, v in TABLE_CONFIG.items() if k != "lora_r" or change["use_lora"]}
                config = SFTConfig.model_validate({"base_model": name, "dataset_name": "x", **extra, **change,
                                                   "num_workers": workers})
                cells.append(_gib(estimate(shape, config, device="cuda", strategy=strategy).total))
        lines.append(f"| {name} | {shape.params / 1e9:.1f} B | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.sft.planner", description=__doc__.split("\n")[0])
    parser.add_argument("--table", action="store_true", help="print the README's memory table")
    args = parser.parse_args(argv)
    if args.table:
        print(memory_table())
        print()
        print("bf16 on CUDA; " + ", ".join(f"{k}={v}" for k, v in TABLE_CONFIG.items())
              + "; the cross_entropy loss path; CUDA context included.")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
