"""Use a trained job: generate with it (and its base), score it, merge it, archive it, list models.

A job's *artifact* is what its training saved: a LoRA adapter, loaded on top of its base model, or
a full model directory. Loaded models live in a ``ModelCache``. A LoRA entry also gives the base
model's output through PEFT's ``disable_adapter()``, so comparing with the base costs no second load.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tarfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..core.errors import CheckpointNotFound, InvalidConfig, JobConflict, RequestCancelled, RequestTimedOut
from .checkpoints import list_checkpoints
from .data import convert_rows, read_rows
from .errors import DatasetError, ModelError
from .paths import is_within
from .models import (
    BUNDLED_MODELS,
    ModelRef,
    default_device,
    load_model,
    load_tokenizer,
    model_load_lock,
    release_memory,
    resolve_model,
)

CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")
USABLE_STATUSES = ("completed", "stopped")
ARCHIVE_ROOT = "adapter"

# Seeded sampling sets torch's global RNG; two seeded requests at once would interleave draws.
_rng_lock = threading.Lock()
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


@dataclass
class Loaded:
    """A model ready to generate, its tokenizer, and whether it carries a LoRA adapter."""

    model: Any
    tokenizer: Any
    has_adapter: bool


@dataclass(eq=False)
class Budget:
    """The limits of one model request: a time limit and a cancel flag, checked at every token.

    ``cancel(reason)`` may be called from any thread (the client left, the server is stopping);
    generation stops at its next token and :meth:`raise_if_stopped` says why.
    """

    timeout_seconds: float | None = None
    started: float = field(default_factory=time.monotonic)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _reason: str = ""

    def cancel(self, reason: str) -> None:
        self._reason = self._reason or reason
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def expired(self) -> bool:
        return self.timeout_seconds is not None and time.monotonic() - self.started > self.timeout_seconds

    def should_stop(self) -> bool:
        return self._cancelled.is_set() or self.expired()

    def raise_if_stopped(self) -> None:
        """Raise RequestCancelled or RequestTimedOut when the work must end (its output is partial)."""
        if self._cancelled.is_set():
            raise RequestCancelled(f"stopped: {self._reason}")
        if self.expired():
            raise RequestTimedOut(
                f"stopped after {self.timeout_seconds:g} s, the server's limit for one model request "
                "(SFT_REQUEST_TIMEOUT_SECONDS); ask for fewer max_new_tokens or rows"
            )

    def stopping_criteria(self) -> Any:
        """A ``StoppingCriteriaList`` for ``model.generate`` that ends generation when :meth:`should_stop`."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        budget = self

        class _BudgetCriteria(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), budget.should_stop(), dtype=torch.bool,
                                  device=input_ids.device)

        return StoppingCriteriaList([_BudgetCriteria()])


def context_length(model: Any) -> int | None:
    """Most tokens (prompt and generated) the model takes, from its config; None when unknown."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits_context(model: Any, *, prompt_tokens: int, max_new_tokens: int, field_name: str) -> None:
    """InvalidConfig (400, naming ``field_name`` and the numbers) when prompt + max_new_tokens exceed
    the model's context."""
    limit = context_length(model)
    if limit is not None and prompt_tokens + max_new_tokens > limit:
        raise InvalidConfig(
            f"{field_name}: {prompt_tokens:,} prompt tokens + max_new_tokens {max_new_tokens:,} = "
            f"{prompt_tokens + max_new_tokens:,} tokens, beyond the model's context of {limit:,} tokens; "
            "shorten the prompt or lower max_new_tokens"
        )


# Jobs -> artifacts


