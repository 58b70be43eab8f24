"""Client of the SFT job service: ``SFTClient`` / ``AsyncSFTClient`` and the ``sft`` command.

Needs only httpx (and Rich and PyYAML for the command): no torch, no transformers, no server.
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
    TERMINAL_STATUSES,
    Checkpoint,
    ConfigSaved,
    Evaluation,
    Event,
    EventPage,
    Generation,
    Health,
    Job,
    JobError,
    JobList,
    JobStart,
    Merge,
    ModelInfo,
    Progress,
    SavedConfig,
    Score,
    StopResult,
)

__all__ = [
    "DEFAULT_URL", "TERMINAL_STATUSES", "APIConnectionError", "APIStatusError", "APITimeoutError",
    "AsyncSFTClient", "AuthenticationError", "BadRequestError", "Checkpoint", "ConfigSaved", "ConflictError",
    "DownloadError", "Evaluation", "Event", "EventPage", "Generation", "Health", "InternalServerError", "Job",
    "JobError", "JobList", "JobStart", "Merge", "ModelInfo", "NotFoundError", "PermissionDeniedError",
    "Progress", "RateLimitError", "SavedConfig", "Score", "ServiceUnavailableError", "SFTClient", "SFTError",
    "StopResult", "UnprocessableEntityError", "__version__",
]
