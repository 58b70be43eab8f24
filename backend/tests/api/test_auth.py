"""API keys: the command, the two headers, 401s, quotas, jobs from before keys, CORS, start-up on a
non-loopback address (a real uvicorn), the openai SDK, and keys never written anywhere."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from sft_client import AuthenticationError as SFTAuthenticationError
from sft_client import NotFoundError as SFTNotFound
from sft_client import SFTClient

from app.api.auth import bind_host
from app.core.settings import Settings
from app.main import create_app
from app.store import SQLiteStore
from app.store.keys import KeyStore
from factories import free_port, wait_for

BACKEND = Path(__file__).resolve().parents[2]
REPO = BACKEND.parent
#: The server imports its response models from this checkout's light client (sft_client.models).
SERVER_PATH = os.pathsep.join([str(BACKEND), str(REPO / "clients" / "python" / "src")])


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": "keys", "max_active_jobs_per_key": 2})


@pytest.fixture
def world(make_manager, keyed):
    manager = make_manager(settings=keyed)
    keys = KeyStore(manager.store)
    alice = keys.create("alice")[1]
    bob = keys.create("bob")[1]
    root = keys.create("root", admin=True)[1]
    return manager, keys, TestClient(create_app(manager=manager)), {"alice": alice, "bob": bob, "root": root}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SFT_DATA_DIR": str(data_dir), "PYTHONPATH": SERVER_PATH}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


# Keys


def test_keys_are_stored_hashed_and_verified(tmp_path: Path):
    store = SQLiteStore(tmp_path / "k.db")
    keys = KeyStore(store)
    record, key = keys.create("alice")
    assert key.startswith(f"sft_{record.key_id}_") and len(key) > 40
    assert keys.verify(key) == record
    assert keys.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert keys.verify(f"sft_{record.key_id}_") is None and keys.verify("sft_") is None and keys.verify("x") is None
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("k.db*"))
    assert key.split("_", 2)[2].encode() not in raw
    keys.revoke(record.key_id)
    assert keys.verify(key) is None
    store.close()


def test_keys_command_creates_lists_and_revokes(tmp_path: Path):
    made = run_cli("keys", "create", "--name", "alice", "--admin", data_dir=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("sft_") and "not shown again" in made.stderr
    listed = run_cli("keys", "list", data_dir=tmp_path)
    key_id = key.split("_")[1]
    assert f"sft_{key_id}" in listed.stdout and "alice" in listed.stdout and key not in listed.stdout
    assert run_cli("keys", "revoke", key_id, data_dir=tmp_path).returncode == 0
    assert run_cli("keys", "list", data_dir=tmp_path).stdout.splitlines()[1].split()[-1] != "-"  # revoked at
    bad = run_cli("keys", "create", "--name", "a b", data_dir=tmp_path)
    assert bad.returncode == 2 and "name:" in bad.stderr
    assert run_cli("keys", "revoke", "nope", data_dir=tmp_path).returncode == 1


def test_bearer_and_x_api_key_both_work_and_failures_say_how(world):
    manager, keys, client, k = world
    assert client.get("/api/sft/jobs", headers=bearer(k["alice"])).status_code == 200
    assert client.get("/api/sft/jobs", headers={"X-API-Key": k["alice"]}).status_code == 200
    missing = client.get("/api/sft/jobs")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer <key>" in missing.json()["detail"]
    wrong = client.get("/api/sft/jobs", headers=bearer(k["alice"] + "x"))
    assert wrong.status_code == 401 and wrong.json()["detail"] == "The API key is not valid: it is malformed, " \
                                                                   "unknown or revoked"
    assert k["alice"] not in wrong.text
    v1 = client.get("/v1/models", headers=bearer("nope"))
    assert v1.status_code == 401 and v1.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/api/sft/jobs", headers={"Authorization": f"Basic {k['alice']}"}).status_code == 401


def test_a_revoked_key_is_refused_at_once(world):
    manager, keys, client, k = world
    assert client.get("/api/sft/jobs", headers=bearer(k["bob"])).status_code == 200
    keys.revoke(k["bob"].split("_")[1])
    assert client.get("/api/sft/jobs", headers=bearer(k["bob"])).status_code == 401


def test_key_routes_are_for_admins(world):
    manager, keys, client, k = world
    assert client.get("/api/keys", headers=bearer(k["alice"])).status_code == 403
    made = client.post("/api/keys", json={"name": "carol"}, headers=bearer(k["root"]))
    assert made.status_code == 201
    carol = made.json()["key"]
    listed = client.get("/api/keys", headers=bearer(k["root"])).json()
    assert {"alice", "bob", "root", "carol"} <= {r["name"] for r in listed}
    assert all("key" not in r for r in listed) and carol not in str(listed)
    assert client.get("/api/sft/jobs", headers=bearer(carol)).status_code == 200
    assert client.delete(f"/api/keys/{made.json()['key_id']}", headers=bearer(k["root"])).json()["revoked_at"]
    assert client.get("/api/sft/jobs", headers=bearer(carol)).status_code == 401
    assert client.post("/api/keys", json={"name": "a b"}, headers=bearer(k["root"])).status_code == 400
    assert client.delete("/api/keys/nope", headers=bearer(k["root"])).json()["detail"] == "API key nope not found"


# Ownership


def test_each_user_sees_their_own_and_admins_see_all(world, fake_config):
    manager, keys, client, k = world
    a = client.post("/api/sft/train", json={"config": fake_config}, headers=bearer(k["alice"])).json()["job_id"]
    b = client.post("/api/sft/train", json={"config": fake_config}, headers=bearer(k["bob"])).json()["job_id"]
    assert manager.get_job(a).owner == "alice" and manager.get_job(b).owner == "bob"
    ids = lambda who: [j["job_id"] for j in client.get("/api/sft/jobs", headers=bearer(k[who])).json()["jobs"]]
    assert ids("alice") == [a] and ids("bob") == [b] and set(ids("root")) == {a, b}
    assert client.get(f"/api/sft/jobs/{a}", headers=bearer(k["bob"])).json() == {"detail": f"Job {a} not found"}
    assert client.post(f"/api/sft/jobs/{a}/stop", headers=bearer(k["root"])).status_code == 200


def test_idempotency_keys_are_per_user(world, fake_config):
    manager, keys, client, k = world
    same = {"Idempotency-Key": "retry-1"}
    a = client.post("/api/sft/train", json={"config": fake_config}, headers={**bearer(k["alice"]), **same})
    b = client.post("/api/sft/train", json={"config": fake_config}, headers={**bearer(k["bob"]), **same})
    assert a.status_code == b.status_code == 200 and a.json()["job_id"] != b.json()["job_id"]
    again = client.post("/api/sft/train", json={"config": fake_config}, headers={**bearer(k["alice"]), **same})
    assert again.json()["job_id"] == a.json()["job_id"]


def test_quota_limits_pending_and_running_jobs_per_user(world, fake_config):
    manager, keys, client, k = world
    jobs = [client.post("/api/sft/train", json={"config": fake_config}, headers=bearer(k["alice"])) for _ in range(3)]
    assert [r.status_code for r in jobs] == [200, 200, 429]
    assert jobs[2].json()["detail"] == ("2 of your jobs are pending or running, the most one key may have "
                                        "(SFT_MAX_ACTIVE_JOBS_PER_KEY=2); wait for one to end or stop one")
    assert client.post("/api/sft/train", json={"config": fake_config}, headers=bearer(k["bob"])).status_code == 200
    assert client.post("/api/sft/train", json={"config": fake_config}, headers=bearer(k["root"])).status_code == 200
    client.post(f"/api/sft/jobs/{jobs[1].json()['job_id']}/stop", headers=bearer(k["alice"]))
    assert client.post("/api/sft/train", json={"config": fake_config}, headers=bearer(k["alice"])).status_code == 200
    stopped = jobs[1].json()["job_id"]
    resumed = client.post(f"/api/sft/jobs/{stopped}/resume", headers=bearer(k["alice"]))
    assert resumed.status_code == 429 and "SFT_MAX_ACTIVE_JOBS_PER_KEY=2" in resumed.json()["detail"]


def test_jobs_from_before_keys_belong_to_the_admins(tmp_path: Path, make_manager, keyed, fake_config):
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    # The jobs and files tables as they were before keys (no owner column).
    conn.executescript("""
        CREATE TABLE jobs (job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, status TEXT NOT NULL, config TEXT NOT NULL,
            created_at TEXT NOT NULL, started_at TEXT, completed_at TEXT, error TEXT, error_detail TEXT, result TEXT,
            progress TEXT, attempts TEXT, idempotency_key TEXT UNIQUE, request_hash TEXT);
        CREATE TABLE configs (config_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, config TEXT NOT NULL,
            created_at TEXT NOT NULL);
        CREATE TABLE files (file_id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL,
            bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, path TEXT NOT NULL, details TEXT);
    """)
    conn.execute("INSERT INTO jobs (job_id, seq, status, config, created_at) VALUES (?, 1, 'completed', ?, ?)",
                 ("old-job", '{"output_dir": "/tmp/x", "base_model": "m", "dataset_name": "d"}',
                  "2026-01-01T00:00:00+00:00"))
    conn.execute("INSERT INTO configs VALUES ('old-config', 'old', '{}', '2026-01-01T00:00:00+00:00')")
    conn.commit()
    conn.close()
    manager = make_manager(settings=keyed, store=SQLiteStore(db))
    keys = KeyStore(manager.store)
    root, alice = keys.create("root", admin=True)[1], keys.create("alice")[1]
    client = TestClient(create_app(manager=manager))
    assert client.get("/api/sft/jobs/old-job", headers=bearer(root)).json()["status"] == "completed"
    assert client.get("/api/sft/jobs/old-job", headers=bearer(alice)).status_code == 404
    assert client.get("/api/sft/jobs", headers=bearer(alice)).json()["total"] == 0
    assert [c["config_id"] for c in client.get("/api/sft/configs", headers=bearer(root)).json()] == ["old-config"]
    assert client.get("/api/sft/configs", headers=bearer(alice)).json() == []


# Browsers


def test_cors_is_closed_unless_origins_are_listed(make_manager, settings):
    preflight = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    closed = TestClient(create_app(manager=make_manager()))
    assert "access-control-allow-origin" not in closed.options("/api/sft/jobs", headers=preflight).headers
    assert "access-control-allow-origin" not in closed.get("/health", headers={"Origin": preflight["Origin"]}).headers
    listed = settings.model_copy(update={"cors_origins": ["http://elsewhere.example"]})
    opened = TestClient(create_app(manager=make_manager(settings=listed)))
    answer = opened.options("/api/sft/jobs", headers=preflight)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "http://elsewhere.example"
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()


# Start-up


def test_the_bound_host_is_read_from_uvicorn_arguments():
    assert bind_host(["uvicorn", "app.main:app", "--host", "0.0.0.0"], {}) == "0.0.0.0"
    assert bind_host(["uvicorn", "--host=::", "app.main:app"], {}) == "::"
    assert bind_host(["uvicorn", "app.main:app"], {"UVICORN_HOST": "10.1.2.3"}) == "10.1.2.3"
    assert bind_host(["uvicorn", "app.main:app"], {}) == "127.0.0.1"
    assert bind_host(["uvicorn", "--uds", "/tmp/s"], {}) == "127.0.0.1"
    assert bind_host([], {}, explicit="0.0.0.0") == "0.0.0.0"


def start_uvicorn(data_dir: Path, port: int, *, launcher: bool = False, **env: str) -> subprocess.Popen:
    """``uvicorn app.main:app --host 0.0.0.0`` as ``make run HOST=0.0.0.0`` runs it (or ``python -m app serve``)."""
    environ = {**os.environ, "SFT_DATA_DIR": str(data_dir), "PYTHONPATH": SERVER_PATH}
    environ.pop("SFT_AUTH", None)
    environ.update(env)
    command = (["-m", "app", "serve"] if launcher else
               ["-m", "uvicorn", "app.main:app", "--app-dir", str(BACKEND)])
    return subprocess.Popen([sys.executable, *command, "--host", "0.0.0.0", "--port", str(port)], cwd=REPO,
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.terminate()
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def test_a_real_server_on_0000_without_keys_refuses_to_start(tmp_path: Path):
    process = start_uvicorn(tmp_path / "data", free_port())
    try:
        process.wait(timeout=120)
    finally:
        out = stop(process)
    assert process.returncode != 0
    assert "Refusing to start: this server would listen on 0.0.0.0, a non-loopback address, and no API key " \
           "exists" in out
    assert "python -m app keys create --name admin --admin" in out and "SFT_AUTH=off" in out
    launcher = run_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), data_dir=tmp_path / "data")
    assert launcher.returncode == 2 and "Refusing to start" in launcher.stderr


@pytest.mark.parametrize("launcher", [False, True], ids=["uvicorn", "python -m app serve"])
def test_a_real_server_on_0000_with_a_key_requires_it(tmp_path: Path, launcher: bool):
    made = run_cli("keys", "create", "--name", "admin", "--admin", data_dir=tmp_path / "data")
    key = made.stdout.strip()
    port = free_port()
    process = start_uvicorn(tmp_path / "data", port, launcher=launcher)
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                assert process.poll() is None, "the server exited"
                return False

        wait_for(up, timeout=120, interval=0.1, message="the server")
        assert httpx.get(f"{url}/health").json()["auth"] == "keys"
        assert httpx.get(f"{url}/api/sft/jobs").status_code == 401
        assert httpx.get(f"{url}/api/sft/jobs", headers=bearer(key)).status_code == 200
        # Revoked from the command line while the server runs: refused at its next request.
        assert run_cli("keys", "revoke", key.split("_")[1], data_dir=tmp_path / "data").returncode == 0
        assert httpx.get(f"{url}/api/sft/jobs", headers=bearer(key)).status_code == 401
    finally:
        out = stop(process)
    assert key not in out


def test_auth_off_said_explicitly_starts_on_0000_and_warns(tmp_path: Path):
    port = free_port()
    process = start_uvicorn(tmp_path / "data", port, SFT_AUTH="off")
    try:
        wait_for(lambda: _health(port), timeout=120, interval=0.1, message="the server")
        assert _health(port)["auth"] == "off"
    finally:
        out = stop(process)
    assert "Serving on 0.0.0.0, a non-loopback address: this API has no authentication (SFT_AUTH=off)" in out


def _health(port: int) -> dict | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
    except httpx.TransportError:
        return None


# The openai SDK, and keys written nowhere


@pytest.fixture
def serve(serve_app):
    """``serve(manager) -> url``: the app on ``manager`` in a uvicorn server (127.0.0.1) until the test ends."""
    return lambda manager: serve_app(create_app(manager=manager), log_level="debug")


def test_openai_sdk_api_key_and_keys_never_written(make_manager, keyed, serve, chat_jsonl, tiny_model_dir, caplog, tmp_path,
                                                   capfd):
    manager = make_manager(settings=keyed.model_copy(update={"max_active_jobs_per_key": 10}), runner=None,
                           preflight=True)
    keys = KeyStore(manager.store)
    alice, bob = keys.create("alice")[1], keys.create("bob")[1]
    revoked_record, revoked = keys.create("eve")
    keys.revoke(revoked_record.key_id)
    with caplog.at_level(logging.DEBUG):
        url = serve(manager)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=alice, max_retries=0, timeout=60)
        with chat_jsonl.open("rb") as f:
            uploaded = client.files.create(file=f, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id,
                                             hyperparameters={"n_epochs": 1})
        done = wait_for(lambda: (lambda j: j if j.status in ("succeeded", "failed") else None)(
            client.fine_tuning.jobs.retrieve(job.id)), timeout=180, interval=0.1, message="the job")
        assert done.status == "succeeded", done.error
        chat = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=2,
                                              messages=[{"role": "user", "content": "hi"}])
        assert chat.choices[0].message.content is not None
        other = openai.OpenAI(base_url=f"{url}/v1", api_key=bob, max_retries=0, timeout=60)
        with pytest.raises(openai.NotFoundError):
            other.fine_tuning.jobs.retrieve(job.id)
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(uploaded.id)
        assert done.fine_tuned_model not in [m.id for m in other.models.list()]
        for wrong in (revoked, alice + "x", "sk-not-a-key"):
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{url}/v1", api_key=wrong, max_retries=0).models.list()
        assert httpx.get(f"{url}/api/sft/jobs/{job.id}/logs", headers=bearer(alice)).status_code == 200
        events = httpx.get(f"{url}/api/sft/jobs/{job.id}/events", headers={"X-API-Key": alice}).text
        with SFTClient(url, api_key=alice) as light:
            assert [j.job_id for j in light.list_jobs().jobs] == [job.id]
            followed = [event.type for event in light.follow(job.id)]  # the SSE stream, key in a header
            assert followed[0] == "created" and followed[-1] == "completed"
            light.download(job.id, tmp_path / "adapter")
        with SFTClient(url, api_key=bob) as light, pytest.raises(SFTNotFound):
            light.get_job(job.id)
        with SFTClient(url, api_key="") as light, pytest.raises(SFTAuthenticationError):
            light.list_jobs()
    out, err = capfd.readouterr()  # uvicorn's own log (access lines included) goes to the terminal
    logged = "\n".join([*(f"{r.getMessage()} {r.args}" for r in caplog.records), out, err])
    assert "GET /v1/models HTTP/1.1\" 401" in logged
    record = manager.get_job(job.id).record()
    written = [p for p in Path(keyed.data_dir).rglob("*") if p.is_file()]
    assert written and logged
    for key in (alice, bob, revoked):
        secret = key.split("_", 2)[2]
        assert secret not in logged and secret not in events and secret not in str(record)
        for path in written:
            assert secret.encode() not in path.read_bytes(), path


def test_without_sft_auth_a_request_on_a_non_loopback_address_is_refused(make_manager):
    """The start-up check needs the bound address; where it could not be known, keys-off still serves loopback only."""
    import asyncio

    app = create_app(manager=make_manager())

    async def get(base: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as client:
            return await client.get("/api/sft/jobs")

    public = asyncio.run(get("http://10.1.2.3"))
    assert public.status_code == 403 and "non-loopback address" in public.json()["detail"]
    assert asyncio.run(get("http://127.0.0.1")).status_code == 200


def test_the_openapi_document_declares_the_keys(world):
    manager, keys, client, k = world
    schema = client.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "security" not in schema["paths"]["/health"]["get"]
    operations = [op for path, ops in schema["paths"].items() if path != "/health" for op in ops.values()]
    assert all(op["security"] == [{"bearer": []}, {"apiKey": []}] and "401" in op["responses"] for op in operations)
