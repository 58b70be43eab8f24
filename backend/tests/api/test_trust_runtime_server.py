"""Issue #23 on a real uvicorn process: 60 streamed chats whose clients leave starve nothing, SIGTERM
ends the server whatever is streaming, and a key in a query string never reaches the access log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from factories import contact_rows, free_port, wait_for, write_jsonl

BACKEND = Path(__file__).resolve().parents[2]
#: Greedy decoding of the tiny random model does not meet its end token within this many tokens (seconds of work).
LONG_TOKENS = 400


def admin_key(data_dir: Path) -> str:
    made = subprocess.run([sys.executable, "-m", "app", "keys", "create", "--name", "admin", "--admin"],
                          env={**os.environ, "SFT_DATA_DIR": str(data_dir), "PYTHONPATH": str(BACKEND)},
                          cwd=BACKEND.parent, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def start_server(root: Path, env: dict[str, str], port: int) -> subprocess.Popen:
    """uvicorn on 127.0.0.1:``port``, its output appended to ``root/server.log``; returns once it answers."""
    log = root / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(BACKEND), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"], env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        assert process.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=60, interval=0.1, message="the server to start")
    return process


def server_env(root: Path, tiny_model_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SFT_DATA_DIR": str(root / "data"), "SFT_DATASET_ROOTS": json.dumps([str(root)]),
            "SFT_MODEL_ROOTS": json.dumps([str(tiny_model_dir.parent)]), "SFT_MODEL_CACHE_DIR": str(root / "models"),
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    """A keyed server on 127.0.0.1 (its log in ``root/server.log``) serving the tiny base model."""
    root = tmp_path_factory.mktemp("trust-runtime")
    key = admin_key(root / "data")
    port = free_port()
    process = start_server(root, server_env(root, tiny_model_dir, SFT_AUTH="keys"), port)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", process=process, log=root / "server.log", key=key,
                              model=str(tiny_model_dir), headers={"Authorization": f"Bearer {key}"})
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def chat_body(server, max_tokens: int) -> dict:
    return {"model": server.model, "messages": [{"role": "user", "content": "hello"}], "stream": True,
            "max_completion_tokens": max_tokens, "temperature": 0}


def test_a_key_in_the_query_string_is_refused_and_not_logged(server):
    secret = server.key
    response = httpx.get(f"{server.url}/api/sft/jobs", params={"api_key": secret}, timeout=10)
    assert response.status_code == 401
    wait_for(lambda: "/api/sft/jobs?api_key=***" in server.log.read_text(), timeout=10,
             message="the access log line")
    assert secret not in server.log.read_text()


def test_one_stream_answers_its_chunks(server):
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=chat_body(server, 8),
                      headers=server.headers, timeout=120) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"] in ("length", "stop")


async def _stream_and_leave(client: httpx.AsyncClient, body: dict, *, chunks: int, patience: float = 2) -> int:
    """Open a stream, read ``chunks`` lines of it (or give up after ``patience`` s), then leave: its status."""
    try:
        async with asyncio.timeout(patience):
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    return response.status_code
                read = 0
                async for line in response.aiter_lines():
                    read += line.startswith("data: ")
                    if read >= chunks:
                        break
                return response.status_code
    except TimeoutError:
        return 0  # still queued behind the others: the client gave up


def test_sixty_streams_that_leave_starve_no_route_and_sigterm_still_stops_the_server(server):
    body = chat_body(server, LONG_TOKENS)
    headers = server.headers

    async def storm() -> list[int]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(_stream_and_leave(client, body, chunks=2 + i % 3) for i in range(60)))

    statuses = asyncio.run(storm())
    assert 200 in statuses and 503 in statuses, statuses  # the gate's bound: 1 running + 8 queued by default
    refused = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert refused.status_code in (200, 503)
    if refused.status_code == 503:
        assert refused.headers["Retry-After"]

    def timed(method: str, path: str, **kwargs) -> httpx.Response:
        started = time.monotonic()
        response = httpx.request(method, f"{server.url}{path}", headers=headers, timeout=10, **kwargs)
        took = time.monotonic() - started
        assert took < 1, f"{method} {path} took {took:.2f} s"
        return response

    assert timed("GET", "/api/sft/jobs").status_code == 200
    assert timed("GET", "/api/keys").status_code == 200
    upload = timed("POST", "/v1/files", data={"purpose": "fine-tune"},
                   files={"file": ("t.jsonl", b'{"messages": [{"role": "user", "content": "hi"}, '
                                                b'{"role": "assistant", "content": "yo"}]}\n')})
    assert upload.status_code == 200, upload.text
    assert timed("POST", "/api/sft/jobs/no-such-job/stop").status_code == 404
    assert timed("GET", "/v1/files").status_code == 200

    def idle() -> bool:
        return httpx.get(f"{server.url}/health", headers=headers, timeout=5).json()["model_requests"] == \
            {"running": 0, "waiting": 0}

    wait_for(idle, timeout=15, interval=0.1, message="every place the leaving clients held to be free")

    # Streams that stay: SIGTERM still ends the server within seconds.
    async def held_then_term() -> float:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30,
                                     limits=httpx.Limits(max_connections=100)) as client:
            tasks = [asyncio.create_task(_stream_and_leave(client, body, chunks=10_000, patience=30)) for _ in range(20)]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                counts = (await client.get("/health")).json()["model_requests"]
                if counts["running"] == 1 and counts["waiting"] >= 1:
                    break
                await asyncio.sleep(0.05)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            while server.process.poll() is None and time.monotonic() - started < 10:
                await asyncio.sleep(0.05)
            took = time.monotonic() - started
            await asyncio.gather(*tasks, return_exceptions=True)
            return took

    took = asyncio.run(held_then_term())
    assert server.process.poll() is not None, "the server did not stop within 10 s of SIGTERM"
    assert took < 5, f"SIGTERM took {took:.1f} s to stop the server"


# kill -9 mid-GGUF export


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of ``pid``'s child processes, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
def test_a_server_killed_mid_gguf_export_leaves_no_converter_staging_folder_or_log(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", contact_rows(16))
    env = server_env(tmp_path, tiny_model_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/sft"
    process = start_server(tmp_path, env, port)
    try:
        config = {"base_model": str(tiny_model_dir), "dataset_name": str(data), "max_steps": 2,
                  "per_device_train_batch_size": 4, "logging_steps": 1}
        job_id = httpx.post(f"{url}/train", json={"config": config}, timeout=30).json()["job_id"]
        wait_for(lambda: httpx.get(f"{url}/jobs/{job_id}", timeout=5).json()["status"] == "completed",
                 timeout=180, interval=0.2, message="the tiny job to train")
        started = httpx.post(f"{url}/jobs/{job_id}/export", json={"format": "gguf", "type": "f16"}, timeout=30)
        assert started.status_code == 202, started.text
        record = started.json()

        def converter() -> int | None:
            for pid, cmdline in _children(process.pid):
                if "convert_hf_to_gguf" in cmdline:
                    return pid
            assert httpx.get(f"{url}/jobs/{job_id}/exports/{record['export_id']}", timeout=5).json()["status"] in \
                ("pending", "running"), "the export ended before its converter was seen"
            return None

        child = wait_for(converter, timeout=120, interval=0.02, message="the GGUF converter to start")
        exports_dir = Path(record["path"]).parent
        staging = exports_dir / f".{record['export_id']}-merged"
        assert staging.is_dir() and (exports_dir / f"{record['export_id']}.log").exists()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        wait_for(lambda: not _alive(child), timeout=10, interval=0.05, message="the orphaned converter to die")

        process = start_server(tmp_path, env, port)
        after = httpx.get(f"{url}/jobs/{job_id}/exports/{record['export_id']}", timeout=10).json()
        assert after["status"] == "failed" and after["error"].startswith("interrupted: the server stopped")
        assert sorted(p.name for p in exports_dir.iterdir()) == [], "staging folder, partial export or log left"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
