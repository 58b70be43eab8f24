"""The webhook outbox is written by the store's own write of the change that causes it, in one transaction."""

from __future__ import annotations

import sqlite3

import pytest

from app.store import SQLiteStore, TerminalJob


def delivery(delivery_id: str, endpoint_id: str = "wh_1") -> dict:
    return {"delivery_id": delivery_id, "endpoint_id": endpoint_id, "event_id": "evt_1",
            "event_type": "fine_tuning.job.succeeded", "job_id": "j", "body": "{}", "status": "pending", "attempts": 0,
            "created_at": "2026-01-01T00:00:00+00:00", "next_attempt_at": 0.0, "retry_until": 10.0}


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "x.db")
    store.insert_job({"job_id": "j", "seq": 1, "status": "running", "config": {}, "created_at": "t"})
    store.insert_webhook({"endpoint_id": "wh_1", "url": "http://127.0.0.1/x", "events": ["fine_tuning.job.succeeded"],
                          "secret": "whsec_x", "owner": None, "scope": "user", "created_at": "t"})
    yield store
    store.close()


def test_a_status_change_and_its_deliveries_commit_together_or_not_at_all(store):
    store.update_job("j", status="completed", outbox=[delivery("msg_1")])
    assert [d["delivery_id"] for d in store.webhook_deliveries("wh_1")] == ["msg_1"]
    with pytest.raises(TerminalJob):
        store.update_job("j", status="failed", outbox=[delivery("msg_2")])
    assert [d["delivery_id"] for d in store.due_webhook_deliveries(1.0)] == ["msg_1"]  # msg_2 rolled back
    assert store.load_jobs()[0]["status"] == "completed"


def test_an_event_and_its_deliveries_commit_together(store):
    store.add_event("j", 1, "t", "checkpoint_saved", "info", "saved", None, outbox=[delivery("msg_1")])
    with pytest.raises(sqlite3.IntegrityError):  # the same event number again: nothing of it is kept
        store.add_event("j", 1, "t", "checkpoint_saved", "info", "saved", None, outbox=[delivery("msg_2")])
    assert [d["delivery_id"] for d in store.webhook_deliveries("wh_1")] == ["msg_1"]


def test_an_attempt_is_recorded_with_its_delivery_and_an_endpoint_takes_its_deliveries_along(store):
    store.update_job("j", status="completed", outbox=[delivery("msg_1")])
    assert store.update_webhook_delivery("msg_1", attempt={"delivery_id": "msg_1", "attempt": 1, "started_at": "t",
                                                           "status_code": 200, "latency_ms": 3.0},
                                         status="delivered", attempts=1, next_attempt_at=None)
    [row] = store.webhook_deliveries("wh_1")
    assert row["status"] == "delivered" and [a["status_code"] for a in row["attempt_log"]] == [200]
    assert store.due_webhook_deliveries(100.0) == [] and store.next_webhook_due() is None
    store.delete_webhook("wh_1")
    assert store.load_webhooks() == [] and store.get_webhook_delivery("msg_1") is None
    assert not store.update_webhook_delivery("msg_1", status="pending")
