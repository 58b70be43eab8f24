"""Fixtures of the browser tests: headless Chromium driven by Playwright, and a real server process.

Playwright's own browser download cannot be fetched everywhere, so the tests drive the system's
Chromium (Debian's ``chromium`` package, which ``make test`` installs when it runs as root). Where
no browser can be had the tests skip saying why, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import shutil

import pytest

from factories import contact_rows, write_jsonl
from web_helpers import running_server, web_env
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


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_model_dir):
    """A real uvicorn process on a free port, with its own data directory and a small chat dataset: one for the
    session, shared by the dashboard's tests and the docs' (which only read it)."""
    root = tmp_path_factory.mktemp("web")
    dataset = write_jsonl(root / "chat.jsonl", contact_rows(32))
    with running_server(root, web_env(root, tiny_model_dir)) as server:
        server.model = str(tiny_model_dir)
        server.dataset = str(dataset)
        yield server
