"""The one router of the HTTP API: every surface's router, each under the prefix it declares
(``/api/sft``, ``/api/keys``, ``/api/webhooks``, ``/v1``). ``create_app`` includes this, and adds only ``/health`` and the web."""

from __future__ import annotations

from fastapi import APIRouter

from . import dataset_routes, export_routes, key_routes, model_routes, preference_routes, sft_routes, webhook_routes
from .openai import router as openai_router

api_router = APIRouter()
for router in (sft_routes.router, model_routes.router, dataset_routes.router, openai_router,
               export_routes.router, key_routes.router, webhook_routes.router, preference_routes.router):
    api_router.include_router(router)

__all__ = ["api_router"]
