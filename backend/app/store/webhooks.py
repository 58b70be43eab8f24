"""SQLite tables of the webhooks: endpoints, the outbox of deliveries, and every attempt.

A part of ``SQLiteStore`` (a mixin over its connection and lock). The outbox rows of a state change
are written by the store's own write of that change (``update_job``, ``add_event``, ``update_export``
take ``outbox=``) inside one transaction: the change and its deliveries are committed together or
not at all, so a killed server never loses an event nor sends one for a change that did not happen.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

WEBHOOK_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint_id  TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,
    secret       TEXT NOT NULL,
    owner        TEXT,
    scope        TEXT NOT NULL,
    description  TEXT,
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id      TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    job_id           TEXT,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    next_attempt_at  REAL,
    retry_until      REAL NOT NULL,
    delivered_at     TEXT,
    last_status_code INTEGER,
    last_error       TEXT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, created_at);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id  TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    status_code  INTEGER,
    latency_ms   REAL,
    error        TEXT,
    response     TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
"""

ENDPOINT_FIELDS = ("endpoint_id", "url", "events", "secret", "owner", "scope", "description", "created_at")
DELIVERY_FIELDS = (
    "delivery_id", "endpoint_id", "event_id", "event_type", "job_id", "body", "status", "attempts", "created_at",
    "next_attempt_at", "retry_until", "delivered_at", "last_status_code", "last_error",
)
ATTEMPT_FIELDS = ("delivery_id", "attempt", "started_at", "status_code", "latency_ms", "error", "response")


class WebhookTables:
    """The webhook methods of ``SQLiteStore`` (which provides ``_conn`` and ``_lock``)."""

    _conn: sqlite3.Connection
    _lock: threading.Lock

    @contextmanager
    def _transaction(self, outbox: Sequence[dict[str, Any]]) -> Iterator[None]:
        """Under the caller's hold of the lock: one transaction when there are outbox rows (else the
        write commits alone, as every write does); the rows are inserted last, before the commit."""
        if not outbox:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
            for row in outbox:
                values = [row.get(field) for field in DELIVERY_FIELDS]
                self._conn.execute(f"INSERT INTO webhook_deliveries ({', '.join(DELIVERY_FIELDS)}) "
                                   f"VALUES ({', '.join('?' for _ in DELIVERY_FIELDS)})", values)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # Endpoints

    def insert_webhook(self, record: dict[str, Any]) -> None:
        row = {field: record.get(field) for field in ENDPOINT_FIELDS}
        row["events"] = json.dumps(row["events"])
        with self._lock:
            self._conn.execute(f"INSERT INTO webhook_endpoints ({', '.join(row)}) "
                               f"VALUES ({', '.join('?' for _ in row)})", list(row.values()))

    def load_webhooks(self) -> list[dict[str, Any]]:
        """Every endpoint, its secret included, oldest first."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {', '.join(ENDPOINT_FIELDS)} FROM webhook_endpoints "
                                      "ORDER BY created_at, rowid").fetchall()
        return [{**dict(row), "events": json.loads(row["events"])} for row in rows]

    def delete_webhook(self, endpoint_id: str) -> None:
        """Forget an endpoint with its deliveries and their attempts."""
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM webhook_attempts WHERE delivery_id IN "
                               "(SELECT delivery_id FROM webhook_deliveries WHERE endpoint_id = ?)", (endpoint_id,))
            self._conn.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,))
            self._conn.execute("DELETE FROM webhook_endpoints WHERE endpoint_id = ?", (endpoint_id,))
            self._conn.execute("COMMIT")

    # Deliveries (the outbox) and their attempts

    def webhook_deliveries(self, endpoint_id: str, *, limit: int = 100,
                           delivery_id: str | None = None) -> list[dict[str, Any]]:
        """An endpoint's deliveries (or the one ``delivery_id``), newest first, each with its ``attempt_log``
        (oldest first)."""
        only, params = ("AND delivery_id = ? ", [delivery_id]) if delivery_id is not None else ("", [])
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(DELIVERY_FIELDS)} FROM webhook_deliveries WHERE endpoint_id = ? {only}"
                "ORDER BY created_at DESC, rowid DESC LIMIT ?", [endpoint_id, *params, limit]).fetchall()
            ids = [row["delivery_id"] for row in rows]
            attempts = self._conn.execute(
                f"SELECT {', '.join(ATTEMPT_FIELDS)} FROM webhook_attempts WHERE delivery_id IN "
                f"({', '.join('?' for _ in ids)}) ORDER BY attempt", ids).fetchall() if ids else []
        by_delivery: dict[str, list[dict[str, Any]]] = {}
        for attempt in attempts:
            by_delivery.setdefault(attempt["delivery_id"], []).append(dict(attempt))
        return [{**dict(row), "attempt_log": by_delivery.get(row["delivery_id"], [])} for row in rows]

    def get_webhook_delivery(self, delivery_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {', '.join(DELIVERY_FIELDS)} FROM webhook_deliveries "
                                     "WHERE delivery_id = ?", (delivery_id,)).fetchone()
        return dict(row) if row is not None else None

    def due_webhook_deliveries(self, now: float, *, limit: int = 100) -> list[dict[str, Any]]:
        """Pending deliveries whose next attempt is due at ``now`` (epoch seconds), of endpoints that exist,
        oldest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join('d.' + f for f in DELIVERY_FIELDS)} FROM webhook_deliveries d "
                "JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id "
                "WHERE d.status = 'pending' AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.rowid LIMIT ?",
                (now, limit)).fetchall()
        return [dict(row) for row in rows]

    def next_webhook_due(self) -> float | None:
        """When the earliest pending delivery is due (epoch seconds); None: nothing pending."""
        with self._lock:
            return self._conn.execute("SELECT MIN(next_attempt_at) FROM webhook_deliveries "
                                      "WHERE status = 'pending'").fetchone()[0]

    def update_webhook_delivery(self, delivery_id: str, *, attempt: dict[str, Any] | None = None,
                                **fields: Any) -> bool:
        """Set ``fields`` of a delivery, and record ``attempt`` with them in one transaction. False: no such
        delivery (its endpoint was deleted meanwhile)."""
        unknown = set(fields) - set(DELIVERY_FIELDS)
        if unknown:
            raise ValueError(f"unknown delivery fields: {sorted(unknown)}")
        with self._lock:
            self._conn.execute("BEGIN")
            changed = self._conn.execute(
                f"UPDATE webhook_deliveries SET {', '.join(f'{k} = ?' for k in fields)} WHERE delivery_id = ?",
                [*fields.values(), delivery_id]).rowcount
            if changed and attempt is not None:
                values = [attempt.get(field) for field in ATTEMPT_FIELDS]
                self._conn.execute(f"INSERT INTO webhook_attempts ({', '.join(ATTEMPT_FIELDS)}) "
                                   f"VALUES ({', '.join('?' for _ in ATTEMPT_FIELDS)})", values)
            self._conn.execute("COMMIT")
        return bool(changed)
