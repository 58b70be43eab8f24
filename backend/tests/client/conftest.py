"""Fixtures of the client tests: a live uvicorn server training the tiny model, the ``sft`` command
run as a user runs it, and a virtualenv holding nothing but the client package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest

from client_helpers import CLIENT, JOB_TIMEOUT, REPO, LiveServer, Run, cli_command, cli_env
from factories import contact_rows, write_jsonl


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_model_dir) -> LiveServer:
    """One live server for the client tests (a test may restart it; every job it starts ends)."""
    root = tmp_path_factory.mktemp("client-server")
    live = LiveServer(root / "data")
    live.data_dir.mkdir()
    # Model and data inside the data directory: allowed by the server's default roots.
    shutil.copytree(tiny_model_dir, live.data_dir / "tiny-model")
    write_jsonl(live.data_dir / "chat.jsonl", contact_rows(32))
    live.start()
    yield live
    live.kill()


@pytest.fixture
def job_config(server: LiveServer) -> dict[str, Any]:
    """A config that trains the tiny model for a few fast steps on the live server."""
    return server.tiny_config()


@pytest.fixture
def sft(server: LiveServer):
    """``sft(*args)``: run the command against the live server (not a terminal: plain output)."""

    def run(*args: str, timeout: float = JOB_TIMEOUT) -> Run:
        done = subprocess.run(cli_command(server.url, *args), env=cli_env(), cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
        return Run(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def cli(server: LiveServer, capsys):
    """``cli(*args)``: the command's ``main`` in this process (no interpreter start-up), output captured."""
    from sft_client.cli import main

    def run(*args: str) -> Run:
        capsys.readouterr()
        try:
            code = main(["--url", server.url, *args])
        except SystemExit as exit:  # argparse's usage errors
            code = exit.code
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def trained_job(server: LiveServer) -> dict[str, Any]:
    """A job of the live server that completed 2 steps (with a checkpoint at each)."""
    config = {**server.tiny_config(), "max_steps": 2, "save_steps": 1}
    job = server.wait_until_ended(server.api("POST", "/train", json={"config": config})["job_id"])
    assert job["status"] == "completed", job["error"]
    return job


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with only the client package installed (its dependencies from the index).

    Made without pip of its own (ensurepip alone takes ~10 s): this environment's pip installs into it.
    """
    path = tmp_path_factory.mktemp("client-venv") / "venv"
    venv.EnvBuilder(with_pip=False).create(path)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install", "--quiet",
                    "--disable-pip-version-check", str(CLIENT)], check=True, timeout=600)
    return path
