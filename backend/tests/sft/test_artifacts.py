"""app.sft.artifacts: a job's artifact (and checkpoints), the adapter merged into its base, archived."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.sft.artifacts import archive_adapter, dir_size, job_artifact, merge_adapter
from app.sft.checkpoints import list_checkpoints
from app.sft.errors import ArtifactUnavailable, CheckpointMissing
from sft_helpers import HELLO, load_plain
from factories import greedy_ids


def fake_job(status="completed", result=..., output_dir="/nowhere", **config):
    if result is ...:
        result = {"adapter_path": output_dir, "artifact": "lora_adapter", "output_dir": output_dir}
    return SimpleNamespace(job_id="job-1", status=status, result=result,
                           config={"base_model": "m", "output_dir": output_dir, **config})


@pytest.mark.parametrize("status", ["pending", "running", "stopping", "failed"])
def test_unfinished_or_failed_job_conflicts(status):
    with pytest.raises(ArtifactUnavailable, match=status):
        job_artifact(fake_job(status))


def test_job_without_adapter_conflicts():
    with pytest.raises(ArtifactUnavailable, match="saved no adapter"):
        job_artifact(fake_job("stopped", result={"adapter_path": None, "stopped": True}))


def test_stopped_job_with_adapter_is_usable(tmp_path):
    job = fake_job("stopped", output_dir=str(tmp_path), use_qlora=True)
    artifact = job_artifact(job)
    assert artifact.path == tmp_path and artifact.quantize_4bit and artifact.kind == "lora_adapter"


def test_adapter_gone_from_disk_conflicts(tmp_path):
    with pytest.raises(ArtifactUnavailable, match="no longer on disk"):
        job_artifact(fake_job(output_dir=str(tmp_path / "gone")))


def test_checkpoints_are_found_and_unknown_ones_named(trained):
    job = trained.jobs["lora"]
    artifact = job_artifact(job, checkpoint="checkpoint-20")
    assert artifact.path == Path(job.output_dir) / "checkpoints" / "checkpoint-20"
    assert [c["step"] for c in list_checkpoints(job.output_dir)] == [20, 40]
    for name in ("checkpoint-7", "../adapter", "checkpoints"):
        with pytest.raises(CheckpointMissing) as exc:
            job_artifact(job, checkpoint=name)
        assert name in str(exc.value) and "checkpoint-20, checkpoint-40" in str(exc.value)
    with pytest.raises(CheckpointMissing, match="set save_steps"):
        job_artifact(trained.jobs["full"], checkpoint="checkpoint-1")


def test_merge_matches_base_plus_adapter(trained, tiny_model_dir):
    from peft import PeftModel

    artifact = job_artifact(trained.jobs["lora"])
    out = merge_adapter(artifact, cache_dir=trained.cache_dir)
    merged_dir = Path(out["merged_path"])
    assert merged_dir == Path(trained.jobs["lora"].output_dir) / "merged"
    assert out["size_bytes"] == dir_size(merged_dir) > 0
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in merged_dir.iterdir()}
    merged, tokenizer = load_plain(merged_dir)
    base, _ = load_plain(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, str(artifact.path)).eval()
    assert greedy_ids(merged, tokenizer, HELLO) == greedy_ids(adapted, tokenizer, HELLO)
    # Merging again replaces the directory.
    assert merge_adapter(artifact, cache_dir=trained.cache_dir)["merged_path"] == str(merged_dir)


def test_qlora_merges_into_full_precision_weights(trained):
    import torch
    from peft import PeftModel

    artifact = job_artifact(trained.jobs["qlora"])
    merged_dir = Path(merge_adapter(artifact, cache_dir=trained.cache_dir)["merged_path"])
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
    with pytest.raises(ArtifactUnavailable, match="already a standalone model"):
        merge_adapter(job_artifact(trained.jobs["full"]), cache_dir=trained.cache_dir)


def test_archive_has_one_adapter_root(trained, tmp_path):
    import shutil
    import tarfile

    adapter = shutil.copytree(job_artifact(trained.jobs["lora"]).path, tmp_path / "adapter-copy")
    (adapter / "adapter_model.safetensors").chmod(0o600)  # as safetensors writes it
    path = archive_adapter(adapter, tmp_path / "a.tar.gz")
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert "adapter/adapter_model.safetensors" in names
    assert all(name == "adapter" or name.startswith("adapter/") for name in names)
    assert {m.name: oct(m.mode) for m in members if m.isfile() and m.mode != 0o644} == {}
    assert all(m.mode == 0o755 for m in members if m.isdir())