def job_artifact(job: Any, *, checkpoint: str | None = None,
                 model_roots: list[Path] | None = None) -> Artifact:
    """The artifact of a completed or stopped job, or of one of its checkpoints. Its base model will
    be resolved under ``model_roots`` (the path policy; None allows any path).

    Raises:
        JobConflict: the job has not finished, or saved no adapter.
        CheckpointNotFound: ``checkpoint`` is not one of the job's checkpoints.
    """
    status = getattr(job.status, "value", job.status)
    result = job.result or {}
    if status not in USABLE_STATUSES:
        raise JobConflict(f"Job {job.job_id} is {status}; only a completed or stopped job with an adapter "
                          "can be used")
    if not result.get("adapter_path"):
        raise JobConflict(f"Job {job.job_id} ({status}) saved no adapter: it stopped before training began")
    config = job.config
    kind = result.get("artifact") or ("lora_adapter" if config.get("use_lora", True) else "full_model")
    output_dir = Path(result.get("output_dir") or config["output_dir"])
    path = Path(result["adapter_path"])
    if checkpoint is not None:
        path = checkpoint_dir(job.job_id, output_dir, checkpoint, kind=kind)
    elif not path.is_dir():
        raise JobConflict(f"Job {job.job_id}'s adapter directory {path} is no longer on disk")
    return Artifact(job_id=job.job_id, kind=kind, path=path, base_model=config["base_model"],
                    output_dir=output_dir, quantize_4bit=bool(config.get("use_qlora")),
                    trust_remote_code=bool(config.get("trust_remote_code")),
                    model_roots=None if model_roots is None else tuple(model_roots))


def checkpoint_dir(job_id: str, output_dir: Path, name: str, *, kind: str) -> Path:
    """The directory of checkpoint ``name``; CheckpointNotFound (listing the real ones) otherwise."""
    marker = "adapter_config.json" if kind == "lora_adapter" else "config.json"
    # The name must match the pattern before it touches a path, so '../x' cannot escape.
    path = output_dir / "checkpoints" / name
    if CHECKPOINT_NAME.match(name) and (path / marker).is_file():
        return path
    available = [Path(c["path"]).name for c in list_checkpoints(output_dir)]
    hint = f"available: {', '.join(available)}" if available else "it saved none; set save_steps to keep some"
    raise CheckpointNotFound(f"Checkpoint {name!r} not found for job {job_id} ({hint})")


# The cache


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


def _use_tuned(cache: ModelCache, artifact: Artifact, *, cache_dir: Path, device: str):
    if artifact.kind == "base_model":
        return _use_base(cache, artifact, cache_dir=cache_dir, device=device)
    key = ("tuned", artifact.kind, str(artifact.path), _fingerprint(artifact.path), artifact.base_model,
           artifact.quantize_4bit, device)
    return cache.use(key, lambda: _load_tuned(artifact, cache_dir=cache_dir, device=device))


def _use_base(cache: ModelCache, artifact: Artifact, *, cache_dir: Path, device: str):
    key = ("base", artifact.base_model, artifact.quantize_4bit, device)
    return cache.use(key, lambda: _load_base(artifact, cache_dir=cache_dir, device=device))


def _load_tuned(artifact: Artifact, *, cache_dir: Path, device: str) -> Loaded:
    if artifact.kind == "full_model":
        ref = ModelRef(str(artifact.path), "local", str(artifact.path))
        model = _load(ref, artifact, device=device, quantize_4bit=False)
        return Loaded(model, _tokenizer(_resolve(artifact, cache_dir), artifact), has_adapter=False)
    from peft import PeftModel

    base = _load_base(artifact, cache_dir=cache_dir, device=device)
    with model_load_lock:
        model = PeftModel.from_pretrained(base.model, str(artifact.path), is_trainable=False)
    model.eval()
    return Loaded(model, base.tokenizer, has_adapter=True)


def _load_base(artifact: Artifact, *, cache_dir: Path, device: str) -> Loaded:
    ref = _resolve(artifact, cache_dir)
    model = _load(ref, artifact, device=device, quantize_4bit=artifact.quantize_4bit)
    return Loaded(model, _tokenizer(ref, artifact), has_adapter=False)


def _resolve(artifact: Artifact, cache_dir: Path) -> ModelRef:
    try:
        return resolve_model(artifact.base_model, cache_dir=cache_dir,
                             allowed_roots=None if artifact.model_roots is None else list(artifact.model_roots))
    except ModelError as exc:
        raise JobConflict(f"{artifact.subject('base model')} cannot be used now: {exc}") from None


def _tokenizer(ref: ModelRef, artifact: Artifact):
    try:
        return load_tokenizer(ref, trust_remote_code=artifact.trust_remote_code)
    except ModelError as exc:
        raise JobConflict(f"{artifact.subject('tokenizer')} cannot be loaded: {exc}") from None


