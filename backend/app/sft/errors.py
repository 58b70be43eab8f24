"""Typed errors of the training core. Each names what is wrong and where."""

from __future__ import annotations


class SFTError(Exception):
    """Base of every error the training core raises on purpose."""

    #: Failure category shown in a failed job's error.
    category = "internal"


class ConfigError(SFTError, ValueError):
    """A config value is invalid; ``field`` names it."""

    category = "config"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class DatasetError(SFTError, ValueError):
    """A dataset cannot be loaded or a row does not match its format."""

    category = "dataset"

    def __init__(self, message: str, *, source: str | None = None, location: str | None = None):
        where = ", ".join(part for part in (source, location) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.location = location
        self.reason = message


class ModelError(SFTError, ValueError):
    """A model reference cannot be resolved or loaded."""

    category = "model"
