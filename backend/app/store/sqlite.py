"""SQLite persistence for jobs, saved configs, job events, metrics and exports; uploaded files, the
OpenAI-compatible API's extra job data, and the webhooks (``webhooks.py``: endpoints and the outbox).

One connection shared by the API and the worker threads behind a lock; WAL mode and a commit on
every change, so a record survives ``kill -9`` of the server the moment the call returns.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..sft.jsontext import loads_stored
from .webhooks import WEBHOOK_SCHEMA, WebhookTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id          TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL,
    status          TEXT NOT NULL,
    config          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    completed_at    TEXT,
    error           TEXT,
    error_detail    TEXT,
    result          TEXT,
    progress        TEXT,
    attempts        TEXT,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT,
    executor        TEXT,
    handle          TEXT,
    training_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS configs (
    config_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    config      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    job_id   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    time     TEXT NOT NULL,
    type     TEXT NOT NULL,
    level    TEXT NOT NULL,
    message  TEXT NOT NULL,
    data     TEXT,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS metrics (
    job_id  TEXT NOT NULL,
    step    INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_job ON metrics(job_id, step);
CREATE TABLE IF NOT EXISTS files (
    file_id     TEXT PRIMARY KEY,
    filename    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    path        TEXT NOT NULL,
    details     TEXT
);
CREATE TABLE IF NOT EXISTS openai_jobs (
    job_id  TEXT PRIMARY KEY,
    data    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exports (
    export_id     TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL,
    format        TEXT NOT NULL,
    type          TEXT,
    status        TEXT NOT NULL,
    path          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    completed_at  TEXT,
    error         TEXT,
    result        TEXT
);
CREATE INDEX IF NOT EXISTS exports_job ON exports(job_id);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    admin       INTEGER NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
"""

#: Job statuses a record never leaves except by an explicit resume (``JobStatus.is_terminal()``'s; the
#: store sits below ``app.jobs``, so it names them itself).
TERMINAL_STATUSES = ("completed", "failed", "stopped")

#: Columns added to a table after its first release: (table, column, declaration). A database made
#: by an older version gains them when opened; old rows read the declared default.
MIGRATIONS = (
    # Which executor runs the job, the handle it returned (JSON) and the last training event consumed.
    ("jobs", "executor", "TEXT"),
    ("jobs", "handle", "TEXT"),
    ("jobs", "training_seq", "INTEGER NOT NULL DEFAULT 0"),
    # The user (API key name) a job, saved config or uploaded file belongs to; NULL: made before keys, the admins'.
    ("jobs", "owner", "TEXT"),
    ("configs", "owner", "TEXT"),
    ("files", "owner", "TEXT"),
    # The fit planner's estimate made at submit (JSON).
    ("jobs", "memory_plan", "TEXT"),
)


class DatabaseUnavailable(RuntimeError):
    """The database file cannot be opened or set up; the message names it."""


class TerminalJob(ValueError):
    """A status change of a job whose record has ended, other than an explicit resume."""


_JSON_JOB_FIELDS = ("config", "error_detail", "result", "progress", "attempts", "handle", "memory_plan")
JOB_FIELDS = (
    "job_id", "seq", "status", "config", "created_at", "started_at", "completed_at", "error",
    "error_detail", "result", "progress", "attempts", "idempotency_key", "request_hash",
    "executor", "handle", "training_seq", "owner", "memory_plan",
)


EXPORT_FIELDS = (
    "export_id", "job_id", "format", "type", "status", "path", "created_at", "started_at", "completed_at",
    "error", "result",
)


