"""The bundled real model, end to end: convert the GGUF once, train a few LoRA steps, generate."""

from __future__ import annotations

import pytest

from app.sft import SFTConfig, SFTTrainer
from app.sft.models import resolve_model
from factories import greedy_text

pytestmark = pytest.mark.slow


def test_bundled_smollm2_trains_and_generates(settings, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    try:
        config = SFTConfig(base_model="smollm2-135m-instruct", dataset_name="bundled:json-extract",
                           max_steps=3, max_samples=24, per_device_train_batch_size=8, learning_rate=1e-3,
                           max_length=256, output_dir=str(tmp_path / "out"))
        result = SFTTrainer(config, model_cache_dir=settings.resolved_model_cache_dir).train()
    finally:
        torch.set_num_threads(1)
    assert result.global_step == 3 and result.train_loss > 0

    ref = resolve_model("smollm2-135m-instruct", cache_dir=settings.resolved_model_cache_dir)
    assert ref.ready
    tokenizer = AutoTokenizer.from_pretrained(result.adapter_path)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ref.path), result.adapter_path)
    answer = greedy_text(model, tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    assert answer.strip()
