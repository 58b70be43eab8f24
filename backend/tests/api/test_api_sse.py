"""The events endpoint as a Server-Sent Events stream, read by a real streaming client from a real
uvicorn server: framing, the close after the terminal event, and resuming with Last-Event-ID."""

from __future__ import annotations

import json

import httpx
import pytest

from app.main import create_app
from factories import wait_for

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def serve(serve_app):
    """``serve(app) -> base_url``: run ``app`` on uvicorn in a thread until the test ends."""
    return serve_app


def read_events(response: httpx.Response, on_event=None) -> list[dict]:
    """Parse an SSE body into ``{"id", "event", "data", "lines"}`` dicts until the server closes it."""
    events, lines = [], []
    for line in response.iter_lines():
        if line:
            lines.append(line)
            continue
        if not lines:
            continue
        fields = [tuple(item.split(": ", 1)) for item in lines if not item.startswith(":")]
        lines = []
        if not fields:
            continue  # a keep-alive comment
        event = {"lines": [name for name, _ in fields], **{name: value for name, value in fields}}
        event["data"] = json.loads(event["data"])
        events.append(event)
        if on_event is not None:
            on_event(event)
    assert lines == [], f"the stream ended inside an event: {lines}"
    return events


def test_live_stream_framing_and_close_after_terminal_event(manager, gate, serve, fake_config):
    base = serve(create_app(manager=manager))
    # Once released, the job reports one metrics point, then completes.
    gate.before_return = lambda job, emit: emit("metrics", {"step": 1, "loss": 0.5})
    job_id = manager.submit(fake_config).job_id
    wait_for(lambda: job_id in gate.running, timeout=10, message="the job to run")

    def release_after_started(event: dict) -> None:
        if event["event"] == "started":  # proves events arrive live, before the job ends
            gate.release(job_id)

    with httpx.stream("GET", f"{base}/api/sft/jobs/{job_id}/events", headers=SSE, timeout=15) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = read_events(response, release_after_started)

    assert [e["event"] for e in events] == ["created", "queued", "started", "metrics", "completed"]
    for n, event in enumerate(events, start=1):
        assert event["lines"] == ["id", "event", "data"]
        assert event["id"] == str(n)
        assert event["data"]["seq"] == n
        assert event["data"]["type"] == event["event"]
        assert set(event["data"]) == {"seq", "time", "type", "level", "message", "data"}
    assert events[3]["data"]["message"] == "Step 1/?: loss 0.5000"
    assert events[3]["data"]["data"]["loss"] == 0.5
    assert events[-1]["data"]["data"]["result"]["adapter_path"] == manager.get_job(job_id).result["adapter_path"]


@pytest.mark.parametrize(("last_event_id", "replayed"), [
    ("2", [("3", "started"), ("4", "completed")]),
    ("4", []),  # a finished job's stream, resumed from its end, is empty
], ids=["replays-only-later-events", "from-the-end-is-empty"])
def test_last_event_id_on_a_finished_job(manager, gate, serve, fake_config, last_event_id, replayed):
    base = serve(create_app(manager=manager))
    job_id = manager.submit(fake_config).job_id
    gate.release(job_id)
    wait_for(lambda: manager.get_job(job_id).status.is_terminal(), timeout=10, message="the job to end")

    headers = {**SSE, "Last-Event-ID": last_event_id}
    with httpx.stream("GET", f"{base}/api/sft/jobs/{job_id}/events", headers=headers, timeout=15) as response:
        assert response.status_code == 200
        events = read_events(response)
    assert [(e["id"], e["event"]) for e in events] == replayed


def test_stream_of_a_missing_job_is_404(manager, serve):
    base = serve(create_app(manager=manager))
    response = httpx.get(f"{base}/api/sft/jobs/nope/events", headers=SSE, timeout=15)
    assert response.status_code == 404
    assert response.json() == {"detail": "Job nope not found"}


def test_event_cursor_sees_the_terminal_event_with_the_terminal_status(manager, gate, fake_config):
    # What the stream relies on to close: once the cursor says "ended", the terminal event is counted.
    job_id = manager.submit(fake_config).job_id
    wait_for(lambda: job_id in gate.running, timeout=10, message="the job to run")
    assert manager.event_cursor(job_id) == (3, False)  # created, queued, started
    assert manager.last_event_seq(job_id) == 3
    gate.release(job_id)
    wait_for(lambda: manager.event_cursor(job_id)[1], timeout=10, message="the job to end")
    newest, _ = manager.event_cursor(job_id)
    assert manager.events(job_id, after=newest - 1)[0]["type"] == "completed"
    manager.delete_job(job_id)
    assert manager.event_cursor(job_id) == (0, True)
