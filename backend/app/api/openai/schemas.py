"""Request and response models of the OpenAI-compatible /v1 API (OpenAI's names and shapes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...sft.graders import Grader

MAX_EPOCHS = 50
MAX_BATCH_SIZE = 256
MAX_LR_MULTIPLIER = 50.0
MAX_NEW_TOKENS = 2048
MAX_BETA = 100.0
#: What beta "auto" trains with (TRL's DPOConfig default).
AUTO_BETA = 0.1


def _auto_or(value: Any, kind: type, low: float, high: float, what: str) -> Any:
    if value == "auto" or value is None:
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise ValueError(f"must be 'auto' or {what} from {low:g} to {high:g}")
    if not low <= value <= high:
        raise ValueError(f"must be 'auto' or {what} from {low:g} to {high:g}")
    return kind(value)


def _positive_or_auto(value: Any, high: float) -> Any:
    value = _auto_or(value, float, 0, high, "a number above 0")
    if value == 0:
        raise ValueError(f"must be 'auto' or a number above 0, at most {high:g}")
    return value


class Hyperparameters(BaseModel):
    """Each value is a number or ``"auto"`` (see app/api/openai/jobs.py for what auto picks)."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Literal["auto"] | int = Field("auto", description="Passes over the training file.")
    batch_size: Literal["auto"] | int = Field("auto", description="Examples per optimizer step.")
    learning_rate_multiplier: Literal["auto"] | float = Field(
        "auto", description="Scales the learning rate picked for the model's size."
    )

    @field_validator("n_epochs", mode="plain")
    @classmethod
    def _epochs(cls, value: Any) -> Any:
        return _auto_or(value, int, 1, MAX_EPOCHS, "an integer")

    @field_validator("batch_size", mode="plain")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        return _auto_or(value, int, 1, MAX_BATCH_SIZE, "an integer")

    @field_validator("learning_rate_multiplier", mode="plain")
    @classmethod
    def _multiplier(cls, value: Any) -> Any:
        return _positive_or_auto(value, MAX_LR_MULTIPLIER)


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None


class DpoHyperparameters(Hyperparameters):
    """DPO's hyperparameters: the supervised ones and ``beta`` ("auto": 0.1, TRL's default)."""

    beta: Literal["auto"] | float = Field("auto", description="How far the model may move from the reference.")

    @field_validator("beta", mode="plain")
    @classmethod
    def _beta(cls, value: Any) -> Any:
        return _positive_or_auto(value, MAX_BETA)


class DpoMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: DpoHyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"] = Field(..., description="supervised or dpo.")
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict[str, Any] | None = None


class JobCreateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "model": "smollm2-135m-instruct", "training_file": "file-abc123", "suffix": "contacts",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        }]},
    )

    model: str = Field(..., min_length=1, max_length=1000,
                       description="A base model: bundled alias, local model directory, .gguf file or Hub id.")
    training_file: str = Field(..., min_length=1, max_length=200, description="Id of an uploaded fine-tune file.")
    validation_file: str | None = Field(None, max_length=200, description="Id of an uploaded file to evaluate on.")
    suffix: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                               description="Up to 64 letters, digits, '.', '_' or '-' in the fine-tuned model's name.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Same seed, same run. Default: a random one.")
    metadata: dict[str, str] | None = Field(None, description="Up to 16 key-value pairs to find the job by.")
    method: Method | None = Field(None, description="{type: supervised, supervised: {hyperparameters}} or "
                                  "{type: dpo, dpo: {hyperparameters (with beta)}}.")
    hyperparameters: Hyperparameters | None = Field(None, description="Legacy place of the hyperparameters.")
    integrations: list[dict[str, Any]] | None = Field(None, description="Not supported; must be empty.")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > 16:
            raise ValueError("at most 16 keys")
        for key, item in value.items():
            if len(key) > 64 or len(item) > 512:
                raise ValueError(f"key {key[:64]!r}: keys are at most 64 characters, values at most 512")
        return value

    @model_validator(mode="after")
    def _one_place_for_hyperparameters(self) -> JobCreateRequest:
        for name in ("supervised", "dpo"):
            given = getattr(self.method, name) if self.method is not None else None
            if self.hyperparameters is not None and given is not None and given.hyperparameters is not None:
                raise ValueError(f"give the hyperparameters in method.{name}.hyperparameters or in the legacy "
                                 "hyperparameters, not both")
        return self


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    expires_at: int | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobHyperparameters(BaseModel):
    n_epochs: int | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None


