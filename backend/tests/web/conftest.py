"""Fixtures of the browser tests: headless Chromium driven by Playwright, and a real server process.

Playwright's own browser download cannot be fetched everywhere, so the tests drive the system's
Chromium (Debian's ``chromium`` package, which ``make test`` installs when it runs as root). Where
no browser can be had the tests skip saying why, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from factories import contact_rows, free_port, wait_for, write_jsonl

BACKEND = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    configured = os.environ.get("SFT_TEST_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = next((p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)
    return found or shutil.which("chromium")


def _no_browser(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests must run in CI: {reason}", pytrace=False)
    pytest.skip(f"no browser here: {reason} (`make test` installs Chromium when run as root)")


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    if executable is None:
        _no_browser("no Chromium at /usr/bin/chromium (apt-get install chromium) or at SFT_TEST_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


class Server:
    def __init__(self, url: str, root: Path, process: subprocess.Popen, log: Path):
        self.url = url
        self.root = root
        self.process = process
        self.log = log

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=60, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    """A real uvicorn process on a free port, with its own data directory and a small chat dataset."""
    root = tmp_path_factory.mktemp("web")
    dataset = write_jsonl(root / "chat.jsonl", contact_rows(32))
    env = {**os.environ, "SFT_DATA_DIR": str(root / "data"), "SFT_DATASET_ROOTS": json.dumps([str(root)]),
           "SFT_MODEL_ROOTS": json.dumps([str(tiny_model_dir.parent)]),
           "SFT_MODEL_CACHE_DIR": str(root / "models"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    port = free_port()
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(BACKEND), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
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
        server = Server(url, root, process, log)
        server.model = str(tiny_model_dir)
        server.dataset = str(dataset)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
