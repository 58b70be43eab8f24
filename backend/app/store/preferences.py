"""SQLite table of the preferences users pick in "Try it": a prompt, the answer they preferred and the one they
did not, per user and per tuned job.

A part of ``SQLiteStore`` (a mixin over its connection and lock), as ``webhooks.py`` is.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

from ..sft.jsontext import loads_stored

PREFERENCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS preferences (
    preference_id  TEXT PRIMARY KEY,
    owner          TEXT,
    job_id         TEXT NOT NULL,
    prompt         TEXT NOT NULL,
    chosen         TEXT NOT NULL,
    rejected       TEXT NOT NULL,
    source         TEXT NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS preferences_owner_job ON preferences(owner, job_id);
"""

PREFERENCE_FIELDS = ("preference_id", "owner", "job_id", "prompt", "chosen", "rejected", "source", "created_at")


def _where(owner: str | None, job_id: str | None) -> tuple[str, list[Any]]:
    """``owner`` None: everyone's (an admin's view); ``job_id`` None: every job's."""
    conditions = [(column, value) for column, value in (("owner", owner), ("job_id", job_id)) if value is not None]
    where = ("WHERE " + " AND ".join(f"{column} = ?" for column, _ in conditions)) if conditions else ""
    return where, [value for _, value in conditions]


class PreferenceTables:
    """The preference methods of ``SQLiteStore`` (which provides ``_conn`` and ``_lock``)."""

    _conn: sqlite3.Connection
    _lock: threading.Lock

    def insert_preference(self, record: dict[str, Any]) -> None:
        row = {field: record.get(field) for field in PREFERENCE_FIELDS}
        row["prompt"] = json.dumps(row["prompt"])
        with self._lock:
            self._conn.execute(f"INSERT INTO preferences ({', '.join(row)}) "
                               f"VALUES ({', '.join('?' for _ in row)})", list(row.values()))

    def preferences(self, *, owner: str | None = None, job_id: str | None = None, limit: int | None = None,
                    offset: int = 0) -> list[dict[str, Any]]:
        """Preferences of ``owner`` (None: everyone's), of one job or all, oldest first."""
        where, params = _where(owner, job_id)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(PREFERENCE_FIELDS)} FROM preferences {where} ORDER BY created_at, rowid "
                "LIMIT ? OFFSET ?", [*params, -1 if limit is None else limit, offset]).fetchall()
        return [{**dict(row), "prompt": loads_stored(row["prompt"])} for row in rows]

    def count_preferences(self, *, owner: str | None = None, job_id: str | None = None) -> int:
        where, params = _where(owner, job_id)
        with self._lock:
            return self._conn.execute(f"SELECT COUNT(*) FROM preferences {where}", params).fetchone()[0]

    def get_preference(self, preference_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {', '.join(PREFERENCE_FIELDS)} FROM preferences "
                                     "WHERE preference_id = ?", (preference_id,)).fetchone()
        return None if row is None else {**dict(row), "prompt": loads_stored(row["prompt"])}

    def delete_preferences(self, *, preference_id: str | None = None, owner: str | None = None,
                           job_id: str | None = None) -> int:
        """Delete one preference (``preference_id``) or all of ``owner``'s for ``job_id``; return how many went."""
        where, params = _where(owner, job_id)
        if preference_id is not None:
            where, params = "WHERE preference_id = ?", [preference_id]
        elif not where:
            raise ValueError("name a preference_id, an owner or a job_id")
        with self._lock:
            return self._conn.execute(f"DELETE FROM preferences {where}", params).rowcount
