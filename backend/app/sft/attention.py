"""Attention in fp32 when a CPU trains in bf16.

Under ``torch.autocast`` on a CPU, ``scaled_dot_product_attention`` runs in bf16, and PyTorch's CPU attention
kernels are slower in bf16 than in fp32 (they gain nothing from AMX, whose units only the matmuls use). On the
2-core AMX Xeon, quiet, the demo's autocast step (bench/step_profile.py, 2 alternating rounds of 6 steps) spent
390-397 ms of a step in bf16 attention and 126 ms in fp32 attention, everything else unchanged: 0.565 steps/s
became 0.678 (1.20x), against 0.468 in fp32 (bf16 was 1.21x fp32, now 1.45x). The matmuls stay bf16;
attention's inputs are cast up and its output back down.

``use_fp32_attention`` switches a model that attends with transformers' ``sdpa`` to ``sdpa_fp32``: the same
function (``transformers.integrations.sdpa_attention``) and mask, called with autocast off and fp32 inputs.
Registered with transformers' ``AttentionInterface``, so it is the model's own attention dispatch, not a patch.
"""

from __future__ import annotations

from typing import Any

#: The attention implementation name registered with transformers.
FP32_SDPA = "sdpa_fp32"


def _sdpa_in_fp32(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    dtype = query.dtype
    with torch.autocast(query.device.type, enabled=False):
        output, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                                 **kwargs)
    return output.to(dtype), weights


def use_fp32_attention(model: Any) -> bool:
    """Make ``model`` attend in fp32 (``FP32_SDPA``) when it attends with ``sdpa``; True when it now does."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    # Registering again sets the same two entries: nothing to remember between models.
    AttentionInterface.register(FP32_SDPA, _sdpa_in_fp32)
    AttentionMaskInterface.register(FP32_SDPA, sdpa_mask)
    model.set_attn_implementation(FP32_SDPA)
    return model.config._attn_implementation == FP32_SDPA
