"""Builders for tests: a tiny random causal LM with a real tokenizer, small datasets, greedy decoding,
a free port, polling, and real llama.cpp answers for a GGUF file."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

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


def preference_rows(n: int = 16, *, shape: str = "openai") -> list[dict[str, Any]]:
    """Preference pairs with one learnable preference: the contact JSON over a wrong one. ``shape``: openai
    (input / preferred_output / non_preferred_output), conversational (TRL's prompt / chosen / rejected
    turns) or plain (TRL's prompt / chosen / rejected text)."""
    rows = []
    for i in range(n):
        prompt, good, bad = f"hello {i % 7}", '{"name": "Ada", "age": 36}', '{"name": "Bob", "age": 7}'
        if shape == "plain":
            rows.append({"prompt": prompt, "chosen": good, "rejected": bad})
            continue
        turns = [{"role": "user", "content": prompt}]
        chosen, rejected = [{"role": "assistant", "content": good}], [{"role": "assistant", "content": bad}]
        rows.append({"input": {"messages": turns}, "preferred_output": chosen, "non_preferred_output": rejected}
                    if shape == "openai" else {"prompt": turns, "chosen": chosen, "rejected": rejected})
    return rows


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


REPO = Path(__file__).resolve().parents[2]
#: Where `make llama` installs npm's node-llama-cpp (prebuilt llama.cpp binaries).
LLAMA_NODE = REPO / ".venv" / "llama-node"


def llama_answers(gguf_file: Path, prompts: list[str], *, max_tokens: int) -> list[str]:
    """Greedy answers of real llama.cpp (scripts/llama_answer.mjs) to prompts already in the chat template."""
    if not (LLAMA_NODE / ".installed").is_file() or shutil.which("node") is None:
        reason = f"llama.cpp (npm node-llama-cpp) is not installed in {LLAMA_NODE}: `make llama` (make test runs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    request = json.dumps({"model": str(gguf_file), "prompts": prompts, "max_tokens": max_tokens})
    done = subprocess.run(["node", str(REPO / "scripts" / "llama_answer.mjs")], input=request, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NODE_LLAMA_CPP_DIR": str(LLAMA_NODE)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])
