"""The model routes over HTTP: generate, adapter download, merge, evaluate, models; on tiny trained jobs."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from job_helpers import quiesce
from app.api.sft_job_manager import JobStatus, SFTJobManager
from app.core.settings import Settings
from app.main import create_app
from app.store import SQLiteStore
from factories import MISSING, contact_rows, greedy_text, wait_for, write_jsonl

HELLO = {"messages": [{"role": "user", "content": "hello 3"}], "max_new_tokens": 16}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    """An app on a real manager whose runner trains once ``hold`` is clear; a LoRA and a full job trained."""
    root = tmp_path_factory.mktemp("model-routes")
    data = write_jsonl(root / "chat.jsonl", contact_rows(32))
    settings = Settings(data_dir=root / "data", dataset_roots=[root], model_cache_dir=root / "model-cache",
                        model_roots=[root, tiny_model_dir.parent])
    hold = threading.Event()
    manager = None

    def runner(job, emit):
        while hold.is_set() and not job.stop_event.is_set():
            job.stop_event.wait(0.01)
        return manager._train(job, emit)

    manager = SFTJobManager(settings=settings, store=SQLiteStore(root / "db"), runner=runner,
                            max_concurrent_jobs=1)
    config = {"base_model": str(tiny_model_dir), "dataset_name": str(data), "per_device_train_batch_size": 4,
              "logging_steps": 5}
    jobs = {}
    for name, extra in {"lora": {"max_steps": 40, "learning_rate": 5e-2, "save_steps": 20},
                        "full": {"max_steps": 10, "learning_rate": 1e-2, "use_lora": False}}.items():
        job = manager.submit({**config, **extra})
        assert manager.wait_for_job(job.job_id, timeout=120)["status"] == "completed"
        jobs[name] = job.job_id
    with TestClient(create_app(manager)) as client:
        yield SimpleNamespace(client=client, manager=manager, settings=settings, jobs=jobs, hold=hold,
                              config=config, data=data, root=root, tiny_model_dir=tiny_model_dir)
    hold.clear()
    quiesce(manager, timeout=120)
    manager.store.close()


# Generate


def test_generate_with_compare_base(env):
    url = f"/api/sft/jobs/{env.jobs['lora']}/generate"
    first = env.client.post(url, json={**HELLO, "compare_base": True})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) >= {"completion", "base_completion", "prompt_tokens", "completion_tokens", "latency_ms",
                         "base_latency_ms"}
    assert body["completion"] != body["base_completion"]
    again = env.client.post(url, json=HELLO).json()
    assert again["completion"] == body["completion"] and again["base_completion"] is None
    raw = env.client.post(url, json={"prompt": "hello", "max_new_tokens": 3})
    assert raw.status_code == 200 and raw.json()["completion_tokens"] <= 3


def test_generate_from_a_checkpoint(env):
    url = f"/api/sft/jobs/{env.jobs['lora']}/generate"
    response = env.client.post(url, json={**HELLO, "checkpoint": "checkpoint-20"})
    assert response.status_code == 200, response.text
    missing = env.client.post(url, json={**HELLO, "checkpoint": "checkpoint-999"})
    assert missing.status_code == 404
    assert "checkpoint-999" in missing.json()["detail"] and "checkpoint-20, checkpoint-40" in missing.json()["detail"]


@pytest.mark.parametrize("body", [
    {"max_new_tokens": 4},
    {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]},
    {"prompt": "hi", "max_new_tokens": 0},
    {"prompt": "hi", "max_new_tokens": 2049},
    {"messages": []},
])
def test_generate_rejects_bad_requests(env, body):
    assert env.client.post(f"/api/sft/jobs/{env.jobs['lora']}/generate", json=body).status_code == 422


def test_unknown_job_is_404(env):
    for response in (env.client.post(f"/api/sft/jobs/{MISSING}/generate", json=HELLO),
                     env.client.get(f"/api/sft/jobs/{MISSING}/adapter"),
                     env.client.post(f"/api/sft/jobs/{MISSING}/merge")):
        assert response.status_code == 404 and MISSING in response.json()["detail"]
    response = env.client.post("/api/sft/evaluate", json={"job_id": MISSING})
    assert response.status_code == 404


def test_busy_unfinished_and_adapterless_jobs(env):
    """While the one training slot is taken: 503 for a finished job, 409 for unfinished or adapterless ones."""
    manager, client = env.manager, env.client
    env.hold.set()
    try:
        running = manager.submit({**env.config, "max_steps": 2}).job_id
        wait_for(lambda: manager.get_job(running).status is JobStatus.RUNNING, message="the job to run")
        pending = manager.submit({**env.config, "max_steps": 2}).job_id
        assert manager.get_job(pending).status is JobStatus.PENDING

        busy = client.post(f"/api/sft/jobs/{env.jobs['lora']}/generate", json=HELLO)
        assert busy.status_code == 503 and "training" in busy.json()["detail"]
        assert client.post("/api/sft/evaluate", json={"job_id": env.jobs["lora"], "dataset_name": str(env.data),
                                                      "max_samples": 2}).status_code == 503
        for job_id in (running, pending):
            assert client.post(f"/api/sft/jobs/{job_id}/generate", json=HELLO).status_code == 409
            assert client.get(f"/api/sft/jobs/{job_id}/adapter").status_code == 409
            assert client.post(f"/api/sft/jobs/{job_id}/merge").status_code == 409

        manager.stop_job(pending)
        stopped = client.post(f"/api/sft/jobs/{pending}/generate", json=HELLO)
        assert stopped.status_code == 409 and "no adapter" in stopped.json()["detail"]

        manager.settings.generate_while_training = True
        try:
            assert client.post(f"/api/sft/jobs/{env.jobs['lora']}/generate", json=HELLO).status_code == 200
        finally:
            manager.settings.generate_while_training = False
    finally:
        env.hold.clear()
    assert manager.wait_for_job(running, timeout=120)["status"] == "completed"


# Adapter download


def test_adapter_archive_round_trip(env, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job_id = env.jobs["lora"]
    response = env.client.get(f"/api/sft/jobs/{job_id}/adapter")
    assert response.status_code == 200
    assert f'filename="{job_id}-adapter.tar.gz"' in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        assert all(name == "adapter" or name.startswith("adapter/") for name in tar.getnames())
        tar.extractall(tmp_path, filter="data")
    base = AutoModelForCausalLM.from_pretrained(str(env.tiny_model_dir))
    model = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "adapter"))
    served = env.client.post(f"/api/sft/jobs/{job_id}/generate", json=HELLO).json()["completion"]
    assert greedy_text(model, tokenizer, HELLO["messages"]) == served


def test_adapter_archive_is_built_once_and_rebuilt_when_the_adapter_changes(env):
    import os

    job_id = env.jobs["lora"]
    first = env.client.get(f"/api/sft/jobs/{job_id}/adapter").content
    archive = Path(env.manager.get_job(job_id).result["adapter_path"]).with_name("adapter.tar.gz")
    built = archive.stat().st_mtime_ns
    assert env.client.get(f"/api/sft/jobs/{job_id}/adapter").content == first
    assert archive.stat().st_mtime_ns == built  # sent again, not compressed again
    config = archive.with_name("adapter") / "adapter_config.json"
    os.utime(config, ns=(built + 10**9, built + 10**9))  # the adapter changed (a resumed job saves again)
    assert env.client.get(f"/api/sft/jobs/{job_id}/adapter").status_code == 200
    assert archive.stat().st_mtime_ns > built


def test_full_model_archive(env):
    response = env.client.get(f"/api/sft/jobs/{env.jobs['full']}/adapter")
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        assert "adapter/model.safetensors" in tar.getnames()


# Merge


def test_merge(env):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job_id = env.jobs["lora"]
    response = env.client.post(f"/api/sft/jobs/{job_id}/merge")
    assert response.status_code == 200, response.text
    body = response.json()
    merged = Path(body["merged_path"])
    assert merged == Path(env.manager.get_job(job_id).output_dir) / "merged" and body["size_bytes"] > 0
    model = AutoModelForCausalLM.from_pretrained(str(merged)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    served = env.client.post(f"/api/sft/jobs/{job_id}/generate", json=HELLO).json()["completion"]
    assert greedy_text(model, tokenizer, HELLO["messages"]) == served
    full = env.client.post(f"/api/sft/jobs/{env.jobs['full']}/merge")
    assert full.status_code == 409 and "standalone" in full.json()["detail"]


# Evaluate


def test_evaluate(env):
    body = {"job_id": env.jobs["lora"], "dataset_name": str(env.data), "split": "train", "max_samples": 3,
            "max_new_tokens": 16}
    response = env.client.post("/api/sft/evaluate", json=body)
    assert response.status_code == 200, response.text
    scores = response.json()
    for side in ("base", "tuned"):
        assert scores[side]["n"] == 3 and 0 <= scores[side]["exact_match"] <= 1
        assert len(scores[side]["misses"]) == round(3 * (1 - scores[side]["exact_match"]))
    bad = env.client.post("/api/sft/evaluate", json={**body, "dataset_name": str(env.root / "missing.jsonl")})
    assert bad.status_code == 400 and "dataset_name" in bad.json()["detail"]


def test_evaluate_with_graders(env):
    exact = {"type": "multi", "name": "exact", "calculate_output": "max(text, json)", "graders": {
        "text": {"type": "string_check", "name": "text", "operation": "eq", "input": "{{sample.output_text}}",
                 "reference": "{{item.reference}}"},
        "json": {"type": "string_check", "name": "json", "operation": "eq", "input": "{{sample.output_json}}",
                 "reference": "{{item.reference_json}}"}}}
    length = {"type": "python", "name": "short", "source": "def grade(sample, item):\n"
              "    return float(len(sample['output_text']) <= len(item['reference']))"}
    body = {"job_id": env.jobs["lora"], "dataset_name": str(env.data), "split": "train", "max_samples": 3,
            "max_new_tokens": 16, "graders": [exact, length]}
    response = env.client.post("/api/sft/evaluate", json=body)
    assert response.status_code == 200, response.text
    for side in ("base", "tuned"):
        scores = response.json()[side]
        assert set(scores["scores"]) == {"exact", "short"} and 0 <= scores["scores"]["short"] <= 1
        assert scores["scores"]["exact"] == scores["exact_match"]  # exact match, as a grader
    bad = env.client.post("/api/sft/evaluate", json={**body, "graders": [{**length, "source": "import os"}]})
    assert bad.status_code == 422, bad.text
    assert "graders.0.python.source" in bad.text and "grade(sample, item)" in bad.text


def test_evaluate_defaults_to_the_bundled_dataset(env):
    response = env.client.post("/api/sft/evaluate", json={"job_id": env.jobs["lora"], "max_samples": 2,
                                                          "max_new_tokens": 4})
    assert response.status_code == 200, response.text
    assert response.json()["dataset_name"] == "bundled:json-extract" and response.json()["tuned"]["n"] == 2


# Models and the cache


def test_models_lists_the_bundled_alias_and_local_models(env):
    import shutil

    shutil.copytree(env.tiny_model_dir, env.root / "models" / "tiny", dirs_exist_ok=True)
    response = env.client.get("/api/sft/models")
    assert response.status_code == 200
    models = response.json()
    assert {"name": "smollm2-135m-instruct", "kind": "bundled"}.items() <= models[0].items()
    local = [m for m in models if m["kind"] == "local"]
    assert [m["path"] for m in local] == [str((env.root / "models" / "tiny").resolve())] and local[0]["ready"]


def test_model_cache_follows_the_settings(make_manager, tmp_path):
    manager = make_manager(settings=Settings(data_dir=tmp_path / "data", generation_cache_size=3))
    assert create_app(manager).state.model_cache.max_models == 3


def test_generation_cache_stays_bounded(env):
    cache = env.client.app.state.model_cache
    job_id = env.jobs["lora"]
    for checkpoint in (None, "checkpoint-20", "checkpoint-40", None):
        body = {**HELLO, "max_new_tokens": 2, **({"checkpoint": checkpoint} if checkpoint else {})}
        assert env.client.post(f"/api/sft/jobs/{job_id}/generate", json=body).status_code == 200
        assert len(cache.keys()) <= env.settings.generation_cache_size == 2
