"""The SFT API's response models, defined once: the server answers with them (``app.api.schemas``
re-exports them into its OpenAPI document) and this client reads its answers into them.

Pydantic only, so the light client carries no torch and no server. Every model keeps the JSON it was
read from in ``raw`` (fields a newer server adds are there too); ``from_dict`` reads one answer.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

#: A job's status: pending -> running (-> stopping) -> completed | failed | stopped; a resume takes a stopped
#: or failed job back to pending. The server's ``JobStatus`` enum has these values (a test holds them equal).
JobStatusName = Literal["pending", "running", "stopping", "completed", "failed", "stopped"]
JOB_STATUSES: tuple[str, ...] = get_args(JobStatusName)
#: Job statuses after which nothing more happens (until a resume).
TERMINAL_STATUSES = frozenset({"completed", "failed", "stopped"})


class WireModel(BaseModel):
    """A response of the API: immutable, and ``raw`` holds the JSON it was read from."""

    model_config = ConfigDict(frozen=True)

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        if isinstance(data, dict) and isinstance(model, WireModel):
            model._raw = data
        return model

    @property
    def raw(self) -> dict[str, Any]:
        """The server's JSON for this object ({} for one built in code)."""
        return self._raw

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Read one answer of the server."""
        return cls.model_validate(data)


class OpenRecord(WireModel):
    """An object that lists the fields a client can count on and keeps every other one the server sends;
    readable like the dict it is on the wire (``record["key"]``, ``record.get("key")``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def to_dict(self) -> dict[str, Any]:
        """The fields the server sent (or the code set), in their order."""
        return self.model_dump(exclude_unset=True)

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def keys(self):
        return self.to_dict().keys()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, dict):
            return self.to_dict() == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # equal to a dict, so not hashable


# Health


class GpuMemory(WireModel):
    memory_allocated_mb: float = Field(..., description="Tensors allocated now, in MiB (torch.cuda.memory_allocated).")
    memory_reserved_mb: float = Field(..., description="Held by the caching allocator, in MiB.")
    max_memory_allocated_mb: float = Field(..., description="Peak allocated since start or the last job's start.")


