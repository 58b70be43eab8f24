"""Packing keeps examples apart: packed rows (positions restarting per example, no attention mask, as TRL's
padding-free collator builds them) give each example the per-token losses it has alone. Training forwards run
without a KV cache (TRL's compute_loss and the cross_entropy head set use_cache=False), which is when transformers
reads the packed sequences off the position ids and masks attention across them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _token_losses(model, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    logits = model(input_ids=input_ids, use_cache=False, **kwargs).logits[0, :-1].float()
    return F.cross_entropy(logits, input_ids[0, 1:], reduction="none")


def test_packed_examples_have_their_unpacked_losses(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    examples = [torch.randint(0, model.config.vocab_size, (1, n)) for n in (7, 12, 5)]
    with torch.no_grad():
        alone = [_token_losses(model, ids) for ids in examples]
        packed_ids = torch.cat(examples, dim=1)
        positions = torch.cat([torch.arange(ids.shape[1]) for ids in examples]).unsqueeze(0)
        packed = _token_losses(model, packed_ids, position_ids=positions)
        # The control: positions running on through the row let later examples attend to earlier ones.
        leaky = _token_losses(model, packed_ids, position_ids=torch.arange(packed_ids.shape[1]).unsqueeze(0))
    start = 0
    for ids, expected in zip(examples, alone):
        n = ids.shape[1]
        # The packed row's losses inside this example (its last token predicts the next example's first: not
        # a loss of this example, and TRL masks it).
        got = packed[start:start + n - 1]
        assert (got - expected).abs().max().item() < 1e-5
        if start:
            assert (leaky[start:start + n - 1] - expected).abs().max().item() > 1e-3
        start += n
