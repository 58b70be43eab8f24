"""Preference tuning in the training core: DPO rows, config rules, and DPOTrainer runs (LoRA and full)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.sft import SFTConfig, SFTTrainer
from app.sft.errors import DatasetError
from app.sft.formats import RawRows, convert_rows
from app.sft.trainer import read_log
from factories import preference_rows, write_jsonl


def _convert(rows):
    return convert_rows(RawRows("prefs.jsonl", rows, lambda i: f"line {i + 1}"))


@pytest.mark.parametrize("shape,fmt", [("openai", "openai_preference"), ("conversational", "preference"),
                                       ("plain", "preference")])
def test_preference_shapes_are_detected_and_become_trl_pairs(shape, fmt):
    rows, detected = _convert(preference_rows(2, shape=shape))
    assert detected == fmt
    if shape == "plain":
        assert rows[0] == {"prompt": "hello 0", "chosen": '{"name": "Ada", "age": 36}',
                           "rejected": '{"name": "Bob", "age": 7}'}
    else:
        assert rows[0]["prompt"] == [{"role": "user", "content": "hello 0"}]
        assert rows[0]["chosen"] == [{"role": "assistant", "content": '{"name": "Ada", "age": 36}'}]
        assert rows[0]["rejected"][0]["content"] == '{"name": "Bob", "age": 7}'


@pytest.mark.parametrize("row,reason", [
    ({"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []},
     "field 'input.messages' must be a non-empty list of turns"),
    ({"input": {"messages": [{"role": "user", "content": "q"}]},
      "preferred_output": [{"role": "user", "content": "a"}], "non_preferred_output": []},
     "preferred_output[1] has role 'user'; expected one of assistant"),
    ({"input": {"messages": [{"role": "user", "content": "q"}]},
      "preferred_output": [{"role": "assistant", "content": "a"}], "non_preferred_output": None},
     "missing field 'non_preferred_output'"),
    ({"prompt": "q", "chosen": "a", "rejected": 3}, "field 'rejected' must be text, got int"),
])
def test_a_broken_pair_names_its_line_and_field(row, reason):
    good = preference_rows(1, shape="openai" if "input" in row else "plain")[0]
    with pytest.raises(DatasetError) as err:
        _convert([good, row])
    assert err.value.location == "line 2" and reason in str(err.value)


def test_method_fields_and_formats_are_checked_together():
    schema = SFTConfig.model_json_schema()["properties"]
    assert schema["method"]["enum"] == ["sft", "dpo"] and {"sigmoid", "ipo", "hinge"} <= set(schema["loss_type"]["enum"])
    assert schema["beta"]["exclusiveMinimum"] == 0 and all(schema[f]["description"] for f in ("method", "beta"))
    base = {"base_model": "m", "dataset_name": "d", "max_steps": 1}
    assert SFTConfig.model_validate({**base, "method": "dpo", "beta": 0.5}).beta == 0.5
    for bad, message in [({"beta": 0.5}, "beta do not apply with method='sft'"),
                         ({"method": "dpo", "packing": True}, "packing do not apply with method='dpo'"),
                         ({"method": "dpo", "loss_path": "cross_entropy"}, "loss_path do not apply"),
                         ({"method": "dpo", "dataset_format": "messages"}, "'messages' is a supervised format"),
                         ({"dataset_format": "preference"}, "'preference' is a preference format"),
                         ({"method": "dpo", "loss_type": "nope"}, "loss_type"),
                         ({"method": "dpo", "beta": 0}, "beta")]:
        with pytest.raises(ValidationError, match=message):
            SFTConfig.model_validate({**base, **bad})


@pytest.fixture(scope="module")
def prefs_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("prefs") / "prefs.jsonl", preference_rows(16))


@pytest.mark.parametrize("mode", [{}, {"use_lora": False}], ids=["lora", "full"])
def test_dpo_runs_log_reward_metrics_and_save(tiny_model_dir, prefs_file, tmp_path, mode):
    events = []
    cfg = SFTConfig.model_validate({
        "base_model": str(tiny_model_dir), "dataset_name": str(prefs_file), "method": "dpo", "max_steps": 6,
        "per_device_train_batch_size": 4, "learning_rate": 5e-3 if mode else 5e-2, "logging_steps": 1,
        "save_steps": 3, "output_dir": str(tmp_path / "out"), **mode})
    result = SFTTrainer(cfg, model_cache_dir=tmp_path / "cache", on_event=events.append).train()
    assert result.global_step == 6 and not result.stopped and result.dataset_format == "openai_preference"
    log = [entry for entry in read_log(result.output_dir) if "rewards/margins" in entry]
    assert len(log) == 6
    # The first step scores the policy against itself: a zero margin; training then opens it.
    assert abs(log[0]["rewards/margins"]) < 1e-4 and log[-1]["rewards/margins"] > 0
    assert log[-1]["rewards/accuracies"] == 1.0
    assert any(e.payload.get("rewards/margins") is not None for e in events)
    assert (tmp_path / "out" / "checkpoints" / "checkpoint-3").is_dir()
    weights = "model.safetensors" if mode else "adapter_model.safetensors"
    assert (tmp_path / "out" / ("model" if mode else "adapter") / weights).exists()
    if not mode:  # held-out scoring through the model cache: the adapter, and the base with it disabled
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from app.sft.artifacts import Artifact
        from app.sft.dpo import preference_accuracy, preference_pairs, score_preferences
        from app.sft.model_cache import ModelCache

        rows = preference_pairs(str(prefs_file))
        artifact = Artifact(job_id="j", kind="lora_adapter", path=Path(result.adapter_path),
                            base_model=str(tiny_model_dir), output_dir=tmp_path / "out")
        scores = score_preferences(ModelCache(), artifact, rows, cache_dir=tmp_path / "cache", device="cpu")
        base = preference_accuracy(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                   AutoTokenizer.from_pretrained(tiny_model_dir), rows)
        assert scores == {"base": base, "tuned": 1.0, "pairs": 16}


def test_dpo_resumes_from_a_checkpoint(tiny_model_dir, prefs_file, tmp_path):
    cfg = {"base_model": str(tiny_model_dir), "dataset_name": str(prefs_file), "method": "dpo",
           "per_device_train_batch_size": 4, "learning_rate": 5e-2, "save_steps": 2,
           "output_dir": str(tmp_path / "out")}
    SFTTrainer({**cfg, "max_steps": 2}, model_cache_dir=tmp_path / "cache").train()
    result = SFTTrainer({**cfg, "max_steps": 4}, model_cache_dir=tmp_path / "cache",
                        resume_from_checkpoint=tmp_path / "out" / "checkpoints" / "checkpoint-2").train()
    assert result.global_step == 4
    assert [e["step"] for e in read_log(result.output_dir) if "rewards/margins" in e][-2:] == [3, 4]
