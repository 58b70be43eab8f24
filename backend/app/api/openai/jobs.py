"""Fine-tuning jobs as OpenAI shows them: one job of the manager, seen through OpenAI's vocabulary.

A /v1 job is an ordinary job of the manager (same jobs table, same queue; it shows in
/api/sft/jobs), plus a small record in the store's ``openai_jobs`` table: the model name as asked,
suffix, metadata, file ids, the hyperparameters as resolved, whether the last stop was a cancel
or a pause, the result file's id, and whether its fine-tuned model was deleted. Jobs created
through /api/sft have no such record and are shown from their config alone.

Status mapping (manager -> OpenAI):

==========  ==================================================================================
pending     ``queued`` (files are checked when uploaded, so ``validating_files`` never shows)
running     ``running``
stopping    ``cancelled`` after a cancel (or an /api/sft stop); ``running`` after a pause, until
            the step ends and the checkpoint is saved
completed   ``succeeded``
failed      ``failed``
stopped     ``paused`` after a /v1 pause (resumable through /v1); ``cancelled`` otherwise
==========  ==================================================================================

What ``"auto"`` picks (LoRA, so the rules of thumb of LoRA fine-tuning rather than full training):

- ``n_epochs``: OpenAI's published rule. 3 epochs; more for small files so that about 100
  examples are seen (at most 25 epochs), fewer for big ones so that at most 25,000 are (at least 1).
- ``batch_size``: the largest power of two at most one eighth of the examples, from 1 to 8 (small
  files still get several optimizer steps per epoch; 8 keeps a 7B model's activations in memory).
- ``learning_rate_multiplier``: 1. The learning rate it multiplies is picked for the model's size:
  ``2e-4 * sqrt(7e9 / parameters)`` clamped to 1e-4 .. 1e-3 (2e-4, the usual LoRA rate, for a 7B
  model; 1e-3 for models of ~300M parameters and less; 1e-4 for ~30B and more). The parameters are
  counted from the model's config.json, or read from its name ("135m", "8B"); 2e-4 when unknown.

Each epoch ends with a checkpoint (the last three are kept, as OpenAI keeps three), and a pause
saves one at the step it stops at, so a resumed job goes on from there.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ...jobs.files import file_users, write_results_file
from ...jobs.manager import SFTJobManager
from ...jobs.models import JobStatus, SFTJob
from ...sft.errors import ModelError
from ...sft.models import resolve_model

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_DEFAULT_EPOCHS = 25
MAX_AUTO_BATCH_SIZE = 8
REFERENCE_LEARNING_RATE = 2e-4
REFERENCE_PARAMETERS = 7e9
LEARNING_RATE_BOUNDS = (1e-4, 1e-3)
KEPT_CHECKPOINTS = 3
ORGANIZATION = "self-hosted"

_SIZE_IN_NAME = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([mMbB])(?![A-Za-z])")
_extras_lock = threading.RLock()


# "auto"


def auto_epochs(examples: int) -> int:
    if examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / examples))
    if examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // examples)
    return TARGET_EPOCHS


def auto_batch_size(examples: int) -> int:
    size = 1
    while size * 2 <= min(MAX_AUTO_BATCH_SIZE, examples / 8):
        size *= 2
    return size


def base_learning_rate(parameters: float | None) -> float:
    """The learning rate a multiplier of 1 means, for a model of ``parameters``."""
    if not parameters:
        return REFERENCE_LEARNING_RATE
    low, high = LEARNING_RATE_BOUNDS
    rate = REFERENCE_LEARNING_RATE * math.sqrt(REFERENCE_PARAMETERS / parameters)
    return float(f"{min(high, max(low, rate)):.3g}")


def estimate_parameters(base_model: str, *, cache_dir: Path, allowed_roots: list[Path] | None = None) -> float | None:
    """The model's parameter count, from its config.json when one is on disk, else from its name."""
    try:
        ref = resolve_model(base_model, cache_dir=cache_dir, allowed_roots=allowed_roots)
    except ModelError:
        ref = None
    config_file = _config_file(ref) if ref is not None else None
    if config_file is not None:
        try:
            counted = _count_parameters(json.loads(config_file.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            counted = None
        if counted:
            return counted
    match = _SIZE_IN_NAME.search(Path(base_model).name)
    if match:
        return float(match.group(1)) * (1e6 if match.group(2) in "mM" else 1e9)
    return None


def _config_file(ref) -> Path | None:
    if ref.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(ref.path, "config.json")
        except Exception:  # an odd repo id: nothing cached
            return None
        return Path(cached) if isinstance(cached, str) else None
    path = Path(ref.path) / "config.json"
    return path if path.is_file() else None


def _count_parameters(config: dict[str, Any]) -> float | None:
    config = config.get("text_config", config)
    hidden, layers = config.get("hidden_size"), config.get("num_hidden_layers")
    vocab, intermediate = config.get("vocab_size"), config.get("intermediate_size") or 4 * (hidden or 0)
    if not (hidden and layers and vocab):
        return None
    heads = config.get("num_attention_heads") or 1
    kv_width = hidden * (config.get("num_key_value_heads") or heads) / heads
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_width + 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    return float(layers * per_layer + embeddings)


# Names


def model_label(base_model: str) -> str:
    """The base model as it appears inside a fine-tuned model's name (a path shows its last part)."""
    if base_model.startswith(("/", "./", "../", "~")) or base_model.lower().endswith(".gguf"):
        name = Path(base_model).name
        base_model = name[:-5] if name.lower().endswith(".gguf") else name
    return base_model.replace(":", "-")


def fine_tuned_name(job: SFTJob, extras: dict[str, Any]) -> str:
    """``ft:<base>:<suffix>:<job id>`` (empty suffix when none was given)."""
    base = model_label(extras.get("model") or job.config["base_model"])
    return f"ft:{base}:{extras.get('suffix') or ''}:{job.job_id}"


def checkpoint_name(job: SFTJob, extras: dict[str, Any], step: int) -> str:
    return f"{fine_tuned_name(job, extras)}:ckpt-step-{step}"


def parse_fine_tuned(name: str) -> tuple[str, int | None] | None:
    """``(job id, checkpoint step or None)`` of an ``ft:`` model name; None for other names."""
    if not name.startswith("ft:"):
        return None
    parts = name.split(":")
    step = None
    if len(parts) >= 5 and re.fullmatch(r"ckpt-step-\d+", parts[-1]):
        step = int(parts[-1].removeprefix("ckpt-step-"))
        parts = parts[:-1]
    if len(parts) < 4:
        return None
    return parts[-1], step


# Extra records


def load_extras(manager: SFTJobManager) -> dict[str, dict[str, Any]]:
    return manager.store.load_openai_jobs()


def extras_of(manager: SFTJobManager, job_id: str) -> dict[str, Any]:
    return load_extras(manager).get(job_id, {})


def update_extras(manager: SFTJobManager, job_id: str, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into a job's record (made when the job has none yet); return it."""
    with _extras_lock:
        extras = {**extras_of(manager, job_id), **changes}
        manager.store.put_openai_job(job_id, extras)
        return extras


def result_files(manager: SFTJobManager, job: SFTJob, extras: dict[str, Any]) -> list[str]:
    """A succeeded job's result file ids: its step-metrics CSV, written the first time it is asked for."""
    if job.status is not JobStatus.COMPLETED:
        return []
    file_id = extras.get("result_file")
    if file_id is None:
        with _extras_lock:
            file_id = extras_of(manager, job.job_id).get("result_file")
            if file_id is None:
                file_id = write_results_file(manager.store, manager.settings, job.job_id,
                                             manager.store.metrics(job.job_id), owner=job.owner)
                update_extras(manager, job.job_id, result_file=file_id)
    return [file_id] if manager.store.get_file(file_id) is not None else []


def stop_kind(job: SFTJob, extras: dict[str, Any]) -> str | None:
    """'cancel' or 'pause' when the job's current stop was asked through /v1, else None."""
    stop = extras.get("stop")
    if not stop or stop.get("attempts") != len(job.attempts):
        return None  # asked before a later resume: not this stop's reason
    return stop["kind"]


# The job object


def openai_status(job: SFTJob, extras: dict[str, Any]) -> str:
    status = job.status
    if status is JobStatus.PENDING:
        return "queued"
    if status is JobStatus.RUNNING:
        return "running"
    if status is JobStatus.COMPLETED:
        return "succeeded"
    if status is JobStatus.FAILED:
        return "failed"
    paused = stop_kind(job, extras) == "pause"
    if status is JobStatus.STOPPING:
        return "running" if paused else "cancelled"
    return "paused" if paused else "cancelled"


def epoch_seconds(iso: str | None) -> int | None:
    return None if iso is None else int(datetime.fromisoformat(iso).timestamp())


def hyperparameters_of(job: SFTJob, extras: dict[str, Any]) -> dict[str, Any]:
    if "hyperparameters" in extras:
        return dict(extras["hyperparameters"])
    config = job.sft_config  # a job made through /api/sft: its config, defaults included
    epochs = config.num_train_epochs
    return {"n_epochs": int(epochs) if epochs is not None and float(epochs).is_integer() else None,
            "batch_size": config.per_device_train_batch_size * config.gradient_accumulation_steps,
            "learning_rate_multiplier": None}


def method_object(job: SFTJob, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``method``: supervised, or dpo with its beta."""
    config = job.sft_config
    if config.method == "dpo":
        return {"type": "dpo", "dpo": {"hyperparameters": {**hyperparameters, "beta": config.beta}}}
    return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}


def job_object(job: SFTJob, extras: dict[str, Any], *, result_files: list[str]) -> dict[str, Any]:
    """The job as OpenAI's ``fine_tuning.job`` object."""
    config = job.config
    status = openai_status(job, extras)
    progress = job.progress or {}
    finished = status in ("succeeded", "failed") or (status == "cancelled" and job.status.is_terminal())
    estimated_finish = None
    if status == "running" and progress.get("eta_seconds") is not None:
        estimated_finish = int(time.time() + progress["eta_seconds"])
    error = None
    if status == "failed":
        category = (job.error_detail or {}).get("category", "internal")
        error = {"code": category, "message": job.error or "the job failed",
                 "param": {"dataset": "training_file", "model": "model"}.get(category)}
    tokens = progress.get("tokens_seen")
    hyperparameters = hyperparameters_of(job, extras)
    return {
        "id": job.job_id,
        "object": "fine_tuning.job",
        "created_at": epoch_seconds(job.created_at),
        "finished_at": epoch_seconds(job.completed_at) if finished else None,
        "model": extras.get("model") or config["base_model"],
        "fine_tuned_model": fine_tuned_name(job, extras) if status == "succeeded" else None,
        "organization_id": ORGANIZATION,
        "status": status,
        "training_file": extras.get("training_file") or config["dataset_name"],
        "validation_file": extras.get("validation_file") or config.get("eval_dataset_name"),
        "hyperparameters": hyperparameters,
        "method": method_object(job, hyperparameters),
        "seed": job.sft_config.seed,
        "trained_tokens": int(tokens) if tokens is not None and job.status.is_terminal() else None,
        "estimated_finish": estimated_finish,
        "error": error,
        "result_files": result_files,
        "metadata": extras.get("metadata"),
        "user_provided_suffix": extras.get("suffix"),
        "integrations": [],
    }


# Events and checkpoints


def event_object(job_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """One of the job's events as a ``fine_tuning.job.event``; metrics events carry OpenAI's keys."""
    data = dict(event.get("data") or {})
    kind = "metrics" if event["type"] in ("metrics", "eval") else "message"
    if kind == "metrics":
        renamed = {"loss": "train_loss", "eval_loss": "valid_loss"}
        data = {renamed.get(key, key): value for key, value in data.items()}
    data["event"] = event["type"]
    return {
        "id": f"ftevent-{job_id}-{event['seq']}",
        "object": "fine_tuning.job.event",
        "created_at": epoch_seconds(event["time"]),
        "level": {"warning": "warn"}.get(event["level"], event["level"]),
        "message": event["message"],
        "data": data,
        "type": kind,
    }


def event_seq(event_id: str, job_id: str) -> int | None:
    """The sequence number inside one of this job's event ids; None when it is not one."""
    prefix = f"ftevent-{job_id}-"
    rest = event_id.removeprefix(prefix)
    return int(rest) if event_id.startswith(prefix) and rest.isdigit() else None


def checkpoint_object(job: SFTJob, extras: dict[str, Any], checkpoint: dict[str, Any],
                      train_loss: float | None) -> dict[str, Any]:
    step = checkpoint["step"]
    metrics = {"step": step, "train_loss": train_loss}
    if checkpoint.get("eval_loss") is not None:
        metrics["valid_loss"] = checkpoint["eval_loss"]
    return {
        "id": f"ftckpt-{job.job_id}-{step}",
        "object": "fine_tuning.job.checkpoint",
        "created_at": epoch_seconds(checkpoint["created_at"]),
        "fine_tuned_model_checkpoint": checkpoint_name(job, extras, step),
        "fine_tuning_job_id": job.job_id,
        "metrics": metrics,
        "step_number": step,
    }


# Rendering and stopping


def render(manager: SFTJobManager, job: SFTJob, extras: dict[str, Any]) -> dict[str, Any]:
    """The job as a ``fine_tuning.job``, its result file written once it has succeeded."""
    return job_object(job, extras, result_files=result_files(manager, job, extras))


def stop(manager: SFTJobManager, job: SFTJob, kind: str) -> dict[str, Any]:
    """Stop the job for a /v1 ``cancel`` or ``pause``; return its record, which says which."""
    # Recorded before the stop (so no reader sees it unexplained) and again after (the count of
    # attempts it is tied to is final once the job no longer waits in the queue).
    record_stop(manager, job, kind)
    manager.stop_job(job.job_id)
    return record_stop(manager, job, kind)


def record_stop(manager: SFTJobManager, job: SFTJob, kind: str) -> dict[str, Any]:
    return update_extras(manager, job.job_id, stop={"kind": kind, "attempts": len(job.attempts)})


def busy_user(manager: SFTJobManager, record: dict[str, Any]) -> str | None:
    """A job that may still train on an uploaded file (queued, running or paused), if any. Only the file's
    owner's jobs hold it: another user's job cannot keep a file they may not read."""
    extras = load_extras(manager)
    return next((job.job_id for job in file_users(manager, record["path"]) if job.owner == record.get("owner")
                 and openai_status(job, extras.get(job.job_id, {})) in ("queued", "running", "paused")), None)
