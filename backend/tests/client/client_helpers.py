"""Helpers of the client tests: a live uvicorn server of this checkout, and the ``sft`` command run
as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from factories import free_port, wait_for

REPO = Path(__file__).resolve().parents[3]
BACKEND = REPO / "backend"
CLIENT = REPO / "clients" / "python"
CLIENT_SRC = CLIENT / "src"
# This checkout's client, whatever else the environment has installed.
sys.path.insert(0, str(CLIENT_SRC))

#: Seconds a tiny job may take, its model loading in a cold server process included.
JOB_TIMEOUT = 180


class LiveServer:
    """``uvicorn app.main:app`` of this checkout in a subprocess, on its own data directory."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / "server.log"
        self.env = {**os.environ, "SFT_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
        self.env.pop("SFT_DATASET_ROOTS", None)  # the default roots hold the data directory
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(BACKEND), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(self.healthy, timeout=60, interval=0.1, message="the server to start")

    def tiny_config(self) -> dict[str, Any]:
        """A config that trains the tiny model (copied into the data directory) for a few fast steps."""
        return {
            "base_model": str(self.data_dir / "tiny-model"),
            "dataset_name": str(self.data_dir / "chat.jsonl"),
            "max_steps": 4,
            "per_device_train_batch_size": 4,
            "learning_rate": 5e-3,
            "logging_steps": 1,
        }

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is saved on the way out."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.url}/api/sft{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.api("GET", f"/jobs/{job_id}")

    def wait_until_ended(self, job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        return wait_for(lambda: (lambda j: j if j["status"] in ("completed", "failed", "stopped") else None)(
            self.job(job_id)), timeout=timeout, interval=0.1, message=f"job {job_id} to end")


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    # JSON is YAML: what the command reads is exactly what the test meant.
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SFT_URL", "SFT_API_KEY", "FORCE_COLOR")}
    env["PYTHONPATH"] = str(CLIENT_SRC)
    env.update(extra)
    return env


def cli_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "sft_client", "--url", url, *args]
