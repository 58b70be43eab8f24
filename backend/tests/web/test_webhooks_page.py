"""The dashboard's Webhooks page in Chromium: register an endpoint (its secret shown once), list it, read its
deliveries, delete it; the event types come from the server's OpenAPI document."""

from __future__ import annotations

import httpx

from web_helpers import running_server, web_env
from webhook_receiver import Receiver


def test_register_see_the_secret_once_list_and_delete(page, tmp_path, tiny_model_dir):
    receiver = Receiver()
    env = web_env(tmp_path, tiny_model_dir, SFT_WEBHOOKS_ALLOW_PRIVATE="true")
    try:
        with running_server(tmp_path, env) as server:
            page.goto(f"{server.url}/#/jobs")
            page.locator("nav a[href='#/webhooks']").click()
            page.locator("#webhook-events input[value='fine_tuning.job.checkpoint.saved']").wait_for()
            checked = page.locator("#webhook-events input:checked").evaluate_all("boxes => boxes.map(b => b.value)")
            assert sorted(checked) == ["fine_tuning.job.cancelled", "fine_tuning.job.failed",
                                       "fine_tuning.job.succeeded"]
            page.locator("#webhook-url").fill(receiver.url)
            page.locator("#webhook-events input[value='fine_tuning.job.started']").check()
            page.locator("#webhook-add").click()
            secret = page.locator("#webhook-secret-value").inner_text()
            [hook] = httpx.get(f"{server.url}/api/webhooks", timeout=5).json()["webhooks"]
            assert secret.startswith("whsec_") and "fine_tuning.job.started" in hook["events"]
            row = page.locator(f"tr[data-webhook-id='{hook['id']}']")
            assert receiver.url in row.inner_text() and "secret" not in hook
            row.locator(".webhook-deliveries").click()
            page.locator("#webhook-deliveries", has_text="Nothing sent yet.").wait_for()
            row.locator(".webhook-delete").click()
            page.locator("#webhook-message", has_text=f"Deleted webhook {hook['id']}").wait_for()
            assert page.locator(f"tr[data-webhook-id='{hook['id']}']").count() == 0
            assert httpx.get(f"{server.url}/api/webhooks", timeout=5).json()["webhooks"] == []
    finally:
        receiver.close()
