"""Fixtures of the job-service tests (tests/jobs, tests/api, tests/web): managers that clean up after
themselves, HTTP clients on them. Loaded by the top-level conftest as a plugin."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.api.sft_job_manager import SFTJobManager
from app.core.settings import Settings
from app.main import create_app
from app.store import SQLiteStore
from factories import free_port, wait_for
from job_helpers import GateRunner, quiesce


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "x.db"


@pytest.fixture
def make_manager(settings: Settings, db_path: Path):
    """``make_manager(**kwargs)``: an SFTJobManager on ``tmp_path/x.db`` with a GateRunner, no pre-flight.

    Every manager made is stopped (jobs ended, threads exited) after the test.
    """
    made: list[SFTJobManager] = []

    def make(**kwargs: Any) -> SFTJobManager:
        kwargs.setdefault("settings", settings)
        if "store" not in kwargs:
            kwargs["store"] = SQLiteStore(db_path)
        if "runner" not in kwargs:
            kwargs["runner"] = GateRunner()
        kwargs.setdefault("max_concurrent_jobs", 1)
        kwargs.setdefault("preflight", False)
        manager = SFTJobManager(**kwargs)
        made.append(manager)
        return manager

    yield make
    quiesce(*made)
    for manager in made:
        manager.store.close()


@pytest.fixture
def manager(make_manager) -> SFTJobManager:
    return make_manager()


@pytest.fixture
def checked(make_manager):
    """A manager that pre-flights every submit."""
    return make_manager(preflight=True)


@pytest.fixture
def checked_client(checked, client_for):
    return client_for(checked)


@pytest.fixture
def gate(manager: SFTJobManager) -> GateRunner:
    return manager.runner


@pytest.fixture
def client_for():
    """``client_for(manager)``: a TestClient on ``create_app(manager=manager)``."""
    clients: list[TestClient] = []

    def make(manager: SFTJobManager) -> TestClient:
        client = TestClient(create_app(manager=manager))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def serve_app():
    """``serve_app(app, log_level="warning") -> base_url``: ``app`` on a real uvicorn server in a thread of this
    process (127.0.0.1, a free port) until the test ends: the one way the tests start an in-process server."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app, *, log_level: str = "warning") -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level,
                                               timeout_graceful_shutdown=2))
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        running.append((server, thread))
        wait_for(lambda: server.started, timeout=30, message="uvicorn to start")
        return f"http://127.0.0.1:{port}"

    yield start
    for server, _ in running:
        server.should_exit = True
    for _, thread in running:
        thread.join(timeout=15)


@pytest.fixture
def client(manager: SFTJobManager, client_for) -> TestClient:
    return client_for(manager)


@pytest.fixture
def fake_config() -> dict[str, Any]:
    """A config that validates (pre-flight off: its model and dataset need not exist)."""
    return {"base_model": "tiny-model", "dataset_name": "data.jsonl", "max_steps": 3}
