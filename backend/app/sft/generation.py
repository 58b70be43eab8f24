"""Generate with a job's model (and its base): completions, OpenAI-style chat, and chat streamed token by token."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .budget import Budget
from .device import default_device
from .errors import RequestError
from .model_cache import Loaded, ModelCache, use_base, use_tuned

if TYPE_CHECKING:
    from .artifacts import Artifact

# Seeded sampling sets torch's global RNG; two seeded requests at once would interleave draws.
_rng_lock = threading.Lock()


def context_length(model: Any) -> int | None:
    """Most tokens (prompt and generated) the model takes, from its config; None when unknown."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits_context(model: Any, *, prompt_tokens: int, max_new_tokens: int, field_name: str) -> None:
    """RequestError (naming ``field_name`` and the numbers) when prompt + max_new_tokens exceed
    the model's context."""
    limit = context_length(model)
    if limit is not None and prompt_tokens + max_new_tokens > limit:
        raise RequestError(
            f"{field_name}: {prompt_tokens:,} prompt tokens + max_new_tokens {max_new_tokens:,} = "
            f"{prompt_tokens + max_new_tokens:,} tokens, beyond the model's context of {limit:,} tokens; "
            "shorten the prompt or lower max_new_tokens"
        )


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
        RequestError: the prompt and ``max_new_tokens`` do not fit the model's context.
        GenerationCancelled, GenerationTimedOut: ``budget`` ended the generation early.
    """
    if (messages is None) == (prompt is None):
        raise RequestError("give exactly one of messages and prompt")
    device = device or default_device()
    budget = budget or Budget()
    sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
                "budget": budget, "field_name": "messages" if messages is not None else "prompt"}
    base = None
    with use_tuned(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
        budget.raise_if_stopped()
        text, special = _render(loaded.tokenizer, messages=messages, prompt=prompt)
        tuned = _complete(loaded, text, add_special_tokens=special, **sampling)
        if compare_base and loaded.has_adapter:
            with loaded.model.disable_adapter():
                base = _complete(loaded, text, add_special_tokens=special, **sampling)
    if compare_base and base is None:
        with use_base(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
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
        raise RequestError(f"messages: the model's chat template rejected them: {exc}") from None
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
        raise RequestError("prompt: it tokenizes to nothing")
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


def chat(cache: ModelCache, artifact: Artifact, *, cache_dir: Path, messages: list[dict[str, str]],
         max_new_tokens: int = 128, temperature: float = 0.0, top_p: float | None = None,
         seed: int | None = None, stop: list[str] | None = None, device: str | None = None,
         budget: Budget | None = None) -> dict[str, Any]:
    """Complete ``messages`` with a job's model (or a base model's artifact): ``text``, ``finish_reason``,
    ``prompt_tokens``, ``completion_tokens``, ``latency_ms``. ``stop`` strings end the text (excluded)."""
    device = device or default_device()
    budget = budget or Budget()
    with use_tuned(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
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
    with use_tuned(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
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
