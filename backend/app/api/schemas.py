"""Request and response models of the SFT API (the seed's names, plus what was added).

The response models are defined once, in the light client's ``sft_client.models`` (pydantic only, no
torch), and re-exported here: the OpenAPI document and the client read the same definitions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from app.sft.graders import Grader, unique_grader_names
from sft_client.models import (  # the response models the routes name
    CheckpointListResponse,
    ConfigResponse,
    ConfigSaveResponse,
    DeleteResponse,
    ErrorResponse,
    EvaluateResponse,
    EventListResponse,
    ExportFormatsResponse,
    ExportListResponse,
    ExportResponse,
    GenerateResponse,
    HealthResponse,
    JobListResponse,
    JobStartResponse,
    JobStatusName,
    JobStatusResponse,
    LogsResponse,
    MemoryPlan,
    MergeResponse,
    MetricsResponse,
    ModelInfo,
    Preference,
    PreferenceListResponse,
    PreferencesDeleted,
    PreferenceSourceName,
    PreferenceTrainResponse,
    StopResponse,
    WebhookDelivery,
    WebhookDeliveryListResponse,
    WebhookEndpoint,
    WebhookEndpointCreated,
    WebhookListResponse,
)


DEMO_CONFIG = {
    "base_model": "smollm2-135m-instruct",
    "dataset_name": "bundled:json-extract",
    "max_steps": 40,
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-3,
    "max_length": 256,
    "lora_dropout": 0.0,
}


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


class ConfigSaveRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "demo_lora", "config": DEMO_CONFIG}]},
    )

    name: str = Field(..., min_length=1, max_length=200, description="Unique name of the template.")
    config: dict[str, Any] = Field(..., description="SFTConfig fields; a template may leave some out.")


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
    graders: list[Grader] = Field(
        default_factory=list, max_length=20,
        description="Graders in OpenAI's shapes (string_check, text_similarity, python, score_model, multi), each "
        "scored as its mean over the rows (scores.<name>); exact_match is always scored. Templates see "
        "{{sample.output_text}}, {{sample.output_json}}, {{item.reference}}, {{item.reference_json}}, "
        "{{item.messages}}.")

    @field_validator("graders")
    @classmethod
    def _unique_names(cls, graders: list[Grader]) -> list[Grader]:
        return unique_grader_names(graders)


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
    label: str | None = Field(None, description="A preference pair's answers: 'chosen' or 'rejected' (each follows "
                              "the prompt on its own; DPO raises the first's likelihood over the second's).")


class PreviewExample(BaseModel):
    segments: list[PreviewSegment] = Field(..., description="The row as the model sees it, in order.")
    tokens: int = Field(..., description="Its length in tokens (a preference pair: the prompt and its longer answer).")


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


__all__ = [
    "DEMO_CONFIG", "ERROR_RESPONSES", "ChatMessage", "CheckpointListResponse", "ConfigResponse", "ConfigSaveRequest",
    "ConfigSaveResponse", "DatasetPreviewRequest", "DatasetPreviewResponse", "DeleteResponse", "ErrorResponse",
    "EvaluateRequest", "EvaluateResponse", "EventListResponse", "ExportFormatsResponse", "ExportListResponse",
    "ExportResponse", "GenerateRequest", "GenerateResponse",
    "HealthResponse", "JobListResponse", "JobStartRequest", "JobStartResponse", "JobStatusName", "JobStatusResponse",
    "LogsResponse", "MergeResponse", "MetricsResponse", "ModelInfo", "PreviewExample", "PreviewSegment",
    "Preference", "PreferenceListResponse", "PreferencesDeleted", "PreferenceSourceName", "PreferenceTrainResponse",
    "StopResponse", "TokenLengths", "WebhookDelivery", "WebhookDeliveryListResponse", "WebhookEndpoint",
    "WebhookEndpointCreated", "WebhookListResponse",
]
