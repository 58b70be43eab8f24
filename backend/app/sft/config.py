"""SFTConfig: the validated, documented training config, and its mapping onto ``trl.SFTConfig``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .device import cpu_bf16_units
from .errors import ConfigError
from .formats import PREFERENCE_FORMATS
from .graders import Grader, ScoreModelGrader, unique_grader_names
from .paths import check_path_text

if TYPE_CHECKING:
    import trl

DatasetFormat = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text", "preference",
                        "openai_preference"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
SchedulerType = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]
ReportTarget = Literal["wandb", "tensorboard"]
LossPath = Literal["auto", "cross_entropy", "trl"]
TrainingMethod = Literal["sft", "dpo"]
#: The losses TRL 1.16's DPOTrainer offers (trl.DPOConfig.loss_type), one per run.
DPOLossType = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                      "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
DistributedStrategy = Literal["auto", "ddp", "fsdp"]


class KeepBest(BaseModel):
    """Which grader's score picks the checkpoint a job keeps, and whether higher or lower is better."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(..., min_length=1, max_length=100, description="A grader's name (from graders).")
    mode: Literal["max", "min"] = Field("max", description="max: the highest score is best; min: the lowest.")

# Start from a job: what a job resolved from base_model 'job:<id>' records (set by the server, app/jobs/bases.py)
class BaseJob(BaseModel):
    """The earlier job a job starts from. A LoRA job's adapter is merged into its base when the new job starts
    training (into ``base_model``'s directory); a full fine-tune's saved model is ``base_model`` itself."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(..., min_length=1, description="The earlier job this one starts from.")
    adapter_path: str | None = Field(
        None, description="That job's LoRA adapter, merged into adapter_base when this job starts (None: a full "
        "fine-tune, base_model is its saved model).")
    adapter_base: str | None = Field(None, description="The base model that adapter was trained on.")
    trust_remote_code: bool = Field(False, description="Whether that base runs code shipped with it.")


#: What loss_path "auto" trains with on a CUDA GPU. Measured by the GPU check on an H200 (docs/gpu.md):
#: cross_entropy trained 1.10x the steps/s of TRL's fused head with the same peak memory and losses.
CUDA_LOSS_PATH: Literal["cross_entropy", "trl"] = "cross_entropy"

#: What precision "auto" trains in on a CPU, by its bf16 matmul units (sft/device.cpu_bf16_units); fp32 for any
#: other. On an AMX Xeon (2 cores, quiet) the demo's step (limit loop, bench/step_profile.py) trained 1.45x the
#: steps/s of fp32 in bf16 under autocast with attention in fp32 (sft/attention.py; 1.21x with bf16 attention), the
#: service's job 1.58x its fp32 job (bench section 13), final loss within 1 % of fp32's; AVX-512 BF16 without AMX
#: is untested: fp32 there.
CPU_AUTO_PRECISION: dict[str | None, Literal["bf16", "fp32"]] = {"AMX": "bf16"}
#: Narrower models train faster in fp32 even with AMX: their matmuls are too small to gain, and the casts remain
#: (the tests' 32-wide model: 2.5x fewer steps/s in bf16 in the bench smoke run).
CPU_BF16_MIN_HIDDEN_SIZE = 256

#: Most tokens one device batch may hold (batch size × max_length): beyond it a run can only exhaust
#: memory (262,144 = 64 rows of 4,096 tokens, or 8 of 32,768), and a crash would take the server down.
MAX_TOKENS_PER_BATCH = 262_144

_LORA_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
_EVAL_FIELDS = ("eval_steps",)
#: Fields that only apply to one method: set to anything but their default with the other, they are refused.
_DPO_ONLY_FIELDS = ("beta", "loss_type")
_SFT_ONLY_FIELDS = ("packing", "completion_only_loss", "token_metrics")


class SFTConfig(BaseModel):
    """One supervised fine-tuning run: which model, which data, how to train it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Model
    base_model: str = Field(
        ...,
        min_length=1,
        description="Hugging Face Hub id (e.g. 'HuggingFaceTB/SmolLM2-135M-Instruct'), a local model "
        "directory, a .gguf file, the bundled alias 'smollm2-135m-instruct', or 'job:<id>' to start from one of "
        "your finished jobs (a LoRA job's adapter is merged into its base; e.g. SFT, then DPO on top).",
        examples=["smollm2-135m-instruct"],
    )
    trust_remote_code: bool = Field(
        False, description="Run code shipped with the model repo. Needs the server setting allow_remote_code."
    )
    # Start from a job
    base_job: BaseJob | None = Field(
        None, description="Set by the server from base_model 'job:<id>' (a config sent again keeps it, checked "
        "again): the earlier job this one starts from, and the adapter merged into its base when training starts.")

    # Data
    dataset_name: str = Field(
        ...,
        min_length=1,
        description="Hub dataset id, a local .json/.jsonl/.csv/.parquet file, a local directory "
        "(save_to_disk output or data files), or a bundled dataset such as 'bundled:json-extract'.",
        examples=["bundled:json-extract"],
    )
    dataset_format: DatasetFormat = Field(
        "auto",
        description="Row format: alpaca (instruction/input/output), sharegpt (conversations of from/value), "
        "messages (role/content chat), prompt_completion, text, or auto (detected from the columns). For "
        "method dpo: preference (prompt/chosen/rejected, plain or conversational) or openai_preference "
        "(input.messages, preferred_output, non_preferred_output).",
    )
    dataset_split: str = Field("train", min_length=1, description="Split of dataset_name to train on.")
    column_mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Rename your columns to the format's names, e.g. {'instruction': 'question', "
        "'output': 'answer'} maps format field -> your column.",
    )
    max_samples: int | None = Field(
        None, ge=1, description="Use at most this many training rows (the first ones)."
    )
    eval_dataset_name: str | None = Field(
        None, min_length=1, description="A separate evaluation dataset (same kinds of source as dataset_name)."
    )
    eval_dataset_split: str = Field("train", min_length=1, description="Split of eval_dataset_name.")
    validation_split: float | None = Field(
        None, gt=0, lt=1, description="Hold out this fraction of the training rows for evaluation."
    )
    completion_only_loss: bool = Field(
        True,
        description="Compute the loss on the completion / final assistant turn only (formats that have one).",
    )

    # Length of training
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="Optimizer steps to train.")
    num_train_epochs: float | None = Field(
        None, gt=0, le=10_000, description="Epochs to train (when max_steps is not set)."
    )

    # Optimisation
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate.")
    per_device_train_batch_size: int = Field(4, ge=1, le=4096, description="Rows per step per device.")
    per_device_eval_batch_size: int = Field(8, ge=1, le=4096, description="Rows per eval batch per device.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=4096, description="Batches per optimizer step.")
    max_length: int = Field(1024, ge=8, le=1_048_576, description="Tokens per row; longer rows are truncated.")
    packing: bool = Field(False, description="Pack several rows into each max_length sequence.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps spent warming up the LR.")
    lr_scheduler_type: SchedulerType = Field("linear", description="Learning-rate schedule.")
    weight_decay: float = Field(0.0, ge=0, le=10, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed: same config and seed give the same loss curve.")
    precision: Precision = Field(
        "auto", description="auto picks bf16 on GPUs that support it, fp16 on older GPUs, bf16 on CPUs with AMX "
        "(Intel Xeon 4th gen and later) for models 256 wide or wider, fp32 on other CPUs and narrower models. bf16 on a CPU trains a bf16 base under autocast; fp16 "
        "needs a CUDA GPU."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    loss_path: LossPath = Field(
        "auto",
        description="How the loss is computed. cross_entropy: ordinary cross-entropy over the trained tokens "
        "only (the LM head projects just those positions), the same loss as TRL's to 1e-5. trl: TRL's fused, "
        "tiled LM head, which never builds the logits but computes entropy and token accuracy for every token "
        "of every step (31 % slower per step on CPU, 9 % on an H200; docs/gpu.md). cross_entropy projects and scores "
        "the trained tokens in chunks once their fp32 logits would pass 256 MiB (a 128k vocabulary: 523 tokens a "
        "chunk), recomputing each chunk's logits in the backward pass, so a large vocabulary never holds them all. "
        f"auto: cross_entropy on CPU; on a CUDA GPU, {CUDA_LOSS_PATH}"
        f"{', or cross_entropy when token_metrics is false' if CUDA_LOSS_PATH == 'trl' else ''}. "
        "Models whose logits the plain LM head does not give (logit soft-capping or scaling, vision-language, "
        "a mixture-of-experts aux loss) always train with trl. With method dpo it is how the policy's and the "
        "reference's answer log-probabilities are computed: cross_entropy projects only the answer tokens; TRL's "
        "head does so only with Triton and on CPU projects the prompts and padding too (0.10 against 0.14 steps/s "
        "on the demo's pairs); auto: cross_entropy on CPU, trl on a CUDA GPU.",
    )
    token_metrics: bool | None = Field(
        None,
        description="Log entropy and mean token accuracy of the trained tokens, computed on logging steps only "
        "(every logging_steps). None: off on CPU, on on a CUDA GPU. With loss_path trl, TRL's head computes them "
        "on every step, so they cannot be turned off there.",
    )

    # Preference tuning
    method: TrainingMethod = Field(
        "sft",
        description="sft: supervised fine-tuning on chat, alpaca, prompt/completion or text rows. dpo: Direct "
        "Preference Optimization (TRL's DPOTrainer) on preference pairs (prompt, chosen, rejected); the reference "
        "is base_model as loaded (with LoRA, the same weights with the adapter disabled; no second copy). beta and "
        "loss_type apply to dpo only; packing, completion_only_loss and token_metrics to sft only.",
    )
    beta: float = Field(
        0.1, gt=0, le=100,
        description="DPO: how far the trained model may move from the reference (higher = closer to it).",
    )
    loss_type: DPOLossType = Field(
        "sigmoid", description="DPO: the preference loss (TRL's DPOTrainer losses; sigmoid is the DPO paper's)."
    )

    # Adapters
    use_lora: bool = Field(True, description="Train a LoRA adapter (false: full fine-tuning).")
    use_qlora: bool = Field(False, description="Load the base in 4-bit NF4 (bitsandbytes) and train LoRA on it.")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' for every linear layer but the head."
    )

    # Evaluation, checkpoints, logging
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every N steps (needs eval_dataset_name or validation_split)."
    )
    save_steps: int | None = Field(None, ge=1, description="Save a checkpoint every N steps.")
    save_total_limit: int | None = Field(None, ge=1, description="Keep at most this many checkpoints.")
    logging_steps: int = Field(1, ge=1, description="Log metrics every N steps.")
    report_to: list[ReportTarget] = Field(default_factory=list, description="Extra metric sinks.")
    output_dir: str | None = Field(
        None, description="Where the adapter, logs and checkpoints go. The service defaults it per job."
    )

    # Placement: where the job's training runs (SFT_EXECUTOR=ray; the thread executor trains in one process)
    num_workers: int = Field(
        1, ge=1, le=1024,
        description="Data-parallel workers (Ray Train). Each trains per_device_train_batch_size rows per step, so "
        "the global batch is num_workers × per_device_train_batch_size × gradient_accumulation_steps.",
    )
    num_gpus_per_worker: int | None = Field(
        None, ge=0, le=64,
        description="GPUs each worker holds on the Ray cluster. None: 1 when the cluster has GPUs, else 0 (CPU).",
    )
    num_cpus_per_worker: float = Field(1, gt=0, le=1024, description="CPUs each worker holds on the Ray cluster.")
    distributed_strategy: DistributedStrategy = Field(
        "auto",
        description="How num_workers > 1 share the model: ddp (each worker holds the whole model), fsdp (parameters, "
        "gradients and optimizer state sharded across the workers, PyTorch FSDP2), or auto (ddp when the model fits "
        "one worker, else fsdp).",
    )

    # Graders: scored on the eval set at every eval_steps, the base at step 0 (app/sft/grading.py)
    graders: list[Grader] = Field(
        default_factory=list, max_length=10,
        description="Graders in OpenAI's shapes (string_check, text_similarity, python, score_model with a base_url, "
        "multi) scored at step 0 (the base model) and every eval_steps on the eval set's first eval_max_rows rows: "
        "greedy answers to each row's prompt, its answer as item.reference (item.reference_json when it is JSON). "
        "Each mean score is the metric grader_<name>. Needs eval_steps and an eval set.",
    )
    eval_max_rows: int = Field(32, ge=1, le=2_000, description="Eval rows the graders score at each eval.")
    eval_max_new_tokens: int = Field(64, ge=1, le=2_048, description="Most tokens generated per eval answer.")
    keep: KeepBest | None = Field(
        None, description="Keep best: the job's final adapter is the checkpoint with the best score of this grader.")

    @field_validator("base_model", "dataset_name", "eval_dataset_name", "output_dir")
    @classmethod
    def _usable_as_path(cls, value: str | None) -> str | None:
        # Each may name a local path: text no file system takes is refused here, as a field error.
        return value if value is None else check_path_text(value)

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> SFTConfig:
        for batch in ("per_device_train_batch_size", "per_device_eval_batch_size"):
            tokens = getattr(self, batch) * self.max_length
            if tokens > MAX_TOKENS_PER_BATCH:
                raise ValueError(
                    f"{batch} × max_length = {getattr(self, batch):,} × {self.max_length:,} = {tokens:,} tokens "
                    f"per device batch, above the bound of {MAX_TOKENS_PER_BATCH:,}; lower one of them "
                    "(use gradient_accumulation_steps for a larger effective batch)"
                )
        if self.max_steps is None and self.num_train_epochs is None:
            raise ValueError("set max_steps or num_train_epochs")
        if self.max_steps is not None and self.num_train_epochs is not None:
            raise ValueError("set only one of max_steps and num_train_epochs")
        if self.use_qlora and not self.use_lora:
            raise ValueError("use_qlora trains a LoRA adapter on a 4-bit base: it needs use_lora=true")
        if not self.use_lora:
            # Set and not the default: a stored config carries every field, defaults included.
            set_lora = [name for name in _LORA_FIELDS if name in self.model_fields_set
                        and getattr(self, name) != type(self).model_fields[name].default]
            if set_lora:
                raise ValueError(f"{', '.join(set_lora)} only apply with use_lora=true")
        if self.eval_dataset_name and self.validation_split:
            raise ValueError("set only one of eval_dataset_name and validation_split")
        if not self.has_eval_set:
            set_eval = [name for name in _EVAL_FIELDS if getattr(self, name) is not None]
            if set_eval:
                raise ValueError(f"{', '.join(set_eval)} needs eval_dataset_name or validation_split")
        if self.save_total_limit is not None and self.save_steps is None:
            raise ValueError("save_total_limit needs save_steps")
        if self.loss_path == "trl" and self.token_metrics is False:
            raise ValueError("token_metrics=false needs loss_path cross_entropy or auto: TRL's fused head computes "
                             "entropy and token accuracy on every step")
        self._check_graders()
        if self.lora_target_modules != "all-linear" and not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module, or be 'all-linear'")
        self._check_distributed_strategy()
        self._check_method_fields()
        return self

    # Sharding (distributed_strategy): the rules live with the strategy, in sft/distributed.py

    def _check_distributed_strategy(self) -> None:
        from .distributed import fsdp_problems

        problems = fsdp_problems(self)
        if problems:
            raise ValueError(problems[0])

    def _check_method_fields(self) -> None:
        """Fields of the other method, set to anything but their default, are refused (a stored config carries
        every field, defaults included, so defaults pass); so is a row format of the other method."""
        other = _SFT_ONLY_FIELDS if self.method == "dpo" else _DPO_ONLY_FIELDS
        set_other = [name for name in other if getattr(self, name) != type(self).model_fields[name].default]
        if set_other:
            raise ValueError(f"{', '.join(set_other)} do not apply with method={self.method!r}")
        if self.dataset_format != "auto" and (self.dataset_format in PREFERENCE_FORMATS) != (self.method == "dpo"):
            kind = "preference" if self.dataset_format in PREFERENCE_FORMATS else "supervised"
            raise ValueError(f"dataset_format {self.dataset_format!r} is a {kind} format; method "
                             f"{self.method!r} needs " + ("preference or openai_preference" if self.method == "dpo"
                                                          else "a supervised format (or auto)"))

    def _check_graders(self) -> None:
        if not self.graders:
            if self.keep is not None:
                raise ValueError("keep needs graders: it keeps the checkpoint with the best grader score")
            return
        unique_grader_names(self.graders)
        if self.eval_steps is None:
            raise ValueError("graders need eval_steps (and eval_dataset_name or validation_split): they score the "
                             "eval set every eval_steps")
        if self.num_workers > 1:
            raise ValueError("graders score on one worker: set num_workers=1, or leave graders out")
        judges = [g.name for g in self.graders if isinstance(g, ScoreModelGrader) and g.base_url is None]
        if judges:
            raise ValueError(f"graders: score_model grader {judges[0]!r} needs a base_url during training")
        if self.keep is not None and self.keep.metric not in {g.name for g in self.graders}:
            raise ValueError(f"keep.metric {self.keep.metric!r} is not a grader's name (graders: "
                             f"{', '.join(g.name for g in self.graders)})")

    @property
    def has_eval_set(self) -> bool:
        return bool(self.eval_dataset_name or self.validation_split)

    # YAML

    @classmethod
    def from_yaml(cls, path: str | Path) -> SFTConfig:
        """Read a config from a YAML mapping."""
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a YAML mapping of config fields")
        return cls.model_validate(data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Render the config as YAML (all fields, defaults included); write it to ``path`` if given."""
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    # TRL

    def resolve_precision(self, device: str, hidden_size: int | None = None) -> Literal["bf16", "fp16", "fp32"]:
        """Choose the training precision for ``device`` ('cuda' or 'cpu'); see the ``precision`` field.
        ``hidden_size``: the model's, once known (auto on a CPU keeps narrow models in fp32)."""
        if self.precision == "auto":
            if device != "cuda":
                if hidden_size is not None and hidden_size < CPU_BF16_MIN_HIDDEN_SIZE:
                    return "fp32"
                return CPU_AUTO_PRECISION.get(cpu_bf16_units(), "fp32")
            import torch

            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if self.precision == "fp16" and device != "cuda":
            raise ConfigError(
                "precision fp16 needs a CUDA GPU and this machine has none; use 'auto', 'bf16' or 'fp32'",
                field="precision",
            )
        return self.precision

    def resolve_loss_path(self, device: str) -> Literal["cross_entropy", "trl"]:
        """The loss path for ``device`` ('cuda' or 'cpu'); see the ``loss_path`` field."""
        if self.loss_path != "auto":
            return self.loss_path
        if device != "cuda" or self.token_metrics is False:
            return "cross_entropy"
        if self.method == "dpo":
            return "trl"  # with Triton, TRL's fused head already projects only the answer tokens
        return CUDA_LOSS_PATH

    def resolve_token_metrics(self, device: str) -> bool:
        """Whether entropy and token accuracy are logged on ``device``; see the ``token_metrics`` field."""
        if self.resolve_loss_path(device) == "trl":
            return True
        return self.token_metrics if self.token_metrics is not None else device == "cuda"

    def to_trl(self, *, output_dir: str | Path, device: str, precision: Literal["bf16", "fp16", "fp32"] | None = None,
               disable_tqdm: bool = True, fsdp_layer_classes: list[str] | None = None) -> trl.SFTConfig | trl.DPOConfig:
        """Map onto ``trl.SFTConfig`` (``trl.DPOConfig`` for method dpo). ``precision``: what
        ``resolve_precision(device)`` returned (the trainer resolves it once); None resolves it here (TRL 1.16
        defaults to bf16, so it is always given to TRL). ``fsdp_layer_classes``: the model's decoder layers, for a
        run that trains with fsdp (``sft.distributed``)."""
        import trl

        from .distributed import fsdp_trl_args

        precision = precision or self.resolve_precision(device)
        has_eval = self.has_eval_set
        common = dict(
            output_dir=str(output_dir),
            max_steps=self.max_steps if self.max_steps is not None else -1,
            num_train_epochs=self.num_train_epochs if self.num_train_epochs is not None else 1.0,
            learning_rate=self.learning_rate,
            per_device_train_batch_size=self.per_device_train_batch_size,
            per_device_eval_batch_size=self.per_device_eval_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            max_length=self.max_length,
            # transformers 5 folded warmup_ratio into warmup_steps: a float below 1 is a ratio.
            warmup_steps=self.warmup_ratio,
            lr_scheduler_type=self.lr_scheduler_type,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            seed=self.seed,
            data_seed=self.seed,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            # transformers 5 renamed gradient_checkpointing to activation_checkpointing.
            activation_checkpointing=self.gradient_checkpointing and not fsdp_layer_classes,
            eval_strategy="steps" if has_eval and self.eval_steps else "no",
            eval_steps=self.eval_steps,
            save_strategy="steps" if self.save_steps else "no",
            save_steps=self.save_steps or 500,
            save_total_limit=self.save_total_limit,
            logging_steps=self.logging_steps,
            logging_first_step=True,
            report_to=list(self.report_to) or "none",
            disable_tqdm=disable_tqdm,
            dataloader_num_workers=0,
            use_cpu=device != "cuda",
            **(fsdp_trl_args(self, fsdp_layer_classes) if fsdp_layer_classes else {}),
        )
        if self.method == "dpo":
            from .dpo import dpo_args

            return dpo_args(self, common)
        return trl.SFTConfig(**common, packing=self.packing, completion_only_loss=self.completion_only_loss)
