"""Paths under keys (issue 23): a user names only files they may read — their uploads, their jobs'
outputs, the shared roots — and no answer lists a directory or shows another user's objects.

One real app with keys (alice, bob, an admin) and one job alice trained and merged, shared by every test.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.jobs.manager import SFTJobManager
from app.main import create_app
from app.store.keys import KeyStore
from app.store.sqlite import SQLiteStore
from factories import contact_rows, wait_for, write_jsonl
from job_helpers import error_detail, quiesce


@pytest.fixture(scope="module")
def w(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("trust-paths")
    shared = write_jsonl(root / "chat.jsonl", contact_rows(32))
    settings = Settings(data_dir=root / "data", dataset_roots=[root], model_roots=[root, tiny_model_dir.parent],
                        model_cache_dir=tiny_model_dir.parent / "model-cache", auth="keys",
                        generate_while_training=True)
    manager = SFTJobManager(settings=settings, store=SQLiteStore(root / "data" / "sft.db"), max_concurrent_jobs=1)
    keys = KeyStore(manager.store)
    made = {name: keys.create(name, admin=name == "root")[1] for name in ("alice", "bob", "root")}
    client = TestClient(create_app(manager=manager))

    def as_(who: str, method: str, url: str, **kwargs):
        return client.request(method, url, headers={"Authorization": f"Bearer {made[who]}"}, **kwargs)

    config = {"base_model": str(tiny_model_dir), "dataset_name": str(shared), "max_steps": 2,
              "per_device_train_batch_size": 4, "learning_rate": 5e-3, "logging_steps": 1}
    answer = as_("alice", "POST", "/api/sft/train", json={"config": {**config, "output_dir": "alice-run"}})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["job_id"]
    wait_for(lambda: manager.get_job(job_id).status.is_terminal(), timeout=180, message="alice's job")
    assert manager.get_job(job_id).status.value == "completed", manager.get_job(job_id).error
    merged = as_("alice", "POST", f"/api/sft/jobs/{job_id}/merge")
    assert merged.status_code == 200, merged.text
    with shared.open("rb") as f:
        upload = as_("alice", "POST", "/v1/files", files={"file": ("mine.jsonl", f)}, data={"purpose": "fine-tune"})
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["id"]
    yield SimpleNamespace(manager=manager, as_=as_, config=config, root=root, shared=shared, job_id=job_id,
                          output_dir=Path(manager.get_job(job_id).output_dir), merged=merged.json()["merged_path"],
                          file_id=file_id, file_path=manager.store.get_file(file_id)["path"],
                          files_dir=settings.resolved_files_dir)
    client.close()
    quiesce(manager)
    manager.store.close()


def _preview(w, who: str, dataset: str, model: str | None = None):
    return w.as_(who, "POST", "/api/sft/datasets/preview",
                 json={"dataset_name": dataset, "base_model": model or w.config["base_model"], "examples": 1})


# Item 1: another user's uploads (and any data file of theirs), by path


def test_a_preview_of_the_uploads_folder_or_of_alices_file_is_refused_like_a_missing_path(w):
    missing = _preview(w, "bob", str(w.files_dir / "file-nope.jsonl"))
    assert missing.status_code == 400
    for path in (w.files_dir, w.file_path):
        answer = _preview(w, "bob", str(path))
        assert answer.status_code == 400, answer.text
        detail = error_detail(answer)
        assert detail == error_detail(missing).replace(str(w.files_dir / "file-nope.jsonl"), str(path))
        assert "rows" not in answer.json() and (path == w.file_path or w.file_id not in detail)
        assert answer.json()["errors"][0]["field"] == "dataset_name"
    # Alice reads her own upload; bob reads the shared root.
    assert _preview(w, "alice", w.file_path).status_code == 200
    assert _preview(w, "bob", str(w.shared)).status_code == 200


def test_a_data_file_in_alices_outputs_is_hers(w):
    inside = write_jsonl(w.output_dir / "notes.jsonl", contact_rows(4))
    assert _preview(w, "bob", str(inside)).status_code == 400
    assert _preview(w, "alice", str(inside)).status_code == 200
    assert _preview(w, "root", str(inside)).status_code == 200  # admins read what the path policy allows


def test_bob_cannot_train_on_alices_file_by_path(w):
    before = len(w.manager.jobs)
    answer = w.as_("bob", "POST", "/api/sft/train", json={"config": {**w.config, "dataset_name": w.file_path}})
    assert answer.status_code == 400
    assert error_detail(answer).startswith(f"config.dataset_name: '{w.file_path}': local datasets must be your own")
    assert len(w.manager.jobs) == before
    answer = w.as_("bob", "POST", "/api/sft/train",
                   json={"config": {**w.config, "eval_dataset_name": str(w.output_dir / "notes.jsonl")}})
    assert answer.status_code == 400 and error_detail(answer).startswith("config.eval_dataset_name: ")


# Item 3: another user's models, by path


def test_alices_merged_model_is_not_bobs_to_chat_with_retrieve_or_preview(w):
    merged = w.merged
    assert merged.startswith(str(w.output_dir))
    chat = w.as_("bob", "POST", "/v1/chat/completions",
                 json={"model": merged, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert chat.status_code == 404, chat.text
    assert chat.json()["error"]["code"] == "model_not_found"
    retrieve = w.as_("bob", "GET", f"/v1/models/{merged}")
    nothing = w.as_("bob", "GET", f"/v1/models/{w.output_dir}/nothing-here")
    assert retrieve.status_code == nothing.status_code == 404
    assert retrieve.json()["error"]["message"].replace(merged, "X") == \
        nothing.json()["error"]["message"].replace(f"{w.output_dir}/nothing-here", "X")
    preview = _preview(w, "bob", str(w.shared), model=merged)
    assert preview.status_code == 400 and preview.json()["errors"][0]["field"] == "base_model"
    job = w.as_("bob", "POST", "/v1/fine_tuning/jobs", json={"model": merged, "training_file": "file-x"})
    assert job.status_code == 400 and job.json()["error"]["param"] == "model"
    # Hers to use.
    assert w.as_("alice", "GET", f"/v1/models/{merged}").status_code == 200


def test_bob_neither_lists_nor_names_a_model_converted_from_alices_file(w):
    converted = w.manager.settings.resolved_model_cache_dir / "gguf-alices-model-1234"
    converted.mkdir(parents=True, exist_ok=True)
    (converted / "config.json").write_text("{}")
    try:
        for url in ("/api/sft/models", "/v1/models"):
            assert str(converted) not in w.as_("bob", "GET", url).text
            assert str(converted) in w.as_("root", "GET", url).text
        assert w.as_("bob", "GET", f"/v1/models/{converted}").status_code == 404
        assert w.as_("root", "GET", f"/v1/models/{converted}").status_code == 200
    finally:
        (converted / "config.json").unlink()
        converted.rmdir()


# Item 4: output_dir conflicts and reused directories


@pytest.mark.parametrize("output_dir", ["alice-run", "alice-run/inner"])
def test_an_output_dir_conflict_does_not_name_alices_job(w, output_dir):
    answer = w.as_("bob", "POST", "/api/sft/train", json={"config": {**w.config, "output_dir": output_dir}})
    assert answer.status_code == 409
    detail = error_detail(answer)
    wanted = w.manager.settings.resolved_output_root / output_dir
    assert detail.startswith(f"output_dir {wanted} ") and detail.endswith("another job; choose another output_dir")
    assert w.job_id not in detail and "completed" not in detail and str(w.output_dir) + ":" not in detail
    # Alice still learns which of her jobs holds it.
    mine = w.as_("alice", "POST", "/api/sft/train", json={"config": {**w.config, "output_dir": output_dir}})
    assert mine.status_code == 409 and w.job_id in error_detail(mine)


def test_a_deleted_jobs_directory_starts_clean_for_the_next_job(w):
    job_id = w.manager.create_job({**w.config, "output_dir": "reused"}, owner="alice")
    w.manager.cancel_job(job_id)
    left = Path(w.manager.get_job(job_id).output_dir) / "checkpoint-999"
    left.mkdir(parents=True)
    (left / "trainer_state.json").write_text('{"global_step": 999, "log_history": []}')
    assert w.as_("alice", "DELETE", f"/api/sft/jobs/{job_id}").status_code == 200
    answer = w.as_("bob", "POST", "/api/sft/train", json={"config": {**w.config, "output_dir": "reused"}})
    assert answer.status_code == 200, answer.text
    bobs = answer.json()["job_id"]
    assert not left.exists()
    steps = [c["step"] for c in w.as_("bob", "GET", f"/api/sft/jobs/{bobs}/checkpoints").json()["checkpoints"]]
    assert 999 not in steps
    wait_for(lambda: w.manager.get_job(bobs).status.is_terminal(), timeout=180, message="bob's job")
    # His own job, evaluated on her file: refused as the preview is.
    evaluate = w.as_("bob", "POST", "/api/sft/evaluate", json={"job_id": bobs, "dataset_name": w.file_path})
    assert evaluate.status_code == 400 and evaluate.json()["errors"][0]["field"] == "dataset_name"


# Item 9: file deletes


def test_bobs_job_on_alices_file_does_not_block_her_delete(w):
    with w.shared.open("rb") as f:
        file_id = w.as_("alice", "POST", "/v1/files", files={"file": ("x.jsonl", f)},
                        data={"purpose": "fine-tune"}).json()["id"]
    path = w.manager.store.get_file(file_id)["path"]
    # A job bob made before this rule (the API now refuses it): pending, so "queued".
    job_id = w.manager.create_job({**w.config, "dataset_name": path}, owner="bob")
    try:
        answer = w.as_("alice", "DELETE", f"/v1/files/{file_id}")
        assert answer.status_code == 200, answer.text
        assert not Path(path).exists()
    finally:
        w.manager.cancel_job(job_id)


# Item 10: config names


def test_config_names_are_unique_per_user(w):
    first = w.as_("alice", "POST", "/api/sft/configs", json={"name": "squat", "config": {}})
    assert first.status_code == 200
    bobs = w.as_("bob", "POST", "/api/sft/configs", json={"name": "squat", "config": {}})
    assert bobs.status_code == 200, bobs.text
    again = w.as_("alice", "POST", "/api/sft/configs", json={"name": "squat", "config": {}})
    assert again.status_code == 409
    assert error_detail(again) == f"A config named 'squat' already exists ({first.json()['config_id']})"
    names = [c["name"] for c in SQLiteStore(w.manager.settings.resolved_database_path).load_configs()]
    assert names.count("squat") == 2


def test_an_older_database_with_names_unique_server_wide_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE configs (config_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, config TEXT NOT NULL,"
                     " created_at TEXT NOT NULL, owner TEXT)")
        conn.execute("INSERT INTO configs VALUES ('c1', 'same', '{}', '2026-01-01T00:00:00Z', 'alice')")
    store = SQLiteStore(path)
    store.insert_config("c2", "same", {}, "2026-01-02T00:00:00Z", owner="bob")
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_config("c3", "same", {}, "2026-01-03T00:00:00Z", owner="alice")
    assert [(c["config_id"], c["owner"]) for c in store.load_configs()] == [("c1", "alice"), ("c2", "bob")]
    store.close()


# Item 14: /health


def test_health_shows_server_wide_activity_to_admins_only(w):
    bob = w.as_("bob", "GET", "/health").json()
    assert bob["model_requests"] == {} and bob["gpu"] is None
    assert bob["executor"] == {"name": "thread", "status": "up"}
    assert set(bob["jobs"]) <= {"pending", "running", "stopping", "completed", "failed", "stopped", "cancelled"}
    root = w.as_("root", "GET", "/health").json()
    assert set(root["model_requests"]) == {"running", "waiting"} and "runs" in root["executor"]
    assert bob["jobs"] == w.manager.counts(owner="bob") != root["jobs"] == w.manager.counts()
