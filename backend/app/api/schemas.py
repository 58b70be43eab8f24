"""Request and response models of the SFT API (the seed's names, plus what was added)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JobStatusName = Literal["pending", "running", "stopping", "completed", "failed", "stopped"]

DEMO_CONFIG = {
    "base_model": "smollm2-135m-instruct",
    "dataset_name": "bundled:json-extract",
    "max_steps": 40,
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-3,
    "max_length": 256,
    "lora_dropout": 0.0,
}


class FieldError(BaseModel):
    field: str | None = Field(..., description="The field at fault, a dotted path into the request "
                              "(config.lora_r, messages.0.content); null when no one field is.",
                              examples=["config.lora_r"])
    message: str = Field(..., description="What is wrong with it.", examples=["Input should be greater than 0"])
    type: str = Field(..., description="The kind of problem: pydantic's error type for a 422 (missing, "
                      "int_parsing, extra_forbidden...); invalid_config, invalid_dataset, invalid_model or "
                      "invalid_request for a 400.", examples=["greater_than"])


class ErrorResponse(BaseModel):
    """Every error outside /v1. ``detail`` is one string naming the field, file and line or id;
    a 400 and a 422 also list each problem in ``errors``."""

    detail: str = Field(..., description="What is wrong, naming the field, file and line or id "
                        "(several problems: 'field: message' clauses joined by '; ').",
                        examples=["config.lora_rank: unknown field (did you mean lora_r?)"])
    errors: list[FieldError] | None = Field(None, description="400 and 422 only: each problem, with the "
                                            "field it names.")


#: The error answers every route may give, for the OpenAPI document (routers add their own).
ERROR_RESPONSES = {
    400: {"model": ErrorResponse, "description": "The request cannot run; detail names the field, errors "
          "lists each problem"},
    422: {"model": ErrorResponse, "description": "The request body (or a parameter) does not parse; detail "
          "names the field, errors lists each problem"},
    404: {"model": ErrorResponse, "description": "Unknown job or config id"},
    409: {"model": ErrorResponse, "description": "The job's state does not allow it"},
    403: {"model": ErrorResponse, "description": "A state-changing request from a foreign Origin"},
    413: {"model": ErrorResponse, "description": "The request body is over SFT_MAX_REQUEST_BYTES"},
    415: {"model": ErrorResponse, "description": "A state-changing request with a form or text Content-Type"},
}


class JobStartRequest(BaseModel):
    """Start a job from a full ``config``, or from a saved config (``config_id``) plus ``overrides``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"config": DEMO_CONFIG},
                                        {"config_id": "xyz-789", "overrides": {"max_steps": 10}}]},
    )

    config: dict[str, Any] | None = Field(
        None, description="The training config: fields of SFTConfig (see GET /api/sft/config-schema)."
    )
    config_id: str | None = Field(None, description="Id of a saved config to start from.")
    overrides: dict[str, Any] | None = Field(
        None, description="Fields that replace the saved config's (only with config_id)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> JobStartRequest:
        if (self.config is None) == (self.config_id is None):
            raise ValueError("give exactly one of config and config_id")
        if self.overrides is not None and self.config_id is None:
            raise ValueError("overrides only apply with config_id")
        return self


class JobStartResponse(BaseModel):
    job_id: str = Field(..., description="The new job's id.", examples=["abc-123-def-456"])
    status: JobStatusName = Field(..., description="'running', or 'pending' while it waits in the queue.")
    queue_position: int | None = Field(None, description="1 = next to start; null when not queued.")


class JobProgress(BaseModel):
    model_config = ConfigDict(extra="allow")

    phase: str | None = Field(
        None, description="starting, loading_model, preparing_dataset, training, saving, or the final status."
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


class JobError(BaseModel):
    category: Literal["out_of_memory", "dataset", "model", "config", "interrupted", "cancelled", "executor_down",
                      "internal"] = Field(
        ..., description="What kind of failure. interrupted: the server or the cluster lost the run (resume it); "
        "cancelled: ended hard without saving (a stop not honoured within the grace period); executor_down: the Ray "
        "cluster could not be reached to start it."
    )
    message: str = Field(..., description="What went wrong and what to do about it.")
    log_tail: list[str] = Field(default_factory=list, description="The job's last log lines.")


class JobStatusResponse(BaseModel):
    job_id: str = Field(..., description="Job id.")
    status: JobStatusName = Field(..., description="pending → running → completed | failed | stopped.")
    created_at: str = Field(..., description="ISO 8601, UTC.")
    started_at: str | None = Field(None, description="When its first attempt started.")
    completed_at: str | None = Field(None, description="When it reached a terminal status.")
    error: str | None = Field(None, description="Why it failed.")
    result: dict[str, Any] | None = Field(
        None,
        description="train_loss, eval_loss, adapter_path, global_step, train_runtime, "
        "train_tokens_per_second, stopped, ... (set when the job ends).",
        examples=[{"train_loss": 0.5, "eval_loss": 0.6, "adapter_path": "./data/outputs/abc/adapter"}],
    )
    error_detail: JobError | None = Field(None, description="The failure's category, message and log tail.")
    queue_position: int | None = Field(None, description="Place in the queue while pending (1 = next).")
    progress: JobProgress | None = Field(None, description="Live progress while it runs; last values after.")
    attempts: list[dict[str, Any]] = Field(default_factory=list, description="Each run of this job.")
    config: dict[str, Any] = Field(..., description="The config as submitted, with its output_dir.")


class JobListResponse(BaseModel):
    jobs: list[JobStatusResponse] = Field(..., description="This page of jobs.")
    total: int = Field(..., description="Jobs matching the filter, over all pages.")
    offset: int = Field(..., description="Index of the first job of this page.")
    limit: int = Field(..., description="Page size asked for.")


class StopResponse(BaseModel):
    message: str = Field(..., examples=["Job abc-123 stopped"])
    status: JobStatusName = Field(..., description="'stopped' for a pending job, 'stopping' for a running one.")


class DeleteResponse(BaseModel):
    message: str = Field(..., examples=["Job abc-123 deleted; its files stay in ./data/outputs/abc-123"])


class ConfigSaveRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "demo_lora", "config": DEMO_CONFIG}]},
    )

    name: str = Field(..., min_length=1, max_length=200, description="Unique name of the template.")
    config: dict[str, Any] = Field(..., description="SFTConfig fields; a template may leave some out.")


