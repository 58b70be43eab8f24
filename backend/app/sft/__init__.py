"""Training core: config, data, models, the trainer and its callbacks.

``SFTConfig`` and the errors import light; the trainer and callbacks pull in transformers, so they
load on first use and an API process that never trains never pays for them.
"""

from typing import TYPE_CHECKING

from .config import SFTConfig
from .errors import (
    ArtifactUnavailable,
    CheckpointMissing,
    ConfigError,
    DatasetError,
    GenerationCancelled,
    GenerationTimedOut,
    ModelError,
    RequestError,
    SFTError,
)

if TYPE_CHECKING:
    from .callbacks import CheckpointCallback, SFTCallback, ValidationCallback, WandBCallback
    from .trainer import SFTResult, SFTTrainer

_LAZY = {
    "CheckpointCallback": "callbacks",
    "SFTCallback": "callbacks",
    "ValidationCallback": "callbacks",
    "WandBCallback": "callbacks",
    "SFTResult": "trainer",
    "SFTTrainer": "trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ArtifactUnavailable", "CheckpointMissing", "ConfigError", "DatasetError", "GenerationCancelled",
           "GenerationTimedOut", "ModelError", "RequestError", "SFTConfig", "SFTError", *_LAZY]
