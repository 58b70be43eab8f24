"""SFT REST API: thin routes that parse, call the job manager and return a response model."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from ..sft.config import SFTConfig
from .deps import ManagerDep, UserJobs, ValidConfig, ValidJob
from .schemas import (
    ERROR_RESPONSES,
    CheckpointListResponse,
    ConfigResponse,
    ConfigSaveRequest,
    ConfigSaveResponse,
    DeleteResponse,
    EventListResponse,
    JobListResponse,
    JobStartRequest,
    JobStartResponse,
    JobStatusName,
    JobStatusResponse,
    LogsResponse,
    MemoryPlan,
    MetricsResponse,
    StopResponse,
)

router = APIRouter(prefix="/api/sft", tags=["sft"], responses=ERROR_RESPONSES)


@router.post("/train", response_model=JobStartResponse)
def start_training(
    request: JobStartRequest,
    jobs: UserJobs,
    idempotency_key: Annotated[
        str | None, Header(max_length=200, description="Retries with the same key return the same job.")
    ] = None,
) -> JobStartResponse:
    """Start a new SFT training job (validated and pre-flighted; 400 names what is wrong)."""
    config = request.config
    if request.config_id is not None:
        config = jobs.from_template(request.config_id, request.overrides)
    job = jobs.submit(config, idempotency_key=idempotency_key)
    return JobStartResponse(job_id=job.job_id, status=job.status.value, queue_position=job.queue_position)


@router.post("/plan", response_model=MemoryPlan)
def plan_training(request: JobStartRequest, jobs: UserJobs) -> dict:
    """Estimate a config's peak memory per worker against this server's devices, without submitting it (a config
    /train would refuse is refused the same way; one that cannot fit answers fits: false and what would)."""
    config = request.config
    if request.config_id is not None:
        config = jobs.from_template(request.config_id, request.overrides)
    return jobs.plan(config)


@router.get("/jobs", response_model=JobListResponse)
def list_jobs(
    jobs: UserJobs,
    status: Annotated[JobStatusName | None, Query(description="Only jobs in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Jobs to skip.")] = 0,
    order: Annotated[Literal["asc", "desc"], Query(description="By creation time.")] = "desc",
) -> JobListResponse:
    """List jobs, newest first by default, optionally of one status."""
    page, total = jobs.select(status=status, limit=limit, offset=offset, newest_first=order == "desc")
    return JobListResponse(jobs=[job.to_dict() for job in page], total=total, offset=offset, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobStatusResponse)
def get_job(job: ValidJob) -> dict:
    """Get a job's status, progress and result."""
    return job.to_dict()


@router.post("/jobs/{job_id}/stop", response_model=StopResponse)
def stop_job(job: ValidJob, manager: ManagerDep) -> StopResponse:
    """Stop a job: a pending one at once, a running one at its next step (its adapter is saved)."""
    status = manager.stop_job(job.job_id)
    if status.value == "stopped":
        return StopResponse(message=f"Job {job.job_id} stopped", status=status.value)
    return StopResponse(message=f"Job {job.job_id} stopping: it stops at the next step and saves its adapter",
                        status=status.value)


@router.post("/jobs/{job_id}/resume", response_model=JobStartResponse)
def resume_job(job: ValidJob, jobs: UserJobs) -> JobStartResponse:
    """Continue a stopped or failed job from its latest checkpoint (optimizer state included)."""
    jobs.resume(job)
    return JobStartResponse(job_id=job.job_id, status=job.status.value, queue_position=job.queue_position)


@router.get("/jobs/{job_id}/checkpoints", response_model=CheckpointListResponse)
def list_checkpoints(job: ValidJob, manager: ManagerDep) -> CheckpointListResponse:
    """The job's checkpoints: step, path, eval loss, time."""
    return CheckpointListResponse(job_id=job.job_id, checkpoints=manager.checkpoints(job.job_id))


@router.delete("/jobs/{job_id}", response_model=DeleteResponse)
def delete_job(job: ValidJob, manager: ManagerDep) -> DeleteResponse:
    """Delete a finished job's record, events and metrics (its output files stay on disk)."""
    manager.delete_job(job.job_id)
    return DeleteResponse(message=f"Job {job.job_id} deleted; its files stay in {job.output_dir}")


@router.get("/jobs/{job_id}/metrics", response_model=MetricsResponse)
def get_metrics(job: ValidJob, manager: ManagerDep) -> MetricsResponse:
    """The job's whole metrics series (persisted)."""
    return MetricsResponse(job_id=job.job_id, metrics=manager.metrics(job.job_id))


@router.get("/jobs/{job_id}/logs", response_model=LogsResponse)
def get_logs(
    job: ValidJob,
    manager: ManagerDep,
    tail: Annotated[int | None, Query(ge=1, le=100_000, description="Only the last N lines.")] = None,
) -> LogsResponse:
    """The job's own log lines (transformers, TRL and service messages of its thread)."""
    return LogsResponse(job_id=job.job_id, lines=manager.logs.read(job.job_id, tail=tail))


@router.get(
    "/jobs/{job_id}/events",
    response_model=EventListResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "JSON page of events, or a Server-Sent Events stream when asked for."}},
)
async def get_events(
    job: ValidJob,
    manager: ManagerDep,
    request: Request,
    after: Annotated[int, Query(ge=0, le=2**31, description="Only events with seq greater than this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size (JSON only).")] = 100,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**31, description="SSE resume point.")] = None,
):
    """The job's events: JSON pages, or a live SSE stream with ``Accept: text/event-stream``."""
    if "text/event-stream" in request.headers.get("accept", ""):
        start = last_event_id if last_event_id is not None else after
        return StreamingResponse(
            _event_stream(manager, job.job_id, start, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    events = manager.events(job.job_id, after=after, limit=limit)
    return EventListResponse(events=events, next_after=events[-1]["seq"] if events else after)


async def _event_stream(manager, job_id: str, after: int, request: Request):
    # The manager's event log follows the job (cheap in-memory polling, the store read only when
    # there is something new); this formats what it yields as Server-Sent Events.
    async for event in manager.follow_events(job_id, after, disconnected=request.is_disconnected):
        if event is None:
            yield ": keep-alive\n\n"
        else:
            yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"


@router.post("/configs", response_model=ConfigSaveResponse)
def save_config(request: ConfigSaveRequest, jobs: UserJobs) -> ConfigSaveResponse:
    """Save a named configuration template."""
    config_id = jobs.save_config(request.name, request.config)
    return ConfigSaveResponse(config_id=config_id, name=request.name)


@router.get("/configs", response_model=list[ConfigResponse])
def list_configs(jobs: UserJobs) -> list[dict]:
    """List saved configuration templates."""
    return jobs.configs()


@router.get("/configs/{config_id}", response_model=ConfigResponse)
def get_config(config: ValidConfig) -> dict:
    """Get a saved configuration template."""
    return config


@router.delete("/configs/{config_id}", response_model=DeleteResponse)
def delete_config(config: ValidConfig, manager: ManagerDep) -> DeleteResponse:
    """Delete a saved configuration template (jobs started from it keep their config)."""
    manager.delete_config(config["config_id"])
    return DeleteResponse(message=f"Config {config['config_id']} deleted")


@router.get("/config-schema")
def config_schema() -> dict:
    """The JSON schema of a training config: every field, its default, bounds and meaning."""
    return SFTConfig.model_json_schema()
