"""The SQLite store on its own: jobs, events, metrics, configs, and opening a database of an older version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.store import SQLiteStore
from app.store.sqlite import JOB_FIELDS, DatabaseUnavailable


@pytest.fixture
def store(tmp_path: Path):
    store = SQLiteStore(tmp_path / "sft.db")
    yield store
    store.close()


def _job(job_id: str, seq: int, **fields) -> dict:
    return {"job_id": job_id, "seq": seq, "status": "pending", "config": {"base_model": "m", "lora_r": 16},
            "created_at": f"2026-01-0{seq}T00:00:00+00:00", **fields}


def test_jobs_round_trip_in_creation_order(store):
    store.insert_job(_job("b", 2, progress={"phase": "starting"}, attempts=[{"attempt": 1}]))
    store.insert_job(_job("a", 1, idempotency_key="k", request_hash="h"))
    first, second = store.load_jobs()
    assert [first["job_id"], second["job_id"]] == ["a", "b"]
    assert set(first) == set(JOB_FIELDS)
    assert first["config"] == {"base_model": "m", "lora_r": 16} and first["idempotency_key"] == "k"
    assert second["progress"] == {"phase": "starting"} and second["attempts"] == [{"attempt": 1}]
    assert (first["executor"], first["handle"], first["training_seq"]) == (None, None, 0)
    assert store.max_job_seq() == 2


def test_update_job_stores_json_fields_and_the_executor_columns(store):
    store.insert_job(_job("a", 1))
    store.update_job("a", status="running", executor="thread", handle={"thread": "sft-job-a", "pid": 1},
                     training_seq=7, result={"global_step": 3}, error_detail=None)
    record = store.load_jobs()[0]
    assert record["status"] == "running" and record["result"] == {"global_step": 3}
    assert (record["executor"], record["handle"], record["training_seq"]) == (
        "thread", {"thread": "sft-job-a", "pid": 1}, 7)


def test_update_job_refuses_unknown_fields(store):
    store.insert_job(_job("a", 1))
    with pytest.raises(ValueError, match=r"unknown job fields: \['colour'\]"):
        store.update_job("a", colour="red")


def test_idempotency_keys_are_unique(store):
    store.insert_job(_job("a", 1, idempotency_key="k"))
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_job(_job("b", 2, idempotency_key="k"))


def test_events_are_paged_by_number(store):
    for seq in range(1, 6):
        store.add_event("a", seq, "t", "metrics", "info", f"step {seq}", {"step": seq} if seq % 2 else None)
    assert store.max_event_seq("a") == 5 and store.max_event_seq("nope") == 0
    page = store.events("a", after=1, limit=2)
    assert [(e["seq"], e["message"], e["data"]) for e in page] == [(2, "step 2", {}), (3, "step 3", {"step": 3})]
    assert [e["seq"] for e in store.events("a", after=4)] == [5]
    with pytest.raises(sqlite3.IntegrityError):
        store.add_event("a", 5, "t", "metrics", "info", "again", None)


def test_metrics_keep_their_order(store):
    for step, attempt in ((1, 1), (2, 1), (2, 2), (3, 2)):
        store.add_metric("a", step, attempt, {"step": step, "attempt": attempt, "loss": 1.0 / step})
    assert [(m["step"], m["attempt"]) for m in store.metrics("a")] == [(1, 1), (2, 1), (2, 2), (3, 2)]


def test_delete_job_removes_its_events_metrics_and_extras(store):
    for job_id, seq in (("a", 1), ("b", 2)):
        store.insert_job(_job(job_id, seq))
        store.add_event(job_id, 1, "t", "created", "info", "created", None)
        store.add_metric(job_id, 1, 1, {"loss": 1.0})
        store.put_openai_job(job_id, {"suffix": job_id})
    store.delete_job("a")
    assert [r["job_id"] for r in store.load_jobs()] == ["b"]
    assert store.events("a") == [] and store.metrics("a") == []
    assert list(store.load_openai_jobs()) == ["b"] and len(store.events("b")) == 1


def test_configs(store):
    store.insert_config("c1", "small", {"max_steps": 5}, "2026-01-01")
    store.insert_config("c2", "large", {"max_steps": 500}, "2026-01-02")
    assert [(c["config_id"], c["config"]) for c in store.load_configs()] == [
        ("c1", {"max_steps": 5}), ("c2", {"max_steps": 500})]
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_config("c3", "small", {}, "2026-01-03")
    store.delete_config("c1")
    assert [c["name"] for c in store.load_configs()] == ["large"]


def test_a_record_survives_reopening(tmp_path):
    store = SQLiteStore(tmp_path / "sft.db")
    store.insert_job(_job("a", 1))
    store.update_job("a", training_seq=3)
    store.close()
    reopened = SQLiteStore(tmp_path / "sft.db")
    assert reopened.load_jobs()[0]["training_seq"] == 3
    reopened.close()


#: The jobs table as versions before the executor columns created it.
OLD_JOBS_TABLE = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, status TEXT NOT NULL, config TEXT NOT NULL,
    created_at TEXT NOT NULL, started_at TEXT, completed_at TEXT, error TEXT, error_detail TEXT,
    result TEXT, progress TEXT, attempts TEXT, idempotency_key TEXT UNIQUE, request_hash TEXT
);
INSERT INTO jobs (job_id, seq, status, config, created_at)
VALUES ('old', 1, 'running', '{"base_model": "m", "max_steps": 3}', '2025-01-01T00:00:00+00:00');
"""


def test_a_database_of_an_older_version_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_JOBS_TABLE)
    conn.close()

    store = SQLiteStore(path)
    record = store.load_jobs()[0]
    assert record["job_id"] == "old" and record["config"] == {"base_model": "m", "max_steps": 3}
    assert (record["executor"], record["handle"], record["training_seq"]) == (None, None, 0)
    store.update_job("old", executor="thread", handle={"thread": "t"}, training_seq=2)
    store.insert_job(_job("new", 2))
    store.close()
    again = SQLiteStore(path)  # opening it once more changes nothing
    assert [(r["job_id"], r["training_seq"]) for r in again.load_jobs()] == [("old", 2), ("new", 0)]
    again.close()


def test_an_unusable_path_names_the_setting(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DatabaseUnavailable, match="check SFT_DATABASE_PATH"):
        SQLiteStore(blocker / "sft.db")
