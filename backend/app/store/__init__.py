"""Persistence: a ``JobStore`` protocol and its SQLite implementation (jobs, configs, events, metrics,
files, exports, API keys)."""

from .base import JobStore
from .sqlite import TERMINAL_STATUSES, DatabaseUnavailable, SQLiteStore, TerminalJob

__all__ = ["DatabaseUnavailable", "JobStore", "SQLiteStore", "TERMINAL_STATUSES", "TerminalJob"]
