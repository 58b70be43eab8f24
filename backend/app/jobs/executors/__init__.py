"""Executors: where and how a job's training runs.

To add one whose runs live outside the API process, subclass ``remote.RemoteExecutor`` and fill in
its hooks (launch, find, pull, ask_stop, kill); an in-process one implements ``base.Executor`` (start
from a ``JobSpec``, report ``TrainingEvent``s, stop, cancel, re-attach). Choose it in ``create_executor``.
"""

from __future__ import annotations

from typing import Any

from ...core.joblogs import JobLogRouter
from ...core.settings import Settings
from .base import Executor, JobSpec, Report, RunState
from .thread import LocalThreadExecutor

__all__ = ["Executor", "JobSpec", "LocalThreadExecutor", "Report", "RunState", "create_executor"]


def create_executor(settings: Settings, *, logs: JobLogRouter | None = None, runner: Any = None) -> Executor:
    """The executor the settings ask for (``SFT_EXECUTOR``): the thread executor (``runner`` replaces
    what its threads run, for tests) or the Ray executor."""
    if settings.executor == "ray":
        if runner is not None:
            raise ValueError("a runner is what the thread executor's threads run; SFT_EXECUTOR=ray runs run_training")
        from .ray import RayExecutor

        return RayExecutor(address=settings.ray_address, stop_grace_seconds=settings.ray_stop_grace_seconds)
    return LocalThreadExecutor(runner=runner, logs=logs)
