"""Builders for tests: a tiny random causal LM with a real tokenizer, small datasets, greedy decoding,
a free port, and polling."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from bench.tiny_model import build_tiny_model  # noqa: F401 - the tests' tiny model (bench --smoke trains it too)

#: A well-formed id that no job or config has.
MISSING = "00000000-0000-0000-0000-000000000000"


def contact_rows(n: int = 32) -> list[dict[str, Any]]:
    """Short chat rows with one distinctive, learnable answer."""
    return [
        {"messages": [
            {"role": "user", "content": f"hello {i % 7}"},
            {"role": "assistant", "content": '{"name": "Ada", "age": 36}'},
        ]}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def greedy_ids(model, tokenizer, messages: list[dict[str, str]], *, max_new_tokens: int = 16) -> list[int]:
    """The token ids ``model`` greedily adds after the chat prompt of ``messages``, prompted as the app prompts."""
    import torch

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The chat template already writes every special token the prompt needs.
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def greedy_text(model, tokenizer, messages: list[dict[str, str]], *, max_new_tokens: int = 16) -> str:
    """:func:`greedy_ids`, decoded without special tokens (as the app returns a completion)."""
    return tokenizer.decode(greedy_ids(model, tokenizer, messages, max_new_tokens=max_new_tokens),
                            skip_special_tokens=True)


def free_port() -> int:
    """A localhost TCP port that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
