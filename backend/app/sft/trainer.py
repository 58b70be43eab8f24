"""SFTTrainer: the one place that drives ``trl.SFTTrainer``."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .attention import use_fp32_attention
from .callbacks import ReportingCallback, StopCallback
from .checkpoints import eval_loss_at
from .config import SFTConfig
from .data import PreparedData, prepare_datasets
from .distributed import (ShardProbe, decoder_layer_classes, enable_fsdp, parallelism_report,
                          release_optimizer_state, shard_probe_class, training_strategy)
from .efficiency import EfficiencyTracker
from .errors import ConfigError
from .grading import GradingCallback
from .model_card import write_artifact_card
from .events import EventKind, EventSink, TrainingEvent
from .models import (
    default_device,
    linear_layer_names,
    load_model,
    load_tokenizer,
    model_hidden_size,
    model_load_lock,
    release_memory,
    resolve_model,
)


def _thread_local_accelerate_state() -> None:
    """Give each thread its own accelerate state (as accelerate does for multithreaded TPUs).

    accelerate keeps PartialState / AcceleratorState / GradientState as process-wide singletons;
    two jobs training in two threads would share gradient-sync flags and mixed-precision settings.
    """
    from accelerate import state

    for cls in (state.PartialState, state.AcceleratorState, state.GradientState):
        if not isinstance(cls.__dict__.get("_shared_state"), state.ThreadLocalSharedDict):
            cls._shared_state = state.ThreadLocalSharedDict()


_thread_local_accelerate_state()

logger = logging.getLogger(__name__)

#: Where GGUF files and the bundled model are converted when no ``model_cache_dir`` is given: the
#: service's own default (``<data_dir>/models`` with ``data_dir`` ./data), so a run from the command
#: line in the server's directory reuses the server's conversions.
DEFAULT_MODEL_CACHE_DIR = Path("data") / "models"


@dataclass
class SFTResult:
    """What a training run produced. ``adapter_path`` is the full model directory for full fine-tuning."""

    train_loss: float | None
    eval_loss: float | None
    adapter_path: str | None
    global_step: int
    max_steps: int
    train_runtime: float
    train_tokens_per_second: float | None
    stopped: bool
    output_dir: str
    artifact: str
    dataset_format: str | None = None
    train_rows: int = 0
    eval_rows: int = 0
    #: What the run trained in ('auto' resolved for the device).
    precision: str | None = None
    #: The process' peak CUDA memory during the run, in MiB (None on CPU; process-wide, so concurrent jobs
    #: on one GPU see each other's tensors too).
    peak_gpu_memory_mb: float | None = None
    #: The loss path trained with: "cross_entropy" or "trl" (SFTConfig.loss_path, resolved for the device).
    loss_path: str | None = None
    #: How the workers shared the model and what each rank held: strategy, world_size, per-rank parameters
    #: (sharded DTensors counted by their local shard) and peak RSS, measured on the ranks (sft.distributed).
    parallelism: dict[str, Any] | None = None
    #: How efficiently the run trained: tokens/s, padding, peak memory, MFU, hints (sft/efficiency.py).
    efficiency: dict[str, Any] | None = None
    #: The graders' scores (config.graders): every eval's, the base's (step 0), the checkpoint kept (keep), eval time.
    graders: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SFTTrainer:
    """Trains one ``SFTConfig`` end to end: load, prepare data, train, save, report.

    Args:
        config: the run's ``SFTConfig`` (a dict is validated into one).
        callbacks: extra ``TrainerCallback`` instances, called by the HF trainer.
        stop_event: when set, training ends at the next step boundary and what was trained is saved;
            when set during loading or data preparation, the run ends as soon as that phase does.
        on_event: where the run's ``TrainingEvent``s go (phases, steps, metrics, evals, checkpoints).
        model_cache_dir: where GGUF / bundled models are converted once (default
            ``DEFAULT_MODEL_CACHE_DIR``).
        allowed_dataset_roots: local datasets must live under one of these (None: anywhere).
        allowed_model_roots: a local base model must live under one of these or the model cache
            (None: anywhere).
        resume_from_checkpoint: a checkpoint directory to continue from (optimizer state included).
        device: 'cuda' or 'cpu' (default: the best this machine has).
    """

    def __init__(
        self,
        config: SFTConfig | dict[str, Any],
        *,
        callbacks: list[Any] | None = None,
        stop_event: threading.Event | None = None,
        on_event: EventSink | None = None,
        model_cache_dir: str | Path | None = None,
        allowed_dataset_roots: list[Path] | None = None,
        allowed_model_roots: list[Path] | None = None,
        resume_from_checkpoint: str | Path | None = None,
        disable_tqdm: bool = True,
        device: str | None = None,
    ):
        self.config = config if isinstance(config, SFTConfig) else SFTConfig.model_validate(config)
        if self.config.output_dir is None:
            raise ValueError("SFTTrainer needs config.output_dir")
        self.callbacks = list(callbacks or [])
        self.stop_event = stop_event or threading.Event()
        self.on_event = on_event
        self.model_cache_dir = Path(model_cache_dir if model_cache_dir is not None else DEFAULT_MODEL_CACHE_DIR)
        self.allowed_dataset_roots = allowed_dataset_roots
        self.allowed_model_roots = allowed_model_roots
        self.resume_from_checkpoint = resume_from_checkpoint
        self.disable_tqdm = disable_tqdm
        self.device = device or default_device()
        #: The precision the run trains in: ``config.precision`` resolved for ``device``, once (auto on a CPU is
        #: refined by the model's width when it loads).
        self.precision = self.config.resolve_precision(self.device)
        #: How the job's workers share the model: None (one worker), "ddp" or "fsdp".
        self.strategy = training_strategy(self.config)
        self.output_dir = Path(self.config.output_dir)

    def _emit(self, kind: EventKind, payload: dict[str, Any] | None = None) -> None:
        if self.on_event is not None:
            self.on_event(TrainingEvent(kind, payload or {}))

    def train(self) -> SFTResult:
        """Run the whole training; returns the result (``stopped=True`` when the stop event ended it)."""
        started = time.perf_counter()
        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(self.output_dir / "config.yaml")
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()

        self._emit(EventKind.PHASE, {"phase": "loading_model"})
        # Model loading and building the trainer (first imports of trl, PEFT wrapping, seeding) are not
        # thread-safe in transformers 5, so concurrent jobs (and /generate's loads) take turns at them;
        # reading the data, and the training steps, overlap.
        with model_load_lock:
            if self.stop_event.is_set():
                return self._stopped_before_training(started)
            model, tokenizer = self._load()
        precision = self.precision  # auto on a CPU: refined by the model's width in _load
        self._emit(EventKind.MODEL_LOADED, {"base_model": cfg.base_model, "parameters": model.num_parameters(),
                                            "attention": getattr(model.config, "_attn_implementation", None)})
        if self.stop_event.is_set():
            return self._stopped_before_training(started)

        self._emit(EventKind.PHASE, {"phase": "preparing_dataset"})
        data = prepare_datasets(cfg, allowed_roots=self.allowed_dataset_roots)
        self._emit(EventKind.DATASET_READY, {"dataset_format": data.dataset_format, "train_rows": data.train_rows,
                                     "eval_rows": data.eval_rows})
        if self.stop_event.is_set():
            return self._stopped_before_training(started, data)

        grading = GradingCallback.for_run(cfg, data.eval, self.output_dir)
        with model_load_lock:
            trainer, loss_path = self._build_trainer(model, tokenizer, data, [grading] if grading else [])
            efficiency = self._track_efficiency(trainer)
        del model
        if grading:
            grading.attach(trainer)
        self._emit(EventKind.PHASE, {"phase": "training"})
        stop = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, StopCallback))
        probe = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, shard_probe_class()))
        try:
            output = trainer.train(
                resume_from_checkpoint=str(self.resume_from_checkpoint) if self.resume_from_checkpoint else None
            )
            parallelism = parallelism_report(trainer, probe, self.strategy)  # every rank takes part
            release_optimizer_state(trainer, self.strategy)
            self._emit(EventKind.PHASE, {"phase": "saving"})
            artifact_dir = self.output_dir / ("adapter" if cfg.use_lora else "model")
            trainer.save_model(str(artifact_dir))
            state = trainer.state
            if grading:
                grading.keep_best(artifact_dir, state.global_step)
            tokenizer.save_pretrained(str(artifact_dir))
            eval_loss = None
            if data.eval is not None:
                eval_loss = eval_loss_at(state.log_history, state.global_step)
                if eval_loss is None and not stop.stopped:
                    eval_loss = float(trainer.evaluate()["eval_loss"])
                elif eval_loss is None:
                    eval_loss = _last(state.log_history, "eval_loss")
            runtime = float(output.metrics.get("train_runtime", time.perf_counter() - started))
            tokens = _last(state.log_history, "num_tokens")
            result = SFTResult(
                train_loss=_last(state.log_history, "loss") if output.training_loss is None
                else float(output.training_loss),
                eval_loss=eval_loss,
                adapter_path=str(artifact_dir),
                global_step=state.global_step,
                max_steps=state.max_steps,
                train_runtime=round(runtime, 3),
                train_tokens_per_second=round(tokens / runtime, 2) if tokens and runtime > 0 else None,
                stopped=stop.stopped,
                output_dir=str(self.output_dir),
                artifact="lora_adapter" if cfg.use_lora else "full_model",
                dataset_format=data.dataset_format,
                train_rows=data.train_rows,
                eval_rows=data.eval_rows,
                precision=precision,
                peak_gpu_memory_mb=_peak_gpu_memory_mb(self.device),
                loss_path=loss_path,
                parallelism=parallelism,
                efficiency=efficiency.report(),
                graders=grading.summary() if grading else None,
            )
            self._emit(EventKind.EFFICIENCY, result.efficiency)
            write_artifact_card(artifact_dir, cfg, result.to_dict())
            return result
        finally:
            del trainer
            release_memory()

    def _load(self):
        import torch

        cfg = self.config
        ref = resolve_model(cfg.base_model, cache_dir=self.model_cache_dir, allowed_roots=self.allowed_model_roots)
        tokenizer = load_tokenizer(ref, trust_remote_code=cfg.trust_remote_code)
        if cfg.precision == "auto" and self.device != "cuda":
            width = model_hidden_size(ref, trust_remote_code=cfg.trust_remote_code)
            self.precision = cfg.resolve_precision(self.device, hidden_size=width)
        precision = self.precision
        # LoRA on a bf16 base halves memory; full fine-tuning keeps fp32 weights (AMP needs them).
        dtype = torch.bfloat16 if precision == "bf16" and cfg.use_lora else torch.float32
        model = load_model(ref, device=self.device, dtype=dtype, quantize_4bit=cfg.use_qlora,
                           shard_4bit=self.strategy == "fsdp", trust_remote_code=cfg.trust_remote_code)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if precision == "bf16" and self.device == "cpu":  # bf16 attention is slower than fp32 on CPUs
            use_fp32_attention(model)
        return model, tokenizer

    def _build_trainer(self, model, tokenizer, data: PreparedData, extra_callbacks: list[Any]):
        """The HF trainer for this run, and the loss path it trains with ("cross_entropy" or "trl")."""
        import trl
        from transformers import PrinterCallback, set_seed

        from .loss import CrossEntropyDPOTrainer, CrossEntropySFTTrainer, plain_head_problem

        cfg = self.config
        args = cfg.to_trl(output_dir=self.output_dir / "checkpoints", device=self.device, precision=self.precision,
                          disable_tqdm=self.disable_tqdm,
                          fsdp_layer_classes=decoder_layer_classes(model) if self.strategy == "fsdp" else None)
        peft_config = None
        if cfg.use_lora:
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=cfg.lora_target_modules,
                task_type="CAUSAL_LM",
            )
        callbacks = [StopCallback(self.stop_event),
                     ReportingCallback(self.output_dir / "log.jsonl", self.on_event), ShardProbe(), *self.callbacks,
                     *extra_callbacks]
        loss_path = cfg.resolve_loss_path(self.device)
        problem = plain_head_problem(model) if loss_path == "cross_entropy" else None
        if problem:
            logger.warning("training with TRL's fused LM head instead of loss_path cross_entropy: %s", problem)
            loss_path = "trl"
        trainer_cls, extra = trl.SFTTrainer, {}
        if cfg.method == "dpo":  # preference tuning: TRL's DPOTrainer and its reference model (sft/dpo.py)
            from .dpo import dpo_trainer_kwargs

            trainer_cls = CrossEntropyDPOTrainer if loss_path == "cross_entropy" else trl.DPOTrainer
            extra = dpo_trainer_kwargs(model, cfg.use_lora)
        elif loss_path == "cross_entropy":
            trainer_cls, extra = CrossEntropySFTTrainer, {"token_metrics": cfg.resolve_token_metrics(self.device)}
        set_seed(cfg.seed)  # LoRA init draws from torch's global RNG; the setup lock keeps it ours
        try:
            trainer = trainer_cls(
                model=model,
                args=args,
                train_dataset=data.train,
                eval_dataset=data.eval,
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=callbacks,
                **extra,
            )
            if self.strategy == "fsdp":
                enable_fsdp(trainer)
            if self.disable_tqdm:  # ReportingCallback records every log; PrinterCallback would print each to stdout
                trainer.remove_callback(PrinterCallback)
            return trainer, loss_path
        except ValueError as exc:
            # PEFT and TRL raise ValueError for what the config asks and the model cannot do
            # (unknown lora_target_modules, a pad token outside the vocabulary...).
            hint = ""
            if cfg.use_lora and cfg.lora_target_modules != "all-linear":
                hint = f" (lora_target_modules; its linear layers: {', '.join(linear_layer_names(model))})"
            raise ConfigError(f"the trainer refused this config for {cfg.base_model}: {exc}{hint}") from exc

    def _track_efficiency(self, trainer) -> EfficiencyTracker:
        cfg = self.config
        tracker = EfficiencyTracker(device=self.device, precision=self.precision, lora=cfg.use_lora,
                                    packing=cfg.packing, gradient_checkpointing=cfg.gradient_checkpointing,
                                    cache_dir=self.model_cache_dir)
        tracker.attach(trainer)
        return tracker

    def _stopped_before_training(self, started: float, data: PreparedData | None = None) -> SFTResult:
        release_memory()
        return SFTResult(
            train_loss=None,
            eval_loss=None,
            adapter_path=None,
            global_step=0,
            max_steps=self.config.max_steps or 0,
            train_runtime=round(time.perf_counter() - started, 3),
            train_tokens_per_second=None,
            stopped=True,
            output_dir=str(self.output_dir),
            artifact="lora_adapter" if self.config.use_lora else "full_model",
            dataset_format=data.dataset_format if data else None,
            train_rows=data.train_rows if data else 0,
            eval_rows=data.eval_rows if data else 0,
        )


def _peak_gpu_memory_mb(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / (1024 * 1024), 1)


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    for entry in reversed(history):
        if key in entry:
            return float(entry[key])
    return None


def read_log(output_dir: str | Path) -> list[dict[str, Any]]:
    """The per-step log a run wrote to ``output_dir/log.jsonl``."""
    path = Path(output_dir) / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
