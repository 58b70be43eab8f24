"""The page and the docs as served (no browser): what they load, and from where."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.api.sft_job_manager import SFTJobManager
from app.main import create_app
from app.store import SQLiteStore
from app.web import STATIC_DIR


@pytest.fixture
def client(settings, tmp_path):
    store = SQLiteStore(tmp_path / "x.db")
    with TestClient(create_app(manager=SFTJobManager(settings=settings, store=store, preflight=False))) as client:
        yield client
    store.close()


def test_dashboard_page_and_its_modules_are_served(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    modules = sorted(p.name for p in (STATIC_DIR / "js").glob("*.js"))
    assert "app.js" in modules
    for name in modules:
        answer = client.get(f"/static/web/js/{name}")
        assert answer.status_code == 200 and "javascript" in answer.headers["content-type"], name
    assert client.get("/static/web/app.css").status_code == 200


def test_docs_pages_load_their_assets_from_this_server(client):
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
        assert urls, path
        assert all(url.startswith("/") for url in urls), (path, urls)
        for url in urls:
            assert client.get(url).status_code == 200, url
        assert "connect-src 'self'" in page.headers["content-security-policy"]
