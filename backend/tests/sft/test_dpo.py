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
                         ({"method": "dpo", "token_metrics": True}, "token_metrics do not apply"),
                         ({"method": "dpo", "dataset_format": "messages"}, "'messages' is a supervised format"),
                         ({"dataset_format": "preference"}, "'preference' is a preference format"),
                         ({"method": "dpo", "loss_type": "nope"}, "loss_type"),
                         ({"method": "dpo", "beta": 0}, "beta")]:
        with pytest.raises(ValidationError, match=message):
            SFTConfig.model_validate({**base, **bad})


@pytest.fixture(scope="module")
def prefs_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("prefs") / "prefs.jsonl", preference_rows(16))


@pytest.mark.parametrize("mode", [{}, {"use_qlora": True}, {"use_lora": False}], ids=["lora", "qlora", "full"])
def test_dpo_runs_log_reward_metrics_and_save(tiny_model_dir, prefs_file, tmp_path, mode):
    events = []
    cfg = SFTConfig.model_validate({
        "base_model": str(tiny_model_dir), "dataset_name": str(prefs_file), "method": "dpo", "max_steps": 6,
        "per_device_train_batch_size": 4, "learning_rate": 5e-3 if "use_lora" in mode else 5e-2, "logging_steps": 1,
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
    full = "use_lora" in mode
    weights = "model.safetensors" if full else "adapter_model.safetensors"
    assert (tmp_path / "out" / ("model" if full else "adapter") / weights).exists()
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


def test_both_loss_paths_train_the_same_dpo_steps(tiny_model_dir, prefs_file, tmp_path):
    """loss_path cross_entropy (only the answer tokens projected) against TRL's fused head: the same losses,
    rewards and token statistics, step by step (LoRA: the reference is the adapter disabled)."""
    logs = {}
    for path in ("trl", "cross_entropy"):
        cfg = {"base_model": str(tiny_model_dir), "dataset_name": str(prefs_file), "method": "dpo", "max_steps": 3,
               "per_device_train_batch_size": 4, "learning_rate": 5e-2, "logging_steps": 1, "loss_path": path,
               "output_dir": str(tmp_path / path)}
        result = SFTTrainer(cfg, model_cache_dir=tmp_path / "cache").train()
        assert result.loss_path == path
        logs[path] = [e for e in read_log(result.output_dir) if "rewards/margins" in e]
    keys = ("loss", "rewards/margins", "rewards/chosen", "entropy", "logits/chosen", "mean_token_accuracy")
    for trl_step, plain_step in zip(logs["trl"], logs["cross_entropy"], strict=True):
        for key in keys:
            assert plain_step[key] == pytest.approx(trl_step[key], rel=1e-4, abs=1e-5), (key, trl_step["step"])


def test_answer_outputs_in_chunks_equal_one_piece():
    import torch

    from app.sft.loss import trained_token_outputs

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(13, 8, requires_grad=True)
    targets = torch.randint(0, 50, (13,))
    whole = trained_token_outputs(head, hidden, targets, None)
    (grad_whole,) = torch.autograd.grad(whole[0].sum(), hidden)
    chunked = trained_token_outputs(head, hidden, targets, 4)
    (grad_chunked,) = torch.autograd.grad(chunked[0].sum(), hidden)
    for a, b in zip(whole, chunked, strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    assert torch.allclose(grad_whole, grad_chunked, atol=1e-6)
    assert torch.allclose(whole[0], torch.log_softmax(head(hidden), -1).gather(1, targets[:, None])[:, 0], atol=1e-6)
