"""A job that starts from an earlier job: ``base_model: "job:<id>"`` (``/v1``: the ``ft:`` model), the caller's
own jobs only; another user's job reads as a missing one.

A full fine-tune's base is its saved model. A LoRA (or QLoRA) job's adapter is merged into its base
(``<its output_dir>/merged``, the same folder ``POST /api/models/merge`` writes) and that standalone model is
the new base: a LoRA run on it trains a new adapter on top, and its reference model (the adapter disabled)
is the earlier fine-tune, not the raw base.

When each part runs:

- **At submit** (``resolve_job_base``), only what is cheap and checkable: the job is the caller's and has a
  usable model on disk. The config records ``base_model`` (the directory the new job loads: the merged folder,
  which may not exist yet) and ``base_job`` (the source job, its adapter and the base it was trained on), so
  nothing downstream needs the merge yet; the submit-time model checks and the memory plan read the adapter's
  base (``model_source``: the merged model has its architecture, tokenizer and size).
- **When the job starts training** (``prepare_base``, called by ``executors.training.train``, the one body
  thread and Ray workers run): the merge, reported as the ``merging_base`` phase and event, or a fresh merged
  folder reused (two jobs from one source merge once). A file lock beside the folder serialises merges of one
  source across threads, processes and Ray workers; ``merge_adapter`` writes to a temporary folder and renames.

Why the source's files are referenced and not copied into the new job's directory: a copy of the adapter alone
would not make the new job self-contained — the model it trains on (and, for a LoRA job, the base its own
adapter is saved against) is the merged folder, a whole model; copying that into each dependent would cost
a full model per job and merge once per job. Instead the source cannot be deleted while a job still needs it
(``check_deletable``: 409 naming the dependent jobs), so its record holds its output directory and nothing
removes it.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import InvalidConfig, JobConflict
from ..sft.artifacts import Artifact, job_artifact, merge_adapter
from ..sft.config import SFTConfig
from ..sft.errors import ArtifactUnavailable, ModelError
from ..sft.events import EventKind, EventSink, TrainingEvent

JOB_PREFIX = "job:"
#: The folder, in the source job's output directory, that holds its adapter merged into its base.
MERGED = "merged"


def resolve_job_base(scoped: Any, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with a ``job:<id>`` base_model resolved (``job_base``): nothing is merged here. A config sent
    again with the ``base_job`` a job recorded is checked the same way, from its job id (its paths are never
    taken as sent). Other configs are returned as they are.

    Raises:
        InvalidConfig: naming config.base_model (no such job of the caller's, or it has no usable model), or
            config.base_job when it does not match the base_model sent with it.
    """
    if not isinstance(config, dict):
        return config
    base, sent = config.get("base_model"), config.get("base_job")
    if isinstance(base, str) and base.startswith(JOB_PREFIX):
        job_id = base.removeprefix(JOB_PREFIX)
    elif sent is not None:
        job_id = sent.get("job_id") if isinstance(sent, dict) else None
        if not isinstance(job_id, str):
            raise InvalidConfig("config.base_job: set by the server; start from a job with base_model 'job:<id>'",
                                field="config.base_job")
    else:
        return config
    job = scoped.find(job_id)
    if job is None:
        raise InvalidConfig(f"config.base_model: job {job_id!r} not found", field="config.base_model")
    try:
        resolved = job_base(job)
    except (ArtifactUnavailable, ModelError) as exc:
        raise InvalidConfig(f"config.base_model: {exc}", field="config.base_model") from None
    if not (isinstance(base, str) and base.startswith(JOB_PREFIX)) and base != resolved["base_model"]:
        raise InvalidConfig(f"config.base_job: it starts from job {job_id}, whose model is {resolved['base_model']}, "
                            f"not base_model {base!r}; send base_model 'job:{job_id}' alone",
                            field="config.base_job")
    return {**config, **resolved}


def job_base(job: Any) -> dict[str, Any]:
    """The ``base_model`` and ``base_job`` fields of a job that starts from ``job`` (a completed or stopped job
    with its model on disk); nothing is merged.

    Raises:
        ArtifactUnavailable: ``job`` has not finished, or its adapter or model is no longer on disk.
    """
    artifact = job_artifact(job)
    marker = "adapter_config.json" if artifact.kind == "lora_adapter" else "config.json"
    if not (artifact.path / marker).is_file():
        raise ArtifactUnavailable(f"Job {job.job_id}'s {artifact.path} holds no {marker}: it has no usable model")
    if artifact.kind != "lora_adapter":
        return {"base_model": str(artifact.path), "base_job": {"job_id": job.job_id}}
    return {"base_model": str(artifact.output_dir / MERGED), "base_job": {
        "job_id": job.job_id, "adapter_path": str(artifact.path), "adapter_base": artifact.base_model,
        "trust_remote_code": artifact.trust_remote_code}}


