"""Persistence: SQLite records of jobs, configs, events and metrics."""

from .sqlite import SQLiteStore

__all__ = ["SQLiteStore"]
