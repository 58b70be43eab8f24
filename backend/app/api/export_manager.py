"""Exports of finished jobs (GGUF, merged, adapter): records, a queue, one worker thread.

An export is recorded ``pending`` at once and written in the background, one at a time (a merge
holds a full-precision copy of the base model); its failure becomes its state, never an HTTP error.
Files go to ``<job output_dir>/exports/<export_id>/``; records live in the job store.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
import queue
from enum import Enum
from pathlib import Path
from typing import Any

from ..core.errors import ServiceError
from ..jobs.executors.thread import lower_thread_priority
from ..jobs.executors.training import classify_error
from ..jobs.manager import SFTJobManager
from ..jobs.models import SFTJob, utcnow
from ..sft import export as exporting
from ..sft.artifacts import Artifact, job_artifact
from ..sft.models import release_memory, resolve_model

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
    """Starts, runs and remembers a job manager's exports (see ``ExportManager.of``)."""

    _attach_lock = threading.Lock()

    def __init__(self, jobs: SFTJobManager):
        self.jobs = jobs
        self.store = jobs.store
        self.settings = jobs.settings
        self._queue: queue.Queue[tuple] = queue.Queue()
        self._recover()
        # A daemon: a server stopping mid-export is not held up; the export is marked interrupted
        # when it starts again.
        threading.Thread(target=self._work, name="sft-export", daemon=True).start()

    @classmethod
    def of(cls, jobs: SFTJobManager) -> ExportManager:
        """The export manager of ``jobs``, created (and its records recovered) on first use."""
        with cls._attach_lock:
            manager = getattr(jobs, "_export_manager", None)
            if manager is None:
                manager = jobs._export_manager = cls(jobs)
            return manager

    def _recover(self) -> None:
        """Exports a dead process left unfinished become failed; their partial files go."""
        for record in self.store.exports():
            if not ExportStatus(record["status"]).is_terminal():
                shutil.rmtree(record["path"], ignore_errors=True)
                self.store.update_export(record["export_id"], status=ExportStatus.FAILED.value,
                                         completed_at=utcnow(), error=INTERRUPTED_ERROR)

    def toolchain(self) -> exporting.Toolchain:
        return exporting.Toolchain(converter_dir=self.settings.resolved_gguf_converter_dir,
                                   quantizer=exporting.find_quantizer(self.settings.llama_quantize))

    def capabilities(self) -> dict[str, Any]:
        return exporting.capabilities(self.toolchain())

    def submit(self, job: SFTJob, *, fmt: str, gguf_type: str | None) -> dict[str, Any]:
        """Check the request, record a pending export and queue it; return its record.

        Raises:
            RequestError: a format, type or architecture this machine cannot export (nothing is recorded).
            ArtifactUnavailable: the job has not finished with an artifact, or has no adapter for this format.
        """
        artifact = job_artifact(job, model_roots=self.settings.resolved_model_roots)
        tools = self.toolchain()
        cache_dir = self.settings.resolved_model_cache_dir
        gguf_type = exporting.check_request(artifact, fmt=fmt, gguf_type=gguf_type, tools=tools, cache_dir=cache_dir)
        export_id = str(uuid.uuid4())
        record = {"export_id": export_id, "job_id": job.job_id, "format": fmt, "type": gguf_type,
                  "status": ExportStatus.PENDING.value, "path": str(artifact.output_dir / "exports" / export_id),
                  "created_at": utcnow(), "started_at": None, "completed_at": None, "error": None, "result": None}
        card = card_facts(job, metrics=self.jobs.store.metrics(job.job_id), served_base=self._served_base(artifact))
        self.store.insert_export(record)
        self._queue.put((record, artifact, tools, card))
        return self.get(job.job_id, export_id)

    def list(self, job_id: str) -> list[dict[str, Any]]:
        return [_public(record) for record in self.store.exports(job_id)]

    def get(self, job_id: str, export_id: str) -> dict[str, Any]:
        """The export's record. Raises ExportNotFound."""
        for record in self.store.exports(job_id):
            if record["export_id"] == export_id:
                return _public(record)
        raise ExportNotFound(f"Export {export_id} not found for job {job_id}")

    def finished_folder(self, job_id: str, export_id: str) -> tuple[dict[str, Any], Path]:
        """A completed export's record and folder.

        Raises:
            ExportNotFound: no such export.
            JobConflict: it has not completed, or its files are gone.
        """
        from ..core.errors import JobConflict

        record = self.get(job_id, export_id)
        if record["status"] != ExportStatus.COMPLETED.value:
            raise JobConflict(f"Export {export_id} is {record['status']}; only a completed export can be downloaded"
                              + (f" ({record['error']})" if record["error"] else ""))
        folder = Path(record["path"])
        if not folder.is_dir():
            raise JobConflict(f"Export {export_id}'s folder {folder} is no longer on disk")
        return record, folder

    def wait(self, job_id: str, export_id: str, timeout: float) -> dict[str, Any]:
        """Block until the export ends (or ``timeout`` passes); return its record."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            record = self.get(job_id, export_id)
            if ExportStatus(record["status"]).is_terminal():
                return record
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Export {export_id} is still {record['status']} after {timeout}s")
            time.sleep(0.05)

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
        self.store.update_export(export_id, status=ExportStatus.RUNNING.value, started_at=utcnow())
        try:
            result = exporting.export(artifact, fmt=record["format"], gguf_type=record["type"], target=target,
                                      tools=tools, cache_dir=self.settings.resolved_model_cache_dir, card=card,
                                      log_file=target.parent / f"{export_id}.log")
        except BaseException as exc:  # noqa: BLE001 - an export's failure must become its state
            logger.exception("export %s failed", export_id)
            shutil.rmtree(target, ignore_errors=True)
            error = getattr(exc, "detail", None) or classify_error(exc)["message"]
            self.store.update_export(export_id, status=ExportStatus.FAILED.value, completed_at=utcnow(), error=error)
            exc.__traceback__ = None  # its frames would keep a merged model alive
        else:
            self.store.update_export(export_id, status=ExportStatus.COMPLETED.value, completed_at=utcnow(),
                                     result=result)
        finally:
            release_memory()


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
