"""The FastAPI application: routers, error mapping, and the job manager's lifetime."""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .api.auth import AuthGate, AuthSetupError, bind_host, document_keys, resolve_auth_mode, startup_warning
from .api.deps import GateDep, ManagerDep, OptionalUser
from .api.guard import RequestGuard
from .api.main import api_router
from .api.model_requests import ModelRequestGate
from .api.schemas import ErrorResponse, HealthResponse
from .jobs.exports import ExportManager
from .jobs.manager import SFTJobManager, get_sft_job_manager
from .jobs.scoped import ScopedJobs
from .core.access_log import redact_access_log
from .core.errors import register_error_handlers
from .core.settings import settings as default_settings
from .sft.model_cache import ModelCache
from .sft.models import default_device, gpu_memory
from .store.keys import KeyStore
from .web import mount_web

try:
    VERSION = version("sft-service")
except PackageNotFoundError:
    VERSION = "0.0.0"


#: Start-up messages go to uvicorn's own log (stderr): the job log handlers on the root logger keep
#: only job threads' records, so the "app" logger alone would be silent under uvicorn.
startup_logger = logging.getLogger("uvicorn.error")


def create_app(manager: SFTJobManager | None = None, *, host: str | None = None) -> FastAPI:
    """Build the app. Without ``manager`` the process-wide one is created (and recovers its jobs)
    when the app starts. ``host``: the address the server listens on (``python -m app serve`` passes
    it; otherwise uvicorn's ``--host`` or ``UVICORN_HOST``), which decides whether keys are needed."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if getattr(app.state, "manager", None) is None:
            app.state.manager = get_sft_job_manager()
        if app.state.keys is None:
            app.state.keys = KeyStore(app.state.manager.store)
        ExportManager.of(app.state.manager)  # exports a killed server left unfinished: failed, files removed
        bound = bind_host(sys.argv, explicit=host)
        try:
            app.state.auth_mode = resolve_auth_mode(settings.auth, bound, app.state.keys)
        except AuthSetupError as exc:
            startup_logger.error("%s", exc)
            raise
        warning = startup_warning(app.state.auth_mode, bound, app.state.keys)
        if warning:
            startup_logger.warning(warning)
        # A fresh gate per start: one closed by an earlier shutdown refuses work.
        app.state.model_gate = gate = new_gate()
        gate.close_on_signals()
        yield
        gate.close()
        app.state.manager.webhooks.close()  # what was in flight stays pending: sent after the next start

    app = FastAPI(
        title="SFT job service",
        version=VERSION,
        description="Fine-tune Hugging Face causal LMs (LoRA, QLoRA, full) on your own machine: "
        "submit a job, watch it train, stop it, take the adapter away.",
        lifespan=lifespan,
        docs_url=None,  # served offline by mount_web
        redoc_url=None,
    )
    app.state.manager = manager
    settings = manager.settings if manager is not None else default_settings
    app.state.keys = KeyStore(manager.store) if manager is not None else None
    # Settled by the lifespan once the address is known; until then (a test client without it) loopback's.
    app.state.auth_mode = settings.auth or "off"
    app.state.auth_implicit = settings.auth is None
    app.state.model_cache = ModelCache(max_models=settings.generation_cache_size)

    def new_gate() -> ModelRequestGate:
        return ModelRequestGate(workers=settings.model_request_workers, max_queued=settings.max_queued_model_requests,
                                timeout_seconds=settings.request_timeout_seconds)

    app.state.model_gate = new_gate()
    register_error_handlers(app)
    redact_access_log()
    # Added first, so it runs after RequestGuard (a bad Host or an oversized body never reaches a key check).
    app.add_middleware(AuthGate)
    app.add_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts,
                       allowed_origins=[*settings.allowed_origins, *settings.cors_origins],
                       max_body_bytes=settings.max_request_bytes,
                       # The multipart envelope around an uploaded file: headers, boundaries, the purpose field.
                       uploads={"/v1/files": settings.max_upload_bytes + 64 * 1024})
    app.include_router(api_router)
    if settings.cors_origins:
        # Outermost: it answers preflights itself (they carry no key), and adds its headers to 401s too.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key",
                                          "Last-Event-ID"])
    mount_web(app)
    document_keys(app)

    @app.get("/health", response_model=HealthResponse, tags=["service"],
             responses={400: {"model": ErrorResponse, "description": "A Host header this server does not answer to"}})
    async def health(manager: ManagerDep, gate: GateDep, user: OptionalUser) -> HealthResponse:
        """Liveness, version, auth mode, the caller's job counts (none for an anonymous caller), the executor's
        state and model requests in progress."""
        jobs = ScopedJobs(manager, user).counts() if user is not None else {}
        # Server-wide activity (GPU memory in use, model requests, the executor's runs) is the admins': a user's
        # key sees its own job counts and whether the executor is up.
        wide = user is not None and user.admin
        executor = manager.executor.health()
        return HealthResponse(version=VERSION, auth=app.state.auth_mode, max_concurrent_jobs=manager.max_concurrent_jobs,
                              jobs=jobs, device=default_device(), gpu=gpu_memory() if wide else None,
                              model_requests=gate.counts() if wide else {},
                              executor=executor if wide else {k: executor[k] for k in ("name", "status") if k in executor})

    return app


app = create_app()
