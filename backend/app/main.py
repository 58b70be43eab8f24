"""The FastAPI application: routers, error mapping, and the job manager's lifetime."""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from .api.dataset_routes import router as dataset_router
from .api.deps import GateDep, ManagerDep
from .api.export_routes import router as export_router
from .api.guard import RequestGuard, exposure_warning
from .api.model_requests import ModelRequestGate
from .api.model_routes import router as model_router
from .api.openai import router as openai_router
from .api.schemas import ErrorResponse, HealthResponse
from .jobs.manager import SFTJobManager, get_sft_job_manager
from .api.sft_routes import router as sft_router
from .core.errors import register_error_handlers
from .core.settings import settings as default_settings
from .sft.model_cache import ModelCache
from .sft.models import default_device, gpu_memory
from .web import mount_web

try:
    VERSION = version("sft-service")
except PackageNotFoundError:
    VERSION = "0.0.0"


logger = logging.getLogger("app")


def _cli_host(argv: list[str]) -> str | None:
    """The address given to uvicorn's command line (``--host X`` or ``--host=X``), if any.

    The app is not told where it listens; RequestGuard also warns at the first request that
    arrives on a non-loopback address.
    """
    for i, arg in enumerate(argv):
        if arg == "--host" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--host="):
            return arg.split("=", 1)[1]
    return None


def create_app(manager: SFTJobManager | None = None) -> FastAPI:
    """Build the app. Without ``manager`` the process-wide one is created (and recovers its jobs)
    when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if getattr(app.state, "manager", None) is None:
            app.state.manager = get_sft_job_manager()
        warning = exposure_warning(_cli_host(sys.argv) or "127.0.0.1")
        if warning:
            logger.warning(warning)
        # A fresh gate per start: one closed by an earlier shutdown refuses work.
        app.state.model_gate = gate = new_gate()
        gate.close_on_signals()
        yield
        gate.close()

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
    app.state.model_cache = ModelCache(max_models=settings.generation_cache_size)

    def new_gate() -> ModelRequestGate:
        return ModelRequestGate(workers=settings.model_request_workers, max_queued=settings.max_queued_model_requests,
                                timeout_seconds=settings.request_timeout_seconds)

    app.state.model_gate = new_gate()
    register_error_handlers(app)
    app.add_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins,
                       max_body_bytes=settings.max_request_bytes,
                       # The multipart envelope around an uploaded file: headers, boundaries, the purpose field.
                       uploads={"/v1/files": settings.max_upload_bytes + 64 * 1024})
    app.include_router(sft_router)
    app.include_router(model_router)
    app.include_router(dataset_router)
    app.include_router(openai_router)
    app.include_router(export_router)
    mount_web(app)

    @app.get("/health", response_model=HealthResponse, tags=["service"],
             responses={400: {"model": ErrorResponse, "description": "A Host header this server does not answer to"}})
    async def health(manager: ManagerDep, gate: GateDep) -> HealthResponse:
        """Liveness, version, job counts, the executor's state and model requests in progress."""
        return HealthResponse(version=VERSION, max_concurrent_jobs=manager.max_concurrent_jobs,
                              jobs=manager.counts(), device=default_device(), gpu=gpu_memory(),
                              model_requests=gate.counts(), executor=manager.executor.health())

    return app


app = create_app()
