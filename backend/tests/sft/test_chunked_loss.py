"""The cross_entropy path in chunks: the same loss and gradients as in one piece, and far less memory with a
128k vocabulary."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from app.sft.loss import add_trained_logits_head, chunk_tokens_for, chunked_cross_entropy

BACKEND = Path(__file__).resolve().parents[2]


def test_chunks_give_the_plain_loss_and_gradients():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    plain = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="sum")
    plain.backward()
    plain_grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad = head.weight.grad = None
    chunked = chunked_cross_entropy(head, hidden, targets, chunk_tokens=5)
    chunked.backward()
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    for got, expected in zip((hidden.grad, head.weight.grad), plain_grads):
        assert torch.allclose(got, expected, atol=1e-5)


def test_chunk_size_follows_the_vocabulary():
    assert chunk_tokens_for(128_256) == 523  # 256 MiB of fp32 logits
    assert chunk_tokens_for(49_152) == 1365  # the demo's ~320 trained tokens per step: one piece
    assert chunk_tokens_for(10**12) == 1


def test_the_trained_logits_head_chunks_like_it_projects(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    add_trained_logits_head(model)
    ids = torch.randint(0, model.config.vocab_size, (3, 12))
    labels = ids.clone()
    labels[:, :4] = -100
    results = []
    for chunk_tokens in (None, 7):
        model.zero_grad()
        loss_sum, logits, targets, _ = model(input_ids=ids, labels=labels, trained_logits=True,
                                             chunk_tokens=chunk_tokens)
        loss_sum.backward()
        assert (logits is None) == (chunk_tokens is not None) and targets.numel() == 3 * 8
        results.append((loss_sum.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (plain, plain_grads), (chunked, chunked_grads) = results
    assert chunked == pytest.approx(plain, rel=1e-6)
    assert len(chunked_grads) == len(plain_grads) > 0
    for got, expected in zip(chunked_grads, plain_grads):
        assert (got - expected).abs().max().item() < 1e-5


# A random Llama with Llama 3's 128,256-token vocabulary and a one-layer, 64-wide body: one training step on 1,024
# trained tokens in chunks of 130 (64 MiB of logits), then in one piece (501 MiB of fp32 logits, held with their
# log-softmax and gradient), in one process: its resident high-water mark above the same baseline after each.
_PEAK_SCRIPT = textwrap.dedent("""
    import json
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from app.sft.loss import add_trained_logits_head, chunk_tokens_for
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128_256, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4))
    from app.sft.device import peak_rss_mb  # VmHWM: ru_maxrss would carry a big parent's peak across exec
    add_trained_logits_head(model)
    ids = torch.randint(0, 128_256, (4, 257))
    before, out = peak_rss_mb(), {}
    for kind, chunk_tokens in (("chunked", chunk_tokens_for(128_256, 64 * 2**20)), ("plain", None)):
        loss_sum, _, targets, _ = model(input_ids=ids, labels=ids, trained_logits=True, chunk_tokens=chunk_tokens)
        (loss_sum / targets.numel()).backward()
        out[kind] = {"peak_mb": peak_rss_mb() - before,
                     "loss": (loss_sum / targets.numel()).item(), "head_grad": model.lm_head.weight.grad.norm().item()}
        model.zero_grad(set_to_none=True)
    print(json.dumps(out))
""")


def test_chunks_bound_the_peak_memory_of_a_128k_vocabulary():
    env = {"PYTHONPATH": str(BACKEND), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, env=env, timeout=300,
                         check=True)
    peaks = json.loads(run.stdout.strip().splitlines()[-1])
    plain, chunked = peaks["plain"], peaks["chunked"]
    assert chunked["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert chunked["head_grad"] == pytest.approx(plain["head_grad"], rel=1e-4)
    assert plain["peak_mb"] > 1000, peaks
    assert chunked["peak_mb"] < plain["peak_mb"] / 3, peaks
