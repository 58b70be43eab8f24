"""A job's progress as a pure function of its training events: ``advance(progress, event, now=...)``.

Progress is a small dict (phase, step, percent, ETA, rates, latest metrics); ``advance`` returns a new
one and never touches its input, so readers on other threads always see a whole snapshot. The keys
in ``PRIVATE`` are the arithmetic's own and are not shown to users.
"""

from __future__ import annotations

from typing import Any

from ..sft.dpo import DPO_METRIC_KEYS
from ..sft.events import EventKind, TrainingEvent

#: Progress keys kept for the arithmetic, not shown to users.
PRIVATE = ("started_monotonic", "start_step", "rows_per_step", "recent_steps")

#: How many recent step times the ETA reads: the median of their durations follows a run whose first
#: steps are slow (warm-up, a busy machine) within a few steps, and ignores a lone slow step (a save).
ETA_WINDOW = 7

#: Steps a run must have made before an ETA is given ("estimating" until then): the first one carries warm-up.
ETA_MIN_STEPS = 2

#: Metric keys a metrics point keeps (what the chart and the API show), and every grader's score (grader_<name>).
METRIC_KEYS = ("loss", "learning_rate", "grad_norm", "eval_loss", "num_tokens", "epoch", *DPO_METRIC_KEYS)
GRADER_PREFIX = "grader_"


def advance(progress: dict[str, Any], event: TrainingEvent, *, now: float,
            rows_per_step: int | None = None) -> dict[str, Any]:
    """The progress after ``event``, which arrived at ``now`` (a monotonic clock).

    ``rows_per_step`` (batch size × accumulation) turns steps per second into samples per second.
    """
    kind, payload = event.kind, event.payload
    if kind is EventKind.PHASE:
        return {**progress, "phase": payload["phase"]}
    if kind is EventKind.TRAINING_STARTED:
        started = {**progress, "phase": "training", "started_monotonic": now, "start_step": payload["global_step"],
                   "rows_per_step": rows_per_step}
        return _steps(started, payload["global_step"], payload["max_steps"], None, now)
    if kind is EventKind.STEP:
        return _steps(dict(progress), payload["step"], payload["max_steps"], payload.get("epoch"), now)
    if kind in (EventKind.METRICS, EventKind.EVAL):
        point = metric_point(progress, payload, now=now)
        if point is None:
            return progress
        latest = {**progress.get("metrics", {}),
                  **{k: v for k, v in point.items() if k not in ("step", "elapsed_seconds", "num_tokens")}}
        updated = {**progress, "metrics": latest}
        if "num_tokens" in point:
            updated["tokens_seen"] = point["num_tokens"]
        return updated
    if kind is EventKind.EXITED:
        return {**progress, "phase": payload["status"]} if progress else progress
    return progress


def metric_point(progress: dict[str, Any], payload: dict[str, Any], *, now: float) -> dict[str, Any] | None:
    """The point a METRICS or EVAL event adds to the job's metrics series (None: nothing to chart,
    e.g. the trainer's end-of-run summary)."""
    point = {k: v for k, v in payload.items() if k in METRIC_KEYS or k.startswith(GRADER_PREFIX)}
    if not point or "train_runtime" in payload:
        return None
    point["step"] = int(payload.get("step", 0))
    if "started_monotonic" in progress:
        point["elapsed_seconds"] = round(now - progress["started_monotonic"], 3)
    return point


def public_progress(progress: dict[str, Any]) -> dict[str, Any]:
    """What users see of ``progress``."""
    return {k: v for k, v in progress.items() if k not in PRIVATE}


def _steps(progress: dict[str, Any], step: int, max_steps: int | None, epoch: Any, now: float) -> dict[str, Any]:
    max_steps = max_steps or 0
    progress.update(current_step=step, max_steps=max_steps, epoch=epoch)
    if max_steps:
        progress["percent"] = round(100.0 * step / max_steps, 1)
    started = progress.get("started_monotonic")
    if started is None:
        return progress
    recent = [*(progress.get("recent_steps") or [[progress.get("start_step", 0), started]]), [step, now]]
    progress["recent_steps"] = recent[-(ETA_WINDOW + 1):]
    done = step - progress.get("start_step", 0)
    progress["eta_seconds"] = _eta(progress["recent_steps"], max(max_steps - step, 0)) if done >= ETA_MIN_STEPS else None
    if done > 0:
        elapsed = now - started
        progress["steps_per_second"] = round(done / elapsed, 3) if elapsed > 0 else None
        if progress["steps_per_second"] and progress.get("rows_per_step"):
            progress["samples_per_second"] = round(progress["steps_per_second"] * progress["rows_per_step"], 2)
        if progress.get("tokens_seen"):
            progress["tokens_per_second"] = round(progress["tokens_seen"] / elapsed, 1)
    return progress


def _eta(recent: list[list[float]], remaining: int) -> float | None:
    """Seconds left at the median duration of the recent steps (None: no step has taken time yet)."""
    durations = sorted((t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(recent, recent[1:]) if s1 > s0)
    if not durations:
        return None
    middle = len(durations) // 2
    per_step = durations[middle] if len(durations) % 2 else (durations[middle - 1] + durations[middle]) / 2
    return round(per_step * remaining, 1)
