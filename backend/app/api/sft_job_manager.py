"""The seed's import path for the job manager: ``from app.api.sft_job_manager import sft_job_manager,
SFTJobManager, SFTJob``. The code lives in ``app.jobs``; this module only re-exports it."""

from __future__ import annotations

from typing import Any

from ..jobs.executors.thread import JOB_THREAD_NICENESS
from ..jobs.executors.training import classify_error
from ..jobs.manager import SFTJobManager, get_sft_job_manager
from ..jobs.models import INTERRUPTED_ERROR, JobStatus, SFTJob, utcnow
from ..jobs.preflight import format_validation_error

__all__ = [
    "INTERRUPTED_ERROR",
    "JOB_THREAD_NICENESS",
    "JobStatus",
    "SFTJob",
    "SFTJobManager",
    "classify_error",
    "format_validation_error",
    "get_sft_job_manager",
    "sft_job_manager",
    "utcnow",
]


def __getattr__(name: str) -> Any:
    # ``from app.api.sft_job_manager import sft_job_manager`` (the seed's import) builds the
    # singleton then, not when the module is imported, so importing opens no database.
    if name == "sft_job_manager":
        return get_sft_job_manager()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
