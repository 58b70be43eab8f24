"""The OpenAI-compatible API (/v1): files and fine-tuning jobs (routes.py), models and chat completions (chat.py),
graders validate and run (graders.py)."""

from fastapi import APIRouter

from . import chat, graders, routes

router = APIRouter()
router.include_router(routes.router)
router.include_router(chat.router)
router.include_router(graders.router)

__all__ = ["router"]
