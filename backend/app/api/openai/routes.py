"""/v1 files and fine-tuning jobs (models and chat completions are in chat.py), on the same job manager
and store as /api/sft; errors in OpenAI's envelope (see errors.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from ...core.errors import InvalidConfig, JobConflict
from ...jobs import files
from ..deps import ManagerDep, UserJobs, ValidJob
from ..sft_job_manager import JobStatus
from . import jobs, mapping
from .errors import OpenAIRoute, invalid, not_found, responses
from .schemas import (
    CheckpointList,
    Deleted,
    EventList,
    FileList,
    FileObject,
    FineTuningJob,
    JobCreateRequest,
    JobList,
)

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute, responses=responses(400, 404))

ID = Annotated[str, Query(max_length=200)]


# Files


@router.post("/files", response_model=FileObject, responses=responses(413))
def create_file(
    scoped: UserJobs,
    file: Annotated[UploadFile, File(description="JSONL: chat (messages) or prompt/completion examples.")],
    purpose: Annotated[str, Form(max_length=64, description="'fine-tune'.")],
) -> dict:
    """Upload a fine-tuning file; every line is checked (400 names the first bad line)."""
    return files.file_object(scoped.upload(file.file, filename=file.filename, purpose=purpose))


@router.get("/files", response_model=FileList)
def list_files(
    scoped: UserJobs,
    after: ID | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: Annotated[str | None, Query(max_length=64)] = None,
) -> dict:
    """List files, newest first by default; ``after`` a file id pages on."""
    records = scoped.files(purpose=purpose, newest_first=order == "desc")
    page, has_more = _page(records, after, limit, key="file_id", what="file")
    data = [files.file_object(r) for r in page]
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.get("/files/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, scoped: UserJobs) -> dict:
    """A file's record."""
    return files.file_object(scoped.file(file_id))


@router.get("/files/{file_id}/content", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}})
def file_content(file_id: str, scoped: UserJobs) -> FileResponse:
    """A file's bytes, as uploaded (or, for a result file, the step-metrics CSV)."""
    record = scoped.file(file_id)
    if not Path(record["path"]).is_file():
        raise not_found(f"File {file_id}'s content is no longer on disk ({record['path']})", param="file_id")
    return FileResponse(record["path"], media_type="application/octet-stream", filename=record["filename"])


@router.delete("/files/{file_id}", response_model=Deleted, responses=responses(409))
def delete_file(file_id: str, scoped: UserJobs) -> dict:
    """Delete a file; refused while a job that may still train on it uses it."""
    record = scoped.file(file_id)
    files.delete_file(scoped.manager.store, record, busy_job=jobs.busy_user(scoped.manager, record))
    return {"id": file_id, "object": "file", "deleted": True}


# Fine-tuning jobs


@router.post("/fine_tuning/jobs", response_model=FineTuningJob)
def create_job(request: JobCreateRequest, scoped: UserJobs) -> dict:
    """Create a supervised fine-tuning job (LoRA) from uploaded files; it queues at once."""
    fine_tune = mapping.fine_tune(request, scoped)
    try:
        job_id = scoped.create(fine_tune.config)
    except InvalidConfig as exc:
        raise mapping.config_error(exc) from None
    manager = scoped.manager
    extras = jobs.update_extras(manager, job_id, **fine_tune.extras)
    manager.start_job(job_id)
    return jobs.render(manager, manager.get_job(job_id), extras)


@router.get("/fine_tuning/jobs", response_model=JobList)
def list_jobs(
    request: Request,
    scoped: UserJobs,
    after: ID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict:
    """Jobs, newest first (those made through /api/sft too); ``after`` a job id pages on, and
    ``metadata[key]=value`` (or ``metadata=null``) filters."""
    manager = scoped.manager
    selected, _ = scoped.select(newest_first=True)
    extras = jobs.load_extras(manager)
    wanted = {key[len("metadata["):-1]: value for key, value in request.query_params.items()
              if key.startswith("metadata[") and key.endswith("]")}
    if request.query_params.get("metadata") == "null":
        selected = [job for job in selected if not extras.get(job.job_id, {}).get("metadata")]
    elif wanted:
        selected = [job for job in selected
                    if all((extras.get(job.job_id, {}).get("metadata") or {}).get(k) == v for k, v in wanted.items())]
    page, has_more = _page(selected, after, limit, key="job_id", what="fine-tuning job")
    return {"object": "list", "data": [jobs.render(manager, job, extras.get(job.job_id, {})) for job in page],
            "has_more": has_more}


@router.get("/fine_tuning/jobs/{job_id}", response_model=FineTuningJob)
def retrieve_job(job: ValidJob, manager: ManagerDep) -> dict:
    """A job: status, fine_tuned_model, trained_tokens, estimated_finish, error, result_files."""
    return jobs.render(manager, job, jobs.extras_of(manager, job.job_id))


@router.post("/fine_tuning/jobs/{job_id}/cancel", response_model=FineTuningJob, responses=responses(409))
def cancel_job(job: ValidJob, manager: ManagerDep) -> dict:
    """Cancel a job for good: a queued one at once, a running one at the end of its current step."""
    extras = jobs.extras_of(manager, job.job_id)
    status = jobs.openai_status(job, extras)
    if status == "paused":
        extras = jobs.record_stop(manager, job, "cancel")
    elif status == "cancelled":
        pass
    elif job.status.is_terminal():
        raise JobConflict(f"Job {job.job_id} has already {status}; nothing to cancel")
    else:
        extras = jobs.stop(manager, job, "cancel")
    return jobs.render(manager, job, extras)


@router.post("/fine_tuning/jobs/{job_id}/pause", response_model=FineTuningJob, responses=responses(409))
def pause_job(job: ValidJob, manager: ManagerDep) -> dict:
    """Pause a job: it saves a checkpoint at the end of its current step (status 'running' until
    then, 'paused' after); resume continues from there."""
    extras = jobs.extras_of(manager, job.job_id)
    if job.status not in (JobStatus.PENDING, JobStatus.RUNNING):
        status = jobs.openai_status(job, extras)
        detail = "it is already pausing" if status == "running" else f"it is {status}"
        raise JobConflict(f"Job {job.job_id} cannot be paused: {detail}; only a queued or running job can")
    return jobs.render(manager, job, jobs.stop(manager, job, "pause"))


@router.post("/fine_tuning/jobs/{job_id}/resume", response_model=FineTuningJob, responses=responses(409))
def resume_job(job: ValidJob, scoped: UserJobs) -> dict:
    """Resume a paused job from the checkpoint its pause saved."""
    extras = jobs.extras_of(scoped.manager, job.job_id)
    status = jobs.openai_status(job, extras)
    if status != "paused":
        if job.status is JobStatus.STOPPING:
            detail = "it is still pausing (it stops at the end of its current step); resume once it is paused"
        else:
            detail = f"it is {status}; only a paused job can be resumed"
        raise JobConflict(f"Job {job.job_id} cannot be resumed: {detail}")
    scoped.resume(job)
    return jobs.render(scoped.manager, job, jobs.update_extras(scoped.manager, job.job_id, stop=None))


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


def _page(items: list, after: str | None, limit: int, *, key: str, what: str) -> tuple[list, bool]:
    """The ``limit`` items after the one whose ``key`` is ``after``, and whether more follow."""
    start = 0
    if after is not None:
        ids = [item[key] if isinstance(item, dict) else getattr(item, key) for item in items]
        if after not in ids:
            raise not_found(f"after: no {what} {after}", param="after")
        start = ids.index(after) + 1
    return items[start:start + limit], len(items) > start + limit
