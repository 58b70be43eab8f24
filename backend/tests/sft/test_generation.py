"""app.sft.generation and app.sft.evaluation on tiny trained jobs: completions beside the base model,
seeded sampling, QLoRA on a 4-bit base, exact-match scores."""

from __future__ import annotations

import pytest

from app.sft.artifacts import job_artifact
from app.sft.errors import RequestError
from app.sft.evaluation import chat_rows, evaluate
from app.sft.generation import generate
from app.sft.model_cache import ModelCache
from sft_helpers import HELLO, load_plain
from factories import greedy_text, write_jsonl


def test_greedy_generation_is_deterministic_and_differs_from_base(trained, tiny_model_dir):
    cache = ModelCache(max_models=2)
    artifact = job_artifact(trained.jobs["lora"])
    first = generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=16,
                               compare_base=True)
    again = generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=16)
    assert first["completion"] == again["completion"]
    assert first["completion"] != first["base_completion"]
    assert first["prompt_tokens"] > 0 and 0 < first["completion_tokens"] <= 16
    assert first["latency_ms"] > 0 and first["base_latency_ms"] > 0
    # The base output comes from the same load (adapter disabled): one cache entry, one load.
    assert cache.loads == 1
    model, tokenizer = load_plain(tiny_model_dir)
    assert first["base_completion"] == greedy_text(model, tokenizer, HELLO)


def test_seeded_sampling_repeats(trained):
    cache = ModelCache(max_models=1)
    artifact = job_artifact(trained.jobs["lora"])
    runs = [generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=12,
                               temperature=1.0, top_p=0.95, seed=seed)["completion"] for seed in (7, 7)]
    assert runs[0] == runs[1]


def test_raw_prompt_and_exactly_one_input(trained):
    cache = ModelCache(max_models=1)
    artifact = job_artifact(trained.jobs["lora"])
    out = generate(cache, artifact, cache_dir=trained.cache_dir, prompt="hello world", max_new_tokens=4)
    assert out["base_completion"] is None and out["completion_tokens"] <= 4
    with pytest.raises(RequestError, match="exactly one of messages and prompt"):
        generate(cache, artifact, cache_dir=trained.cache_dir, prompt="x", messages=HELLO)


def test_full_model_compares_with_a_separately_loaded_base(trained):
    cache = ModelCache(max_models=2)
    artifact = job_artifact(trained.jobs["full"])
    out = generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=16,
                             compare_base=True)
    assert out["completion"] != out["base_completion"]
    assert sorted(key[0] for key in cache.keys()) == ["base", "tuned"]


def test_qlora_generates_on_a_4bit_base(trained):
    import bitsandbytes as bnb

    cache = ModelCache(max_models=1)
    artifact = job_artifact(trained.jobs["qlora"])
    assert artifact.quantize_4bit
    out = generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=8,
                             compare_base=True)
    assert out["completion_tokens"] > 0 and out["base_completion"] is not None
    with cache.use(cache.keys()[0], lambda: None) as loaded:
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.modules())


def test_evaluate_scores_base_and_tuned(trained):
    cache = ModelCache(max_models=1)
    rows = chat_rows(str(trained.data), "train", limit=4, allowed_roots=[trained.root])
    assert rows[0]["messages"][-1]["role"] == "assistant" and len(rows) == 4
    scores = evaluate(cache, job_artifact(trained.jobs["lora"]), rows,
                                cache_dir=trained.cache_dir, max_new_tokens=16)
    for side in ("base", "tuned"):
        assert scores[side]["n"] == 4 and 0.0 <= scores[side]["exact_match"] <= 1.0
    assert scores["base"]["exact_match"] == 0.0
    assert [miss["row"] for miss in scores["base"]["misses"]] == [0, 1, 2, 3]
    assert scores["base"]["misses"][0]["reference"] == rows[0]["messages"][-1]["content"]
    for side in ("base", "tuned"):
        assert len(scores[side]["misses"]) == round(4 * (1 - scores[side]["exact_match"]))


def test_chat_rows_reads_the_bundled_dataset_and_refuses_plain_text(tmp_path):
    rows = chat_rows("bundled:json-extract", "eval", limit=3, allowed_roots=[tmp_path])
    assert len(rows) == 3 and rows[0]["messages"][0]["role"] == "user"
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "hello"}])
    with pytest.raises(RequestError, match="conversational"):
        chat_rows(str(text), "train", limit=None, allowed_roots=[tmp_path])
    with pytest.raises(RequestError, match="dataset_name"):
        chat_rows(str(tmp_path / "missing.jsonl"), "train", limit=None, allowed_roots=[tmp_path])
