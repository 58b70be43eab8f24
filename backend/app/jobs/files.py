"""Uploaded fine-tuning files (the /v1 files API's domain): checked line by line, kept under the data directory.

A fine-tuning file is JSONL in one format, the same on every line: chat examples
``{"messages": [{"role": ..., "content": ...}, ...]}`` (trained on the final assistant turn),
prompt/completion examples ``{"prompt": ..., "completion": ...}``, or preference pairs for DPO (OpenAI's
``{"input": {"messages": ...}, "preferred_output": [...], "non_preferred_output": [...]}`` or TRL's
``{"prompt", "chosen", "rejected"}``). Each line is parsed as training
will parse it, so an upload that passes trains, and one that does not names its first bad line.
The bytes live in ``<data_dir>/files/<file id>.jsonl`` (inside an allowed dataset root by default,
so a job reads the file where it is); the records, in the store's ``files`` table.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from ..core.errors import ServiceError
from ..core.settings import Settings
from ..sft.errors import DatasetError
from ..sft.formats import RawRows, convert_rows
from ..sft.jsontext import JSONTextError, loads_text
from ..store import SQLiteStore

FINE_TUNE = "fine-tune"
RESULTS = "fine-tune-results"
#: Purposes OpenAI knows; this server keeps fine-tuning files only.
KNOWN_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
FORMAT_NAMES = {"messages": "chat (messages)", "prompt_completion": "prompt/completion",
                "openai_preference": "preference (input/preferred_output/non_preferred_output)",
                "preference": "preference (prompt/chosen/rejected)"}
_CHUNK = 1024 * 1024


class FileError(ServiceError):
    """A file request that cannot be served: ``field`` names the request field at fault, ``code`` says
    what kind of problem it is (each API surface presents both in its own error shape)."""

    error_type = "invalid_file"

    def __init__(self, detail: str, *, field: str | None, code: str | None = None):
        super().__init__(detail, errors=[{"field": field, "message": detail, "type": code or self.error_type}])
        self.field = field
        self.code = code


class InvalidFile(FileError):
    status_code = 400


class FileTooLarge(FileError):
    status_code = 413


class FileNotFound(FileError, LookupError):
    status_code = 404

    def __init__(self, file_id: str, *, field: str = "file_id"):
        super().__init__(f"No such File object: {file_id}", field=field, code="file_not_found")
        self.file_id = file_id


class FileInUse(FileError):
    status_code = 409


def file_object(record: dict[str, Any]) -> dict[str, Any]:
    """A stored file as OpenAI's ``file`` object."""
    return {
        "id": record["file_id"],
        "object": "file",
        "bytes": record["bytes"],
        "created_at": record["created_at"],
        "filename": record["filename"],
        "purpose": record["purpose"],
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def save_upload(source: BinaryIO, *, filename: str | None, purpose: str, store: SQLiteStore,
                settings: Settings, owner: str | None = None) -> dict[str, Any]:
    """Copy an upload under the files directory (at most ``settings.max_upload_bytes``), check it, record it."""
    if purpose != FINE_TUNE:
        known = purpose in KNOWN_PURPOSES
        raise InvalidFile(f"purpose '{purpose}' is {'not supported by this server' if known else 'unknown'}; "
                          f"upload fine-tuning data with purpose '{FINE_TUNE}'", field="purpose")
    filename = Path(filename or "upload.jsonl").name[:255] or "upload.jsonl"
    folder = settings.resolved_files_dir
    folder.mkdir(parents=True, exist_ok=True)
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    staging = folder / f".{file_id}.part"
    limit = settings.max_upload_bytes
    size = 0
    try:
        with staging.open("wb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise FileTooLarge(f"{filename} is larger than this server accepts ({limit:,} bytes; "
                                       "set SFT_MAX_UPLOAD_BYTES to change it)", field="file", code="file_too_large")
                out.write(chunk)
        rows, fmt = check_training_file(staging, filename)
        path = folder / f"{file_id}.jsonl"
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return _record(store, file_id=file_id, filename=filename, size=size, path=path,
                   details={"rows": rows, "format": fmt}, owner=owner)


def save_generated(content: bytes, *, filename: str, rows: int, fmt: str, store: SQLiteStore, settings: Settings,
                   owner: str | None) -> dict[str, Any]:
    """Keep a fine-tuning file the service wrote itself (its rows well-formed by construction) as ``owner``'s
    upload: listed with their files, readable by their jobs, and by no other user's. At most
    ``settings.max_upload_bytes``, as an upload (FileTooLarge naming ``filename`` otherwise)."""
    if len(content) > settings.max_upload_bytes:
        raise FileTooLarge(f"{filename} would be {len(content):,} bytes, larger than this server accepts "
                           f"({settings.max_upload_bytes:,} bytes; set SFT_MAX_UPLOAD_BYTES to change it)",
                           field=None, code="file_too_large")
    folder = settings.resolved_files_dir
    folder.mkdir(parents=True, exist_ok=True)
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    staging, path = folder / f".{file_id}.part", folder / f"{file_id}.jsonl"
    try:
        staging.write_bytes(content)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return _record(store, file_id=file_id, filename=filename, size=len(content), path=path,
                   details={"rows": rows, "format": fmt}, owner=owner)


def _record(store: SQLiteStore, *, file_id: str, filename: str, size: int, path: Path, details: dict[str, Any],
            owner: str | None) -> dict[str, Any]:
    record = {"file_id": file_id, "filename": filename, "purpose": FINE_TUNE, "bytes": size,
              "created_at": int(time.time()), "path": str(path), "details": details, "owner": owner}
    store.insert_file(record)
    return record


def check_training_file(path: Path, filename: str) -> tuple[int, str]:
    """Check every line of a fine-tuning JSONL file; return its number of examples and its format.

    Raises:
        InvalidFile: naming the file, the line and what is wrong with it.
    """
    fmt: str | None = None
    first_line = 0
    count = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            def bad(reason: str) -> InvalidFile:
                return InvalidFile(f"Invalid file {filename}, line {lineno}: {reason}", field="file",
                                   code="invalid_file_format")

            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise bad("not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                row = loads_text(line)
            except json.JSONDecodeError as exc:
                raise bad(f"not valid JSON ({exc.msg}, column {exc.colno})") from None
            except JSONTextError as exc:
                raise bad(str(exc)) from None
            if not isinstance(row, dict):
                raise bad(f"expected a JSON object, got {type(row).__name__}")
            row_fmt = _row_format(row)
            if row_fmt is None:
                raise bad('expected a chat example {"messages": [...]}, a prompt/completion example '
                          '{"prompt": ..., "completion": ...} or a preference example {"input": {"messages": [...]}, '
                          f'"preferred_output": [...], "non_preferred_output": [...]}}; found keys {sorted(row)}')
            if fmt is None:
                fmt, first_line = row_fmt, lineno
            elif row_fmt != fmt:
                raise bad(f"a {FORMAT_NAMES[row_fmt]} example, but line {first_line} is a {FORMAT_NAMES[fmt]} "
                          "example; use one format for the whole file")
            if row_fmt == "messages":
                _check_content_is_text(row, bad)
            try:
                convert_rows(RawRows(filename, [row], lambda _: f"line {lineno}"), dataset_format=row_fmt)
            except DatasetError as exc:
                raise bad(exc.reason) from None
            count += 1
    if fmt is None:
        raise InvalidFile(f"Invalid file {filename}: it has no examples (expected one JSON object per line)",
                          field="file", code="invalid_file_format")
    return count, fmt


def _row_format(row: dict[str, Any]) -> str | None:
    if {"input", "preferred_output", "non_preferred_output"} & row.keys():
        return "openai_preference"
    if {"chosen", "rejected"} & row.keys():
        return "preference"
    if "messages" in row:
        return "messages"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    return None


def _check_content_is_text(row: dict[str, Any], bad) -> None:
    messages = row["messages"]
    if not isinstance(messages, list):
        return  # the converter names this one
    for n, message in enumerate(messages, start=1):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            raise bad(f"messages[{n}].content is a list of content parts; this server trains on text "
                      "content only")


def dataset_roots_allow(settings: Settings, path: str) -> bool:
    """Whether jobs may read a stored file (the data directory must be an allowed dataset root)."""
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(root) for root in settings.resolved_dataset_roots)


def file_users(manager: Any, path: str) -> list[Any]:
    """Jobs (anyone's) whose config reads ``path``."""
    return [job for job in manager.select_jobs()[0]
            if path in (job.config.get("dataset_name"), job.config.get("eval_dataset_name"))]


def delete_file(store: SQLiteStore, record: dict[str, Any], *, busy_job: str | None) -> None:
    """Forget a file and remove its bytes; refused (409) while a job that may still train reads it."""
    if busy_job is not None:
        raise FileInUse(f"File {record['file_id']} is used by job {busy_job}, which may still train on "
                        "it; cancel the job first", field="file_id", code="file_in_use")
    store.delete_file(record["file_id"])
    Path(record["path"]).unlink(missing_ok=True)


# Result files


RESULT_COLUMNS = ("step", "train_loss", "valid_loss", "learning_rate", "grad_norm", "epoch", "tokens_seen",
                  "elapsed_seconds")
_METRIC_COLUMNS = {"loss": "train_loss", "eval_loss": "valid_loss", "learning_rate": "learning_rate",
                   "grad_norm": "grad_norm", "epoch": "epoch", "num_tokens": "tokens_seen",
                   "elapsed_seconds": "elapsed_seconds"}
#: A DPO job's extra result columns (present only when its metrics have them).
DPO_RESULT_COLUMNS = {"rewards/margins": "train_reward_margin", "rewards/accuracies": "train_reward_accuracy",
                      "rewards/chosen": "train_reward_chosen", "rewards/rejected": "train_reward_rejected"}


def metrics_csv(metrics: list[dict[str, Any]]) -> str:
    """A job's step metrics as CSV, one row per step; a resumed attempt's values replace the earlier one's."""
    by_step: dict[int, dict[str, Any]] = {}
    dpo = any("rewards/margins" in point for point in metrics)
    columns = {**_METRIC_COLUMNS, **DPO_RESULT_COLUMNS} if dpo else _METRIC_COLUMNS
    for point in metrics:
        row = by_step.setdefault(int(point["step"]), {"step": int(point["step"])})
        row.update({column: point[key] for key, column in columns.items() if key in point})
    out = io.StringIO()
    fields = [*RESULT_COLUMNS, *DPO_RESULT_COLUMNS.values()] if dpo else RESULT_COLUMNS
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for step in sorted(by_step):
        writer.writerow(by_step[step])
    return out.getvalue()


def write_results_file(store: SQLiteStore, settings: Settings, job_id: str, metrics: list[dict[str, Any]], *,
                       owner: str | None = None) -> str:
    """Write a finished job's step-metrics CSV as a file (purpose fine-tune-results); return its id."""
    folder = settings.resolved_files_dir
    folder.mkdir(parents=True, exist_ok=True)
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    data = metrics_csv(metrics).encode()
    path = folder / f"{file_id}.csv"
    path.write_bytes(data)
    store.insert_file({"file_id": file_id, "filename": "step_metrics.csv", "purpose": RESULTS, "bytes": len(data),
                       "created_at": int(time.time()), "path": str(path), "details": {"job_id": job_id}, "owner": owner})
    return file_id