class SQLiteStore(WebhookTables):
    """Durable records of jobs, configs, events, metrics, files, exports, API keys and webhooks (a ``JobStore``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            with self._lock:
                self._conn.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: a commit survives a killed process (not a power cut) without an fsync each.
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(SCHEMA + WEBHOOK_SCHEMA)
                self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(
                f"cannot open the database {self.path} ({type(exc).__name__}: {exc}); check SFT_DATABASE_PATH "
                "(or SFT_DATA_DIR) and that the directory is writable"
            ) from exc

    def _migrate(self) -> None:
        for table, column, declaration in MIGRATIONS:
            columns = {row["name"] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        self._configs_unique_per_owner()

    def _configs_unique_per_owner(self) -> None:
        """Config names are unique per owner (a database made before had them unique server-wide)."""
        unique = [row["name"] for row in self._conn.execute("PRAGMA index_list(configs)") if row["origin"] == "u"]
        if any([c["name"] for c in self._conn.execute(f"PRAGMA index_info({index})")] == ["name"]
               for index in unique):
            self._conn.executescript(
                "BEGIN; ALTER TABLE configs RENAME TO configs_old;"
                "CREATE TABLE configs (config_id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL,"
                " created_at TEXT NOT NULL, owner TEXT);"
                "INSERT INTO configs SELECT config_id, name, config, created_at, owner FROM configs_old;"
                "DROP TABLE configs_old; COMMIT;"
            )
        self._conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS configs_owner_name ON configs (IFNULL(owner, ''), name)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)

    def _query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # Jobs

    def insert_job(self, record: dict[str, Any]) -> None:
        row = {field: record.get(field) for field in JOB_FIELDS}
        row["training_seq"] = row["training_seq"] or 0
        for field in _JSON_JOB_FIELDS:
            row[field] = _dumps(row[field])
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", list(row.values()))

    def update_job(self, job_id: str, *, resume: bool = False, outbox: Sequence[dict[str, Any]] = (),
                   **fields: Any) -> None:
        """Write ``fields`` of a job's record, and the webhook deliveries it causes (``outbox``) in the same
        transaction.

        Raises:
            TerminalJob: ``fields`` changes the status of a job that has ended, and ``resume`` is False.
        """
        unknown = set(fields) - set(JOB_FIELDS)
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        values = [_dumps(v) if k in _JSON_JOB_FIELDS else v for k, v in fields.items()]
        assignments = ", ".join(f"{k} = ?" for k in fields)
        guard, params = "", [*values, job_id]
        if "status" in fields and not resume:
            guard = f" AND (status = ? OR status NOT IN ({', '.join('?' for _ in TERMINAL_STATUSES)}))"
            params += [fields["status"], *TERMINAL_STATUSES]
        with self._lock, self._transaction(outbox):
            changed = self._conn.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?{guard}", params).rowcount
            if guard and not changed:
                row = self._conn.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                if row is not None:
                    raise TerminalJob(f"job {job_id} has ended ({row['status']}); only a resume moves it "
                                      f"(asked: {fields['status']})")

    def delete_job(self, job_id: str) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            for table in ("jobs", "events", "metrics", "openai_jobs", "exports"):
                self._conn.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
            self._conn.execute("COMMIT")

    def load_jobs(self) -> list[dict[str, Any]]:
        rows = self._query(f"SELECT {', '.join(JOB_FIELDS)} FROM jobs ORDER BY seq")
        return [_job_from_row(row) for row in rows]

    def max_job_seq(self) -> int:
        return self._query("SELECT COALESCE(MAX(seq), 0) FROM jobs")[0][0]

    # Configs

    def insert_config(self, config_id: str, name: str, config: dict[str, Any], created_at: str, *,
                      owner: str | None = None) -> None:
        self._execute(
            "INSERT INTO configs (config_id, name, config, created_at, owner) VALUES (?, ?, ?, ?, ?)",
            (config_id, name, _dumps(config), created_at, owner),
        )

    def delete_config(self, config_id: str) -> None:
        self._execute("DELETE FROM configs WHERE config_id = ?", (config_id,))

    def load_configs(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT config_id, name, config, created_at, owner FROM configs ORDER BY created_at, rowid")
        return [{**dict(row), "config": loads_stored(row["config"])} for row in rows]

    # Events and metrics

    def add_event(self, job_id: str, seq: int, time: str, type: str, level: str, message: str,
                  data: dict[str, Any] | None, *, outbox: Sequence[dict[str, Any]] = ()) -> None:
        with self._lock, self._transaction(outbox):
            self._conn.execute(
                "INSERT INTO events (job_id, seq, time, type, level, message, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, seq, time, type, level, message, _dumps(data)),
            )

    def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT seq, time, type, level, message, data FROM events WHERE job_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        )
        return [{**dict(row), "data": loads_stored(row["data"]) if row["data"] else {}} for row in rows]

    def max_event_seq(self, job_id: str) -> int:
        return self._query("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?", (job_id,))[0][0]

    def add_metric(self, job_id: str, step: int, attempt: int, data: dict[str, Any]) -> None:
        self._execute(
            "INSERT INTO metrics (job_id, step, attempt, data) VALUES (?, ?, ?, ?)",
            (job_id, step, attempt, _dumps(data)),
        )

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT data FROM metrics WHERE job_id = ? ORDER BY rowid", (job_id,))
        return [loads_stored(row["data"]) for row in rows]

    # API keys (``store.keys.KeyStore`` is their logic; only a hash of each secret is kept)

    def insert_key(self, record: dict[str, Any]) -> None:
        self._execute("INSERT INTO api_keys (key_id, name, admin, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                      (record["key_id"], record["name"], int(record["admin"]), record["secret_hash"],
                       record["created_at"]))

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        """A key's record, its secret's hash included; None: no such key."""
        rows = self._query("SELECT key_id, name, admin, secret_hash, created_at, revoked_at FROM api_keys "
                           "WHERE key_id = ?", (key_id,))
        return dict(rows[0]) if rows else None

    def load_keys(self, *, include_revoked: bool = True) -> list[dict[str, Any]]:
        """Keys' records (without the hashes), oldest first."""
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = self._query(f"SELECT key_id, name, admin, created_at, revoked_at FROM api_keys {where} "
                           "ORDER BY created_at, rowid")
        return [dict(row) for row in rows]

    def revoke_key(self, key_id: str, revoked_at: str) -> None:
        self._execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                      (revoked_at, key_id))

    def count_active_keys(self) -> int:
        return self._query("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")[0][0]

    # Files (uploaded datasets and generated result files; the bytes live on disk at ``path``)

    def insert_file(self, record: dict[str, Any]) -> None:
        self._execute(
            "INSERT INTO files (file_id, filename, purpose, bytes, created_at, path, details, owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record["file_id"], record["filename"], record["purpose"], record["bytes"], record["created_at"],
             record["path"], _dumps(record.get("details")), record.get("owner")),
        )

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM files WHERE file_id = ?", (file_id,))
        return _file_from_row(rows[0]) if rows else None

    def load_files(self, *, purpose: str | None = None, newest_first: bool = True,
                   owner: str | None = None) -> list[dict[str, Any]]:
        """Uploaded and result files, optionally of one purpose and of one owner (None: everyone's)."""
        order = "DESC" if newest_first else "ASC"
        conditions = [(column, value) for column, value in (("purpose", purpose), ("owner", owner)) if value is not None]
        where = ("WHERE " + " AND ".join(f"{column} = ?" for column, _ in conditions)) if conditions else ""
        rows = self._query(f"SELECT * FROM files {where} ORDER BY rowid {order}", [v for _, v in conditions])
        return [_file_from_row(row) for row in rows]

    def delete_file(self, file_id: str) -> None:
        self._execute("DELETE FROM files WHERE file_id = ?", (file_id,))

    # What the OpenAI-compatible API keeps about a job beyond its config (suffix, metadata, file ids...)

    def put_openai_job(self, job_id: str, data: dict[str, Any]) -> None:
        self._execute("INSERT INTO openai_jobs (job_id, data) VALUES (?, ?) "
                      "ON CONFLICT(job_id) DO UPDATE SET data = excluded.data", (job_id, _dumps(data)))

    def load_openai_jobs(self) -> dict[str, dict[str, Any]]:
        return {row["job_id"]: loads_stored(row["data"]) for row in self._query("SELECT job_id, data FROM openai_jobs")}

    # Exports

    def insert_export(self, record: dict[str, Any]) -> None:
        row = {field: record.get(field) for field in EXPORT_FIELDS}
        row["result"] = _dumps(row["result"])
        self._execute(f"INSERT INTO exports ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                      list(row.values()))

    def update_export(self, export_id: str, *, outbox: Sequence[dict[str, Any]] = (), **fields: Any) -> None:
        unknown = set(fields) - set(EXPORT_FIELDS)
        if unknown:
            raise ValueError(f"unknown export fields: {sorted(unknown)}")
        values = [_dumps(v) if k == "result" else v for k, v in fields.items()]
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self._lock, self._transaction(outbox):
            self._conn.execute(f"UPDATE exports SET {assignments} WHERE export_id = ?", [*values, export_id])

    def exports(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Export records, oldest first: of one job, or all of them."""
        where, params = ("WHERE job_id = ?", (job_id,)) if job_id is not None else ("", ())
        rows = self._query(f"SELECT {', '.join(EXPORT_FIELDS)} FROM exports {where} ORDER BY created_at, rowid",
                           params)
        return [{**dict(row), "result": loads_stored(row["result"]) if row["result"] else None} for row in rows]

    def delete_export(self, export_id: str) -> None:
        self._execute("DELETE FROM exports WHERE export_id = ?", (export_id,))


def _file_from_row(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    record["details"] = loads_stored(record["details"]) if record["details"] else {}
    return record


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _job_from_row(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    for field in _JSON_JOB_FIELDS:
        if record[field] is not None:
            record[field] = loads_stored(record[field])
    return record
