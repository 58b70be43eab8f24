"""What a finished run saved, and what can be made of it: its artifact (adapter, full model or a
checkpoint of either), the adapter merged into its base, and the adapter archived for download."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .checkpoints import list_checkpoints
from .errors import ArtifactUnavailable, CheckpointMissing
from .model_cache import artifact_tokenizer, load_artifact_model, resolve_base
from .models import model_load_lock, release_memory

CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")
USABLE_STATUSES = ("completed", "stopped")
ARCHIVE_ROOT = "adapter"

# A merge holds a full-precision copy of the base; two at once could double peak memory.
_merge_lock = threading.Lock()


@dataclass(frozen=True)
class Artifact:
    """What a finished job saved, and how its base model is loaded."""

    job_id: str
    kind: Literal["lora_adapter", "full_model", "base_model"]
    path: Path
    base_model: str
    output_dir: Path
    quantize_4bit: bool = False
    trust_remote_code: bool = False
    #: Where a local base model may be read from (the path policy); None allows any path.
    model_roots: tuple[Path, ...] | None = None

    def subject(self, part: str) -> str:
        """Whose ``part`` a message is about: "Job abc's tokenizer", or "Model x's tokenizer" for a base model."""
        if self.kind == "base_model":
            return f"Model {self.base_model}" if part in ("model", "base model") else f"Model {self.base_model}'s {part}"
        return f"Job {self.job_id}'s {part}"


def base_model_artifact(base_model: str, *, model_roots: list[Path] | None = None) -> Artifact:
    """A base model (bundled alias, local directory, .gguf file, Hub id) used as it is, without an adapter;
    a local one is resolved under ``model_roots`` (the path policy; None allows any path)."""
    return Artifact(job_id="", kind="base_model", path=Path(), base_model=base_model, output_dir=Path(),
                    model_roots=None if model_roots is None else tuple(model_roots))


def job_artifact(job: Any, *, checkpoint: str | None = None,
                 model_roots: list[Path] | None = None) -> Artifact:
    """The artifact of a completed or stopped job, or of one of its checkpoints. Its base model will
    be resolved under ``model_roots`` (the path policy; None allows any path).

    Raises:
        ArtifactUnavailable: the job has not finished, or saved no adapter.
        CheckpointMissing: ``checkpoint`` is not one of the job's checkpoints.
    """
    status = getattr(job.status, "value", job.status)
    result = job.result or {}
    if status not in USABLE_STATUSES:
        raise ArtifactUnavailable(f"Job {job.job_id} is {status}; only a completed or stopped job with an adapter "
                                  "can be used")
    if not result.get("adapter_path"):
        raise ArtifactUnavailable(f"Job {job.job_id} ({status}) saved no adapter: it stopped before training began")
    config = job.config
    kind = result.get("artifact") or ("lora_adapter" if config.get("use_lora", True) else "full_model")
    output_dir = Path(result.get("output_dir") or config["output_dir"])
    path = Path(result["adapter_path"])
    if checkpoint is not None:
        path = checkpoint_dir(job.job_id, output_dir, checkpoint, kind=kind)
    elif not path.is_dir():
        raise ArtifactUnavailable(f"Job {job.job_id}'s adapter directory {path} is no longer on disk")
    return Artifact(job_id=job.job_id, kind=kind, path=path, base_model=config["base_model"],
                    output_dir=output_dir, quantize_4bit=bool(config.get("use_qlora")),
                    trust_remote_code=bool(config.get("trust_remote_code")),
                    model_roots=None if model_roots is None else tuple(model_roots))


def checkpoint_dir(job_id: str, output_dir: Path, name: str, *, kind: str) -> Path:
    """The directory of checkpoint ``name``; CheckpointMissing (listing the real ones) otherwise."""
    marker = "adapter_config.json" if kind == "lora_adapter" else "config.json"
    # The name must match the pattern before it touches a path, so '../x' cannot escape.
    path = output_dir / "checkpoints" / name
    if CHECKPOINT_NAME.match(name) and (path / marker).is_file():
        return path
    available = [Path(c["path"]).name for c in list_checkpoints(output_dir)]
    hint = f"available: {', '.join(available)}" if available else "it saved none; set save_steps to keep some"
    raise CheckpointMissing(f"Checkpoint {name!r} not found for job {job_id} ({hint})")


def merge_adapter(artifact: Artifact, *, cache_dir: Path, target: Path | None = None) -> dict[str, Any]:
    """Merge the LoRA adapter into its base and save a standalone model to ``target`` (default
    ``<output_dir>/merged``; replaced when it exists).

    The base is loaded in fp32 on the CPU, also for QLoRA jobs: merging into 4-bit weights would
    round the adapter's update away, and the saved model would need bitsandbytes to load.
    """
    import torch
    from peft import PeftModel

    if artifact.kind != "lora_adapter":
        raise ArtifactUnavailable(f"Job {artifact.job_id} is a full fine-tune: {artifact.path} is already a "
                                  "standalone model, there is no adapter to merge")
    ref = resolve_base(artifact, cache_dir)
    target = target or artifact.output_dir / "merged"
    staging = target.parent / f".merged-{uuid.uuid4().hex[:8]}"
    with _merge_lock:
        try:
            base = load_artifact_model(ref, artifact, device="cpu", quantize_4bit=False, dtype=torch.float32)
            with model_load_lock:
                merged = PeftModel.from_pretrained(base, str(artifact.path)).merge_and_unload()
            merged.save_pretrained(staging)
            artifact_tokenizer(ref, artifact).save_pretrained(staging)
            del base, merged
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            release_memory()
    return {"merged_path": str(target), "size_bytes": dir_size(target)}


def dir_size(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


_archive_lock = threading.Lock()


def cached_archive(path: Path) -> Path:
    """``<path>.tar.gz`` beside ``path`` (its root folder ``adapter/``), built once and rebuilt only when
    a file under ``path`` is newer: downloads reuse it instead of compressing the adapter each time."""
    archive = path.with_name(path.name + ".tar.gz")
    with _archive_lock:
        newest = max((p.stat().st_mtime_ns for p in path.rglob("*")), default=0)
        if archive.is_file() and archive.stat().st_mtime_ns >= newest:
            return archive
        staging = archive.with_name(f".{archive.name}.{uuid.uuid4().hex[:8]}")
        try:
            archive_adapter(path, staging)
            os.replace(staging, archive)  # a download in progress keeps reading the old file
        finally:
            staging.unlink(missing_ok=True)
    return archive


def archive_adapter(path: Path, destination: Path) -> Path:
    """Write ``path`` as a gzipped tar with one root folder, ``adapter/``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(destination, "w:gz") as tar:
        tar.add(path, arcname=ARCHIVE_ROOT, filter=_portable_member)
    return destination


def _portable_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Modes and owners a downloader can use as they are: safetensors writes its file 0600, the server
    runs as whoever it runs as."""
    member.mode = 0o755 if member.isdir() else 0o644
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member
