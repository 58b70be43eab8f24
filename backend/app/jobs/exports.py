"""Exports of finished jobs (GGUF, merged, adapter): records, a queue, one worker thread.

An export is recorded ``pending`` at once and written in the background, one at a time (a merge
holds a full-precision copy of the base model); its failure becomes its state, never an HTTP error.
Files go to ``<job output_dir>/exports/<export_id>/``; records live in the job store. A job keeps at
most ``SFT_MAX_EXPORTS_PER_JOB`` exports; asking again for one it has (or is making) returns that one.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

from ..core.errors import JobConflict, ServiceError
from ..sft import export as exporting
from ..sft.artifacts import Artifact, job_artifact
from ..sft.models import release_memory, resolve_model
from .executors.thread import lower_thread_priority
from .executors.training import classify_error
from .manager import SFTJobManager
from .models import SFTJob, utcnow

logger = logging.getLogger(__name__)

INTERRUPTED_ERROR = "interrupted: the server stopped while this export was running; ask for it again"


class ExportStatus(str, Enum):
    """Where an export is. Terminal states never change."""

    #: Recorded, waiting for the export worker.
    PENDING = "pending"
    #: Being merged, converted or copied.
    RUNNING = "running"
    #: Written; its files can be downloaded.
    COMPLETED = "completed"
    #: Ended by an error; ``error`` says why.
    FAILED = "failed"

    def is_terminal(self) -> bool:
        return self in (ExportStatus.COMPLETED, ExportStatus.FAILED)


class ExportNotFound(ServiceError, LookupError):
    status_code = 404


class ExportManager:
    """Starts, runs, remembers and deletes a job manager's exports (see ``ExportManager.of``)."""

    _attach_lock = threading.Lock()

    def __init__(self, jobs: SFTJobManager):
        self.jobs = jobs
        self.store = jobs.store
        self.settings = jobs.settings
        self._queue: queue.Queue[tuple] = queue.Queue()
        # Submit's check-then-insert (limit, duplicates) and delete's check-then-remove, one at a time.
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._recover()

    @classmethod
    def of(cls, jobs: SFTJobManager) -> ExportManager:
        """The export manager of ``jobs``, created (and its records recovered) on first use: the server's
        start-up, or the first export request of a manager without a server."""
        with cls._attach_lock:
            manager = getattr(jobs, "_export_manager", None)
            if manager is None:
                manager = jobs._export_manager = cls(jobs)
            return manager

    def _recover(self) -> None:
        """Exports a dead process left unfinished become failed; their partial files, staging folder and
        converter log go."""
        for record in self.store.exports():
            if not ExportStatus(record["status"]).is_terminal():
                _remove_files(record)
                self.store.update_export(record["export_id"], status=ExportStatus.FAILED.value,
                                         completed_at=utcnow(), error=INTERRUPTED_ERROR)

    def toolchain(self) -> exporting.Toolchain:
        return exporting.Toolchain(converter_dir=self.settings.resolved_gguf_converter_dir,
                                   quantizer=exporting.find_quantizer(self.settings.llama_quantize))

    def capabilities(self) -> dict[str, Any]:
        return exporting.capabilities(self.toolchain())

    def submit(self, job: SFTJob, *, fmt: str, gguf_type: str | None) -> dict[str, Any]:
        """Check the request, record a pending export and queue it; return its record. When the job already
        has this export (pending, running or completed, its files on disk), return that one instead.

        Raises:
            RequestError: a format, type or architecture this machine cannot export (nothing is recorded).
            ArtifactUnavailable: the job has not finished with an artifact, or has no adapter for this format.
            JobConflict: the job already has SFT_MAX_EXPORTS_PER_JOB exports.
        """
        artifact = job_artifact(job, model_roots=self.settings.resolved_model_roots)
        tools = self.toolchain()
        cache_dir = self.settings.resolved_model_cache_dir
        gguf_type = exporting.check_request(artifact, fmt=fmt, gguf_type=gguf_type, tools=tools, cache_dir=cache_dir)
        card = card_facts(job, metrics=self.jobs.store.metrics(job.job_id), served_base=self._served_base(artifact))
        with self._lock:
            kept = [r for r in self.store.exports(job.job_id) if r["status"] != ExportStatus.FAILED.value]
            for record in kept:
                if (record["format"], record["type"]) == (fmt, gguf_type) and _files_present(record):
                    return _public(record)
            limit = self.settings.max_exports_per_job
            if len(kept) >= limit:
                raise JobConflict(
                    f"job {job.job_id} already has {len(kept)} exports, the most one job keeps "
                    f"(SFT_MAX_EXPORTS_PER_JOB={limit}); delete one (DELETE /api/sft/jobs/{job.job_id}/exports/"
                    "{export_id}) first")
            export_id = str(uuid.uuid4())
            record = {"export_id": export_id, "job_id": job.job_id, "format": fmt, "type": gguf_type,
                      "status": ExportStatus.PENDING.value, "path": str(artifact.output_dir / "exports" / export_id),
                      "created_at": utcnow(), "started_at": None, "completed_at": None, "error": None,
                      "result": None}
            self.store.insert_export(record)
            if self._worker is None:
                # A daemon: a server stopping mid-export is not held up; the export is marked interrupted
                # when it starts again (and its converter, if any, dies with the process: see run_tool).
                self._worker = threading.Thread(target=self._work, name="sft-export", daemon=True)
                self._worker.start()
        self._queue.put((record, artifact, tools, card))
        return self.get(job.job_id, export_id)

    def list(self, job_id: str) -> list[dict[str, Any]]:
        return [_public(record) for record in self.store.exports(job_id)]

    def get(self, job_id: str, export_id: str) -> dict[str, Any]:
        """The export's record. Raises ExportNotFound."""
        return _public(self._record(job_id, export_id))

    def delete(self, job_id: str, export_id: str) -> dict[str, Any]:
        """Remove an export that is not running: its record, folder and log. Returns the record as it was.

        Raises:
            ExportNotFound: no such export.
            JobConflict: it is running now.
        """
        with self._lock:
            record = self._record(job_id, export_id)
            if record["status"] == ExportStatus.RUNNING.value:
                raise JobConflict(f"Export {export_id} is running; delete it once it has completed or failed")
            self.store.delete_export(export_id)  # a pending one is skipped when the worker reaches it
        _remove_files(record)
        return _public(record)

    def finished_folder(self, job_id: str, export_id: str) -> tuple[dict[str, Any], Path]:
        """A completed export's record and folder.

        Raises:
            ExportNotFound: no such export.
            JobConflict: it has not completed, or its files are gone.
        """
        record = self.get(job_id, export_id)
        if record["status"] != ExportStatus.COMPLETED.value:
            raise JobConflict(f"Export {export_id} is {record['status']}; only a completed export can be downloaded"
                              + (f" ({record['error']})" if record["error"] else ""))
        folder = Path(record["path"])
        if not folder.is_dir():
            raise JobConflict(f"Export {export_id}'s folder {folder} is no longer on disk")
        return record, folder

    def archive(self, job: SFTJob, export_id: str) -> tuple[str, int, Iterator[bytes]]:
        """A completed export as a .tar streamed from its files (no copy on disk, whatever the number of
        downloads): its file name, its exact size and its bytes."""
        record, folder = self.finished_folder(job.job_id, export_id)
        size, chunks = exporting.archive_stream(folder)
        label = record["format"] + (f"-{record['type']}" if record["type"] else "")
        return f"{job.job_id}-{label}.tar", size, chunks

    def file(self, job_id: str, export_id: str, name: str) -> Path:
        """One file of a completed export, by a name the export listed ('../x' never becomes a path)."""
        record, folder = self.finished_folder(job_id, export_id)
        names = [f["name"] for f in record["result"]["files"]]
        if name not in names:
            raise ExportNotFound(f"Export {export_id} has no file {name!r} (it has: {', '.join(names)})")
        return folder / name

    def wait(self, job_id: str, export_id: str, timeout: float) -> dict[str, Any]:
        """Block until the export ends (or ``timeout`` passes); return its record."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(job_id, export_id)
            if ExportStatus(record["status"]).is_terminal():
                return record
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Export {export_id} is still {record['status']} after {timeout}s")
            time.sleep(0.05)

    def _record(self, job_id: str, export_id: str) -> dict[str, Any]:
        for record in self.store.exports(job_id):
            if record["export_id"] == export_id:
                return record
        raise ExportNotFound(f"Export {export_id} not found for job {job_id}")

    def _served_base(self, artifact: Artifact) -> str:
        try:
            ref = resolve_model(artifact.base_model, cache_dir=self.settings.resolved_model_cache_dir,
                                allowed_roots=self.settings.resolved_model_roots)
        except Exception:  # the card still names the base as configured
            return artifact.base_model
        return ref.path

    def _work(self) -> None:
        lower_thread_priority()
        while True:
            task = self._queue.get()
            try:
                self._run(*task)
            except Exception:  # the store went away (closed): the worker lives on for the next export
                logger.exception("export worker: could not record export %s", task[0]["export_id"])

    def _run(self, record: dict[str, Any], artifact: Artifact, tools: exporting.Toolchain,
             card: dict[str, Any]) -> None:
        """The worker's body: any exception becomes ``failed`` with a clear message."""
        export_id, target = record["export_id"], Path(record["path"])
        with self._lock:
            if not any(r["export_id"] == export_id for r in self.store.exports(record["job_id"])):
                return  # deleted while it waited
            self.store.update_export(export_id, status=ExportStatus.RUNNING.value, started_at=utcnow())
        try:
            result = exporting.export(artifact, fmt=record["format"], gguf_type=record["type"], target=target,
                                      tools=tools, cache_dir=self.settings.resolved_model_cache_dir, card=card,
                                      log_file=_log_file(record))
        except BaseException as exc:  # noqa: BLE001 - an export's failure must become its state
            logger.exception("export %s failed", export_id)
            shutil.rmtree(target, ignore_errors=True)
            error = getattr(exc, "detail", None) or classify_error(exc)["message"]
            self.store.update_export(export_id, status=ExportStatus.FAILED.value, completed_at=utcnow(), error=error,
                                     outbox=self._webhooks(record, ExportStatus.FAILED, error))
            exc.__traceback__ = None  # its frames would keep a merged model alive
        else:
            self.store.update_export(export_id, status=ExportStatus.COMPLETED.value, completed_at=utcnow(),
                                     result=result, outbox=self._webhooks(record, ExportStatus.COMPLETED))
        finally:
            self.jobs.webhooks.notify()
            release_memory()

    def _webhooks(self, record: dict[str, Any], status: ExportStatus, error: str | None = None) -> list[dict[str, Any]]:
        """The webhook deliveries of an export's end (written with it)."""
        return self.jobs.webhooks.for_export(self.jobs.jobs.get(record["job_id"]), record, status=status.value,
                                             error=error)


