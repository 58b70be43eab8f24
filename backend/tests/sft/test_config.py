from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.sft import ConfigError, SFTConfig

BASE = {"base_model": "m", "dataset_name": "d.jsonl", "max_steps": 3}


def errors_of(**overrides) -> str:
    with pytest.raises(ValidationError) as info:
        SFTConfig.model_validate({**BASE, **overrides})
    return str(info.value)


def test_seed_fields_and_defaults():
    cfg = SFTConfig(base_model="gpt2", dataset_name="tatsu-lab/alpaca", dataset_format="alpaca", max_steps=100,
                    output_dir="./outputs/x", use_lora=True, lora_r=16, lora_alpha=32, learning_rate=2e-4)
    assert cfg.use_qlora is False
    assert cfg.lora_target_modules == "all-linear"
    assert cfg.trust_remote_code is False
    assert cfg.completion_only_loss is True


def test_unknown_field_is_rejected():
    assert "lora_rank" in errors_of(lora_rank=8)


@pytest.mark.parametrize("field,value", [
    ("lora_r", 0), ("learning_rate", 0), ("max_steps", 0), ("per_device_train_batch_size", 0),
    ("lora_dropout", 1.0), ("validation_split", 1.5), ("warmup_ratio", 1.0), ("precision", "fp8"),
    ("dataset_format", "csvish"), ("lr_scheduler_type", "zigzag"), ("report_to", ["mlflow"]),
])
def test_bounds_name_the_field(field, value):
    assert field in errors_of(**{field: value})


def test_needs_steps_or_epochs():
    cfg = {**BASE}
    del cfg["max_steps"]
    with pytest.raises(ValidationError, match="set max_steps or num_train_epochs"):
        SFTConfig.model_validate(cfg)


def test_rejects_both_steps_and_epochs():
    assert "set only one of max_steps and num_train_epochs" in errors_of(num_train_epochs=1)


def test_qlora_needs_lora():
    assert "use_qlora trains a LoRA adapter on a 4-bit base: it needs use_lora=true" in errors_of(
        use_qlora=True, use_lora=False)


def test_lora_fields_without_lora():
    assert "lora_r, lora_alpha only apply with use_lora=true" in errors_of(use_lora=False, lora_r=8, lora_alpha=16)


@pytest.mark.parametrize("extra", [{"use_lora": False}, {"validation_split": 0.1, "eval_steps": 2},
                                   {"save_steps": 2, "save_total_limit": 1}])
def test_a_whole_dump_validates_again(extra):
    # Jobs store their config whole, defaults included; it must read back as the same config.
    config = SFTConfig.model_validate({"base_model": "m", "dataset_name": "d", "max_steps": 1, **extra})
    assert SFTConfig.model_validate(config.model_dump(mode="json")) == config


def test_eval_steps_needs_eval_set():
    assert "eval_steps needs eval_dataset_name or validation_split" in errors_of(eval_steps=5)
    SFTConfig.model_validate({**BASE, "eval_steps": 5, "validation_split": 0.1})


def test_one_eval_source_only():
    assert "set only one of eval_dataset_name and validation_split" in errors_of(
        eval_dataset_name="e.jsonl", validation_split=0.1)


def test_save_total_limit_needs_save_steps():
    assert "save_total_limit needs save_steps" in errors_of(save_total_limit=2)


def test_empty_target_modules():
    assert "lora_target_modules must name at least one module" in errors_of(lora_target_modules=[])


def test_yaml_round_trip(tmp_path):
    cfg = SFTConfig.model_validate({**BASE, "lora_target_modules": ["q_proj", "v_proj"], "seed": 7})
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert SFTConfig.from_yaml(path) == cfg


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        SFTConfig.from_yaml(path)


@pytest.mark.parametrize(("units", "expected"), [(None, "fp32"), ("AVX-512 BF16", "fp32"), ("AMX", "bf16")])
def test_auto_precision_on_cpu_follows_its_bf16_units(monkeypatch, units, expected):
    from app.sft import config as config_module

    monkeypatch.setattr(config_module, "cpu_bf16_units", lambda: units)
    cfg = SFTConfig.model_validate(BASE)
    assert cfg.resolve_precision("cpu") == expected
    args = cfg.to_trl(output_dir="/tmp/x", device="cpu")
    assert (args.bf16, args.fp16) == (expected == "bf16", False)
    assert args.max_steps == 3


def test_fp16_on_cpu_is_a_config_error_and_bf16_is_not():
    cfg = SFTConfig.model_validate({**BASE, "precision": "fp16"})
    with pytest.raises(ConfigError, match="precision fp16 needs a CUDA GPU"):
        cfg.resolve_precision("cpu")
    assert SFTConfig.model_validate({**BASE, "precision": "bf16"}).resolve_precision("cpu") == "bf16"


def test_auto_keeps_narrow_models_in_fp32_on_amx(monkeypatch):
    from app.sft import config as config_module

    monkeypatch.setattr(config_module, "cpu_bf16_units", lambda: "AMX")
    cfg = SFTConfig.model_validate(BASE)
    assert [cfg.resolve_precision("cpu", hidden_size=n) for n in (64, 255, 256, 576)] == ["fp32", "fp32", "bf16", "bf16"]
    pinned = SFTConfig.model_validate({**BASE, "precision": "bf16"})
    assert pinned.resolve_precision("cpu", hidden_size=64) == "bf16"


def test_to_trl_maps_training_fields():
    cfg = SFTConfig.model_validate({**BASE, "warmup_ratio": 0.1, "packing": True, "max_length": 64,
                                    "validation_split": 0.2, "eval_steps": 2, "save_steps": 5,
                                    "save_total_limit": 2, "gradient_accumulation_steps": 2})
    args = cfg.to_trl(output_dir="/tmp/x", device="cpu")
    assert args.warmup_steps == 0.1
    assert args.packing is True and args.max_length == 64
    assert args.eval_strategy == "steps" and args.eval_steps == 2
    assert args.save_strategy == "steps" and args.save_steps == 5 and args.save_total_limit == 2
    assert args.gradient_accumulation_steps == 2
