"""Typed dependencies: the manager, the generation model cache, the model request gate, the caller, the
caller's view of the jobs (``UserJobs``), a job or config looked up once (404 naming the id, also when it is
another user's), whether a training slot is free for a model request, and the graders' context (``GradingDep``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from ..core.errors import ServiceBusy
from ..jobs.manager import SFTJobManager, get_sft_job_manager
from ..jobs.grader_policy import judge_url_guard
from ..jobs.models import SFTJob
from ..jobs.preferences import ScopedPreferences
from ..jobs.scoped import ScopedJobs
from ..jobs.webhooks import ScopedWebhooks
from ..sft.graders import GradingContext, JudgeEndpoint, SandboxLimits
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


def get_user_jobs(manager: ManagerDep, user: CurrentUser) -> ScopedJobs:
    return ScopedJobs(manager, user)


#: The caller's view of the jobs, configs and files: what it may see, create and resume.
UserJobs = Annotated[ScopedJobs, Depends(get_user_jobs)]


def get_user_webhooks(manager: ManagerDep, user: CurrentUser) -> ScopedWebhooks:
    return ScopedWebhooks(manager.webhooks, user)


#: The caller's webhook endpoints: their own (an admin's: everyone's).
UserWebhooks = Annotated[ScopedWebhooks, Depends(get_user_webhooks)]


def get_user_preferences(jobs: UserJobs) -> ScopedPreferences:
    return ScopedPreferences(jobs)


#: The caller's preferences picked in "Try it": their own (an admin's: everyone's).
UserPreferences = Annotated[ScopedPreferences, Depends(get_user_preferences)]


def visible_job(manager: SFTJobManager, user: Principal, job_id: str) -> SFTJob:
    """The job, or JobNotFound, the same for another user's job as for a missing one."""
    return ScopedJobs(manager, user).get(job_id)


def valid_job(job_id: str, jobs: UserJobs) -> SFTJob:
    return jobs.get(job_id)


ValidJob = Annotated[SFTJob, Depends(valid_job)]


def valid_config(config_id: str, jobs: UserJobs) -> dict[str, Any]:
    return jobs.config(config_id)


ValidConfig = Annotated[dict[str, Any], Depends(valid_config)]


class TrainingSlot:
    """Whether a model request (generate, evaluate, chat) may load a model now: not while every training
    slot is taken, unless the settings allow generating alongside. A route calls ``require()`` once it
    has checked what it was asked for (an unknown checkpoint answers 404 before a busy server's 503)."""

    def __init__(self, manager: SFTJobManager):
        self.manager = manager

    def require(self) -> None:
        """Raise ServiceBusy (503) while every training slot is taken."""
        if self.manager.settings.generate_while_training:
            return
        counts = self.manager.counts()
        training = counts.get("running", 0) + counts.get("stopping", 0)
        if training >= self.manager.max_concurrent_jobs:
            raise ServiceBusy(
                f"{training} job(s) are training and every training slot is taken; generation would compete "
                "with them for memory. Try again when a job ends (or set SFT_GENERATE_WHILE_TRAINING=true)"
            )


async def training_slot(manager: ManagerDep) -> TrainingSlot:
    return TrainingSlot(manager)


TrainingSlotFree = Annotated[TrainingSlot, Depends(training_slot)]


def grading_context(manager: ManagerDep, user: CurrentUser) -> GradingContext:
    """Graders' judge endpoint (and which judges this user may name) and python sandbox limits, from the
    server's settings."""
    settings = manager.settings
    return GradingContext(
        judge=JudgeEndpoint(base_url=settings.judge_base_url, api_key=settings.judge_api_key,
                            timeout_seconds=settings.request_timeout_seconds,
                            check_url=judge_url_guard(settings, user)),
        sandbox=SandboxLimits(seconds_per_sample=settings.python_grader_seconds,
                              memory_bytes=settings.python_grader_memory_mb * 2**20),
    )


GradingDep = Annotated[GradingContext, Depends(grading_context)]
