"""A live server as the /v1 tests see it."""

from __future__ import annotations

import httpx
import openai

from app.api.sft_job_manager import SFTJobManager


class Live:
    """A running server: its base URL, the manager behind it, and SDK and plain HTTP clients."""

    def __init__(self, url: str, manager: SFTJobManager):
        self.url = url
        self.manager = manager
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0, timeout=60)
        self.http = httpx.Client(base_url=url, timeout=60)
