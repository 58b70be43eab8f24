"""/api/sft/preferences: keep the answers picked in "Try it", list, download as TRL JSONL, delete, and train DPO.

Thin routes over the caller's view (``UserPreferences``); the domain is ``app.jobs.preferences``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import StringConvertor, register_url_convertor

from ..jobs.preferences import MAX_ANSWER_CHARS
from .deps import UserPreferences
from .schemas import (
    ERROR_RESPONSES,
    ChatMessage,
    Preference,
    PreferenceListResponse,
    PreferencesDeleted,
    PreferenceSourceName,
    PreferenceTrainResponse,
)

router = APIRouter(prefix="/api/sft/preferences", tags=["preferences"], responses=ERROR_RESPONSES)



class PreferenceId(StringConvertor):
    """A preference id in a path: any segment but this router's own (``download``, ``train``), so that
    ``DELETE /preferences/download`` is a 405 as for any method a path does not have, not a missing preference."""

    regex = r"(?!(?:download|train)$)[^/]+"


register_url_convertor("preference_id", PreferenceId())

JobFilter = Annotated[str | None, Query(min_length=1, max_length=200, description="Only this job's preferences.")]


class PreferenceCreateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "job_id": "abc-123", "prompt": [{"role": "user", "content": "Extract the contact as JSON: Ada, 36."}],
            "chosen": '{"name": "Ada", "age": 36}', "rejected": "Ada is 36.", "source": "picked_tuned"}]},
    )

    job_id: str = Field(..., min_length=1, max_length=200, description="Your completed job whose answer is judged.")
    prompt: list[ChatMessage] = Field(..., min_length=1, max_length=100, description="The chat the answers reply to.")
    chosen: str = Field(..., max_length=MAX_ANSWER_CHARS, description="The better answer.")
    rejected: str = Field(..., max_length=MAX_ANSWER_CHARS, description="The worse answer.")
    source: PreferenceSourceName = Field(
        ..., description="picked_tuned (the tuned answer over the base one), picked_base (the base answer over the "
        "tuned one) or corrected (an answer you wrote over the tuned one).")


class PreferenceTrainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"job_id": "abc-123", "overrides": {"max_steps": 20,
                                                                                             "beta": 0.1}}]},
    )

    job_id: str = Field(..., min_length=1, max_length=200,
                        description="Your completed job: its preferences are the data, the job is the DPO job's base.")
    overrides: dict[str, Any] | None = Field(
        None, description="Config fields for the DPO job (max_steps, beta, learning_rate...); the rest is the "
        "tuned job's own training settings. method, base_model and dataset_name are set by this request.")


@router.post("", response_model=Preference, status_code=201)
def add_preference(request: PreferenceCreateRequest, preferences: UserPreferences) -> dict:
    """Keep one preference for your completed job (404 for a job that is not yours, 409 for one not completed)."""
    return preferences.add(job_id=request.job_id, prompt=[m.model_dump() for m in request.prompt],
                           chosen=request.chosen, rejected=request.rejected, source=request.source)


@router.get("", response_model=PreferenceListResponse)
def list_preferences(
    preferences: UserPreferences,
    job_id: JobFilter = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Preferences to skip.")] = 0,
) -> dict:
    """Your preferences (an admin's: everyone's), oldest first, optionally of one job."""
    page, total = preferences.list(job_id=job_id, limit=limit, offset=offset)
    return {"preferences": page, "total": total}


@router.get("/download", response_class=Response,
            responses={200: {"content": {"application/x-ndjson": {}},
                             "description": "One TRL conversational preference row per line: "
                             '{"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}'}})
def download_preferences(preferences: UserPreferences, job_id: JobFilter = None) -> Response:
    """Your preferences (optionally of one job) as JSONL in TRL's prompt/chosen/rejected conversational form."""
    name = f"preferences-{re.sub(r'[^A-Za-z0-9_.-]', '_', job_id)}.jsonl" if job_id else "preferences.jsonl"
    return Response(preferences.jsonl(job_id=job_id), media_type="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.delete("/{preference_id:preference_id}", response_model=Preference)
def delete_preference(preference_id: str, preferences: UserPreferences) -> dict:
    """Delete one of your preferences; returns it as it was."""
    return preferences.delete(preference_id)


@router.delete("", response_model=PreferencesDeleted)
def delete_job_preferences(
    preferences: UserPreferences,
    job_id: Annotated[str, Query(min_length=1, max_length=200, description="The job whose preferences go.")],
) -> dict:
    """Delete all your preferences of one job."""
    return {"job_id": job_id, "deleted": preferences.delete_for_job(job_id)}


@router.post("/train", response_model=PreferenceTrainResponse, status_code=201)
def train_on_preferences(request: PreferenceTrainRequest, preferences: UserPreferences) -> dict:
    """Write your preferences of a job into your files and submit a DPO job that starts from that job."""
    job, record, count = preferences.train(request.job_id, request.overrides)
    return {"job_id": job.job_id, "status": job.status.value, "queue_position": job.queue_position,
            "file_id": record["file_id"], "preferences": count, "base_job_id": request.job_id}
