"""``sft webhooks``: add (the secret once), list, deliveries, redeliver, rm, against an in-process server."""

from __future__ import annotations

import json

import pytest
from sft_client.cli import main

from factories import wait_for
from webhook_receiver import Receiver


@pytest.fixture
def url(make_manager, settings, serve_app):
    from app.main import create_app

    manager = make_manager(settings=settings.model_copy(update={"webhooks_allow_private": True}))
    yield serve_app(create_app(manager=manager)), manager
    manager.webhooks.close()


def sft(capsys, base_url: str, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--url", base_url, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_sft_webhooks_add_list_deliveries_redeliver_rm(url, capsys, fake_config):
    base_url, manager = url
    receiver = Receiver()
    try:
        code, out, _ = sft(capsys, base_url, "webhooks", "add", receiver.url, "--event", "fine_tuning.job.cancelled",
                           "--json")
        assert code == 0
        hook = json.loads(out)
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["fine_tuning.job.cancelled"]
        code, out, _ = sft(capsys, base_url, "webhooks")
        assert code == 0 and hook["id"] in out and "fine_tuning.job.cancelled" in out and "whsec_" not in out

        manager.stop_job(manager.create_job(fake_config))  # stopped before it ran: fine_tuning.job.cancelled
        wait_for(lambda: receiver.requests, timeout=10, message="the delivery")
        code, out, _ = sft(capsys, base_url, "webhooks", "deliveries", hook["id"], "--json")
        [delivery] = json.loads(out)
        code, out, _ = sft(capsys, base_url, "webhooks", "redeliver", hook["id"], delivery["id"])
        assert code == 0 and f"Delivery {delivery['id']} (fine_tuning.job.cancelled) queued again" in out
        wait_for(lambda: len(receiver.requests) == 2, timeout=10, message="the redelivery")
        code, out, _ = sft(capsys, base_url, "webhooks", "deliveries", hook["id"])
        assert code == 0 and delivery["id"] in out and "delivered" in out

        code, out, _ = sft(capsys, base_url, "webhooks", "rm", hook["id"])
        assert code == 0 and f"Deleted webhook {hook['id']}" in out
        code, _, err = sft(capsys, base_url, "webhooks", "rm", hook["id"])
        assert code == 2 and f"Webhook {hook['id']} not found" in err
        code, _, err = sft(capsys, base_url, "webhooks", "add", "ftp://127.0.0.1/x")
        assert code == 2 and "must start with http:// or https://" in err
    finally:
        receiver.close()
