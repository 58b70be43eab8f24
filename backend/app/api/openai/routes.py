"""/v1 files and fine-tuning jobs (models and chat completions are in chat.py), on the same job manager
and store as /api/sft; errors in OpenAI's envelope (see errors.py)."""

from __future__ import annotations

import math
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from ...core.errors import InvalidConfig, JobConflict
from ...jobs.access import path_access
from ...sft.paths import PathRefused
from ..auth import Principal
from ..deps import CurrentUser, ManagerDep, ValidJob, job_quota
from ..sft_job_manager import JobStatus, SFTJob, SFTJobManager
from . import files, jobs
from .errors import OpenAIRoute, invalid, not_found, responses
from .schemas import (
    CheckpointList,
    Deleted,
    EventList,
    FileList,
    FileObject,
    FineTuningJob,
    Hyperparameters,
    JobCreateRequest,
    JobList,
)

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute, responses=responses(400, 404))

ID = Annotated[str, Query(max_length=200)]


# Files


@router.post("/files", response_model=FileObject, responses=responses(413))
def create_file(
    manager: ManagerDep,
    user: CurrentUser,
    file: Annotated[UploadFile, File(description="JSONL: chat (messages) or prompt/completion examples.")],
    purpose: Annotated[str, Form(max_length=64, description="'fine-tune'.")],
) -> dict:
    """Upload a fine-tuning file; every line is checked (400 names the first bad line)."""
    record = files.save_upload(file.file, filename=file.filename, purpose=purpose, store=manager.store,
                               settings=manager.settings, owner=user.owner)
    return files.file_object(record)


@router.get("/files", response_model=FileList)
def list_files(
    manager: ManagerDep,
    user: CurrentUser,
    after: ID | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: Annotated[str | None, Query(max_length=64)] = None,
) -> dict:
    """List files, newest first by default; ``after`` a file id pages on."""
    records = manager.store.load_files(purpose=purpose, newest_first=order == "desc", owner=user.scope)
    page, has_more = _page(records, after, limit, key="file_id", what="file")
    data = [files.file_object(r) for r in page]
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.get("/files/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, manager: ManagerDep, user: CurrentUser) -> dict:
    """A file's record."""
    return files.file_object(files.get_file(manager.store, file_id, visible=user.sees))


@router.get("/files/{file_id}/content", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}})
def file_content(file_id: str, manager: ManagerDep, user: CurrentUser) -> FileResponse:
    """A file's bytes, as uploaded (or, for a result file, the step-metrics CSV)."""
    record = files.get_file(manager.store, file_id, visible=user.sees)
    if not Path(record["path"]).is_file():
        raise not_found(f"File {file_id}'s content is no longer on disk ({record['path']})", param="file_id")
    return FileResponse(record["path"], media_type="application/octet-stream", filename=record["filename"])


@router.delete("/files/{file_id}", response_model=Deleted, responses=responses(409))
def delete_file(file_id: str, manager: ManagerDep, user: CurrentUser) -> dict:
    """Delete a file; refused while a job that may still train on it uses it."""
    record = files.get_file(manager.store, file_id, visible=user.sees)
    extras = jobs.load_extras(manager)
    # Only the file's owner's jobs hold it: another user's job cannot keep a file they may not read.
    busy = next((job.job_id for job in files.file_users(manager, record["path"]) if job.owner == record.get("owner")
                 and jobs.openai_status(job, extras.get(job.job_id, {})) in ("queued", "running", "paused")), None)
    files.delete_file(manager.store, record, busy_job=busy)
    return {"id": file_id, "object": "file", "deleted": True}


# Fine-tuning jobs


