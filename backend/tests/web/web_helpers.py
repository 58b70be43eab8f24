"""A real uvicorn process for the browser tests: its environment, started on a free port, stopped."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from factories import free_port, wait_for

BACKEND = Path(__file__).resolve().parents[2]
#: What a server process of this checkout imports: the backend, and the light client's response models.
SERVER_PATH = os.pathsep.join([str(BACKEND), str(BACKEND.parent / "clients" / "python" / "src")])


class Server:
    def __init__(self, url: str, root: Path, process: subprocess.Popen, log: Path):
        self.url = url
        self.root = root
        self.process = process
        self.log = log

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=60, **kwargs)


def web_env(root: Path, tiny_model_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test server with its own data directory under ``root``."""
    return {**os.environ, "SFT_DATA_DIR": str(root / "data"), "SFT_DATASET_ROOTS": json.dumps([str(root)]),
            "SFT_MODEL_ROOTS": json.dumps([str(tiny_model_dir.parent)]),
            "SFT_MODEL_CACHE_DIR": str(root / "models"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            **extra}


@contextlib.contextmanager
def running_server(root: Path, env: dict[str, str], *extra_args: str) -> Iterator[Server]:
    """A real uvicorn process on a free port, its output in ``root/server.log``; stopped on exit."""
    port = free_port()
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(BACKEND), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", *extra_args],
            env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=60, interval=0.1, message="the server to start")
        yield Server(url, root, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