class ConfigSaveResponse(BaseModel):
    config_id: str = Field(..., examples=["xyz-789"])
    name: str = Field(..., examples=["alpaca_qlora_gpt2"])


class ConfigResponse(BaseModel):
    config_id: str = Field(..., description="Config id.")
    name: str = Field(..., description="Template name.")
    config: dict[str, Any] = Field(..., description="The saved fields.")
    created_at: str = Field(..., description="ISO 8601, UTC.")


class EventResponse(BaseModel):
    seq: int = Field(..., description="Sequence number within the job (the SSE event id).")
    time: str = Field(..., description="ISO 8601, UTC.")
    type: str = Field(
        ...,
        description="created, queued, started, model_loaded, dataset_ready, metrics, eval, checkpoint_saved, "
        "stopping, resumed, completed, failed, stopped.",
    )
    level: Literal["info", "warning", "error"] = Field(..., description="Severity.")
    message: str = Field(..., description="What happened, for people.")
    data: dict[str, Any] = Field(default_factory=dict, description="Structured details.")


class EventListResponse(BaseModel):
    events: list[EventResponse]
    next_after: int = Field(..., description="Pass as ?after= to get the events after this page.")


class MetricsResponse(BaseModel):
    job_id: str
    metrics: list[dict[str, Any]] = Field(
        ..., description="One point per log: step, loss, learning_rate, grad_norm, eval_loss, num_tokens, "
        "epoch, elapsed_seconds, attempt."
    )


