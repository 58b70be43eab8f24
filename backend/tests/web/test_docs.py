"""/docs and /redoc render their operations in a browser that may reach no host but the server."""

from __future__ import annotations

from urllib.parse import urlparse


def block_other_hosts(page) -> list[str]:
    blocked: list[str] = []

    def handle(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", handle)
    return blocked


def operations(server) -> list[dict]:
    spec = server.api("GET", "/openapi.json").json()
    return [op for path in spec["paths"].values() for op in path.values()]


def test_swagger_ui_lists_the_operations_offline(page, server):
    blocked = block_other_hosts(page)
    page.goto(f"{server.url}/docs")
    expected = operations(server)
    # Waits on the DOM, not on a JavaScript predicate: the page's CSP forbids eval.
    page.locator(".opblock").nth(len(expected) - 1).wait_for(timeout=90_000)
    summaries = page.locator(".opblock-summary-description").all_inner_texts()
    assert sorted(summaries) == sorted(op["summary"] for op in expected)
    assert page.locator(".opblock-summary-path", has_text="/api/sft/datasets/preview").count() == 1
    assert blocked == []


def test_redoc_lists_the_operations_offline(page, server):
    blocked = block_other_hosts(page)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{server.url}/redoc")
    expected = operations(server)
    page.locator("[data-section-id^='operation/']").nth(len(expected) - 1).wait_for(timeout=90_000)
    titles = page.locator("[data-section-id^='operation/'] h2").all_inner_texts()
    assert sorted(t.strip() for t in titles) == sorted(op["summary"] for op in expected)
    assert blocked == []
    assert [e for e in errors if "Content Security Policy" in e or "cdn." in e] == []  # no logo from its CDN
