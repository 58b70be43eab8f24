"""RequestGuard: Host allow-list (DNS rebinding), cross-site writes, body size; the exposure warning."""

from __future__ import annotations

import logging

import pytest

from app.api.guard import exposure_warning, host_name
from app.core.settings import Settings
from factories import wait_for


@pytest.fixture
def client_with(make_manager, client_for, settings):
    """``client_with(**settings)``: a client on a manager whose settings have those values."""

    def make(**values):
        return client_for(make_manager(settings=Settings(**{**settings.model_dump(), **values})))

    return make


@pytest.fixture
def running(manager, gate, fake_config) -> str:
    job_id = manager.submit(fake_config).job_id
    wait_for(lambda: job_id in gate.running, message="the job to run")
    return job_id


# Host


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "localhost.evil.example",
                                  "10.0.0.5"])
def test_foreign_host_headers_are_refused(client, host):
    response = client.get("/health", headers={"Host": host})
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"Host header {host!r} is not one this server answers to (")


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST",
                                  "testserver"])
def test_loopback_names_and_the_bound_address_are_answered(client, host):
    assert client.get("/health", headers={"Host": host}).status_code == 200


def test_allowed_hosts_setting(client_with):
    client = client_with(allowed_hosts=["sft.internal"])
    assert client.get("/health", headers={"Host": "sft.internal:8000"}).status_code == 200
    assert client.get("/health", headers={"Host": "other.internal"}).status_code == 400
    assert client_with(allowed_hosts=["*"]).get("/health", headers={"Host": "any.example"}).status_code == 200


def test_host_names_parse():
    assert [host_name(h) for h in ("a.b:1", "[::1]:80", "::1", "A.B", "")] == ["a.b", "::1", "::1", "a.b", ""]


# Cross-site writes


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:9999", "https://testserver"])
def test_cross_site_post_is_refused_and_changes_nothing(client, manager, running, origin):
    response = client.post(f"/api/sft/jobs/{running}/stop", headers={"Origin": origin})
    assert response.status_code == 403
    assert response.json()["detail"] == (f"cross-site request refused: Origin {origin!r} may not change anything on "
                                         "this server (add it to SFT_ALLOWED_ORIGINS to allow it)")
    assert manager.get_job(running).status.value == "running"
    assert client.delete(f"/api/sft/jobs/{running}", headers={"Origin": origin}).status_code == 403
    assert client.get(f"/api/sft/jobs/{running}", headers={"Origin": origin}).status_code == 200  # reads pass


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "TEXT/PLAIN; charset=utf-8"])
def test_form_content_types_cannot_change_state(client, manager, running, fake_config, content_type):
    stop = client.post(f"/api/sft/jobs/{running}/stop", content=b"x", headers={"Content-Type": content_type})
    assert stop.status_code == 415 and manager.get_job(running).status.value == "running"
    assert stop.json()["detail"].startswith("Content-Type ")
    train = client.post("/api/sft/train", content=b'{"config": {}}', headers={"Content-Type": content_type})
    assert train.status_code == 415


def test_command_line_requests_work_as_the_readme_writes_them(client, manager, running):
    # curl -s -X POST .../stop: no Origin, no Content-Type, no body.
    assert client.post(f"/api/sft/jobs/{running}/stop").status_code == 200
    wait_for(lambda: manager.get_job(running).status.is_terminal(), message="the job to stop")
    assert client.post(f"/api/sft/jobs/{running}/resume").status_code == 200


def test_same_origin_and_allowed_origins_may_write(client_with, fake_config):
    client = client_with(allowed_origins=["http://dashboard.local:3000"])
    for origin in ("http://testserver", "http://dashboard.local:3000"):
        response = client.post("/api/sft/configs", json={"name": f"n-{origin[-4:]}", "config": {}},
                               headers={"Origin": origin})
        assert response.status_code == 200, response.text


# Body size


def test_body_over_the_limit_is_a_413(client_with):
    client = client_with(max_request_bytes=4096)
    big = {"name": "big", "config": {"column_mapping": {"x": "y" * 5000}}}
    response = client.post("/api/sft/configs", json=big)
    assert response.status_code == 413
    assert response.json()["detail"].endswith("this server accepts at most 4,096 (SFT_MAX_REQUEST_BYTES)")

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"name": "big", "config": {"column_mapping": {"x": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}}'

    streamed = client.post("/api/sft/configs", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "SFT_MAX_REQUEST_BYTES" in streamed.json()["detail"]
    assert client.get("/api/sft/configs").json() == []


def test_default_limit_refuses_an_11_mb_template(client):
    response = client.post("/api/sft/configs", json={"name": "huge", "config": {"column_mapping": {"x": "y" * 11_000_000}}})
    assert response.status_code == 413


# Exposure


def test_exposure_warning():
    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    assert exposure_warning("::1") is None
    assert exposure_warning("0.0.0.0").startswith("Serving on 0.0.0.0, a non-loopback address: this API has no "
                                                  "authentication (SFT_AUTH=off)")


def test_starting_on_a_public_address_with_auth_off_logs_a_warning(manager, monkeypatch, caplog):
    """SFT_AUTH=off said explicitly: it starts, and warns (without it, it refuses: tests/api/test_auth.py)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    manager.settings = manager.settings.model_copy(update={"auth": "off"})
    monkeypatch.setattr("sys.argv", ["uvicorn", "app.main:app", "--host", "0.0.0.0"])
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"), TestClient(create_app(manager)):
        pass
    assert any(r.getMessage().startswith("Serving on 0.0.0.0, a non-loopback address") for r in caplog.records)