class LogsResponse(BaseModel):
    job_id: str
    lines: list[str] = Field(..., description="The job's log lines (its own thread's only).")


class CheckpointInfo(BaseModel):
    step: int = Field(..., description="Optimizer step it was saved at.")
    path: str = Field(..., description="Checkpoint directory (adapter or model, optimizer, scheduler, RNG).")
    eval_loss: float | None = Field(None, description="Eval loss at that step, when evaluated.")
    created_at: str = Field(..., description="ISO 8601, UTC.")


class CheckpointListResponse(BaseModel):
    job_id: str
    checkpoints: list[CheckpointInfo] = Field(..., description="Oldest first.")


class GpuMemory(BaseModel):
    memory_allocated_mb: float = Field(..., description="Tensors allocated now, in MiB (torch.cuda.memory_allocated).")
    memory_reserved_mb: float = Field(..., description="Held by the caching allocator, in MiB.")
    max_memory_allocated_mb: float = Field(..., description="Peak allocated since start or the last job's start.")


class ExecutorHealth(BaseModel):
    """Where jobs run: the executor's name and whether it can take work (executors may add details)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(..., description="thread (the API process' own threads) or another executor's name.")
    status: Literal["up", "down"] = Field(..., description="down: jobs cannot start or be followed now.")


class HealthResponse(BaseModel):
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



# Using a trained model: generate, evaluate, merge, list models


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"] = Field(..., description="Who speaks.")
    content: str = Field(..., max_length=200_000, description="What is said.")


class GenerateRequest(BaseModel):
    """Complete ``messages`` (rendered with the model's chat template) or a raw ``prompt``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"messages": [{"role": "user", "content": "Extract the contact as JSON: Ada, 36, lives in Paris."}],
             "max_new_tokens": 64, "compare_base": True},
            {"prompt": "The capital of France is", "max_new_tokens": 8},
        ]},
    )

    messages: list[ChatMessage] | None = Field(
        None, min_length=1, max_length=1000,
        description="A chat; rendered with the tokenizer's chat template and its generation prompt.",
    )
    prompt: str | None = Field(None, min_length=1, max_length=200_000, description="Raw text to continue.")
    max_new_tokens: int = Field(128, ge=1, le=2048, description="Most tokens to generate.")
    temperature: float = Field(0.0, ge=0, le=5, description="0 is greedy (deterministic); above 0 samples.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling (only when temperature > 0).")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Makes sampling repeatable.")
    compare_base: bool = Field(False, description="Also generate with the base model, for comparison.")
    checkpoint: str | None = Field(
        None, max_length=100, description="Use this checkpoint (e.g. 'checkpoint-20') instead of the final adapter."
    )

    @model_validator(mode="after")
    def _one_input(self) -> GenerateRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of messages and prompt")
        return self


class GenerateResponse(BaseModel):
    completion: str = Field(..., description="The fine-tuned model's completion.")
    base_completion: str | None = Field(None, description="The base model's completion (with compare_base).")
    prompt_tokens: int = Field(..., description="Tokens in the rendered prompt.")
    completion_tokens: int = Field(..., description="Tokens generated by the fine-tuned model.")
    base_completion_tokens: int | None = Field(None, description="Tokens generated by the base model.")
    latency_ms: float = Field(..., description="Generation time of the fine-tuned model (loading excluded).")
    base_latency_ms: float | None = Field(None, description="Generation time of the base model.")


class MergeResponse(BaseModel):
    merged_path: str = Field(..., description="Directory of the standalone merged model (<output_dir>/merged).")
    size_bytes: int = Field(..., description="Total size of its files.")


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"job_id": "abc-123", "dataset_name": "bundled:json-extract",
                                         "max_samples": 20}]},
    )

    job_id: str = Field(..., description="A completed or stopped job with an adapter.")
    dataset_name: str = Field(
        "bundled:json-extract", min_length=1,
        description="Conversational dataset (messages, sharegpt or alpaca rows): a bundled name or local path.",
    )
    split: str = Field("eval", min_length=1, description="Split of dataset_name.")
    max_samples: int = Field(50, ge=1, le=10_000, description="Score at most this many rows (the first ones).")
    max_new_tokens: int = Field(64, ge=1, le=2048, description="Most tokens generated per answer.")
    checkpoint: str | None = Field(None, max_length=100, description="Score this checkpoint instead.")


