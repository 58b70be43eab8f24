"""How a job's workers share the model: ``ddp`` (each holds all of it) or ``fsdp`` (PyTorch FSDP2 shards parameters,
gradients and optimizer state across them), through the same TRL trainer.

The trainer calls the hooks here: ``fsdp_trl_args`` (what ``SFTConfig.to_trl`` adds for fsdp), ``enable_fsdp``
(tell accelerate the run is FSDP, see below), ``ShardProbe`` (what each rank really holds) and
``parallelism_report`` (the per-rank record the job's result keeps). ``resolve_strategy`` is what submit calls
to turn ``auto`` into a strategy once it knows whether the model fits one worker.

Why ``enable_fsdp`` exists: accelerate 1.16 keeps the FSDP plugin only for GPU backends. On CPU workers (gloo)
``trl.SFTConfig(fsdp=..., fsdp_config=...)`` trains as plain DDP without a warning: every rank holds every
parameter. After the trainer is built, the accelerate state is told it is FSDP: the plugin from
``args.fsdp_plugin_args`` and ``DistributedType.FSDP`` on both ``AcceleratorState`` and ``PartialState`` (set on
the first alone, a later ``AcceleratorState()`` copies ``MULTI_CPU`` back during ``train()`` and saving then fails
on DTensors). It relies on accelerate internals: ``ShardProbe`` measures the sharding on every run, and the tests
check it, so a version that changes them fails loudly instead of silently training DDP.

Memory of an fsdp rank: every step, each decoder layer's parameters are all-gathered to compute with and freed,
and its full gradients are built, reduce-scattered to this rank's shard and freed: blocks of 2-38 MB, several a
layer a step. glibc's malloc raises its mmap threshold to the size of each mapped block freed (up to 32 MiB), so
after the first layers those blocks come from the heap, which keeps the holes they leave and reuses them only for
what fits. On the bench's 151M-parameter model (2 CPU ranks, fp32 full fine-tuning) each rank's RSS grew by
~0.5 GB during the second step and stayed there: peak 2.33 GB per rank, 0.73x the 1-worker job's 3.19 GB, for
~1.7 GB held (imports, and this rank's half of the weights, gradients and AdamW state); trimming the heap between
steps did not lower it (the holes appear within a step). So when training starts each rank pins the threshold
at glibc's default 128 KiB (``device.pin_mmap_threshold``: ``mallopt`` in the rank's own process, which Ray Train
starts for this job alone; no environment variable is involved) and hands back what loading the whole model
before sharding it left (``release_memory``). Each such block is then its own mapping, unmapped when freed: peak
1.92 GB per rank, 0.60x. The cost is page faults: the blocks' pages are faulted in afresh each step (~0.6 M more
a step per rank here, ~1.15 us each on this machine: 0.5-0.8 s of a 6-9 s step), a trade fsdp makes as it is
chosen when memory is what a job lacks. GPU ranks keep their tensors out of glibc; only host-side buffers (the
gathered state dict at save) follow the setting. Other jobs keep glibc's defaults: a 1-worker job frees far fewer
such blocks (pinned, the same 1-worker job peaked 8 % lower; an fsdp rank 18-21 % lower).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .config import SFTConfig

Strategy = Literal["ddp", "fsdp"]


def resolve_strategy(config: SFTConfig, fits_one_worker: bool) -> Strategy:
    """The strategy ``config`` trains with: its own when it names one; for ``auto``, ddp when the model fits one
    worker (the fit planner says so at submit) and fsdp otherwise (fsdp needs at least 2 workers)."""
    if config.distributed_strategy != "auto":
        return config.distributed_strategy
    return "ddp" if fits_one_worker or config.num_workers < 2 else "fsdp"


def training_strategy(config: SFTConfig) -> Strategy | None:
    """What a run of ``config`` trains with: None for one worker, else its strategy (``auto`` still unresolved
    at training time trains ddp: submit resolves it when it can estimate the fit)."""
    if config.num_workers < 2:
        return None
    return resolve_strategy(config, fits_one_worker=True)


def fsdp_problems(config: SFTConfig) -> list[str]:
    """What ``config`` asks that fsdp cannot do (the config's cross-field rules raise the first)."""
    if config.distributed_strategy != "fsdp":
        return []
    problems = []
    if config.num_workers < 2:
        problems.append(f"distributed_strategy fsdp shards the model across the job's workers: it needs num_workers "
                        f">= 2 (num_workers is {config.num_workers}; one worker holds the whole model, use ddp or auto)")
    if config.use_qlora and config.num_gpus_per_worker == 0:
        problems.append("use_qlora with distributed_strategy fsdp needs GPU workers: bitsandbytes' 4-bit weights "
                        "(bnb_4bit_quant_storage) are sharded on CUDA only; use LoRA or full fine-tuning on CPU workers")
    return problems


def qlora_placement_problem(config: SFTConfig, gpus_per_worker: float) -> str | None:
    """QLoRA under fsdp where the workers are placed (``gpus_per_worker`` resolved on the cluster): a reason, or None."""
    if config.distributed_strategy != "fsdp" or not config.use_qlora:
        return None
    if not gpus_per_worker:
        return ("use_qlora with distributed_strategy fsdp needs GPU workers and this cluster gives them none: "
                "bitsandbytes' 4-bit weights (bnb_4bit_quant_storage) are sharded on CUDA only; use LoRA or full "
                "fine-tuning, or a cluster with GPUs")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return "use_qlora with distributed_strategy fsdp needs bitsandbytes installed (pip install bitsandbytes)"
    return None


def fsdp_trl_args(config: SFTConfig, layer_classes: list[str]) -> dict[str, Any]:
    """The ``trl.SFTConfig`` arguments of an fsdp run wrapping each of ``layer_classes`` (the decoder layers).

    Gradient checkpointing becomes FSDP's own activation checkpointing (and the trainer's is left off, see
    ``SFTConfig.to_trl``): the trainer's would re-gather each layer's parameters a second time for its
    recomputation (transformers warns about exactly that). Checkpoints
    hold a full state dict gathered on rank 0, like the final save, so they resume with any number of workers.
    """
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": layer_classes,
            "reshard_after_forward": True,
            "state_dict_type": "FULL_STATE_DICT",
            "activation_checkpointing": config.gradient_checkpointing,
        },
    }


