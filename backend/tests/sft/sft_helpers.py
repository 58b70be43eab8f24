"""Helpers of the training core's tests."""

from __future__ import annotations

#: The conversation most generation tests complete.
HELLO = [{"role": "user", "content": "hello 3"}]


def load_plain(path):
    """A model directory loaded with plain transformers (no cache, no adapter), and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))
