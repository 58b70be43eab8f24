"""The OpenAI-compatible API (/v1): files, fine-tuning jobs, models and chat completions."""

from .routes import router

__all__ = ["router"]
