"""The fit planner (app.sft.planner): its estimates against peaks measured on this machine's CPU runs, against
published figures for real models, its suggestions and its choice of strategy, and the README's table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.sft.config import SFTConfig
from app.sft.planner import (
    GIB,
    REFERENCE_MODELS,
    DeviceMemory,
    ModelShape,
    PlanError,
    estimate,
    memory_table,
    model_shape,
    plan,
    resolve_strategy,
)
from bench.planner_runs import PLANNER_TOLERANCE, measure

ROOT = Path(__file__).resolve().parents[3]

#: config.json numbers of Llama 2 7B and 70B, the models the published figures below were measured on.
LLAMA2_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32}
LLAMA2_70B = {"vocab_size": 32000, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
              "num_attention_heads": 64, "num_key_value_heads": 8}


def config(**fields) -> SFTConfig:
    return SFTConfig.model_validate({"base_model": "m", "dataset_name": "d", "max_steps": 1, **fields})


@pytest.fixture(scope="module")
def measured_runs(tiny_model_dir, shared_model_cache):
    """Four CPU runs in one child process, rows filling max_length: LoRA and full, with and without gradient
    checkpointing, on the bundled model and the tiny one; each with its measured peak RSS and the estimate."""
    bundled = {"base_model": "smollm2-135m-instruct", "per_device_train_batch_size": 2, "max_length": 160}
    tiny = {"base_model": str(tiny_model_dir), "per_device_train_batch_size": 4, "max_length": 128}
    # Full fine-tuning peaks at its optimizer step: two steps, so the second forward holds AdamW's state.
    # The tiny runs first: their peaks are mostly the process itself, so nothing an earlier run left may sit in it.
    cases = [{"name": "tiny LoRA, checkpointing", "config": {**tiny, "max_steps": 1, "gradient_checkpointing": True}},
             {"name": "tiny full", "config": {**tiny, "max_steps": 2, "use_lora": False}},
             {"name": "bundled LoRA", "config": {**bundled, "max_steps": 1}},
             {"name": "bundled full, checkpointing", "config": {**bundled, "max_steps": 2, "use_lora": False,
                                                                "gradient_checkpointing": True, "max_length": 64}}]
    return {run["name"]: run for run in measure(cases, model_cache_dir=shared_model_cache)}


@pytest.mark.slow
def test_estimates_are_within_a_quarter_of_the_measured_cpu_peaks(measured_runs):
    for run in measured_runs.values():
        assert run["steps"] >= 1
        assert abs(run["error"]) <= PLANNER_TOLERANCE, run
    bundled_lora, bundled_full = measured_runs["bundled LoRA"], measured_runs["bundled full, checkpointing"]
    # Full fine-tuning holds gradients and AdamW's moments of every weight: clearly more, measured and estimated.
    assert bundled_full["measured_mb"] > bundled_lora["measured_mb"] + 400
    assert bundled_full["estimated_mb"] > bundled_lora["estimated_mb"] + 400


def test_gradient_checkpointing_and_lora_shrink_the_estimate_as_they_should():
    shape = ModelShape.from_config(REFERENCE_MODELS["meta-llama/Llama-3.1-8B"], name="8b")
    plain = estimate(shape, config(max_length=2048, per_device_train_batch_size=1), device="cuda")
    checkpointed = estimate(shape, config(max_length=2048, per_device_train_batch_size=1,
                                          gradient_checkpointing=True), device="cuda")
    assert checkpointed.activations < plain.activations / 10 and checkpointed.weights == plain.weights
    full = estimate(shape, config(use_lora=False), device="cuda")
    # fp32 weights + gradients + two AdamW moments = 16 bytes per parameter, before activations.
    assert full.weights + full.optimizer >= 12 * shape.params
    qlora = estimate(shape, config(use_qlora=True), device="cuda")
    assert qlora.weights < 0.45 * estimate(shape, config(), device="cuda").weights
    sharded = estimate(shape, config(use_lora=False, num_workers=4), device="cuda", strategy="fsdp")
    assert sharded.optimizer == pytest.approx(full.optimizer / 4, rel=1e-6)


@pytest.mark.parametrize(("method", "published_gb"), [
    # LLaMA-Factory's README, "Hardware Requirement" (hiyouga/LLaMA-Factory, README.md, estimated figures for a 7B
    # model): Full (bf16 or fp16, 32-bit weights) 120GB, LoRA (16-bit) 16GB, QLoRA (4-bit) 6GB. Their runs use
    # gradient checkpointing (its default) with short rows; we take 1 row of 1,024 tokens.
    ({"use_lora": False}, 120), ({"use_lora": True}, 16), ({"use_qlora": True}, 6),
])
def test_llama_factory_7b_figures(method, published_gb):
    shape = ModelShape.from_config(LLAMA2_7B, name="llama-2-7b")
    est = estimate(shape, config(**method, max_length=1024, per_device_train_batch_size=1,
                                 gradient_checkpointing=True), device="cuda")
    # Their figures are rounded rules of thumb (18x / 2x / x/2 GB per billion parameters): ±25 % is their grain.
    assert est.total / 1e9 == pytest.approx(published_gb, rel=PLANNER_TOLERANCE)


def test_peft_docs_70b_qlora_fsdp_on_two_gpus():
    # PEFT docs, "Use PEFT QLoRA and FSDP for finetuning large models on multiple GPUs" (huggingface/peft,
    # docs/source/accelerate/fsdp.md): Llama-2-70B, 2 GPUs, QLoRA r 8 on all linear layers, 2 rows of 2,048
    # tokens (packing), gradient checkpointing, flash attention, bf16: "When disabling CPU offloading, the GPU
    # memory usage is 35.6 GB/GPU" (19.6 GB with parameters offloaded to CPU, which the planner does not model).
    shape = ModelShape.from_config(LLAMA2_70B, name="llama-2-70b")
    job = config(use_qlora=True, lora_r=8, per_device_train_batch_size=2, max_length=2048, gradient_checkpointing=True,
                 num_workers=2, distributed_strategy="fsdp")
    est = estimate(shape, job, device="cuda", strategy="fsdp")
    assert est.total / 1e9 == pytest.approx(35.6, rel=PLANNER_TOLERANCE)
    # The point of that page: it fits two 24 GB consumer GPUs only offloaded, and one GPU not at all.
    assert estimate(shape, job, device="cuda", strategy="ddp").total > 40 * GIB


def test_a_job_too_large_for_a_gpu_is_told_what_fits():
    shape = ModelShape.from_config(REFERENCE_MODELS["meta-llama/Llama-3.1-8B"], name="8b")
    gpu = DeviceMemory("cuda", 24 * GIB, "each GPU", max_workers=8)
    job = config(use_lora=False, max_length=1024, per_device_train_batch_size=1, gradient_checkpointing=True)
    fit = plan(shape, job, gpu)
    assert fit.fits is False and fit.field == "num_workers"
    assert fit.message.startswith(f"needs ~{fit.estimate.total / GIB:.0f} GiB per GPU; each GPU: 24 GiB: use ")
    assert fit.suggestions[0] == "fsdp over 8 workers" and "LoRA (use_lora: true)" in fit.suggestions
    # Every suggestion was computed with the planner: applied, it fits.
    assert plan(shape, config(use_lora=False, max_length=1024, per_device_train_batch_size=1,
                              gradient_checkpointing=True, num_workers=8, distributed_strategy="fsdp"), gpu).fits
    assert plan(shape, config(max_length=1024, per_device_train_batch_size=1, gradient_checkpointing=True), gpu).fits
    # Four workers are not enough for full fine-tuning of 8B on 24 GiB, so they are not suggested.
    assert "fsdp over 4 workers" not in fit.suggestions


def test_auto_picks_ddp_when_one_worker_holds_the_model_and_fsdp_when_it_must():
    shape = ModelShape.from_config(REFERENCE_MODELS["meta-llama/Llama-3.1-8B"], name="8b")
    small = ModelShape.from_config(REFERENCE_MODELS["meta-llama/Llama-3.2-1B"], name="1b")
    gpus = DeviceMemory("cuda", 80 * GIB, "each GPU", max_workers=4)
    job = config(use_lora=False, num_workers=4, max_length=1024, per_device_train_batch_size=1,
                 gradient_checkpointing=True)
    assert resolve_strategy(shape, job, gpus) == "fsdp"
    assert resolve_strategy(small, job, gpus) == "ddp"
    assert plan(shape, job, gpus).estimate.strategy == "fsdp" and plan(shape, job, gpus).fits
    assert resolve_strategy(shape, config(use_lora=False, num_workers=4, distributed_strategy="ddp"), gpus) == "ddp"


def test_the_model_config_comes_from_a_local_dir_or_a_clear_error(tmp_path, tiny_model_dir, unreachable_hub):
    shape = model_shape(str(tiny_model_dir), cache_dir=tmp_path)
    assert shape.hidden_size == json.loads((tiny_model_dir / "config.json").read_text())["hidden_size"]
    with pytest.raises(PlanError, match="not in the local Hugging Face cache and the Hub could not be reached"):
        model_shape("someone/not-cached-model", cache_dir=tmp_path)
    bare = tmp_path / "cache"
    with pytest.raises(PlanError, match="has not been converted from GGUF yet"):
        model_shape("smollm2-135m-instruct", cache_dir=bare)


def test_the_readme_table_is_the_planners():
    table = memory_table()
    assert table in (ROOT / "README.md").read_text(), "regenerate it: python -m app.sft.planner --table"
    assert "meta-llama/Llama-3.1-70B" in table
