"""app.sft.inference on tiny trained jobs: artifacts, the model cache, generation, merge, models."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.api.sft_job_manager import SFTJobManager
from app.core.errors import InvalidConfig, JobConflict
from app.core.settings import Settings
from app.sft import inference
from app.sft.checkpoints import list_checkpoints
from app.store import SQLiteStore
from factories import build_tiny_model, contact_rows, greedy_ids, greedy_text, wait_for, write_jsonl

HELLO = [{"role": "user", "content": "hello 3"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One manager and three finished jobs: LoRA (with checkpoints), QLoRA and full fine-tuning."""
    root = tmp_path_factory.mktemp("inference")
    data = write_jsonl(root / "chat.jsonl", contact_rows(32))
    # bitsandbytes' CPU inference path packs weights in blocks of 64: a 32-wide model cannot run it.
    wide_model = build_tiny_model(root / "tiny-64", hidden=64)
    settings = Settings(data_dir=root / "data", dataset_roots=[root], model_cache_dir=root / "model-cache",
                        model_roots=[root, tiny_model_dir.parent])
    manager = SFTJobManager(settings=settings, store=SQLiteStore(root / "db"))
    common = {"dataset_name": str(data), "per_device_train_batch_size": 4, "logging_steps": 5}
    configs = {
        "lora": {"base_model": str(tiny_model_dir), "max_steps": 40, "learning_rate": 5e-2, "save_steps": 20},
        "qlora": {"base_model": str(wide_model), "max_steps": 20, "learning_rate": 5e-2, "use_qlora": True},
        "full": {"base_model": str(tiny_model_dir), "max_steps": 20, "learning_rate": 1e-2, "use_lora": False},
    }
    jobs = {}
    for name, config in configs.items():
        job = manager.submit({**common, **config})
        status = manager.wait_for_job(job.job_id, timeout=120)
        assert status["status"] == "completed", status["error"]
        jobs[name] = manager.get_job(job.job_id)
    yield SimpleNamespace(manager=manager, settings=settings, jobs=jobs, root=root, data=data,
                          cache_dir=settings.resolved_model_cache_dir)
    # Every job has ended; its thread may still be returning from the terminal update.
    wait_for(lambda: not any(job.thread and job.thread.is_alive() for job in list(manager.jobs.values())),
             timeout=60, message="every job thread to exit")
    manager.store.close()


def fake_job(status="completed", result=..., output_dir="/nowhere", **config):
    if result is ...:
        result = {"adapter_path": output_dir, "artifact": "lora_adapter", "output_dir": output_dir}
    return SimpleNamespace(job_id="job-1", status=status, result=result,
                           config={"base_model": "m", "output_dir": output_dir, **config})


