"""The client's names for the API's answers: each is the server's own response model (``models.py``),
so what the server sends and what the client reads are one definition. Each keeps the server's JSON
in ``raw`` (fields a newer server adds are there too)."""

from __future__ import annotations

from .models import (
    JOB_STATUSES,
    TERMINAL_STATUSES,
    Attempt,
    CheckpointInfo,
    ConfigResponse,
    ConfigSaveResponse,
    EvaluateResponse,
    EvaluationScore,
    EventListResponse,
    EventResponse,
    ExportFormatsResponse,
    ExportResponse,
    GenerateResponse,
    GpuMemory,
    HealthResponse,
    JobConfig,
    JobError,
    JobListResponse,
    JobProgress,
    JobResult,
    JobStartResponse,
    JobStatusName,
    JobStatusResponse,
    MemoryPlan,
    MemoryReport,
    MergeResponse,
    ModelInfo,
    StopResponse,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointCreated,
)

Health = HealthResponse
JobStart = JobStartResponse
Progress = JobProgress
Job = JobStatusResponse
JobList = JobListResponse
StopResult = StopResponse
Event = EventResponse
EventPage = EventListResponse
Checkpoint = CheckpointInfo
SavedConfig = ConfigResponse
ConfigSaved = ConfigSaveResponse
Generation = GenerateResponse
Score = EvaluationScore
Evaluation = EvaluateResponse
Merge = MergeResponse
Export = ExportResponse
ExportFormats = ExportFormatsResponse
Webhook = WebhookEndpoint
WebhookCreated = WebhookEndpointCreated
Delivery = WebhookDelivery
DeliveryAttempt = WebhookAttempt

__all__ = [
    "JOB_STATUSES", "TERMINAL_STATUSES", "Attempt", "Checkpoint", "ConfigSaved", "Evaluation", "Event", "EventPage", "Export", "ExportFormats",
    "Generation", "GpuMemory", "Health", "Job", "JobConfig", "JobError", "JobList", "JobResult", "JobStart",
    "JobStatusName", "MemoryPlan", "MemoryReport", "Merge", "ModelInfo", "Progress", "SavedConfig", "Score",
    "StopResult",
    "Webhook", "WebhookCreated", "Delivery", "DeliveryAttempt",
]
