"""Submit-time fit: a job's estimated peak memory per worker (``app.sft.planner``) against what its executor's
workers have, and the ``auto`` distributed strategy resolved with it.

``plan_job`` answers ``POST /api/sft/plan``; ``check_fit`` runs at submit (``SFTJobManager.validate_config``):
a job that cannot fit is an ``InvalidConfig`` (400) before any job exists, naming the numbers and the single
changes that would fit, each computed with the planner. Where the model's config or the device cannot be
known at submit (a GGUF not converted yet, a Ray cluster whose GPUs do not answer), the job is accepted and its
plan says so: a guess never refuses a job.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import InvalidConfig
from ..core.settings import Settings
from ..sft.config import SFTConfig
from ..sft.errors import ModelError
from ..sft.planner import FitPlan, PlanError, model_shape, plan
from .bases import model_source
from .executors.base import Executor, JobSpec

def plan_job(config: SFTConfig, spec: JobSpec, *, settings: Settings, executor: Executor) -> FitPlan:
    """``config``'s memory plan on ``executor``'s workers.

    Raises:
        InvalidConfig: the model's config.json cannot be had (naming ``config.base_model`` and why).
    """
    try:
        shape = model_shape(model_source(config), cache_dir=settings.resolved_model_cache_dir,
                            allowed_roots=settings.resolved_model_roots)
    except (PlanError, ModelError) as exc:
        raise InvalidConfig(f"config.base_model: {exc}", field="config.base_model") from None
    device = executor.device_memory(spec, gpu_memory_gb=settings.gpu_memory_gb)
    return plan(shape, config, device, margin=settings.fit_margin)


def check_fit(config: SFTConfig, spec: JobSpec, *, settings: Settings,
              executor: Executor) -> tuple[SFTConfig, dict[str, Any] | None]:
    """The config with ``auto`` resolved and its plan (what the job record keeps), or InvalidConfig when the
    estimate exceeds the device by more than the margin. A model whose config cannot be read is accepted
    without a plan (pre-flight has checked the model itself)."""
    try:
        fit = plan_job(config, spec, settings=settings, executor=executor)
    except InvalidConfig:
        return config, None
    if fit.fits is False:
        field = f"config.{fit.field}"
        raise InvalidConfig(f"{field}: {fit.message}", field=field)
    if config.distributed_strategy == "auto" and config.num_workers > 1 and fit.device is not None:
        # plan() estimated with auto resolved (planner.resolve_strategy); validated again with the choice made
        config = SFTConfig.model_validate({**config.model_dump(), "distributed_strategy": fit.estimate.strategy})
    return config, fit.as_dict()


def measured_peak(result: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """A finished run's measured peak memory in MiB and the result field it comes from: the process' CUDA
    peak (``peak_gpu_memory_mb``, allocated tensors) or its peak RSS on CPU (``efficiency.peak_rss_mb``)."""
    result = result or {}
    if value := result.get("peak_gpu_memory_mb"):
        return float(value), "peak_gpu_memory_mb"
    if value := (result.get("efficiency") or {}).get("peak_rss_mb"):
        return float(value), "efficiency.peak_rss_mb"
    return None, None


def memory_report(plan_dict: dict[str, Any] | None, result: dict[str, Any] | None) -> dict[str, Any] | None:
    """Estimated vs measured peak of a job (None without a plan): the estimate it was submitted with, the
    measured peak of its run, and the relative error. A CUDA peak counts tensors only, so it is compared
    with the estimate less the CUDA context and allocator overhead."""
    if not plan_dict:
        return None
    estimate = plan_dict["estimate"]
    measured, source = measured_peak(result)
    compared = estimate["total_mb"] - (estimate["overhead_mb"] if source == "peak_gpu_memory_mb" else 0)
    return {"estimated_peak_mb": plan_dict["estimated_peak_mb"], "compared_estimate_mb": round(compared, 1),
            "measured_peak_mb": measured, "measured_from": source,
            "error": round(compared / measured - 1, 4) if measured else None,
            "device_memory_mb": (plan_dict.get("device") or {}).get("memory_mb")}