class EvaluationScore(BaseModel):
    model_config = ConfigDict(extra="allow")

    exact_match: float = Field(..., description="Fraction of rows answered exactly (or as equal JSON).")
    n: int = Field(..., description="Rows scored.")
    examples: list[dict[str, Any]] = Field(default_factory=list, description="A few prompts, answers, predictions.")
    misses: list[dict[str, Any]] = Field(
        default_factory=list, description="The rows answered wrong (the first 100): row (0-based), prompt, reference, "
                                          "prediction.")


class EvaluateResponse(BaseModel):
    job_id: str
    dataset_name: str
    split: str
    base: EvaluationScore = Field(..., description="The base model's score.")
    tuned: EvaluationScore = Field(..., description="The fine-tuned model's score.")


class ModelInfo(BaseModel):
    name: str = Field(..., description="What to put in a config's base_model.")
    kind: Literal["bundled", "converted", "local", "hub"] = Field(
        ..., description="bundled alias, model converted into the model cache, local directory, or Hub cache."
    )
    path: str = Field(..., description="Where it is (or will be, for a bundled alias not yet converted).")
    ready: bool = Field(..., description="Loads without a conversion or a download.")


# Dataset preview


class DatasetPreviewRequest(BaseModel):
    """The dataset fields of a training config, plus the base model whose tokenizer measures it.

    For example ``{"dataset_name": "bundled:json-extract", "base_model": "smollm2-135m-instruct"}``
    (the first use of the bundled model converts it, as its first job does: a minute or two on a CPU).
    """

    # No request example in the OpenAPI document: the API fuzz sends examples as they are, and this
    # one would convert the bundled model inside a request with a 10 s timeout.
    model_config = ConfigDict(extra="forbid")

    dataset_name: str = Field(..., min_length=1, description="As in a config: bundled name, local path or Hub id.")
    base_model: str = Field(..., min_length=1, description="As in a config: its tokenizer and chat template are used.")
    dataset_split: str = Field("train", min_length=1, description="Split of dataset_name.")
    dataset_format: Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text"] = Field(
        "auto", description="Row format, or auto (detected from the columns)."
    )
    column_mapping: dict[str, str] = Field(default_factory=dict, description="Format field -> your column.")
    max_length: int = Field(1024, ge=8, le=1_048_576, description="Tokens per row the job would keep.")
    completion_only_loss: bool = Field(True, description="Whether only the completion is trained.")
    examples: int = Field(3, ge=0, le=20, description="Rendered examples to return.")
    max_rows: int = Field(10_000, ge=1, le=1_000_000, description="Rows read and measured at most.")


class PreviewSegment(BaseModel):
    text: str = Field(..., description="Part of the rendered training text.")
    trained: bool = Field(..., description="Whether the loss covers it.")


class PreviewExample(BaseModel):
    segments: list[PreviewSegment] = Field(..., description="The row as the model sees it, in order.")
    tokens: int = Field(..., description="Its length in tokens.")


class TokenLengths(BaseModel):
    min: int
    mean: float
    median: float
    p95: int
    max: int


class DatasetPreviewResponse(BaseModel):
    dataset_name: str
    dataset_split: str
    dataset_format: str = Field(..., description="The format used (detected when auto).")
    rows: int = Field(..., description="Rows read (at most max_rows).")
    rows_capped: bool = Field(..., description="The split has more rows than max_rows.")
    examples: list[PreviewExample]
    token_lengths: TokenLengths
    max_length: int
    truncated_rows: int = Field(..., description="Rows longer than max_length (the trainer truncates them).")
    truncated_share: float = Field(..., description="truncated_rows / rows.")
