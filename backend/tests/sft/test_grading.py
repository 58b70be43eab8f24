"""Eval during training on the tiny model: the base scored at step 0, every eval_steps after, scores as
events and in the log and result, and keep best making the best-scoring checkpoint the final adapter."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pathlib import Path

from app.sft import SFTConfig, SFTTrainer
from app.sft.trainer import read_log
from factories import contact_rows, write_jsonl

FUZZY = {"type": "text_similarity", "name": "fuzzy", "input": "{{sample.output_text}}",
         "reference": "{{item.reference}}", "evaluation_metric": "fuzzy_match"}
JSON_MATCH = {"type": "string_check", "name": "json_match", "operation": "eq", "input": "{{sample.output_json}}",
              "reference": "{{item.reference_json}}"}


@pytest.fixture(scope="module")
def graded_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graded")
    config = SFTConfig.model_validate({
        "base_model": str(tiny_model_dir), "dataset_name": str(write_jsonl(tmp / "chat.jsonl", contact_rows(32))),
        "per_device_train_batch_size": 4, "logging_steps": 1, "max_steps": 5, "validation_split": 0.25, "eval_steps": 2, "learning_rate": 2e-2,
        "graders": [FUZZY, JSON_MATCH], "keep": {"metric": "fuzzy", "mode": "min"}, "eval_max_rows": 4,
        "eval_max_new_tokens": 12, "output_dir": str(tmp / "out")})
    events = []
    result = SFTTrainer(config, model_cache_dir=tmp / "cache", on_event=events.append).train()
    return result, events


def test_scores_at_step_zero_every_eval_steps_and_the_last(graded_run):
    result, events = graded_run
    graders = result.graders
    assert [entry["step"] for entry in graders["history"]] == [0, 2, 4, 5]
    assert graders["base"]["step"] == 0 and graders["eval_rows"] == 4 and graders["eval_seconds"] > 0
    for entry in graders["history"]:
        assert 0 <= entry["fuzzy"] <= 1 and entry["json_match"] in (0, 0.25, 0.5, 0.75, 1)
    evals = [e.payload for e in events if e.kind == "eval" and "grader_fuzzy" in e.payload]
    assert [e["step"] for e in evals] == [0, 2, 4, 5]
    assert [e["grader_fuzzy"] for e in evals] == pytest.approx([h["fuzzy"] for h in graders["history"]], abs=1e-6)
    assert all("eval_grading_seconds" in e for e in evals)
    logged = [entry for entry in read_log(result.output_dir) if "grader_json_match" in entry]
    assert [entry["step"] for entry in logged] == [0, 2, 4, 5]


def test_keep_best_makes_the_best_checkpoint_the_final_adapter(graded_run):
    result, _ = graded_run
    history = result.graders["history"]
    best = min(history, key=lambda entry: entry["fuzzy"])  # the first of equal scores, as keep best takes it
    kept = result.graders["kept"]
    assert (kept["step"], kept["metric"], kept["mode"]) == (best["step"], "fuzzy", "min")
    assert kept["value"] == pytest.approx(best["fuzzy"])
    adapter = Path(result.adapter_path) / "adapter_model.safetensors"
    best_copy = Path(result.output_dir) / "best" / "adapter_model.safetensors"
    assert adapter.read_bytes() == best_copy.read_bytes()
    if kept["step"] == 0:  # the base scored lowest: the kept adapter is the untrained one (LoRA B all zeros)
        from safetensors.torch import load_file

        weights = load_file(adapter)
        assert all(not tensor.any() for name, tensor in weights.items() if "lora_B" in name)


@pytest.mark.parametrize(("extra", "words"), [
    ({"graders": [FUZZY]}, "graders need eval_steps"),
    ({"graders": [FUZZY, FUZZY], "eval_steps": 2}, "two graders are named 'fuzzy'"),
    ({"graders": [FUZZY], "eval_steps": 2, "keep": {"metric": "exact"}}, "keep.metric 'exact'"),
    ({"keep": {"metric": "fuzzy"}}, "keep needs graders"),
    ({"graders": [FUZZY], "eval_steps": 2, "eval_max_rows": 0}, "eval_max_rows"),
    ({"graders": [FUZZY], "eval_steps": 2, "eval_max_new_tokens": 100_000}, "eval_max_new_tokens"),
    ({"graders": [{"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "x"}]}],
      "eval_steps": 2}, "needs a base_url"),
])
def test_bad_grading_configs_are_refused(tiny_config, extra, words):
    with pytest.raises(ValidationError, match=words):
        SFTConfig.model_validate({**tiny_config, "validation_split": 0.25, **extra})