def _load(ref: ModelRef, artifact: Artifact, *, device: str, quantize_4bit: bool, dtype: Any = None):
    import torch

    if dtype is None:
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    try:
        model = load_model(ref, device=device, dtype=dtype, quantize_4bit=quantize_4bit,
                           trust_remote_code=artifact.trust_remote_code)
    except ModelError as exc:
        raise JobConflict(f"{artifact.subject('model')} cannot be loaded: {exc}") from None
    if not quantize_4bit:
        model.to(device)
    model.eval()
    return model


# Generation


def generate(
    cache: ModelCache,
    artifact: Artifact,
    *,
    cache_dir: Path,
    messages: list[dict[str, str]] | None = None,
    prompt: str | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
    compare_base: bool = False,
    device: str | None = None,
    budget: Budget | None = None,
) -> dict[str, Any]:
    """Complete ``messages`` (chat template, generation prompt) or a raw ``prompt`` with the job's
    model, and with its base too when ``compare_base``. ``temperature`` 0 is greedy.

    Raises:
        InvalidConfig: the prompt and ``max_new_tokens`` do not fit the model's context.
        RequestCancelled, RequestTimedOut: ``budget`` ended the generation early.
    """
    if (messages is None) == (prompt is None):
        raise InvalidConfig("give exactly one of messages and prompt")
    device = device or default_device()
    budget = budget or Budget()
    sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
                "budget": budget, "field_name": "messages" if messages is not None else "prompt"}
    base = None
    with _use_tuned(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
        budget.raise_if_stopped()
        text, special = _render(loaded.tokenizer, messages=messages, prompt=prompt)
        tuned = _complete(loaded, text, add_special_tokens=special, **sampling)
        if compare_base and loaded.has_adapter:
            with loaded.model.disable_adapter():
                base = _complete(loaded, text, add_special_tokens=special, **sampling)
    if compare_base and base is None:
        with _use_base(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
            budget.raise_if_stopped()
            base = _complete(loaded, text, add_special_tokens=special, **sampling)
    return {
        "completion": tuned["text"],
        "prompt_tokens": tuned["prompt_tokens"],
        "completion_tokens": tuned["completion_tokens"],
        "latency_ms": tuned["latency_ms"],
        "base_completion": base["text"] if base else None,
        "base_completion_tokens": base["completion_tokens"] if base else None,
        "base_latency_ms": base["latency_ms"] if base else None,
    }


def _render(tokenizer: Any, *, messages: list[dict[str, str]] | None, prompt: str | None) -> tuple[str, bool]:
    """The prompt text, and whether tokenizing it should add the tokenizer's special tokens."""
    if prompt is not None:
        return prompt, True
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja raises its own types from the model's template
        raise InvalidConfig(f"messages: the model's chat template rejected them: {exc}") from None
    # The template already wrote the BOS and role markers the model was trained with.
    return text, False


def _complete(loaded: Loaded, text: str, *, add_special_tokens: bool, max_new_tokens: int,
              temperature: float, top_p: float | None, seed: int | None, budget: Budget,
              field_name: str, stop: list[str] | None = None) -> dict[str, Any]:
    import torch

    model, tokenizer = loaded.model, loaded.tokenizer
    inputs, prompt_tokens, options = _prepare(loaded, text, add_special_tokens=add_special_tokens,
                                              max_new_tokens=max_new_tokens, temperature=temperature,
                                              top_p=top_p, budget=budget, field_name=field_name)
    if stop:
        options["stopping_criteria"].append(_stop_strings(tokenizer, prompt_tokens, stop))
    started = time.perf_counter()
    with _seeded(seed if temperature > 0 else None, model.device), torch.inference_mode():
        output = model.generate(**inputs, **options)
    budget.raise_if_stopped()  # the completion was cut short: no partial answer is returned
    latency = (time.perf_counter() - started) * 1000
    new_tokens = output[0, prompt_tokens:]
    completion = tokenizer.decode(new_tokens, skip_special_tokens=True)
    cut = _find_stop(completion, stop)
    return {
        "text": completion if cut is None else completion[:cut],
        "prompt_tokens": prompt_tokens,
        "completion_tokens": int(new_tokens.shape[0]),
        "latency_ms": round(latency, 1),
        "finish_reason": _finish_reason(new_tokens.tolist(), cut is not None, max_new_tokens, options["eos_token_id"]),
    }


def _prepare(loaded: Loaded, text: str, *, add_special_tokens: bool, max_new_tokens: int, temperature: float,
             top_p: float | None, budget: Budget, field_name: str) -> tuple[Any, int, dict[str, Any]]:
    """The tokenized prompt, its length, and the options of ``generate``."""
    model, tokenizer = loaded.model, loaded.tokenizer
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=add_special_tokens).to(model.device)
    prompt_tokens = int(inputs["input_ids"].shape[1])
    if prompt_tokens == 0:
        raise InvalidConfig("prompt: it tokenizes to nothing")
    check_fits_context(model, prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, field_name=field_name)
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                               "eos_token_id": _eos_ids(model, tokenizer),
                               "stopping_criteria": budget.stopping_criteria()}
    if temperature > 0:
        options.update(do_sample=True, temperature=temperature, top_p=1.0 if top_p is None else top_p)
    else:
        # The model's own generation config may ask for sampling; a greedy request overrides it.
        options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return inputs, prompt_tokens, options