@router.post("/fine_tuning/jobs", response_model=FineTuningJob)
def create_job(request: JobCreateRequest, manager: ManagerDep, user: CurrentUser) -> dict:
    """Create a supervised fine-tuning job (LoRA) from uploaded files; it queues at once."""
    if request.method is not None and request.method.type != "supervised":
        raise invalid(f"method.type '{request.method.type}' is not supported: this server runs supervised "
                      "fine-tuning only", param="method.type", code="unsupported_method")
    if request.integrations:
        raise invalid("integrations are not supported by this server (Weights & Biases: report_to through "
                      "/api/sft)", param="integrations")
    if request.model.startswith("ft:"):
        raise invalid(f"model: {request.model} is a fine-tuned model; continuing a fine-tune is not supported, "
                      "give its base model", param="model")
    try:
        path_access(manager, user).check(request.model, kind="model")
    except PathRefused as exc:
        raise invalid(f"model: '{request.model}': {exc}", param="model") from None
    settings = manager.settings
    train = _fine_tune_file(manager, request.training_file, "training_file", user)
    validation = None
    if request.validation_file is not None:
        validation = _fine_tune_file(manager, request.validation_file, "validation_file", user)
        if validation["details"]["format"] != train["details"]["format"]:
            raise invalid(f"validation_file {validation['file_id']} is in the "
                          f"{files.FORMAT_NAMES[validation['details']['format']]} format and training_file "
                          f"{train['file_id']} in the {files.FORMAT_NAMES[train['details']['format']]} one; "
                          "use one format", param="validation_file")
    supervised = request.method.supervised if request.method is not None else None
    asked = (supervised.hyperparameters if supervised is not None else None) or request.hyperparameters \
        or Hyperparameters()
    examples = train["details"]["rows"]
    n_epochs = jobs.auto_epochs(examples) if asked.n_epochs == "auto" else asked.n_epochs
    batch_size = jobs.auto_batch_size(examples) if asked.batch_size == "auto" else asked.batch_size
    multiplier = 1.0 if asked.learning_rate_multiplier == "auto" else asked.learning_rate_multiplier
    base_rate = jobs.base_learning_rate(jobs.estimate_parameters(
        request.model, cache_dir=settings.resolved_model_cache_dir, allowed_roots=settings.resolved_model_roots))
    steps_per_epoch = math.ceil(examples / batch_size)
    config: dict[str, Any] = {
        "base_model": request.model,
        "dataset_name": train["path"],
        "dataset_format": train["details"]["format"],
        "num_train_epochs": n_epochs,
        "per_device_train_batch_size": batch_size,
        "learning_rate": min(1.0, base_rate * multiplier),
        "seed": request.seed if request.seed is not None else secrets.randbelow(2**31),
        "save_steps": steps_per_epoch,
        "save_total_limit": jobs.KEPT_CHECKPOINTS,
    }
    if validation is not None:
        config.update(eval_dataset_name=validation["path"], eval_steps=steps_per_epoch)
    try:
        job_id = manager.create_job(config, owner=user.owner, max_active=job_quota(manager, user))
    except InvalidConfig as exc:
        message, param = _from_config_error(exc.detail, train, validation)
        raise invalid(message, param=param) from None
    hyperparameters = {"n_epochs": n_epochs, "batch_size": batch_size, "learning_rate_multiplier": multiplier}
    extras = jobs.update_extras(
        manager, job_id, model=request.model, suffix=request.suffix, metadata=request.metadata,
        training_file=train["file_id"], validation_file=validation["file_id"] if validation else None,
        hyperparameters=hyperparameters, base_learning_rate=base_rate,
    )
    manager.start_job(job_id)
    return _render(manager, manager.get_job(job_id), extras)


