"""The OpenAI-compatible API (/v1): files and fine-tuning jobs (routes.py), models and chat completions (chat.py)."""

from fastapi import APIRouter

from . import chat, routes

router = APIRouter()
router.include_router(routes.router)
router.include_router(chat.router)

__all__ = ["router"]