class ExecutorHealth(WireModel):
    """Where jobs run: the executor's name and whether it can take work (executors may add details)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(..., description="thread (the API process' own threads) or another executor's name.")
    status: Literal["up", "down"] = Field(..., description="down: jobs cannot start or be followed now.")


class HealthResponse(WireModel):
    status: Literal["ok"] = "ok"
    version: str
    auth: Literal["off", "keys"] = Field(..., description="off: no keys; keys: API calls need an API key.")
    max_concurrent_jobs: int
    jobs: dict[str, int] = Field(..., description="The caller's jobs by status (everyone's for an admin or with "
                                 "keys off; empty for a caller without a key).")
    device: Literal["cuda", "cpu"] = Field(..., description="Where jobs train and models generate.")
    gpu: GpuMemory | None = Field(
        None, description="This server's CUDA memory (null without a GPU): what its jobs and loaded models hold."
    )
    model_requests: dict[str, int] = Field(
        default_factory=dict,
        description="Generate / evaluate / merge requests: 'running' on the model threads and 'waiting' for one.",
    )
    executor: ExecutorHealth | None = Field(None, description="Where jobs run, and whether it is up.")


# Jobs


class JobStartResponse(WireModel):
    """What ``train`` and ``resume`` answer."""

    job_id: str = Field(..., description="The new job's id.", examples=["abc-123-def-456"])
    status: JobStatusName = Field(..., description="'running', or 'pending' while it waits in the queue.")
    queue_position: int | None = Field(None, description="1 = next to start; null when not queued.")


class JobProgress(WireModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    phase: str | None = Field(
        None, description="starting, merging_base and base_ready (a base made from an earlier job), loading_model, "
        "preparing_dataset, training, saving, or the final status."
    )
    current_step: int | None = Field(None, description="Optimizer steps done.")
    max_steps: int | None = Field(None, description="Steps the job trains for.")
    epoch: float | None = Field(None, description="Epochs done (fractional).")
    percent: float | None = Field(None, description="current_step / max_steps, in percent.")
    eta_seconds: float | None = Field(None, description="Estimated seconds left at the current pace.")
    steps_per_second: float | None = Field(None, description="Average pace of this attempt.")
    tokens_per_second: float | None = Field(None, description="Training tokens per second of this attempt.")
    samples_per_second: float | None = Field(None, description="Training rows per second of this attempt.")
    tokens_seen: float | None = Field(None, description="Training tokens seen so far.")
    metrics: dict[str, float] | None = Field(
        None, description="Latest logged values: loss, learning_rate, grad_norm, eval_loss, epoch."
    )

    @property
    def loss(self) -> float | None:
        """The latest logged training loss."""
        return (self.metrics or {}).get("loss")


class JobError(WireModel):
    category: Literal["out_of_memory", "dataset", "model", "config", "interrupted", "cancelled", "executor_down",
                      "internal"] = Field(
        ..., description="What kind of failure. interrupted: the server or the cluster lost the run (resume it); "
        "cancelled: ended hard without saving (a stop not honoured within the grace period); executor_down: the Ray "
        "cluster could not be reached to start it."
    )
    message: str = Field(..., description="What went wrong and what to do about it.")
    log_tail: list[str] = Field(default_factory=list, description="The job's last log lines.")


class EfficiencyHint(OpenRecord):
    """A setting that would have trained faster, and by about how much."""

    setting: str = Field(..., description="The config field it is about (packing, precision, gradient_checkpointing).")
    expected_gain: float | None = Field(None, description="About how many times the throughput it would give.")
    text: str = Field(..., description="The hint, for people.")


class EfficiencyReport(OpenRecord):
    """How efficiently a run trained (app/sft/efficiency.py). Step time covers forward, backward, clipping and the
    optimizer, not data loading, logging, evaluation or checkpoints."""

    device: str | None = Field(None, description="cpu or cuda.")
    dtype: str | None = Field(None, description="The precision it trained in.")
    step_seconds: float | None = Field(None, description="Seconds of optimizer steps timed.")
    processed_tokens: int | None = Field(None, description="Positions the model ran over, padding included.")
    real_tokens: int | None = Field(None, description="Real (non-padding) tokens trained on.")
    trained_tokens: int | None = Field(None, description="Tokens whose next-token label is in the loss.")
    padding_share: float | None = Field(None, description="Share of the processed positions that were padding.")
    real_tokens_per_s: float | None = Field(None, description="Real tokens per second of step time.")
    model_flops: float | None = Field(None, description="Model FLOPs of the steps (LoRA: 4 × frozen params × tokens "
                                      "plus LoRA's own; full: 6 ×; plus causal attention).")
    achieved_tflops: float | None = Field(None, description="model_flops / step_seconds, in TFLOP/s.")
    peak_tflops: float | None = Field(None, description="The device's peak for dtype, in TFLOP/s.")
    peak_source: str | None = Field(None, description="Where the peak comes from (a datasheet, or measured).")
    mfu: float | None = Field(None, description="Model FLOPs utilisation: achieved_tflops / peak_tflops.")
    peak_rss_mb: float | None = Field(None, description="CPU: the process' resident memory peak sampled during the "
                                      "steps (the whole process: with the thread executor, the server and any "
                                      "concurrent job too).")
    process_peak_rss_mb: float | None = Field(None, description="CPU: the process' lifetime resident high-water mark.")
    peak_cuda_allocated_mb: float | None = Field(None, description="CUDA: peak memory allocated by tensors.")
    peak_cuda_reserved_mb: float | None = Field(None, description="CUDA: peak memory the caching allocator held.")
    peak_memory_share: float | None = Field(None, description="The peak (RSS or CUDA reserved) / device memory.")
    hints: list[EfficiencyHint] = Field(default_factory=list, description="Settings that would train faster.")

    def summary(self) -> str:
        """One line for people: tokens/s, padding, MFU, peak memory."""
        parts = []
        if self.real_tokens_per_s is not None:
            parts.append(f"{self.real_tokens_per_s:,.0f} real tokens/s")
        if self.padding_share is not None:
            parts.append(f"{self.padding_share:.0%} padding")
        if self.mfu is not None:
            parts.append(f"MFU {self.mfu:.1%} of {self.peak_tflops:,.2f} TFLOP/s {self.dtype}")
        memory = self.peak_cuda_reserved_mb if self.peak_cuda_reserved_mb is not None else self.peak_rss_mb
        if memory is not None:
            parts.append(f"peak memory {memory:,.0f} MiB")
        return "Efficiency: " + (", ".join(parts) or "nothing measured")


class JobResult(OpenRecord):
    """What a finished run produced (executors may add fields)."""

    train_loss: float | None = Field(None, description="Average training loss of the run.")
    eval_loss: float | None = Field(None, description="Final eval loss, when evaluated.")
    adapter_path: str | None = Field(None, description="The saved adapter (the full model for full fine-tuning).")
    global_step: int | None = Field(None, description="Optimizer steps trained.")
    max_steps: int | None = Field(None, description="Steps it was to train for.")
    train_runtime: float | None = Field(None, description="Seconds of training.")
    train_tokens_per_second: float | None = Field(None, description="Training tokens per second.")
    stopped: bool | None = Field(None, description="Ended by a stop, with what was trained saved.")
    output_dir: str | None = Field(None, description="The job's output directory.")
    artifact: str | None = Field(None, description="adapter or model.")
    dataset_format: str | None = Field(None, description="The format the dataset was read in.")
    train_rows: int | None = Field(None, description="Training rows.")
    eval_rows: int | None = Field(None, description="Eval rows.")
    precision: str | None = Field(None, description="What the run trained in ('auto' resolved for the device).")
    peak_gpu_memory_mb: float | None = Field(None, description="Peak CUDA memory of the process during the run.")
    loss_path: str | None = Field(None, description="cross_entropy or trl.")
    parallelism: dict[str, Any] | None = Field(
        None, description="How the workers shared the model, measured on them: strategy (single, ddp, fsdp), world_size, "
        "fsdp_active, and per rank its parameters, local_parameters (an fsdp shard's local size), sharded_tensors "
        "peak_rss_mb and mmap_threshold_bytes (glibc's, pinned on fsdp ranks; null: its own adjusting default).")
    efficiency: EfficiencyReport | None = Field(None, description="How efficiently it trained.")
    graders: dict[str, Any] | None = Field(
        None, description="With config.graders: history (each eval's step and mean score per grader), base (step 0), "
        "final, kept (keep best: step, metric, mode, value), eval_seconds, eval_loss_seconds, eval_rows.")


class Attempt(OpenRecord):
    """One run of a job (a resume starts another)."""

    attempt: int = Field(..., description="1 for the first run.")
    started_at: str = Field(..., description="ISO 8601, UTC.")
    ended_at: str | None = Field(None, description="When it ended; null while it runs.")
    status: str | None = Field(None, description="How it ended (completed, failed, stopped, or interrupted: the "
                               "server or the cluster lost it); null while it runs or when a resume ended it.")
    resumed_from_step: int | None = Field(None, description="The checkpoint step it continued from.")


class JobConfig(OpenRecord):
    """A job's whole config as it trains (every SFTConfig field, defaults and the resolved output_dir
    included; GET /api/sft/config-schema describes them)."""

    base_model: str = Field(..., description="The model it fine-tunes.")
    dataset_name: str = Field(..., description="The dataset it trains on.")
    output_dir: str | None = Field(None, description="Where its adapter, checkpoints and logs go.")


# Fit planner (POST /api/sft/plan; a job's memory_plan and memory)


class MemoryEstimate(WireModel):
    """One worker's estimated peak memory, term by term (MiB), from the model's config.json alone."""

    model: str = Field(..., description="The model planned for.")
    device: Literal["cuda", "cpu"] = Field(..., description="The kind of device the estimate is for.")
    strategy: Literal["ddp", "fsdp"] = Field(..., description="How the workers share the model (auto resolved).")
    num_workers: int = Field(..., description="Workers; fsdp divides weights, gradients and optimizer by them.")
    precision: str = Field(..., description="The training precision assumed.")
    method: Literal["lora", "qlora", "full"] = Field(..., description="What is trained.")
    params: int = Field(..., description="The model's parameters.")
    trainable_params: int = Field(..., description="Parameters trained (LoRA's adapters, or all).")
    tokens_per_batch: int = Field(..., description="per_device_train_batch_size × max_length (every row full).")
    weights_mb: float = Field(..., description="Weights in their load dtype (4-bit NF4 for QLoRA's linear layers).")
    gradients_mb: float = Field(..., description="Gradients held at the peak (and the optimizer step's temporary).")
    optimizer_mb: float = Field(..., description="AdamW's two moments of the trained parameters.")
    activations_mb: float = Field(..., description="What autograd keeps for the backward pass at the peak.")
    logits_mb: float = Field(..., description="The loss path's logits, log-softmax and their gradient.")
    overhead_mb: float = Field(..., description="CUDA context and allocator slack, or the CPU process itself.")
    loading_mb: float = Field(0, description="CPU: what loading the checkpoint adds where it peaks above training.")
    total_mb: float = Field(..., description="The estimated peak: the sum of the terms.")


class PlanDevice(WireModel):
    kind: Literal["cuda", "cpu"] = Field(..., description="GPU or CPU memory.")
    name: str = Field(..., description="Which memory (this GPU, the machine's available memory, a Ray node's).")
    memory_mb: float = Field(..., description="What one worker has.")
    max_workers: int = Field(..., description="Workers the executor can place at once.")


class MemoryPlan(WireModel):
    """A config's estimated peak memory per worker against what the executor's workers have."""

    estimate: MemoryEstimate = Field(..., description="The estimate, term by term.")
    estimated_peak_mb: float = Field(..., description="The estimated peak per worker.")
    device: PlanDevice | None = Field(None, description="What a worker has; null when the server cannot tell.")
    margin: float = Field(..., description="Share of the device an estimate may reach (SFT_FIT_MARGIN).")
    fits: bool | None = Field(None, description="Whether it fits; null when the device is unknown.")
    suggestions: list[str] = Field(default_factory=list, description="Single changes that fit, when it does not.")
    message: str = Field(..., description="The plan in one sentence (what a refused submit says).")
    field: str | None = Field(None, description="When it does not fit: the field a submit's 400 names (the first "
                              "suggestion's, or config.base_model).")


class MemoryReport(WireModel):
    """A job's estimated peak memory (made at submit) against the peak its run measured."""

    estimated_peak_mb: float = Field(..., description="The planner's estimate at submit.")
    compared_estimate_mb: float = Field(..., description="The estimate compared: less the CUDA overhead when the "
                                        "measure is torch's allocated peak.")
    measured_peak_mb: float | None = Field(None, description="The run's measured peak; null until it has one.")
    measured_from: str | None = Field(None, description="The result field measured: peak_gpu_memory_mb or "
                                      "peak_rss_mb.")
    error: float | None = Field(None, description="compared_estimate_mb / measured_peak_mb - 1.")
    device_memory_mb: float | None = Field(None, description="What the worker's device had at submit.")