@router.get("/fine_tuning/jobs", response_model=JobList)
def list_jobs(
    request: Request,
    manager: ManagerDep,
    user: CurrentUser,
    after: ID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict:
    """Jobs, newest first (those made through /api/sft too); ``after`` a job id pages on, and
    ``metadata[key]=value`` (or ``metadata=null``) filters."""
    selected, _ = manager.select_jobs(newest_first=True, owner=user.scope)
    extras = jobs.load_extras(manager)
    wanted = {key[len("metadata["):-1]: value for key, value in request.query_params.items()
              if key.startswith("metadata[") and key.endswith("]")}
    if request.query_params.get("metadata") == "null":
        selected = [job for job in selected if not extras.get(job.job_id, {}).get("metadata")]
    elif wanted:
        selected = [job for job in selected
                    if all((extras.get(job.job_id, {}).get("metadata") or {}).get(k) == v for k, v in wanted.items())]
    page, has_more = _page(selected, after, limit, key="job_id", what="fine-tuning job")
    return {"object": "list", "data": [_render(manager, job, extras.get(job.job_id, {})) for job in page],
            "has_more": has_more}


@router.get("/fine_tuning/jobs/{job_id}", response_model=FineTuningJob)
def retrieve_job(job: ValidJob, manager: ManagerDep) -> dict:
    """A job: status, fine_tuned_model, trained_tokens, estimated_finish, error, result_files."""
    return _render(manager, job, jobs.extras_of(manager, job.job_id))


@router.post("/fine_tuning/jobs/{job_id}/cancel", response_model=FineTuningJob, responses=responses(409))
def cancel_job(job: ValidJob, manager: ManagerDep) -> dict:
    """Cancel a job for good: a queued one at once, a running one at the end of its current step."""
    extras = jobs.extras_of(manager, job.job_id)
    status = jobs.openai_status(job, extras)
    if status == "paused":
        extras = _record_stop(manager, job, "cancel")
    elif status == "cancelled":
        pass
    elif job.status.is_terminal():
        raise JobConflict(f"Job {job.job_id} has already {status}; nothing to cancel")
    else:
        extras = _stop(manager, job, "cancel")
    return _render(manager, job, extras)


@router.post("/fine_tuning/jobs/{job_id}/pause", response_model=FineTuningJob, responses=responses(409))
def pause_job(job: ValidJob, manager: ManagerDep) -> dict:
    """Pause a job: it saves a checkpoint at the end of its current step (status 'running' until
    then, 'paused' after); resume continues from there."""
    extras = jobs.extras_of(manager, job.job_id)
    if job.status not in (JobStatus.PENDING, JobStatus.RUNNING):
        status = jobs.openai_status(job, extras)
        detail = "it is already pausing" if status == "running" else f"it is {status}"
        raise JobConflict(f"Job {job.job_id} cannot be paused: {detail}; only a queued or running job can")
    return _render(manager, job, _stop(manager, job, "pause"))


@router.post("/fine_tuning/jobs/{job_id}/resume", response_model=FineTuningJob, responses=responses(409))
def resume_job(job: ValidJob, manager: ManagerDep, user: CurrentUser) -> dict:
    """Resume a paused job from the checkpoint its pause saved."""
    extras = jobs.extras_of(manager, job.job_id)
    status = jobs.openai_status(job, extras)
    if status != "paused":
        if job.status is JobStatus.STOPPING:
            detail = "it is still pausing (it stops at the end of its current step); resume once it is paused"
        else:
            detail = f"it is {status}; only a paused job can be resumed"
        raise JobConflict(f"Job {job.job_id} cannot be resumed: {detail}")
    quota = job_quota(manager, user)
    if quota is not None:
        manager.check_quota(job.owner, quota)
    manager.resume_job(job.job_id)
    return _render(manager, job, jobs.update_extras(manager, job.job_id, stop=None))


@router.get("/fine_tuning/jobs/{job_id}/events", response_model=EventList)
def list_events(
    job: ValidJob,
    manager: ManagerDep,
    after: ID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict:
    """The job's events, newest first; ``after`` an event id gives the older ones."""
    before = manager.last_event_seq(job.job_id) + 1
    if after is not None:
        seq = jobs.event_seq(after, job.job_id)
        if seq is None:
            raise invalid(f"after: {after!r} is not an event id of job {job.job_id}", param="after")
        before = min(seq, before)
    # Event numbers run 1, 2, 3... without gaps within a job.
    low = max(1, before - limit)
    events = manager.events(job.job_id, after=low - 1, limit=max(0, before - low)) if before > 1 else []
    return {"object": "list", "data": [jobs.event_object(job.job_id, e) for e in reversed(events)],
            "has_more": low > 1}


@router.get("/fine_tuning/jobs/{job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(
    job: ValidJob,
    manager: ManagerDep,
    after: ID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict:
    """The job's checkpoints (one per epoch, the last three kept; one at a pause), newest first."""
    extras = jobs.extras_of(manager, job.job_id)
    losses = {int(p["step"]): p["loss"] for p in manager.metrics(job.job_id) if "loss" in p}
    data = [jobs.checkpoint_object(job, extras, c, losses.get(c["step"]))
            for c in reversed(manager.checkpoints(job.job_id))]
    page, has_more = _page(data, after, limit, key="id", what="checkpoint")
    return {"object": "list", "data": page, "has_more": has_more,
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}


# Helpers


def _render(manager: SFTJobManager, job: SFTJob, extras: dict[str, Any]) -> dict[str, Any]:
    return jobs.job_object(job, extras, result_files=jobs.result_files(manager, job, extras))


def _stop(manager: SFTJobManager, job: SFTJob, kind: str) -> dict[str, Any]:
    # Recorded before the stop (so no reader sees it unexplained) and again after (the count of
    # attempts it is tied to is final once the job no longer waits in the queue).
    _record_stop(manager, job, kind)
    manager.stop_job(job.job_id)
    return _record_stop(manager, job, kind)


def _record_stop(manager: SFTJobManager, job: SFTJob, kind: str) -> dict[str, Any]:
    return jobs.update_extras(manager, job.job_id, stop={"kind": kind, "attempts": len(job.attempts)})


def _page(items: list, after: str | None, limit: int, *, key: str, what: str) -> tuple[list, bool]:
    """The ``limit`` items after the one whose ``key`` is ``after``, and whether more follow."""
    start = 0
    if after is not None:
        ids = [item[key] if isinstance(item, dict) else getattr(item, key) for item in items]
        if after not in ids:
            raise not_found(f"after: no {what} {after}", param="after")
        start = ids.index(after) + 1
    return items[start:start + limit], len(items) > start + limit


def _fine_tune_file(manager: SFTJobManager, file_id: str, param: str, user: Principal) -> dict[str, Any]:
    record = files.get_file(manager.store, file_id, param=param, visible=user.sees)
    if record["purpose"] != files.FINE_TUNE:
        raise invalid(f"{param}: file {file_id} has purpose '{record['purpose']}', not '{files.FINE_TUNE}'",
                      param=param)
    if not files.dataset_roots_allow(manager.settings, record["path"]):
        raise invalid(f"{param}: file {file_id} is stored in {record['path']}, outside the server's dataset roots; "
                      "add its data directory to SFT_DATASET_ROOTS", param=param)
    return record


def _from_config_error(detail: str, train: dict[str, Any], validation: dict[str, Any] | None) -> tuple[str, str | None]:
    """The manager's ``config.<field>: ...`` message in the request's own names."""
    names = {"config.base_model": "model", "config.dataset_name": "training_file",
             "config.eval_dataset_name": "validation_file", "config.seed": "seed"}
    for field, param in names.items():
        if detail.startswith(field + ":"):
            message = param + detail[len(field):]
            message = message.replace(train["path"], train["file_id"])
            if validation is not None:
                message = message.replace(validation["path"], validation["file_id"])
            return message, param
    return detail, None
