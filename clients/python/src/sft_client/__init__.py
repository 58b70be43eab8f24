"""Client of the SFT job service: ``SFTClient`` / ``AsyncSFTClient`` and the ``sft`` command.

Needs only httpx and pydantic (and Rich and PyYAML for the command): no torch, no transformers, no server.
The answers are the server's own response models (``sft_client.models``).
"""

from .client import DEFAULT_URL, AsyncSFTClient, SFTClient, __version__
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DownloadError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    SFTError,
    UnprocessableEntityError,
)
from .types import (
    JOB_STATUSES,
    TERMINAL_STATUSES,
    Attempt,
    Checkpoint,
    ConfigSaved,
    Evaluation,
    Event,
    EventPage,
    Generation,
    Health,
    Job,
    JobConfig,
    JobError,
    JobList,
    JobResult,
    JobStart,
    Merge,
    ModelInfo,
    Progress,
    SavedConfig,
    Score,
    StopResult,
)

__all__ = [
    "DEFAULT_URL", "JOB_STATUSES", "TERMINAL_STATUSES", "APIConnectionError", "APIStatusError", "APITimeoutError",
    "AsyncSFTClient", "Attempt", "AuthenticationError", "BadRequestError", "Checkpoint", "ConfigSaved", "ConflictError",
    "DownloadError", "Evaluation", "Event", "EventPage", "Generation", "Health", "InternalServerError", "Job",
    "JobConfig", "JobError", "JobList", "JobResult", "JobStart", "Merge", "ModelInfo", "NotFoundError", "PermissionDeniedError",
    "Progress", "RateLimitError", "SavedConfig", "Score", "ServiceUnavailableError", "SFTClient", "SFTError",
    "StopResult", "UnprocessableEntityError", "__version__",
]