class JobStatusResponse(WireModel):
    job_id: str = Field(..., description="Job id.")
    status: JobStatusName = Field(..., description="pending → running → completed | failed | stopped.",
                                  json_schema_extra={"x-terminal": sorted(TERMINAL_STATUSES)})
    created_at: str = Field(..., description="ISO 8601, UTC.")
    started_at: str | None = Field(None, description="When its first attempt started.")
    completed_at: str | None = Field(None, description="When it reached a terminal status.")
    error: str | None = Field(None, description="Why it failed.")
    result: JobResult | None = Field(
        None, description="What the run produced (set when the job ends).",
        examples=[{"train_loss": 0.5, "eval_loss": 0.6, "adapter_path": "./data/outputs/abc/adapter"}],
    )
    error_detail: JobError | None = Field(None, description="The failure's category, message and log tail.")
    queue_position: int | None = Field(None, description="Place in the queue while pending (1 = next).")
    progress: JobProgress | None = Field(None, description="Live progress while it runs; last values after.")
    attempts: list[Attempt] = Field(default_factory=list, description="Each run of this job.")
    config: JobConfig = Field(..., description="The config as submitted, with its output_dir.")
    memory_plan: MemoryPlan | None = Field(None, description="The fit planner's estimate made at submit.")
    memory: MemoryReport | None = Field(None, description="Estimated vs measured peak memory.")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def adapter_path(self) -> str | None:
        """Where the server saved the adapter (or the full model), once the job has one."""
        return self.result.adapter_path if self.result is not None else None