class FineTuningJob(BaseModel):
    id: str = Field(..., description="The job id (the same as in /api/sft).")
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None = None
    model: str
    fine_tuned_model: str | None = Field(None, description="ft:<base>:<suffix>:<job id> once succeeded.")
    organization_id: str
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"]
    training_file: str
    validation_file: str | None = None
    hyperparameters: JobHyperparameters
    method: dict[str, Any]
    seed: int
    trained_tokens: int | None = None
    estimated_finish: int | None = None
    error: JobError | None = None
    result_files: list[str]
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None = None
    integrations: list[dict[str, Any]] = Field(default_factory=list)


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"]


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEvent]
    has_more: bool


class Checkpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float | None]
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Checkpoint]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


# Chat


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str = Field(..., max_length=200_000)


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] = Field(..., description="Text, or a list of text parts.")
    name: str | None = Field(None, max_length=200)

    @field_validator("content")
    @classmethod
    def _length(cls, value: str | list[ContentPart]) -> str | list[ContentPart]:
        if isinstance(value, str) and len(value) > 200_000:
            raise ValueError("at most 200000 characters")
        return value

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(False, description="Send a last chunk with the token usage.")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": "ft:smollm2-135m-instruct:contacts:5f0c9a4e-7d1b-4c2a-9e1f-3b8d6a2c4f10",
                                         "messages": [{"role": "user", "content": "Extract the contact as JSON: "
                                                       "Ada Lovelace, 36, lives in London."}],
                                         "max_completion_tokens": 32, "temperature": 0}]},
    )

    model: str = Field(..., min_length=1, max_length=1000, description="A base model or an ft: model.")
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=1000)
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description="Legacy name of max_completion_tokens.")
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description="Most tokens to generate.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy; OpenAI's default is 1.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling (with temperature > 0).")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings that end the completion (not included).")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Makes sampling repeatable.")
    n: int = Field(1, ge=1, le=1, description="Completions to generate: 1 on this server.")
    stream: bool = Field(False, description="Answer with Server-Sent Events chunks ending in data: [DONE].")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=200, description="Accepted and ignored.")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4 or any(not s or len(s) > 200 for s in stops):
            raise ValueError("up to 4 non-empty strings of at most 200 characters")
        return stops

    @property
    def new_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 128


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoice(BaseModel):
    index: int
    message: dict[str, Any]
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


# Graders (/v1/fine_tuning/alpha/graders): OpenAI's request and response shapes


class GraderValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: Grader = Field(..., description="string_check, text_similarity, python, score_model or multi.")


class GraderRunRequest(GraderValidateRequest):
    model_sample: str = Field(..., max_length=1_000_000, description="The model's answer: sample.output_text "
                              "(and sample.output_json when it parses as JSON).")
    item: Any = Field(None, description="The dataset row: the templates' item namespace.")


class GraderValidateResponse(BaseModel):
    grader: dict[str, Any] = Field(..., description="The grader as validated.")


class GraderRunMetadata(BaseModel):
    name: str
    type: str
    errors: dict[str, Any] = Field(..., description="OpenAI's error flags (and their details fields).")
    execution_time: float = Field(..., description="Seconds the grading took.")
    scores: dict[str, Any] = Field(..., description="The sub-graders' scores (multi), else this grader's.")
    token_usage: int | None = Field(None, description="Tokens a score_model judge used.")
    sampled_model_name: str | None = None


class GraderRunResponse(BaseModel):
    reward: float
    metadata: GraderRunMetadata
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]
