"""Fixtures of the /v1 tests: a live uvicorn server on a manager, and the official openai client on it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import uvicorn

from app.api.sft_job_manager import SFTJobManager
from app.main import create_app
from factories import contact_rows, free_port, wait_for, write_jsonl
from openai_live import Live


@pytest.fixture
def serve():
    """``serve(manager) -> Live``: run the app on ``manager`` in a uvicorn server until the test ends."""
    running: list[tuple[uvicorn.Server, threading.Thread, Live]] = []

    def start(manager: SFTJobManager) -> Live:
        port = free_port()
        config = uvicorn.Config(create_app(manager=manager), host="127.0.0.1", port=port, log_level="warning",
                                timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        wait_for(lambda: server.started, timeout=30, message="uvicorn to start")
        live = Live(f"http://127.0.0.1:{port}", manager)
        running.append((server, thread, live))
        return live

    yield start
    for server, _, live in running:
        live.client.close()
        live.http.close()
        server.should_exit = True
    for _, thread, _ in running:
        thread.join(timeout=15)


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