class JobListResponse(WireModel):
    jobs: list[JobStatusResponse] = Field(..., description="This page of jobs.")
    total: int = Field(..., description="Jobs matching the filter, over all pages.")
    offset: int = Field(..., description="Index of the first job of this page.")
    limit: int = Field(..., description="Page size asked for.")


class StopResponse(WireModel):
    message: str = Field(..., examples=["Job abc-123 stopped"])
    status: JobStatusName = Field(..., description="'stopped' for a pending job, 'stopping' for a running one.")


class DeleteResponse(WireModel):
    message: str = Field(..., examples=["Job abc-123 deleted; its files stay in ./data/outputs/abc-123"])


class ConfigSaveResponse(WireModel):
    config_id: str = Field(..., examples=["xyz-789"])
    name: str = Field(..., examples=["alpaca_qlora_gpt2"])


class ConfigResponse(WireModel):
    config_id: str = Field(..., description="Config id.")
    name: str = Field(..., description="Template name.")
    config: dict[str, Any] = Field(..., description="The saved fields (a template may leave some out).")
    created_at: str = Field(..., description="ISO 8601, UTC.")


class EventResponse(WireModel):
    """One entry of a job's event log; ``seq`` is its SSE id."""

    seq: int = Field(..., description="Sequence number within the job (the SSE event id).")
    time: str = Field(..., description="ISO 8601, UTC.")
    type: str = Field(
        ...,
        description="created, queued, started, phase (merging_base, base_ready), model_loaded, dataset_ready, "
        "metrics, eval, checkpoint_saved, "
        "stopping, resumed, completed, failed, stopped.",
    )
    level: Literal["info", "warning", "error"] = Field(..., description="Severity.")
    message: str = Field(..., description="What happened, for people.")
    data: dict[str, Any] = Field(default_factory=dict, description="Structured details.")

    @property
    def is_terminal(self) -> bool:
        """The job ended with this event (completed, failed or stopped)."""
        return self.type in TERMINAL_STATUSES


