"""Where exports were: their domain now lives in :mod:`app.jobs.exports` (kept importable from here)."""

from ..jobs.exports import INTERRUPTED_ERROR, ExportManager, ExportNotFound, ExportStatus, card_facts

__all__ = ["INTERRUPTED_ERROR", "ExportManager", "ExportNotFound", "ExportStatus", "card_facts"]