def load_plain(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


# Jobs -> artifacts


@pytest.mark.parametrize("status", ["pending", "running", "stopping", "failed"])
def test_unfinished_or_failed_job_conflicts(status):
    with pytest.raises(JobConflict, match=status):
        inference.job_artifact(fake_job(status))


def test_job_without_adapter_conflicts():
    with pytest.raises(JobConflict, match="saved no adapter"):
        inference.job_artifact(fake_job("stopped", result={"adapter_path": None, "stopped": True}))


def test_stopped_job_with_adapter_is_usable(tmp_path):
    job = fake_job("stopped", output_dir=str(tmp_path), use_qlora=True)
    artifact = inference.job_artifact(job)
    assert artifact.path == tmp_path and artifact.quantize_4bit and artifact.kind == "lora_adapter"


def test_adapter_gone_from_disk_conflicts(tmp_path):
    with pytest.raises(JobConflict, match="no longer on disk"):
        inference.job_artifact(fake_job(output_dir=str(tmp_path / "gone")))


def test_checkpoints_are_found_and_unknown_ones_named(trained):
    job = trained.jobs["lora"]
    artifact = inference.job_artifact(job, checkpoint="checkpoint-20")
    assert artifact.path == Path(job.output_dir) / "checkpoints" / "checkpoint-20"
    assert [c["step"] for c in list_checkpoints(job.output_dir)] == [20, 40]
    for name in ("checkpoint-7", "../adapter", "checkpoints"):
        with pytest.raises(inference.CheckpointNotFound) as exc:
            inference.job_artifact(job, checkpoint=name)
        assert name in exc.value.detail and "checkpoint-20, checkpoint-40" in exc.value.detail
    with pytest.raises(inference.CheckpointNotFound, match="set save_steps"):
        inference.job_artifact(trained.jobs["full"], checkpoint="checkpoint-1")


# The cache


def test_cache_evicts_least_recently_used():
    cache = inference.ModelCache(max_models=2)
    loaded = []

    def use(key):
        with cache.use(key, lambda: loaded.append(key) or key.upper()) as value:
            return value

    assert [use("a"), use("b"), use("a"), use("c")] == ["A", "B", "A", "C"]
    assert cache.keys() == ["a", "c"] and loaded == ["a", "b", "c"]
    use("b")
    assert cache.keys() == ["c", "b"] and loaded == ["a", "b", "c", "b"] and cache.loads == 4


def test_cache_forgets_a_failed_load():
    cache = inference.ModelCache(max_models=1)
    with pytest.raises(RuntimeError):
        with cache.use("a", lambda: (_ for _ in ()).throw(RuntimeError("boom"))):
            pass
    assert cache.keys() == [] and cache.loads == 0


def test_generation_cache_bound_is_honoured(trained):
    cache = inference.ModelCache(max_models=1)
    final = inference.job_artifact(trained.jobs["lora"])
    checkpoint = inference.job_artifact(trained.jobs["lora"], checkpoint="checkpoint-20")
    for artifact in (final, final, checkpoint, final):
        inference.generate(cache, artifact, cache_dir=trained.cache_dir, prompt="hello", max_new_tokens=2)
    assert len(cache.keys()) == 1 and cache.loads == 3
    assert str(final.path) in cache.keys()[0]


# Generation


def test_greedy_generation_is_deterministic_and_differs_from_base(trained, tiny_model_dir):
    cache = inference.ModelCache(max_models=2)
    artifact = inference.job_artifact(trained.jobs["lora"])
    first = inference.generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=16,
                               compare_base=True)
    again = inference.generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=16)
    assert first["completion"] == again["completion"]
    assert first["completion"] != first["base_completion"]
    assert first["prompt_tokens"] > 0 and 0 < first["completion_tokens"] <= 16
    assert first["latency_ms"] > 0 and first["base_latency_ms"] > 0
    # The base output comes from the same load (adapter disabled): one cache entry, one load.
    assert cache.loads == 1
    model, tokenizer = load_plain(tiny_model_dir)
    assert first["base_completion"] == greedy_text(model, tokenizer, HELLO)


def test_seeded_sampling_repeats(trained):
    cache = inference.ModelCache(max_models=1)
    artifact = inference.job_artifact(trained.jobs["lora"])
    runs = [inference.generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=12,
                               temperature=1.0, top_p=0.95, seed=seed)["completion"] for seed in (7, 7)]
    assert runs[0] == runs[1]


def test_raw_prompt_and_exactly_one_input(trained):
    cache = inference.ModelCache(max_models=1)
    artifact = inference.job_artifact(trained.jobs["lora"])
    out = inference.generate(cache, artifact, cache_dir=trained.cache_dir, prompt="hello world", max_new_tokens=4)
    assert out["base_completion"] is None and out["completion_tokens"] <= 4
    with pytest.raises(InvalidConfig):
        inference.generate(cache, artifact, cache_dir=trained.cache_dir, prompt="x", messages=HELLO)


def test_full_model_compares_with_a_separately_loaded_base(trained):
    cache = inference.ModelCache(max_models=2)
    artifact = inference.job_artifact(trained.jobs["full"])
    out = inference.generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=16,
                             compare_base=True)
    assert out["completion"] != out["base_completion"]
    assert sorted(key[0] for key in cache.keys()) == ["base", "tuned"]


def test_qlora_generates_on_a_4bit_base(trained):
    import bitsandbytes as bnb

    cache = inference.ModelCache(max_models=1)
    artifact = inference.job_artifact(trained.jobs["qlora"])
    assert artifact.quantize_4bit
    out = inference.generate(cache, artifact, cache_dir=trained.cache_dir, messages=HELLO, max_new_tokens=8,
                             compare_base=True)
    assert out["completion_tokens"] > 0 and out["base_completion"] is not None
    with cache.use(cache.keys()[0], lambda: None) as loaded:
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.modules())


# Merge


