"""A job that starts from an earlier job: ``base_model: "job:<id>"`` (``/v1``: the ``ft:`` model) becomes the
directory of that job's model, the caller's own jobs only.

A full fine-tune's base is its saved model. A LoRA (or QLoRA) job's adapter is merged into its base once
(``<its output_dir>/merged``, the same folder ``POST /api/models/merge`` writes) and that standalone model is
the new base: a LoRA run on it trains a new adapter on top, and its reference model (the adapter disabled)
is the earlier fine-tune, not the raw base. Another user's job reads as a missing one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import InvalidConfig
from ..sft.artifacts import job_artifact, merge_adapter
from ..sft.errors import ArtifactUnavailable, ModelError

JOB_PREFIX = "job:"


def resolve_job_base(scoped: Any, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with a ``job:<id>`` base_model replaced by that job's model directory (other configs as they are).

    Raises:
        InvalidConfig: naming config.base_model (no such job of the caller's, or it has no usable model).
    """
    base = config.get("base_model") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base.startswith(JOB_PREFIX):
        return config
    job = scoped.find(base.removeprefix(JOB_PREFIX))
    if job is None:
        raise InvalidConfig(f"config.base_model: job {base.removeprefix(JOB_PREFIX)!r} not found",
                            field="config.base_model")
    try:
        path = job_model_dir(job, cache_dir=scoped.manager.settings.resolved_model_cache_dir)
    except (ArtifactUnavailable, ModelError) as exc:
        raise InvalidConfig(f"config.base_model: {exc}", field="config.base_model") from None
    return {**config, "base_model": str(path)}


def job_model_dir(job: Any, *, cache_dir: Path) -> Path:
    """A standalone model directory holding ``job``'s fine-tuned weights (merged once for a LoRA job)."""
    artifact = job_artifact(job)
    if artifact.kind == "full_model":
        return artifact.path
    merged = artifact.output_dir / "merged"
    fresh = (merged / "config.json").is_file() and \
        (merged / "config.json").stat().st_mtime >= (artifact.path / "adapter_config.json").stat().st_mtime
    if not fresh:
        merge_adapter(artifact, cache_dir=cache_dir, target=merged)
    return merged
