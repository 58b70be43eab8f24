"""The dashboard on a server with API keys: it asks for a key once, keeps it for the tab, sends it as
a header on every call, and follows a job's live stream with the key in a header, never a URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from factories import contact_rows, wait_for, write_jsonl
from web_helpers import SERVER_PATH, running_server, web_env


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, tiny_model_dir):
    """A real uvicorn process with SFT_AUTH=keys, and a key of user alice made with ``python -m app keys``."""
    root = tmp_path_factory.mktemp("web-keys")
    dataset = write_jsonl(root / "chat.jsonl", contact_rows(32))
    env = web_env(root, tiny_model_dir, SFT_AUTH="keys", PYTHONPATH=SERVER_PATH)
    made = subprocess.run([sys.executable, "-m", "app", "keys", "create", "--name", "alice"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    with running_server(root, env, "--log-level", "debug") as server:
        yield {"url": server.url, "key": made.stdout.strip(), "log": server.log, "root": root,
               "model": str(tiny_model_dir), "dataset": str(dataset)}


def test_the_dashboard_asks_for_a_key_once_and_streams_with_it_in_a_header(page, keyed_server):
    url, key = keyed_server["url"], keyed_server["key"]
    auth = {"Authorization": f"Bearer {key}"}
    config = {"base_model": keyed_server["model"], "dataset_name": keyed_server["dataset"], "max_steps": 40,
              "per_device_train_batch_size": 4, "learning_rate": 5e-3, "logging_steps": 1}
    job_id = httpx.post(f"{url}/api/sft/train", json={"config": config}, headers=auth, timeout=60).json()["job_id"]
    requests: list = []
    page.on("request", lambda request: requests.append(request))

    page.goto(f"{url}/#/jobs")
    page.locator("#key-dialog").wait_for()
    page.fill("#api-key", "sft_wrong_key")
    page.click("#key-submit")
    # A refused key: asked again, saying so.
    page.locator("#key-dialog", has_text="refused").wait_for()
    page.fill("#api-key", key)
    page.click("#key-submit")
    page.locator(f"tr[data-job-id='{job_id}']").wait_for()
    assert page.evaluate("sessionStorage.getItem('sft-api-key')") == key
    page.locator("#counts", has_text="running").wait_for()

    before_key = [r.url for r in requests]
    assert all(key not in u for u in before_key)
    requests.clear()
    page.goto(f"{url}/#/jobs/{job_id}")
    page.reload()  # the key is kept for the tab: no second prompt
    wait_for(lambda: page.evaluate("() => window.sftDashboard.chart ? window.sftDashboard.chart.count('loss') : 0") >= 3,
             timeout=120, message="live loss points")
    assert page.locator("#key-dialog").count() == 0
    streams = [r for r in requests if "/events" in r.url and r.headers.get("accept") == "text/event-stream"]
    assert streams, [r.url for r in requests]
    for request in requests:
        assert key not in request.url and "sft_" not in request.url, request.url
        if request.url.startswith(f"{url}/api/"):
            assert request.all_headers().get("authorization") == f"Bearer {key}", request.url
    page.locator("#job-status [data-status='completed']").wait_for(timeout=180_000)
    page.locator("#events-list li", has_text="completed").wait_for()

    with page.expect_download() as download:
        page.click("#download-adapter")
    saved = Path(download.value.path())
    assert saved.stat().st_size > 0 and saved.read_bytes()[:2] == b"\x1f\x8b"  # a gzip file

    secret = key.split("_", 2)[2]
    assert secret not in keyed_server["log"].read_text()
    for path in (keyed_server["root"] / "data").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
