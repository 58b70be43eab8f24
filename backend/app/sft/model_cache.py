"""Loaded models, kept for the next request: a ``ModelCache`` and how an artifact's model is loaded into it.

A LoRA entry also gives the base model's output through PEFT's ``disable_adapter()``, so comparing
with the base costs no second load.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ArtifactUnavailable, ModelError
from .models import ModelRef, load_model, load_tokenizer, model_load_lock, release_memory, resolve_model

if TYPE_CHECKING:
    from .artifacts import Artifact


@dataclass
class Loaded:
    """A model ready to generate, its tokenizer, and whether it carries a LoRA adapter."""

    model: Any
    tokenizer: Any
    has_adapter: bool


class _Entry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: Any = None


class ModelCache:
    """Loaded models by key; beyond ``max_models`` the least recently used is dropped.

    A request holds its entry's lock while it generates: PEFT's ``disable_adapter()`` switches the
    shared model's state, so two requests must not use one entry at once. An entry dropped while
    in use stays alive until that request ends, so memory may briefly hold one model more.
    """

    def __init__(self, *, max_models: int = 2):
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self.loads = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def use(self, key: Hashable, load: Callable[[], Any]) -> Iterator[Any]:
        """Hold the value under ``key``, loading it with ``load()`` first when it is not cached."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            self._entries.move_to_end(key)
            evicted = self._evict()
        if evicted:
            release_memory()
        with entry.lock:
            if entry.value is None:
                try:
                    entry.value = load()
                except BaseException:
                    self._forget(key, entry)
                    raise
                self.loads += 1
            yield entry.value

    def keys(self) -> list[Hashable]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def _evict(self) -> int:
        dropped = 0
        while len(self._entries) > self.max_models:
            self._entries.popitem(last=False)
            dropped += 1
        return dropped

    def _forget(self, key: Hashable, entry: _Entry) -> None:
        with self._lock:
            if self._entries.get(key) is entry:
                del self._entries[key]


def _fingerprint(path: Path) -> int:
    # A new job may reuse an output_dir: the files' times tell a retrained adapter from the cached one.
    return max((p.stat().st_mtime_ns for p in path.iterdir() if p.is_file()), default=0)


def use_tuned(cache: ModelCache, artifact: Artifact, *, cache_dir: Path, device: str):
    """Hold the artifact's model (its base plus adapter, or the full model) from ``cache``, loading it when needed."""
    if artifact.kind == "base_model":
        return use_base(cache, artifact, cache_dir=cache_dir, device=device)
    key = ("tuned", artifact.kind, str(artifact.path), _fingerprint(artifact.path), artifact.base_model,
           artifact.quantize_4bit, device)
    return cache.use(key, lambda: _load_tuned(artifact, cache_dir=cache_dir, device=device))


def use_base(cache: ModelCache, artifact: Artifact, *, cache_dir: Path, device: str):
    """Hold the artifact's base model alone from ``cache``, loading it when needed."""
    key = ("base", artifact.base_model, artifact.quantize_4bit, device)
    return cache.use(key, lambda: _load_base(artifact, cache_dir=cache_dir, device=device))


def _load_tuned(artifact: Artifact, *, cache_dir: Path, device: str) -> Loaded:
    if artifact.kind == "full_model":
        ref = ModelRef(str(artifact.path), "local", str(artifact.path))
        model = load_artifact_model(ref, artifact, device=device, quantize_4bit=False)
        return Loaded(model, artifact_tokenizer(resolve_base(artifact, cache_dir), artifact), has_adapter=False)
    from peft import PeftModel

    base = _load_base(artifact, cache_dir=cache_dir, device=device)
    with model_load_lock:
        model = PeftModel.from_pretrained(base.model, str(artifact.path), is_trainable=False)
    model.eval()
    return Loaded(model, base.tokenizer, has_adapter=True)


def _load_base(artifact: Artifact, *, cache_dir: Path, device: str) -> Loaded:
    ref = resolve_base(artifact, cache_dir)
    model = load_artifact_model(ref, artifact, device=device, quantize_4bit=artifact.quantize_4bit)
    return Loaded(model, artifact_tokenizer(ref, artifact), has_adapter=False)


def resolve_base(artifact: Artifact, cache_dir: Path) -> ModelRef:
    """The artifact's base model reference; ArtifactUnavailable when it no longer resolves."""
    try:
        return resolve_model(artifact.base_model, cache_dir=cache_dir,
                             allowed_roots=None if artifact.model_roots is None else list(artifact.model_roots))
    except ModelError as exc:
        raise ArtifactUnavailable(f"{artifact.subject('base model')} cannot be used now: {exc}") from None


def artifact_tokenizer(ref: ModelRef, artifact: Artifact):
    try:
        return load_tokenizer(ref, trust_remote_code=artifact.trust_remote_code)
    except ModelError as exc:
        raise ArtifactUnavailable(f"{artifact.subject('tokenizer')} cannot be loaded: {exc}") from None


def load_artifact_model(ref: ModelRef, artifact: Artifact, *, device: str, quantize_4bit: bool, dtype: Any = None):
    import torch

    if dtype is None:
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    try:
        model = load_model(ref, device=device, dtype=dtype, quantize_4bit=quantize_4bit,
                           trust_remote_code=artifact.trust_remote_code)
    except ModelError as exc:
        raise ArtifactUnavailable(f"{artifact.subject('model')} cannot be loaded: {exc}") from None
    if not quantize_4bit:
        model.to(device)
    model.eval()
    return model
