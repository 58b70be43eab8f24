"""Typed errors of the training core. Each names what is wrong and where.

The core knows nothing of HTTP: the service maps these to statuses in one place
(``app.core.errors``). ``field``, when given, names the input at fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class SFTError(Exception):
    """Base of every error the training core raises on purpose."""

    #: Failure category shown in a failed job's error.
    category = "internal"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class ConfigError(SFTError, ValueError):
    """A config value is invalid; ``field`` names it."""

    category = "config"


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


class RequestError(SFTError, ValueError):
    """A request to use a model (generate, evaluate, export) cannot run as asked; the message begins
    with the field at fault (``messages: ...``)."""

    category = "request"


class ArtifactUnavailable(SFTError):
    """What a run saved cannot be used that way now: not finished, gone from disk, no adapter to
    merge, a base model that no longer loads."""

    category = "artifact"


class CheckpointMissing(SFTError, LookupError):
    """A run has no checkpoint of that name; the message lists the ones it has."""

    category = "artifact"


class GenerationStopped(SFTError):
    """A model request was stopped before it finished; its output is partial and is not returned."""

    category = "stopped"


class GenerationCancelled(GenerationStopped):
    """The request was cancelled (the client went away, or the server is stopping)."""


class GenerationTimedOut(GenerationStopped):
    """The request ran past its time limit."""


@contextmanager
def naming(fields: dict[type[SFTError], str]) -> Iterator[None]:
    """Errors of the given kinds raised inside concern the argument named for their kind: their
    ``field`` is set to it (unless they name one already)."""
    try:
        yield
    except SFTError as exc:
        for kind, field in fields.items():
            if isinstance(exc, kind) and exc.field is None:
                exc.field = field
                break
        raise
