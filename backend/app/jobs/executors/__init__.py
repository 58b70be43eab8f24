"""Executors: where and how a job's training runs."""

from .base import Executor, JobSpec, Report, RunState

__all__ = ["Executor", "JobSpec", "Report", "RunState"]