def model_source(config: SFTConfig | Mapping[str, Any]) -> str:
    """The model a submit-time check reads for ``config``: the adapter's base when its base is a LoRA job's
    merge (not made yet; the merged model has the same architecture, tokenizer and size), else base_model."""
    if isinstance(config, SFTConfig):
        return (config.base_job and config.base_job.adapter_base) or config.base_model
    return (config.get("base_job") or {}).get("adapter_base") or config["base_model"]


def prepare_base(config: SFTConfig, sink: EventSink, *, cache_dir: Path,
                 model_roots: list[Path] | None = None) -> None:
    """Make ``config.base_model`` exist before training, when it is a LoRA job's adapter merged into its base:
    merge it, or reuse the merged folder when it is newer than the adapter. Reported to ``sink`` as the
    ``merging_base`` phase (and ``base_ready`` when done).

    Raises:
        ModelError: naming base_model, when the adapter is gone or the merge fails (the job fails with it).
    """
    source = config.base_job
    if source is None or source.adapter_path is None:
        return
    merged, adapter = Path(config.base_model), Path(source.adapter_path)
    with _merge_guard(merged):
        if _merged_is_fresh(merged, adapter):
            sink(_phase("base_ready", f"Reusing job {source.job_id}'s adapter merged into its base ({merged})"))
            return
        if not (adapter / "adapter_config.json").is_file():
            raise ModelError(f"base_model: job {source.job_id}'s adapter {adapter} is no longer on disk, and its "
                             "merged model was never made", field="base_model")
        sink(_phase("merging_base", f"Merging job {source.job_id}'s LoRA adapter into its base "
                                    f"{source.adapter_base} (once: later jobs from job {source.job_id} reuse it)"))
        started = time.monotonic()
        artifact = Artifact(job_id=source.job_id, kind="lora_adapter", path=adapter, base_model=source.adapter_base,
                            output_dir=merged.parent, trust_remote_code=source.trust_remote_code,
                            model_roots=None if model_roots is None else tuple(model_roots))
        try:
            merge_adapter(artifact, cache_dir=cache_dir, target=merged)
        except Exception as exc:  # noqa: BLE001 - any failure of the merge fails the job with its cause
            raise ModelError(f"base_model: job {source.job_id}'s adapter could not be merged into its base "
                             f"{source.adapter_base}: {exc}", field="base_model") from exc
        sink(_phase("base_ready", f"Base ready: job {source.job_id}'s adapter merged in "
                                  f"{time.monotonic() - started:.1f} s into {merged}"))


def check_deletable(job: Any, jobs: Iterable[Any]) -> None:
    """JobConflict when a job in ``jobs`` still needs ``job``'s model: one that starts from it and may still
    train (not completed) or keeps a LoRA adapter saved against its merged base. Jobs of ``job``'s owner are
    named; others (an admin's) are counted."""
    needing = [other for other in jobs if _needs(other, job.job_id)]
    if not needing:
        return
    named = [other.job_id for other in needing if other.owner == job.owner]
    others = len(needing) - len(named)
    listed = ", ".join(named) + (f" and {others} other job(s)" if named and others else "" if named
                                 else f"{others} other job(s)")
    raise JobConflict(f"Job {job.job_id} is the base of {listed}, which still need its model; delete "
                      f"{'them' if len(needing) > 1 else 'it'} first")


def _needs(other: Any, job_id: str) -> bool:
    config = other.config or {}
    if (config.get("base_job") or {}).get("job_id") != job_id:
        return False
    return other.status != "completed" or bool(config.get("use_lora", True))  # JobStatus is a str enum


def _merged_is_fresh(merged: Path, adapter: Path) -> bool:
    """The merged folder is complete and newer than the adapter (kept as it is when the adapter is gone)."""
    config = merged / "config.json"
    if not config.is_file():
        return False
    marker = adapter / "adapter_config.json"
    return not marker.is_file() or config.stat().st_mtime >= marker.stat().st_mtime


@contextmanager
def _merge_guard(merged: Path) -> Iterator[None]:
    """One merge of a folder at a time, across threads, processes and Ray workers on this file system."""
    merged.parent.mkdir(parents=True, exist_ok=True)
    with open(merged.parent / f".{merged.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _phase(phase: str, message: str) -> TrainingEvent:
    return TrainingEvent(EventKind.PHASE, {"phase": phase, "message": message})
