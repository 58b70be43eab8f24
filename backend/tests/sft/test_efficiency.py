"""The efficiency report: FLOPs counts against hand-computed values, padding share, and a run's report."""

from __future__ import annotations

import json

import pytest
import torch

from app.sft import SFTConfig, SFTTrainer
from app.sft.efficiency import (EfficiencyTracker, ModelShape, TokenCounts, count_batch, cpu_peak_tflops,
                                training_flops)
from app.sft.events import EventKind


def _llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**overrides)
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def _with_lora(model, r: int):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))


TINY = dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True)
#: HuggingFaceTB/SmolLM2-135M-Instruct's config.json.
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)


def test_tiny_model_shape_and_flops_by_hand():
    # Per layer: q 64x64, k and v 64x32 (2 KV heads of 16), o 64x64, gate/up 64x128, down 128x64.
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128
    full = ModelShape.of_model(_llama(**TINY))
    assert full == ModelShape(n_layers=2, attention_width=64, hidden_size=64, vocab_size=100,
                              body_linear_params=2 * per_layer, lora_params=0)
    lora = ModelShape.of_model(_with_lora(_llama(**TINY), r=4))
    lora_per_layer = 4 * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 3 * (64 + 128))
    assert (lora.body_linear_params, lora.lora_params) == (2 * per_layer, 2 * lora_per_layer)

    # Two sequences of 3 and 5 real tokens, 6 trained tokens.
    counts = TokenCounts(processed=10, real=8, trained=6, attention_pairs2=3 * 4 + 5 * 6)
    attention = 3 * 2 * 2 * 64 * 42
    assert training_flops(full, counts, lora=False) == 6 * 2 * per_layer * 8 + 6 * 100 * 64 * 6 + attention
    assert training_flops(lora, counts, lora=True) == (4 * 2 * per_layer * 8 + 6 * 2 * lora_per_layer * 8
                                                       + 4 * 100 * 64 * 6 + attention)


def test_smollm2_135m_flops_by_hand():
    # 30 layers of q 576², k and v 576x192, o 576², three MLP matrices 576x1536: 106,168,320 body parameters;
    # with the tied 49,152 x 576 embeddings that is SmolLM2's 134.5M.
    body = 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)
    assert body == 106_168_320
    lora_params = 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))
    assert lora_params == 4_884_480
    shape = ModelShape.of_model(_with_lora(_llama(**SMOLLM2_135M), r=16))
    assert (shape.body_linear_params, shape.lora_params, shape.attention_width) == (body, lora_params, 576)

    # One demo-like batch: 8 rows of 200 real tokens, 40 trained each.
    counts = TokenCounts(processed=8 * 256, real=1600, trained=320, attention_pairs2=8 * 200 * 201)
    lora_flops = training_flops(shape, counts, lora=True)
    assert lora_flops == (4 * body * 1600 + 6 * lora_params * 1600 + 4 * 49152 * 576 * 320
                          + 6 * 30 * 576 * 8 * 200 * 201)
    assert lora_flops == pytest.approx(0.796e12, rel=1e-3)  # 680 body + 47 LoRA + 36 head + 33 attention
    full_flops = training_flops(ModelShape.of_model(_llama(**SMOLLM2_135M)), counts, lora=False)
    assert full_flops == 6 * body * 1600 + 6 * 49152 * 576 * 320 + 6 * 30 * 576 * 8 * 200 * 201


def test_padding_share_of_a_length_histogram():
    # Lengths 2, 5, 5, 8 padded to 8: 32 positions, 20 real tokens, 12 padding.
    lengths = [2, 5, 5, 8]
    mask = torch.tensor([[1] * n + [0] * (8 - n) for n in lengths])
    labels = torch.where(mask.bool(), torch.ones_like(mask), torch.full_like(mask, -100))
    labels[:, :1] = -100  # the first token of each row is prompt
    counts = count_batch({"input_ids": mask, "attention_mask": mask, "labels": labels})
    assert (counts.processed, counts.real, counts.padding_share) == (32, 20, 12 / 32)
    assert counts.trained == sum(n - 1 for n in lengths)
    assert counts.attention_pairs2 == sum(n * (n + 1) for n in lengths)
    # The same rows packed padding-free: positions restart at 0 per sequence, nothing is padding.
    positions = torch.tensor([list(range(2)) + list(range(5)) + list(range(5)) + list(range(8))])
    packed = count_batch({"input_ids": positions, "position_ids": positions})
    assert (packed.processed, packed.real, packed.padding_share) == (20, 20, 0.0)
    assert packed.attention_pairs2 == counts.attention_pairs2


