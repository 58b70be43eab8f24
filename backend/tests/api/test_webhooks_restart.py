"""kill -9 of a real server while a webhook delivery is in flight: the restarted server delivers it, with the
same webhook-id (the outbox row was committed with the job's change; the lost attempt left no record)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import openai

from factories import free_port, wait_for
from test_server_restart import start_server
from webhook_receiver import Receiver


def test_a_delivery_in_flight_when_the_server_is_killed_arrives_after_the_restart(tmp_path, tiny_config):
    env = {**os.environ, "SFT_DATA_DIR": str(tmp_path / "data"), "SFT_DATASET_ROOTS": json.dumps([str(tmp_path)]),
           "SFT_MODEL_ROOTS": json.dumps([str(Path(tiny_config["base_model"]).parent)]), "OMP_NUM_THREADS": "1",
           "SFT_WEBHOOKS_ALLOW_PRIVATE": "true", "SFT_WEBHOOKS_TIMEOUT_SECONDS": "60",
           "SFT_AUTO_RESUME_INTERRUPTED": "false"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    receiver = Receiver(hang=True)
    server = start_server(port, env)
    try:
        hook = httpx.post(f"{url}/api/webhooks", json={"url": receiver.url, "events": ["fine_tuning.job.started"]},
                          timeout=30).json()
        job_id = httpx.post(f"{url}/api/sft/train", json={"config": {**tiny_config, "max_steps": 400}},
                            timeout=30).json()["job_id"]
        wait_for(lambda: receiver.requests, timeout=30, message="the delivery to be in flight")
        in_flight = receiver.requests[0].webhook_id
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        receiver.hang = False

        server = start_server(port, env)
        wait_for(lambda: len(receiver.requests) >= 2, timeout=30, message="the delivery after the restart")
        again = receiver.requests[1]
        assert again.webhook_id == in_flight
        event = openai.OpenAI(api_key="unused", webhook_secret=hook["secret"]).webhooks.unwrap(again.body, again.headers)
        assert (event.type, event.data.id) == ("fine_tuning.job.started", job_id)
        [delivery] = wait_for(lambda: (lambda d: d if d[0]["status"] == "delivered" else None)(
            httpx.get(f"{url}/api/webhooks/{hook['id']}/deliveries", timeout=5).json()["deliveries"]), timeout=10,
            message="the delivery to be recorded")
        assert delivery["id"] == in_flight and [a["status_code"] for a in delivery["attempts"]] == [200]
    finally:
        server.kill()
        server.wait(timeout=10)
        receiver.close()