def decoder_layer_classes(model: Any) -> list[str]:
    """The class names of ``model``'s repeated decoder layers (what fsdp wraps one by one)."""
    names = {type(module).__name__ for module in model.modules()}
    declared = [name for name in (getattr(model, "_no_split_modules", None) or []) if name in names]
    if declared:
        return declared
    layers = sorted(name for name in names if name.endswith(("DecoderLayer", "Block")))
    if not layers:
        from .errors import ConfigError

        raise ConfigError(f"distributed_strategy fsdp: cannot find the decoder layers of {type(model).__name__} to "
                          "shard; use ddp", field="distributed_strategy")
    return layers


def enable_fsdp(trainer: Any) -> None:
    """Make accelerate train ``trainer`` with FSDP2 on any backend (CPU gloo included); see the module doc."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if getattr(state, "fsdp_plugin", None) is None:
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


@functools.cache
def shard_probe_class():
    from transformers import TrainerCallback

    class ShardProbe(TrainerCallback):
        """Counts, after the first optimizer step, the parameters this rank really holds (a sharded DTensor's
        local shard, a plain tensor whole); ``parallelism_report`` adds the process' peak resident memory and the
        mmap threshold an fsdp rank pinned (module doc)."""

        def __init__(self):
            self.counts: dict[str, int] | None = None
            self.mmap_threshold: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if args.fsdp_plugin_args is not None:
                # Each rank loaded the whole model before it was sharded: give what it no longer holds back to the
                # system, and keep the layers' gathered parameters and gradients out of the heap (module doc).
                from .device import DEFAULT_MMAP_THRESHOLD, pin_mmap_threshold, release_memory

                if pin_mmap_threshold(DEFAULT_MMAP_THRESHOLD):
                    self.mmap_threshold = DEFAULT_MMAP_THRESHOLD
                release_memory()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if self.counts is None and model is not None:
                self.counts = local_parameter_counts(model)

    return ShardProbe


def ShardProbe():  # noqa: N802 - builds a callback (transformers is imported where training runs)
    return shard_probe_class()()


def local_parameter_counts(model: Any) -> dict[str, int]:
    """``parameters`` (the model's), ``local_parameters`` (what this rank holds), ``sharded_tensors`` (DTensors)."""
    from torch.distributed.tensor import DTensor

    total = local = sharded = 0
    for param in model.parameters():
        total += param.numel()
        if isinstance(param, DTensor):
            local += param.to_local().numel()
            sharded += 1
        else:
            local += param.numel()
    return {"parameters": total, "local_parameters": local, "sharded_tensors": sharded}


def release_optimizer_state(trainer: Any, strategy: Strategy | None) -> None:
    """Before an fsdp run's final save, drop this rank's AdamW moments: training is over and its checkpoints hold
    them, while the save gathers the full weights on rank 0 beside everything the rank still holds (the bench's
    151M-parameter model on 2 CPU ranks: rank 0 peaked at 2.02 GB during the save with them, above its 1.84 GB
    training peak, and at 1.46 GB without)."""
    if strategy != "fsdp" or trainer.optimizer is None:
        return
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate's wrapper, or torch's own
    optimizer.state.clear()
    from .device import release_memory

    release_memory()


def parallelism_report(trainer: Any, probe: Any, strategy: Strategy | None) -> dict[str, Any]:
    """What each rank held and its peak memory, gathered from every rank (all ranks must call it). Called when
    training ends: the peak covers loading and training, not the final save (where fsdp's rank 0 gathers the full
    weights once to write them)."""
    import torch.distributed as dist

    counts = probe.counts or local_parameter_counts(trainer.model)
    from .device import peak_rss_mb

    mine = {**counts, "peak_rss_mb": round(peak_rss_mb(), 1), "mmap_threshold_bytes": probe.mmap_threshold}
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    ranks = [mine]
    if world > 1:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
    for rank, entry in enumerate(ranks):
        entry["rank"] = rank
    return {"strategy": strategy or "single", "world_size": world, "fsdp_active": bool(trainer.is_fsdp_enabled),
            "ranks": ranks}
