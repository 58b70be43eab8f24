"""Typed dependencies: the manager, the generation model cache, the model request gate, the caller, and a
job or config looked up once (404 naming the id, also when it is another user's)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from ..core.errors import ConfigNotFound, JobNotFound
from ..jobs.manager import SFTJobManager, get_sft_job_manager
from ..jobs.models import SFTJob
from ..sft.model_cache import ModelCache
from ..store.keys import KeyStore
from .auth import USER_SCOPE_KEY, AdminRequired, Principal, Unauthenticated
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


async def current_user(request: Request) -> Principal:
    # AuthGate has already refused a missing or bad key wherever one is needed.
    user = request.scope.get(USER_SCOPE_KEY)
    if user is None:
        raise Unauthenticated()
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]


async def optional_user(request: Request) -> Principal | None:
    """The caller on an open path (``/health``): None when anonymous."""
    return request.scope.get(USER_SCOPE_KEY)


OptionalUser = Annotated[Principal | None, Depends(optional_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.admin:
        raise AdminRequired()
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


async def get_keys(request: Request) -> KeyStore:
    return request.app.state.keys  # create_app or its lifespan makes it


KeysDep = Annotated[KeyStore, Depends(get_keys)]


def visible_job(manager: SFTJobManager, user: Principal, job_id: str) -> SFTJob:
    """The job, or JobNotFound, the same for another user's job as for a missing one."""
    job = manager.get_job(job_id)
    if not user.sees(job.owner):
        raise JobNotFound(job_id)
    return job


def valid_job(job_id: str, manager: ManagerDep, user: CurrentUser) -> SFTJob:
    return visible_job(manager, user, job_id)


ValidJob = Annotated[SFTJob, Depends(valid_job)]


def visible_config(manager: SFTJobManager, user: Principal, config_id: str) -> dict[str, Any]:
    """The saved config, or ConfigNotFound, the same for another user's config as for a missing one."""
    config = manager.get_config(config_id)
    if not user.sees(config.get("owner")):
        raise ConfigNotFound(config_id)
    return config


def valid_config(config_id: str, manager: ManagerDep, user: CurrentUser) -> dict[str, Any]:
    return visible_config(manager, user, config_id)


ValidConfig = Annotated[dict[str, Any], Depends(valid_config)]


def job_quota(manager: SFTJobManager, user: Principal) -> int | None:
    """The most pending + running jobs ``user`` may have (None: not limited, admins and keys off)."""
    return None if user.admin else manager.settings.max_active_jobs_per_key


def idempotency_scope(user: Principal, key: str | None) -> str | None:
    """An Idempotency-Key within its user: another user's key never finds (or reveals) this user's job."""
    return key if key is None or user.name is None else f"{user.name}\x1f{key}"
