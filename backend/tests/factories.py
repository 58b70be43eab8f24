"""Builders for tests: a tiny random causal LM with a real tokenizer, small datasets, greedy decoding,
a free port, and polling."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from app.sft.models import CHATML_TEMPLATE

#: A well-formed id that no job or config has.
MISSING = "00000000-0000-0000-0000-000000000000"

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "extract the contact as json name age city",
    "hello world how are you today",
    '{"name": "Ada", "age": 36, "city": "Paris"}',
    "system user assistant instruction input output response",
    "0 1 2 3 4 5 6 7 8 9 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?{}[]\"'-_",
]


def build_tiny_model(path: Path, *, vocab_size: int = 320, hidden: int = 32, layers: int = 2) -> Path:
    """Write a random Llama-style model (~100K params) and a byte-level BPE tokenizer to ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 5, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", bos_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


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
