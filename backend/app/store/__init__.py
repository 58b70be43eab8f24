"""Persistence: SQLite records of jobs, configs, events and metrics."""

from .sqlite import DatabaseUnavailable, SQLiteStore

__all__ = ["DatabaseUnavailable", "SQLiteStore"]
