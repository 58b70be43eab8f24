"""Kill a real uvicorn server mid-training; the restarted server resumes the job from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from factories import free_port, wait_for

BACKEND = Path(__file__).resolve().parents[2]


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(BACKEND), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=60, message="the server to start")
    return process


def test_killed_server_resumes_the_job(tmp_path, tiny_config):
    env = {**os.environ, "SFT_DATA_DIR": str(tmp_path / "data"), "SFT_DATASET_ROOTS": json.dumps([str(tmp_path)]),
           "SFT_MODEL_ROOTS": json.dumps([str(Path(tiny_config["base_model"]).parent)]), "OMP_NUM_THREADS": "1"}
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/sft"
    config = {**tiny_config, "max_steps": 400, "save_steps": 5}
    server = start_server(port, env)
    try:
        job_id = httpx.post(f"{url}/train", json={"config": config}, timeout=30).json()["job_id"]

        def checkpointed() -> bool:
            job = httpx.get(f"{url}/jobs/{job_id}", timeout=5).json()
            return ((job["progress"] or {}).get("current_step") or 0) >= 12

        wait_for(checkpointed, timeout=120, interval=0.1, message="a few checkpoints")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)

        server = start_server(port, env)
        final = wait_for(lambda: (lambda j: j if j["status"] in ("completed", "failed") else None)(
            httpx.get(f"{url}/jobs/{job_id}", timeout=5).json()), timeout=300, interval=0.2, message="completion")
        assert final["status"] == "completed", final["error"]
        assert final["result"]["global_step"] == 400
        first, second = final["attempts"]
        assert first["status"] == "interrupted"
        assert second["resumed_from_step"] >= 10 and second["status"] == "completed"
        types = [e["type"] for e in httpx.get(f"{url}/jobs/{job_id}/events?limit=1000", timeout=5).json()["events"]]
        assert "interrupted" in types and "resumed" in types
    finally:
        server.kill()
        server.wait(timeout=10)