class EventListResponse(WireModel):
    events: list[EventResponse]
    next_after: int = Field(..., description="Pass as ?after= to get the events after this page.")


class MetricsResponse(WireModel):
    job_id: str
    efficiency: EfficiencyReport | None = Field(None, description="How efficiently it trained, once it has.")
    metrics: list[dict[str, Any]] = Field(
        ..., description="One point per log: step, loss, learning_rate, grad_norm, eval_loss, num_tokens, "
        "epoch, elapsed_seconds, attempt."
    )


class LogsResponse(WireModel):
    job_id: str
    lines: list[str] = Field(..., description="The job's log lines (its own thread's only).")


class CheckpointInfo(WireModel):
    step: int = Field(..., description="Optimizer step it was saved at.")
    path: str = Field(..., description="Checkpoint directory (adapter or model, optimizer, scheduler, RNG).")
    eval_loss: float | None = Field(None, description="Eval loss at that step, when evaluated.")
    created_at: str = Field(..., description="ISO 8601, UTC.")


class CheckpointListResponse(WireModel):
    job_id: str
    checkpoints: list[CheckpointInfo] = Field(..., description="Oldest first.")


# Using a trained model


class GenerateResponse(WireModel):
    completion: str = Field(..., description="The fine-tuned model's completion.")
    base_completion: str | None = Field(None, description="The base model's completion (with compare_base).")
    prompt_tokens: int = Field(..., description="Tokens in the rendered prompt.")
    completion_tokens: int = Field(..., description="Tokens generated by the fine-tuned model.")
    base_completion_tokens: int | None = Field(None, description="Tokens generated by the base model.")
    latency_ms: float = Field(..., description="Generation time of the fine-tuned model (loading excluded).")
    base_latency_ms: float | None = Field(None, description="Generation time of the base model.")