def _stop_strings(tokenizer: Any, prompt_tokens: int, stop: list[str]):
    """A stopping criterion: the new text holds a stop string.

    transformers' own ``stop_strings`` also match across the prompt's end (a stop string "\\n\\n"
    would end a completion at its first "\\n" after a prompt ending in "\\n"); OpenAI's apply to the
    completion only, so only the generated tokens are decoded here (the last few: enough for the
    longest stop string).
    """
    import torch
    from transformers import StoppingCriteria

    window = max(len(s) for s in stop) + 8

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            tail = tokenizer.decode(input_ids[0, max(prompt_tokens, input_ids.shape[1] - window):],
                                    skip_special_tokens=True)
            return torch.full((input_ids.shape[0],), any(s in tail for s in stop), dtype=torch.bool,
                              device=input_ids.device)

    return StopStrings()


def _finish_reason(new_tokens: list[int], stopped: bool, max_new_tokens: int, eos_ids: list[int]) -> str:
    """OpenAI's finish_reason: 'length' when the token budget ran out, 'stop' otherwise."""
    if stopped or len(new_tokens) < max_new_tokens or (new_tokens and new_tokens[-1] in eos_ids):
        return "stop"
    return "length"


def _find_stop(text: str, stop: list[str] | None) -> int | None:
    """Where the first stop string in ``text`` begins, or None."""
    found = [i for i in (text.find(s) for s in stop or []) if i >= 0]
    return min(found) if found else None


