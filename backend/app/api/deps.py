"""Typed dependencies: the manager, the generation model cache, the model request gate, and a job looked
up once (404 naming the id)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..jobs.manager import SFTJobManager, get_sft_job_manager
from ..jobs.models import SFTJob
from ..sft.model_cache import ModelCache
from .model_requests import ModelRequestGate


async def get_manager(request: Request) -> SFTJobManager:
    # async: resolved on the event loop, so /health never waits for a worker thread.
    manager = getattr(request.app.state, "manager", None)
    return manager if manager is not None else get_sft_job_manager()


ManagerDep = Annotated[SFTJobManager, Depends(get_manager)]


async def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache  # create_app makes it


CacheDep = Annotated[ModelCache, Depends(get_model_cache)]


async def get_model_gate(request: Request) -> ModelRequestGate:
    return request.app.state.model_gate  # create_app makes it


GateDep = Annotated[ModelRequestGate, Depends(get_model_gate)]


def valid_job(job_id: str, manager: ManagerDep) -> SFTJob:
    return manager.get_job(job_id)


ValidJob = Annotated[SFTJob, Depends(valid_job)]