class MergeResponse(WireModel):
    merged_path: str = Field(..., description="Directory of the standalone merged model (<output_dir>/merged).")
    size_bytes: int = Field(..., description="Total size of its files.")


class EvaluationScore(WireModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    exact_match: float = Field(..., description="Fraction of rows answered exactly (or as equal JSON).")
    n: int = Field(..., description="Rows scored.")
    scores: dict[str, float] = Field(
        default_factory=dict, description="Each requested grader's mean score over the rows, by grader name.")
    examples: list[dict[str, Any]] = Field(default_factory=list, description="A few prompts, answers, predictions.")
    misses: list[dict[str, Any]] = Field(
        default_factory=list, description="The rows answered wrong (the first 100): row (0-based), prompt, reference, "
                                          "prediction.")


class EvaluateResponse(WireModel):
    job_id: str
    dataset_name: str
    split: str
    base: EvaluationScore = Field(..., description="The base model's score.")
    tuned: EvaluationScore = Field(..., description="The fine-tuned model's score.")


class ModelInfo(WireModel):
    name: str = Field(..., description="What to put in a config's base_model.")
    kind: Literal["bundled", "converted", "local", "hub"] = Field(
        ..., description="bundled alias, model converted into the model cache, local directory, or Hub cache."
    )
    path: str = Field(..., description="Where it is (or will be, for a bundled alias not yet converted).")
    ready: bool = Field(..., description="Loads without a conversion or a download.")


# Exports


class ExportFile(WireModel):
    name: str
    size_bytes: int


class ExportResult(WireModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    files: list[ExportFile] = Field(..., description="What the export folder holds.")
    size_bytes: int = Field(..., description="Their total size.")
    seconds: float = Field(..., description="How long the export took (merge and conversion included).")


class ExportResponse(WireModel):
    export_id: str
    job_id: str
    format: str
    type: str | None = Field(None, description="The GGUF type (gguf exports only).")
    status: Literal["pending", "running", "completed", "failed"]
    path: str = Field(..., description="The export's folder on the server.")
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = Field(None, description="Why it failed.")
    result: ExportResult | None = None
    download_url: str | None = Field(None, description="The whole folder as a .tar (once completed).")
    files_url: str | None = Field(None, description="Its files one by one: <files_url>/<name> (once completed).")


class ExportListResponse(WireModel):
    job_id: str
    exports: list[ExportResponse]


class ExportFormatsResponse(WireModel):
    formats: list[str]
    gguf_types: list[str] = Field(..., description="GGUF types this machine makes now.")
    default_gguf_type: str
    unavailable_gguf_types: dict[str, str] = Field(..., description="Other GGUF types, and why they are missing.")
    converter: dict[str, Any] = Field(..., description="The HF->GGUF converter: package, version, architectures.")
    quantizer: str | None = Field(None, description="llama.cpp's llama-quantize, when found.")


# Webhooks


class WebhookEndpoint(WireModel):
    id: str = Field(..., description="The endpoint's id (wh_...).")
    url: str = Field(..., description="Where its deliveries are POSTed.")
    events: list[str] = Field(..., description="The event types it receives (fine_tuning.job.succeeded...).")
    scope: Literal["user", "global"] = Field(..., description="user: the events of its owner's jobs; global (admins "
                                             "only): every user's.")
    owner: str | None = Field(..., description="The key name that registered it (null with keys off).")
    description: str | None = None
    created_at: str


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(..., description="The signing secret (whsec_...), shown this once: give it to "
                        "openai.OpenAI(webhook_secret=...).webhooks.unwrap.")


class WebhookListResponse(WireModel):
    webhooks: list[WebhookEndpoint]


class WebhookAttempt(WireModel):
    attempt: int = Field(..., description="1 for the first try.")
    started_at: str
    status_code: int | None = Field(..., description="The receiver's answer (null: none: refused, unreachable, "
                                    "timed out).")
    latency_ms: float | None
    error: str | None = Field(..., description="Why the attempt failed (null: a 2xx answer).")
    response: str | None = Field(..., description="The start of the receiver's answer (256 characters at most).")


class WebhookDelivery(WireModel):
    id: str = Field(..., description="The webhook-id header (msg_...): the same on every retry and redelivery.")
    endpoint_id: str
    event_id: str
    event_type: str
    job_id: str | None
    status: Literal["pending", "delivered", "failed"] = Field(
        ..., description="pending: not answered with a 2xx yet, retried with back-off; delivered; failed: retried "
        "for SFT_WEBHOOKS_RETRY_PERIOD_SECONDS without success (POST .../redeliver sends it again).")
    created_at: str
    next_attempt_at: str | None = Field(..., description="When a pending delivery is tried next.")
    delivered_at: str | None
    last_status_code: int | None
    last_error: str | None
    payload: dict[str, Any] = Field(..., description="The event as sent: {id, object, created_at, type, data}.")
    attempts: list[WebhookAttempt] = Field(..., description="Every attempt, oldest first.")


class WebhookDeliveryListResponse(WireModel):
    endpoint_id: str
    deliveries: list[WebhookDelivery] = Field(..., description="Newest first.")


# Preferences picked in "Try it"

#: How a preference was made: the tuned answer picked over the base one, the base over the tuned, or a corrected
#: answer written over the tuned one.
PreferenceSourceName = Literal["picked_tuned", "picked_base", "corrected"]


class PromptMessage(WireModel):
    role: Literal["system", "user", "assistant", "tool"] = Field(..., description="Who speaks.")
    content: str = Field(..., description="What is said.")


class Preference(WireModel):
    id: str = Field(..., description="The preference's id (pref_...).")
    job_id: str = Field(..., description="The tuned job whose answer it judges.")
    prompt: list[PromptMessage] = Field(..., description="The chat the answers reply to.")
    chosen: str = Field(..., description="The better answer.")
    rejected: str = Field(..., description="The worse answer.")
    source: PreferenceSourceName = Field(..., description="picked_tuned, picked_base or corrected.")
    owner: str | None = Field(..., description="The key name that kept it (null with keys off).")
    created_at: str = Field(..., description="ISO 8601, UTC.")


class PreferenceListResponse(WireModel):
    preferences: list[Preference] = Field(..., description="This page, oldest first.")
    total: int = Field(..., description="Preferences matching the filter, over all pages.")


class PreferencesDeleted(WireModel):
    job_id: str
    deleted: int = Field(..., description="How many preferences were deleted.")


class PreferenceTrainResponse(JobStartResponse):
    file_id: str = Field(..., description="The uploaded file (TRL prompt/chosen/rejected JSONL) the DPO job trains on.")
    preferences: int = Field(..., description="How many preferences it holds.")
    base_job_id: str = Field(..., description="The tuned job the DPO job starts from (base_model job:<id>).")


# Errors


class FieldError(WireModel):
    field: str | None = Field(..., description="The field at fault, a dotted path into the request "
                              "(config.lora_r, messages.0.content); null when no one field is.",
                              examples=["config.lora_r"])
    message: str = Field(..., description="What is wrong with it.", examples=["Input should be greater than 0"])
    type: str = Field(..., description="The kind of problem: pydantic's error type for a 422 (missing, "
                      "int_parsing, extra_forbidden...); invalid_config, invalid_dataset, invalid_model or "
                      "invalid_request for a 400.", examples=["greater_than"])


class ErrorResponse(WireModel):
    """Every error outside /v1. ``detail`` is one string naming the field, file and line or id;
    a 400 and a 422 also list each problem in ``errors``."""

    detail: str = Field(..., description="What is wrong, naming the field, file and line or id "
                        "(several problems: 'field: message' clauses joined by '; ').",
                        examples=["config.lora_rank: unknown field (did you mean lora_r?)"])
    errors: list[FieldError] | None = Field(None, description="400 and 422 only: each problem, with the "
                                            "field it names.")
