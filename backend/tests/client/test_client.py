"""``SFTClient`` and ``AsyncSFTClient`` against a live server, and the client alone in a fresh virtualenv."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from client_helpers import REPO
from factories import MISSING
from sft_client import (
    APIConnectionError,
    AsyncSFTClient,
    BadRequestError,
    ConflictError,
    Job,
    NotFoundError,
    SFTClient,
    UnprocessableEntityError,
)


class LosingTransport(httpx.HTTPTransport):
    """The real transport, except that the first answer to each ``/train`` is lost on its way back
    (the server did the work; the client sees a dropped connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/api/sft/train":
            self.sent.append(request)
            if len(self.sent) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response


def test_a_lost_submit_answer_is_retried_with_the_same_idempotency_key(server, job_config):
    before = server.api("GET", "/jobs?limit=1")["total"]
    transport = LosingTransport()
    with SFTClient(server.url, transport=transport, backoff=0.01) as client:
        start = client.train(job_config)
        assert len(transport.sent) == 2
        keys = {request.headers["Idempotency-Key"] for request in transport.sent}
        assert len(keys) == 1
        assert server.api("GET", "/jobs?limit=1")["total"] == before + 1  # one job, not two
        job = client.wait(start.job_id)
    assert job.status == "completed"


class RecordingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return super().handle_request(request)


def test_the_key_and_a_json_content_type_go_with_every_request(server, trained_job):
    transport = RecordingTransport()
    with SFTClient(server.url, api_key="sk-test", transport=transport) as client:
        client.health()
        with pytest.raises(ConflictError):
            client.stop_job(trained_job["job_id"])  # a POST without a body
        client.generate(trained_job["job_id"], "hello", max_new_tokens=1)
    assert [r.headers["Authorization"] for r in transport.sent] == ["Bearer sk-test"] * 3
    posts = [r for r in transport.sent if r.method == "POST"]
    assert len(posts) == 2 and all(r.headers["Content-Type"] == "application/json" for r in posts)


def test_sync_client_covers_the_job_endpoints(server, trained_job, job_config):
    job_id = trained_job["job_id"]
    with SFTClient(server.url) as client:
        health = client.health()
        assert health.status == "ok" and health.max_concurrent_jobs == 1 and health.device in ("cpu", "cuda")

        job = client.get_job(job_id)
        assert isinstance(job, Job) and job.status == "completed" and job.is_terminal
        assert job.adapter_path == trained_job["result"]["adapter_path"]
        assert job.progress.current_step == job.progress.max_steps == 2 and job.progress.loss is not None
        assert job.config == trained_job["config"] and job.raw["config"] == trained_job["config"]

        page = client.list_jobs(status="completed", limit=500)
        assert job_id in [j.job_id for j in page.jobs] and page.total >= 1
        events = client.events(job_id, limit=2)
        assert [e.seq for e in events.events] == [1, 2] and events.next_after == 2
        followed = list(client.follow(job_id, after=2))
        assert followed[0].seq == 3 and followed[-1].type == "completed" and followed[-1].is_terminal
        assert [m["step"] for m in client.metrics(job_id) if "loss" in m] == [1, 2]
        assert [c.step for c in client.checkpoints(job_id)] == [1, 2]
        assert client.logs(job_id, tail=1)[0].endswith("event completed: Training completed")
        assert client.generate(job_id, "hello 1", max_new_tokens=3).completion_tokens <= 3
        chat = client.generate(job_id, messages=[{"role": "user", "content": "hello 2"}], max_new_tokens=3,
                               checkpoint="checkpoint-1", compare_base=True)
        assert chat.base_completion is not None
        assert any(model.name == "smollm2-135m-instruct" for model in client.list_models())
        assert "base_model" in client.config_schema()["properties"]

        with pytest.raises(NotFoundError) as missing:
            client.get_job(MISSING)
        assert missing.value.status_code == 404 and missing.value.detail == f"Job {MISSING} not found"
        with pytest.raises(ConflictError) as ended:
            client.stop_job(job_id)
        assert ended.value.detail == f"Job {job_id} has already ended (completed); nothing to stop"
        with pytest.raises(BadRequestError) as bad:
            client.train({**job_config, "lora_rank": 8})
        assert bad.value.detail == "config.lora_rank: unknown field (did you mean lora_r?)"
        assert bad.value.errors == [{"field": "config.lora_rank", "message": "unknown field (did you mean lora_r?)",
                                     "type": "invalid_config"}]
        with pytest.raises(UnprocessableEntityError) as malformed:
            client.generate(job_id, "hello", max_new_tokens=0)
        assert malformed.value.detail == "max_new_tokens: Input should be greater than or equal to 1"
        assert [e["field"] for e in malformed.value.errors] == ["max_new_tokens"]

        saved = client.save_config("client-sync", {**job_config, "max_steps": 1})
        assert saved.config_id in [c.config_id for c in client.list_configs()]
        assert client.get_config(saved.config_id).config["max_steps"] == 1
        start = client.train(config_id=saved.config_id, overrides={"max_steps": 500})
        assert client.get_job(start.job_id).config["max_steps"] == 500
        last = 0
        for _ in range(2):  # stop it once it trains, resume it, stop it again
            stop = None
            for event in client.follow(start.job_id, after=last):
                last = event.seq
                if event.type == "metrics" and stop is None:
                    stop = client.stop_job(start.job_id)
            assert stop.status == "stopping"
            job = client.get_job(start.job_id)
            assert job.status == "stopped" and job.adapter_path
            if len(job.attempts) == 1:
                assert client.resume_job(start.job_id).job_id == start.job_id
        assert [a["status"] for a in job.attempts] == ["stopped", "stopped"]
        assert client.delete_job(start.job_id).startswith(f"Job {start.job_id} deleted")
        assert client.delete_config(saved.config_id) == f"Config {saved.config_id} deleted"


def test_async_client_trains_follows_and_downloads(server, job_config, tmp_path):
    async def scenario() -> None:
        async with AsyncSFTClient(server.url) as client:
            assert (await client.health()).status == "ok"
            start = await client.train(job_config, idempotency_key="async-once")
            again = await client.train(job_config, idempotency_key="async-once")
            assert again.job_id == start.job_id
            types = [event.type async for event in client.follow(start.job_id)]
            assert types[0] == "created" and types[-1] == "completed" and "metrics" in types
            job = await client.wait(start.job_id)
            assert job.status == "completed" and job.result["global_step"] == 4
            assert len(await client.metrics(start.job_id)) >= 4
            path = await client.download(start.job_id, tmp_path / "adapter")
            assert (path / "adapter_config.json").is_file()
            with pytest.raises(NotFoundError):
                await client.get_job(MISSING)
        async with AsyncSFTClient("http://127.0.0.1:9", max_retries=0) as offline:
            with pytest.raises(APIConnectionError):
                await offline.health()

    asyncio.run(scenario())


def test_the_client_installs_alone_without_torch(server, client_venv):
    python, sft = client_venv / "bin" / "python", client_venv / "bin" / "sft"
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, cwd=Path("/"))
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    listing = "import importlib.metadata as m; print(' '.join(d.metadata['Name'].lower() for d in m.distributions()))"
    installed = set(subprocess.run([str(python), "-c", listing], capture_output=True, text=True,
                                   check=True).stdout.split())
    assert {"sft-client", "httpx", "rich", "pyyaml", "pydantic"} <= installed
    assert not installed & {"torch", "transformers", "peft", "trl", "fastapi", "uvicorn", "sft-service"}
    health = subprocess.run([str(sft), "--url", server.url, "health"], capture_output=True, text=True, cwd=REPO,
                            env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert health.returncode == 0, health.stderr
    assert f"{server.url}: ok, version" in health.stdout