def test_cpu_peak_is_measured_once_and_cached(tmp_path):
    peak, source = cpu_peak_tflops("fp32", tmp_path)
    assert peak > 0 and "measured" in source
    stored = json.loads((tmp_path / "device_peaks.json").read_text())
    assert list(stored.values()) == [peak]
    assert cpu_peak_tflops("fp32", tmp_path)[0] == peak


def test_a_run_reports_its_efficiency(tiny_config, tmp_path):
    events = []
    config = SFTConfig.model_validate({**tiny_config, "output_dir": str(tmp_path / "out"), "gradient_checkpointing": True})
    result = SFTTrainer(config, model_cache_dir=tmp_path / "cache", on_event=events.append).train()
    report = result.efficiency
    assert report["steps_timed"] == 4 and report["step_seconds"] > 0
    assert 0 < report["trained_tokens"] <= report["real_tokens"] <= report["processed_tokens"]
    assert report["padding_share"] == pytest.approx(1 - report["real_tokens"] / report["processed_tokens"], abs=1e-4)
    assert report["real_tokens_per_s"] == pytest.approx(report["real_tokens"] / report["step_seconds"], rel=1e-2)
    assert report["dtype"] == result.precision and 0 < report["mfu"] < 1
    assert report["peak_rss_mb"] > 100 and report["process_peak_rss_mb"] >= report["peak_rss_mb"] * 0.99
    assert report["peak_cuda_allocated_mb"] is None
    # The tiny model on a machine with GBs of memory: checkpointing gains nothing.
    assert "gradient_checkpointing" in [hint["setting"] for hint in report["hints"]]
    assert [event.payload for event in events if event.kind is EventKind.EFFICIENCY] == [report]
    assert (tmp_path / "cache" / "device_peaks.json").exists()


def test_hints_name_their_gain(tmp_path, monkeypatch):
    from app.sft import efficiency

    monkeypatch.setattr(efficiency, "cpu_bf16_units", lambda: "AMX")
    monkeypatch.setattr(efficiency, "cpu_peak_tflops", lambda dtype, cache: ({"fp32": 0.35, "bf16": 2.1}[dtype], "m"))

    def report(width: int, **kwargs):
        tracker = EfficiencyTracker(device="cpu", precision="fp32", lora=True, packing=False,
                                    gradient_checkpointing=False, cache_dir=tmp_path, **kwargs)
        tracker.shape = ModelShape(n_layers=1, attention_width=width, hidden_size=width, vocab_size=10,
                                   body_linear_params=width * width)
        tracker.counts = TokenCounts(processed=100, real=60, trained=30, attention_pairs2=60 * 61)
        tracker.step_seconds, tracker.steps = 2.0, 1
        return tracker.report()

    wide = report(576)
    assert wide["padding_share"] == 0.4 and wide["real_tokens_per_s"] == 30.0
    assert [(h["setting"], h["expected_gain"]) for h in wide["hints"]] == [("packing", 1.67), ("precision", 6.0)]
    assert wide["hints"][0]["text"].startswith("40% of the tokens processed are padding")
    # A narrow model stays in fp32 under auto: no precision hint.
    assert [h["setting"] for h in report(64)["hints"]] == ["packing"]


def test_bf16_on_a_cpu_attends_in_fp32(tiny_config, tmp_path):
    """A bf16 run on a CPU attends in fp32 (sft/attention.py): the model_loaded event says so, the run trains,
    and attention's output in bf16 autocast matches plain fp32 attention to bf16 rounding."""
    import torch
    from transformers import AutoModelForCausalLM

    from app.sft.attention import FP32_SDPA, use_fp32_attention

    attention = {}
    for precision in ("bf16", "fp32"):
        events = []
        config = SFTConfig.model_validate({**tiny_config, "max_steps": 2, "precision": precision,
                                           "output_dir": str(tmp_path / precision)})
        result = SFTTrainer(config, model_cache_dir=tmp_path / "cache", on_event=events.append).train()
        assert result.global_step == 2 and result.precision == precision
        attention[precision] = next(e.payload["attention"] for e in events if e.kind is EventKind.MODEL_LOADED)
    assert attention == {"bf16": FP32_SDPA, "fp32": "sdpa"}

    model = AutoModelForCausalLM.from_pretrained(tiny_config["base_model"], dtype=torch.float32)
    ids = torch.randint(3, 300, (2, 24))
    mask = torch.ones_like(ids)
    mask[0, 18:] = 0
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
        assert use_fp32_attention(model) and not use_fp32_attention(model)  # once: it no longer attends with sdpa
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(input_ids=ids, attention_mask=mask).logits.float()
    assert torch.allclose(autocast[mask.bool()], reference[mask.bool()], atol=0.05, rtol=0.05)