def test_merge_matches_base_plus_adapter(trained, tiny_model_dir):
    from peft import PeftModel

    artifact = inference.job_artifact(trained.jobs["lora"])
    out = inference.merge_adapter(artifact, cache_dir=trained.cache_dir)
    merged_dir = Path(out["merged_path"])
    assert merged_dir == Path(trained.jobs["lora"].output_dir) / "merged"
    assert out["size_bytes"] == inference.dir_size(merged_dir) > 0
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in merged_dir.iterdir()}
    merged, tokenizer = load_plain(merged_dir)
    base, _ = load_plain(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, str(artifact.path)).eval()
    assert greedy_ids(merged, tokenizer, HELLO) == greedy_ids(adapted, tokenizer, HELLO)
    # Merging again replaces the directory.
    assert inference.merge_adapter(artifact, cache_dir=trained.cache_dir)["merged_path"] == str(merged_dir)


def test_qlora_merges_into_full_precision_weights(trained):
    import torch
    from peft import PeftModel

    artifact = inference.job_artifact(trained.jobs["qlora"])
    merged_dir = Path(inference.merge_adapter(artifact, cache_dir=trained.cache_dir)["merged_path"])
    config = json.loads((merged_dir / "config.json").read_text())
    assert "quantization_config" not in config
    merged, tokenizer = load_plain(merged_dir)
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    base, _ = load_plain(artifact.base_model)
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[weight], base.state_dict()[weight])
    adapted = PeftModel.from_pretrained(base, str(artifact.path)).eval()
    assert greedy_ids(merged, tokenizer, HELLO) == greedy_ids(adapted, tokenizer, HELLO)


def test_full_fine_tune_has_nothing_to_merge(trained):
    with pytest.raises(JobConflict, match="already a standalone model"):
        inference.merge_adapter(inference.job_artifact(trained.jobs["full"]), cache_dir=trained.cache_dir)


def test_archive_has_one_adapter_root(trained, tmp_path):
    import tarfile

    artifact = inference.job_artifact(trained.jobs["lora"])
    path = inference.archive_adapter(artifact.path, tmp_path / "a.tar.gz")
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert "adapter/adapter_model.safetensors" in names
    assert all(name == "adapter" or name.startswith("adapter/") for name in names)


# Evaluation


def test_evaluate_scores_base_and_tuned(trained):
    cache = inference.ModelCache(max_models=1)
    rows = inference.chat_rows(str(trained.data), "train", limit=4, allowed_roots=[trained.root])
    assert rows[0]["messages"][-1]["role"] == "assistant" and len(rows) == 4
    scores = inference.evaluate(cache, inference.job_artifact(trained.jobs["lora"]), rows,
                                cache_dir=trained.cache_dir, max_new_tokens=16)
    for side in ("base", "tuned"):
        assert scores[side]["n"] == 4 and 0.0 <= scores[side]["exact_match"] <= 1.0
    assert scores["base"]["exact_match"] == 0.0


def test_chat_rows_reads_the_bundled_dataset_and_refuses_plain_text(tmp_path):
    rows = inference.chat_rows("bundled:json-extract", "eval", limit=3, allowed_roots=[tmp_path])
    assert len(rows) == 3 and rows[0]["messages"][0]["role"] == "user"
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "hello"}])
    with pytest.raises(InvalidConfig, match="conversational"):
        inference.chat_rows(str(text), "train", limit=None, allowed_roots=[tmp_path])
    with pytest.raises(InvalidConfig, match="dataset_name"):
        inference.chat_rows(str(tmp_path / "missing.jsonl"), "train", limit=None, allowed_roots=[tmp_path])


# Models


def test_list_models(tmp_path, tiny_model_dir):
    import shutil

    cache_dir = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache_dir / "gguf-tiny-1234")
    shutil.copytree(tiny_model_dir, tmp_path / "root" / "models" / "my-model")
    (tmp_path / "root" / "models" / "not-a-model").mkdir()
    models = inference.list_models(cache_dir=cache_dir, model_roots=[tmp_path / "root"])
    by_kind = {}
    for item in models:
        by_kind.setdefault(item["kind"], []).append(item)
    bundled = by_kind["bundled"][0]
    assert bundled["name"] == "smollm2-135m-instruct" and bundled["ready"] is False
    assert [m["path"] for m in by_kind["converted"]] == [str((cache_dir / "gguf-tiny-1234").resolve())]
    assert [m["name"] for m in by_kind["local"]] == [str((tmp_path / "root" / "models" / "my-model").resolve())]
    assert all(m["ready"] for m in by_kind["local"] + by_kind["converted"])
