"""Fixtures of the /v1 tests: a live uvicorn server on a manager, and the official openai client on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.api.sft_job_manager import SFTJobManager
from app.main import create_app
from factories import contact_rows, write_jsonl
from openai_live import Live


@pytest.fixture
def serve(serve_app):
    """``serve(manager) -> Live``: run the app on ``manager`` in a uvicorn server until the test ends."""
    made: list[Live] = []

    def start(manager: SFTJobManager) -> Live:
        live = Live(serve_app(create_app(manager=manager)), manager)
        made.append(live)
        return live

    yield start
    for live in made:  # before serve_app stops the servers
        live.client.close()
        live.http.close()


@pytest.fixture
def training_server(make_manager, serve) -> Live:
    """A live server whose jobs really train (the default runner), with pre-flight on."""
    return serve(make_manager(runner=None, preflight=True))


@pytest.fixture
def gated_server(make_manager, serve) -> Live:
    """A live server whose jobs never train: each waits in a GateRunner until stopped or released."""
    return serve(make_manager(preflight=True))


@pytest.fixture
def contacts_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "contacts.jsonl", contact_rows(16))