class _StopCutter:
    """Streamed text, held back while its end may be the start of a stop string, cut at the first one."""

    def __init__(self, stop: list[str] | None):
        self.stop = stop or []
        self.text = ""
        self.sent = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """What can be sent now, and whether a stop string was reached (nothing more is then)."""
        self.text += piece
        cut = _find_stop(self.text, self.stop)
        if cut is not None:
            out, self.sent = self.text[self.sent:cut], cut
            return out, True
        held = max((k for s in self.stop for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        safe = max(self.sent, len(self.text) - held)
        out, self.sent = self.text[self.sent:safe], safe
        return out, False

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


# Chat (the OpenAI-compatible API)


def chat(cache: ModelCache, artifact: Artifact, *, cache_dir: Path, messages: list[dict[str, str]],
         max_new_tokens: int = 128, temperature: float = 0.0, top_p: float | None = None,
         seed: int | None = None, stop: list[str] | None = None, device: str | None = None,
         budget: Budget | None = None) -> dict[str, Any]:
    """Complete ``messages`` with a job's model (or a base model's artifact): ``text``, ``finish_reason``,
    ``prompt_tokens``, ``completion_tokens``, ``latency_ms``. ``stop`` strings end the text (excluded)."""
    device = device or default_device()
    budget = budget or Budget()
    with _use_tuned(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
        budget.raise_if_stopped()
        text, special = _render(loaded.tokenizer, messages=messages, prompt=None)
        return _complete(loaded, text, add_special_tokens=special, max_new_tokens=max_new_tokens,
                         temperature=temperature, top_p=top_p, seed=seed, budget=budget, field_name="messages",
                         stop=stop)


def stream_chat(cache: ModelCache, artifact: Artifact, *, cache_dir: Path, messages: list[dict[str, str]],
                max_new_tokens: int = 128, temperature: float = 0.0, top_p: float | None = None,
                seed: int | None = None, stop: list[str] | None = None, device: str | None = None,
                budget: Budget | None = None) -> Iterator[dict[str, Any]]:
    """:func:`chat`, streamed. Yields ``{"prompt_tokens"}`` once the model is loaded and the prompt
    rendered (what fails before raises before anything was sent), then ``{"text"}`` pieces as they
    are decoded, then ``{"finish_reason", "completion_tokens"}``.

    ``model.generate`` runs in a thread of its own and hands text over through transformers'
    ``TextIteratorStreamer``; closing the iterator early, or cancelling ``budget`` (from any thread),
    stops that generation at its next token; so does the budget's time limit (then it raises).
    """
    import torch
    from transformers import TextIteratorStreamer

    device = device or default_device()
    budget = budget or Budget()
    with _use_tuned(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
        model, tokenizer = loaded.model, loaded.tokenizer
        text, special = _render(tokenizer, messages=messages, prompt=None)
        inputs, prompt_tokens, options = _prepare(loaded, text, add_special_tokens=special,
                                                  max_new_tokens=max_new_tokens, temperature=temperature,
                                                  top_p=top_p, budget=budget, field_name="messages")
        if stop:
            options["stopping_criteria"].append(_stop_strings(tokenizer, prompt_tokens, stop))
        yield {"prompt_tokens": prompt_tokens}
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                with _seeded(seed if temperature > 0 else None, model.device), torch.inference_mode():
                    outcome["output"] = model.generate(**inputs, **options, streamer=streamer)
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                outcome["error"] = exc
                streamer.end()

        thread = threading.Thread(target=run, name="generate-stream", daemon=True)
        thread.start()
        cutter = _StopCutter(stop)
        stopped = False
        try:
            for piece in streamer:
                out, stopped = cutter.feed(piece)
                if out:
                    yield {"text": out}
                if stopped:
                    break
            if not stopped and (rest := cutter.flush()):
                yield {"text": rest}
        finally:
            ended_here = thread.is_alive()  # a stop string was reached, or the reader went away
            if ended_here:
                budget.cancel("the stream ended")
            thread.join()
        if "error" in outcome:
            raise outcome["error"]
        if not ended_here:
            budget.raise_if_stopped()  # the time limit (or a shutdown) cut the completion short
        new_tokens = outcome["output"][0, prompt_tokens:].tolist()
        yield {"finish_reason": _finish_reason(new_tokens, stopped, max_new_tokens, options["eos_token_id"]),
               "completion_tokens": len(new_tokens)}


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids if i is not None]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@contextmanager
def _seeded(seed: int | None, device: Any) -> Iterator[None]:
    if seed is None:
        yield
        return
    import torch

    devices = [device.index or 0] if getattr(device, "type", None) == "cuda" else []
    # fork_rng puts the global RNG back afterwards, so a seeded request leaves no trace on others.
    with _rng_lock, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# Evaluation


def chat_rows(dataset_name: str, split: str, *, limit: int | None,
              allowed_roots: list[Path] | None) -> list[dict[str, Any]]:
    """Rows of a conversational dataset (messages, sharegpt or alpaca) as ``{"messages": [...]}``."""
    try:
        raw = read_rows(dataset_name, split, limit=limit, allowed_roots=allowed_roots)
        rows, fmt = convert_rows(raw)
    except DatasetError as exc:
        raise InvalidConfig(f"dataset_name: {exc}") from None
    if fmt not in ("messages", "sharegpt", "alpaca"):
        raise InvalidConfig(f"dataset_name: {dataset_name} is in the {fmt} format; evaluation needs "
                            "conversational rows (messages, sharegpt or alpaca) with a final assistant answer")
    return [{"messages": row["prompt"] + row["completion"]} for row in rows]


def evaluate(cache: ModelCache, artifact: Artifact, rows: list[dict[str, Any]], *, cache_dir: Path,
             max_new_tokens: int = 64, device: str | None = None, budget: Budget | None = None) -> dict[str, Any]:
    """Exact-match scores of the base model and of the job's model on ``rows``.

    Raises:
        InvalidConfig: a row's prompt and ``max_new_tokens`` do not fit the model's context.
        RequestCancelled, RequestTimedOut: ``budget`` ended the scoring early.
    """
    from .evaluation import score_exact_match

    device = device or default_device()
    budget = budget or Budget()
    score = functools.partial(score_exact_match, rows=rows, max_new_tokens=max_new_tokens, budget=budget)
    base = None
    with _use_tuned(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
        _check_rows_fit(loaded, rows, max_new_tokens=max_new_tokens)
        if loaded.has_adapter:
            with loaded.model.disable_adapter():
                base = score(loaded.model, loaded.tokenizer)
        tuned = score(loaded.model, loaded.tokenizer)
    if base is None:
        with _use_base(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
            base = score(loaded.model, loaded.tokenizer)
    return {"base": base, "tuned": tuned}


def _check_rows_fit(loaded: Loaded, rows: list[dict[str, Any]], *, max_new_tokens: int) -> None:
    for number, row in enumerate(rows, start=1):
        text = loaded.tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        tokens = len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
        check_fits_context(loaded.model, prompt_tokens=tokens, max_new_tokens=max_new_tokens,
                           field_name=f"dataset_name: row {number}")


# Merge and archive


def merge_adapter(artifact: Artifact, *, cache_dir: Path, target: Path | None = None) -> dict[str, Any]:
    """Merge the LoRA adapter into its base and save a standalone model to ``target`` (default
    ``<output_dir>/merged``; replaced when it exists).

    The base is loaded in fp32 on the CPU, also for QLoRA jobs: merging into 4-bit weights would
    round the adapter's update away, and the saved model would need bitsandbytes to load.
    """
    import torch
    from peft import PeftModel

    if artifact.kind != "lora_adapter":
        raise JobConflict(f"Job {artifact.job_id} is a full fine-tune: {artifact.path} is already a "
                          "standalone model, there is no adapter to merge")
    ref = _resolve(artifact, cache_dir)
    target = target or artifact.output_dir / "merged"
    staging = target.parent / f".merged-{uuid.uuid4().hex[:8]}"
    with _merge_lock:
        try:
            base = _load(ref, artifact, device="cpu", quantize_4bit=False, dtype=torch.float32)
            with model_load_lock:
                merged = PeftModel.from_pretrained(base, str(artifact.path)).merge_and_unload()
            merged.save_pretrained(staging)
            _tokenizer(ref, artifact).save_pretrained(staging)
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
        tar.add(path, arcname=ARCHIVE_ROOT)
    return destination


# Models


def list_models(*, cache_dir: Path, model_roots: list[Path]) -> list[dict[str, Any]]:
    """Models usable without the Hub; ``name`` is what a config's ``base_model`` takes.

    Bundled aliases (``ready`` once converted into the model cache), other converted model
    directories in the model cache, model directories (with a config.json) directly under a
    ``models/`` folder of an allowed model root, and models in the local Hugging Face cache.
    """
    items: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for alias in BUNDLED_MODELS:
        path = (cache_dir / alias).resolve()
        seen.add(path)
        items.append({"name": alias, "kind": "bundled", "path": str(path),
                      "ready": (path / "config.json").is_file()})
    folders = [(cache_dir, "converted")] + [(root / "models", "local") for root in model_roots]
    for folder, kind in folders:
        for path in _model_dirs(folder, roots=[*(r.resolve() for r in model_roots), cache_dir.resolve()]):
            if path not in seen:
                seen.add(path)
                items.append({"name": str(path), "kind": kind, "path": str(path), "ready": True})
    items.extend(_hub_cached_models())
    return items


def _model_dirs(folder: Path, *, roots: list[Path]) -> list[Path]:
    if not folder.is_dir():
        return []
    found = (p.resolve() for p in folder.iterdir()
             if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".converting"))
    # A symlink in a models/ folder may point anywhere: list only what a config may then use.
    return sorted(p for p in found if is_within(p, roots) and (p / "config.json").is_file())


def _hub_cached_models() -> list[dict[str, Any]]:
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir()
    except Exception:  # no cache directory yet, or an unreadable one: nothing cached to offer
        return []
    items = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        snapshots = [rev for rev in repo.revisions if any(f.file_name == "config.json" for f in rev.files)]
        if snapshots:
            latest = max(snapshots, key=lambda rev: rev.last_modified)
            items.append({"name": repo.repo_id, "kind": "hub", "path": str(latest.snapshot_path), "ready": True})
    return items