def _log_file(record: dict[str, Any]) -> Path:
    return Path(record["path"]).parent / f"{record['export_id']}.log"


def _files_present(record: dict[str, Any]) -> bool:
    return record["status"] != ExportStatus.COMPLETED.value or Path(record["path"]).is_dir()


def _remove_files(record: dict[str, Any]) -> None:
    """An export's folder, its GGUF staging folder (a merged copy of the model) and its converter log."""
    target = Path(record["path"])
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(exporting.staging_folder(target), ignore_errors=True)
    _log_file(record).unlink(missing_ok=True)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    base = f"/api/sft/jobs/{record['job_id']}/exports/{record['export_id']}"
    done = record["status"] == ExportStatus.COMPLETED.value
    return {**record, "download_url": f"{base}/download" if done else None,
            "files_url": f"{base}/files" if done else None}


def card_facts(job: Any, *, metrics: list[dict[str, Any]], served_base: str) -> dict[str, Any]:
    """What a model card says about ``job`` (its config, result and metrics); ``served_base`` is the
    base model as another server loads it (a Hub id, or the local directory it was converted to)."""
    config, result = job.sft_config, job.result or {}
    losses = [m["loss"] for m in metrics if m.get("loss") is not None]
    evals = [m["eval_loss"] for m in metrics if m.get("eval_loss") is not None]
    lora = None
    if config.use_lora:
        lora = {"r": config.lora_r, "alpha": config.lora_alpha, "target_modules": config.lora_target_modules}
    return {
        "job_id": job.job_id,
        "base_model": config.base_model,
        "served_base_model": served_base,
        "dataset_name": config.dataset_name,
        "method": "QLoRA" if config.use_qlora else "LoRA" if config.use_lora else "full fine-tune",
        "lora": lora,
        "global_step": result.get("global_step"),
        "max_steps": result.get("max_steps"),
        "train_loss": result.get("train_loss"),
        "last_loss": losses[-1] if losses else None,
        "eval_loss": result.get("eval_loss") if result.get("eval_loss") is not None else (evals[-1] if evals else None),
        "precision": result.get("precision"),
        "completed_at": job.completed_at,
    }
