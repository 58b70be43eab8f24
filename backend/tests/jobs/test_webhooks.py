"""Webhooks (#29) with a real receiver on 127.0.0.1 and the official openai SDK: one signed delivery per job end,
retries with back-off, a hanging receiver that holds nothing up, the address rule, users kept apart, redelivery."""

from __future__ import annotations

import time

import openai
import pytest

from app.api.auth import LOCAL_USER, Principal
from app.jobs.webhook_sender import is_public
from app.jobs.webhooks import InvalidWebhook, ScopedWebhooks, WebhookForbidden, WebhookNotFound
from factories import wait_for
from job_helpers import error_detail
from webhook_receiver import Receiver

ALICE = Principal(name="alice", admin=False)
BOB = Principal(name="bob", admin=False)
ADMIN = Principal(name="root", admin=True)
ENDS = {"completed": "fine_tuning.job.succeeded", "stopped": "fine_tuning.job.cancelled",
        "failed": "fine_tuning.job.failed"}


@pytest.fixture
def hook_settings(settings):
    """Receivers live on 127.0.0.1 here; retries and timeouts are short."""
    return settings.model_copy(update={"webhooks_allow_private": True, "webhooks_first_retry_seconds": 0.05,
                                       "webhooks_timeout_seconds": 2.0})


@pytest.fixture
def manager(make_manager, hook_settings):
    manager = make_manager(settings=hook_settings)
    yield manager
    manager.webhooks.close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def sdk(secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", webhook_secret=secret, base_url="http://127.0.0.1:9")


def run_to_end(manager, config, *, owner=None, end="completed") -> str:
    """A job of ``owner`` taken to ``end`` by the gate runner; its id."""
    job_id = manager.create_job(config, owner=owner)
    if end == "stopped":
        manager.stop_job(job_id)  # pending: stopped before it ran
    else:
        if end == "failed":
            manager.runner.fail[job_id] = RuntimeError("boom")
        manager.start_job(job_id)
        manager.runner.release(job_id)
    wait_for(lambda: manager.get_job(job_id).status.value == end, timeout=10, message=f"the job to be {end}")
    return job_id


def settled(manager, endpoint_id: str, count: int) -> list[dict]:
    """The endpoint's ``count`` deliveries once none is pending any more."""
    return wait_for(lambda: (lambda d: d if len(d) == count and all(x["status"] != "pending" for x in d) else None)(
        manager.webhooks.deliveries(endpoint_id)), timeout=15, message=f"{count} deliveries to settle")


def test_one_signed_delivery_per_job_end_that_the_openai_sdk_verifies(manager, receivers, fake_config):
    receiver = receivers()
    endpoint = ScopedWebhooks(manager.webhooks, LOCAL_USER).create(url=receiver.url, events=None)
    assert endpoint["secret"].startswith("whsec_") and set(endpoint["events"]) == set(ENDS.values())
    jobs = {end: run_to_end(manager, fake_config, end=end) for end in ENDS}
    deliveries = settled(manager, endpoint["id"], 3)
    assert len(receiver.requests) == 3 and {d["status"] for d in deliveries} == {"delivered"}
    client = sdk(endpoint["secret"])
    by_type = {}
    for request in receiver.requests:
        event = client.webhooks.unwrap(request.body, request.headers)
        by_type[event.type] = event
        assert event.object == "event" and event.id.startswith("evt_") and abs(event.created_at - time.time()) < 60
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.unwrap(request.body.replace(b'"event"', b'"evil"'), request.headers)
        with pytest.raises(openai.InvalidWebhookSignatureError):
            sdk("whsec_" + "A" * 43 + "=").webhooks.unwrap(request.body, request.headers)
    assert {t: e.data.id for t, e in by_type.items()} == {ENDS[end]: job_id for end, job_id in jobs.items()}
    assert by_type["fine_tuning.job.failed"].data.model_extra["error"].endswith("boom")
    assert {r.webhook_id for r in receiver.requests} == {d["id"] for d in deliveries}


def test_a_receiver_answering_500_is_retried_with_back_off_then_succeeds(manager, receivers, fake_config):
    receiver = receivers(statuses=(500, 500), body=b"x" * 10_000)
    endpoint = ScopedWebhooks(manager.webhooks, LOCAL_USER).create(url=receiver.url, events=None)
    run_to_end(manager, fake_config)
    [delivery] = settled(manager, endpoint["id"], 1)
    assert delivery["status"] == "delivered" and len(receiver.requests) == 3
    assert len({r.webhook_id for r in receiver.requests}) == 1 == len({r.body for r in receiver.requests})
    first, second, third = (r.at for r in receiver.requests)
    assert second - first >= 0.05 and third - second >= 0.1  # 0.05 s, then twice as long
    attempts = delivery["attempts"]
    assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == [
        (1, 500, "answered 500"), (2, 500, "answered 500"), (3, 200, None)]
    assert all(a["latency_ms"] >= 0 and a["response"] == "x" * 256 for a in attempts)  # a short prefix only


def test_a_hanging_receiver_slows_neither_training_nor_the_api_nor_other_receivers(
        manager, receivers, fake_config, client_for):
    hanging, healthy = receivers(hang=True), receivers()
    events = ["fine_tuning.job.started", "fine_tuning.job.checkpoint.saved", "fine_tuning.job.succeeded"]
    local = ScopedWebhooks(manager.webhooks, LOCAL_USER)
    for receiver in (hanging, healthy):
        local.create(url=receiver.url, events=events)
    steps: list[float] = []

    def train(job, emit):
        for step in range(1, 31):
            emit("step", {"step": step, "max_steps": 30})
            emit("checkpoint_saved", {"step": step, "path": f"{job.output_dir}/checkpoint-{step}"})
            steps.append(time.monotonic())

    manager.runner.before_return = train
    job_id = manager.create_job(fake_config)
    manager.start_job(job_id)
    wait_for(lambda: hanging.requests, timeout=10, message="the hanging receiver to be called")
    started = time.monotonic()
    manager.runner.release(job_id)
    wait_for(lambda: manager.get_job(job_id).status.value == "completed", timeout=10, message="the job's end")
    assert steps[-1] - started < 3.0, "30 steps with checkpoints waited for the hanging receiver"
    client = client_for(manager)
    before = time.monotonic()
    assert client.get("/health").status_code == 200 and time.monotonic() - before < 1.0
    wait_for(lambda: any(r.event["type"] == "fine_tuning.job.succeeded" for r in healthy.requests), timeout=10,
             message="the healthy receiver to hear of the job's end")
    assert len(healthy.requests) == 32 and not hanging.release.is_set()  # started + 30 checkpoints + the end


def test_private_addresses_are_refused_at_registration(make_manager, client_for):
    manager = make_manager()
    assert manager.settings.webhooks_allow_private is False
    local = ScopedWebhooks(manager.webhooks, LOCAL_USER)
    for url in ("http://127.0.0.1:8000/x", "http://localhost/x", "http://[::1]/x", "http://10.1.2.3/x",
                "http://169.254.169.254/latest/meta-data/", "http://192.168.0.1/x"):
        with pytest.raises(InvalidWebhook, match="a loopback, private, link-local or metadata address") as caught:
            local.create(url=url, events=None)
        assert caught.value.errors[0]["field"] == "url"
    answer = client_for(manager).post("/api/webhooks", json={"url": "http://127.0.0.1:8000/hook"})
    assert answer.status_code == 400
    assert error_detail(answer) == ("url: host 127.0.0.1 resolves to 127.0.0.1, a loopback, private, link-local or "
                                    "metadata address; webhooks go to public addresses only "
                                    "(SFT_WEBHOOKS_ALLOW_PRIVATE=true allows them)")
    assert manager.store.load_webhooks() == []
    for address in ("127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "fd00:ec2::254", "100.100.100.200",
                    "::ffff:127.0.0.1", "0.0.0.0", "224.0.0.1"):
        assert not is_public(address), address
    assert is_public("8.8.8.8") and is_public("2001:4860:4860::8888")


def test_a_private_address_is_refused_again_at_delivery(manager, receivers, fake_config):
    receiver = receivers()
    endpoint = ScopedWebhooks(manager.webhooks, LOCAL_USER).create(url=receiver.url, events=None)
    manager.settings.webhooks_allow_private = False  # as if the name now resolved elsewhere (DNS rebinding)
    run_to_end(manager, fake_config)
    delivery = wait_for(lambda: (lambda d: d if d and d[0]["attempts"] else None)(
        manager.webhooks.deliveries(endpoint["id"])), timeout=10, message="an attempt")[0]
    attempt = delivery["attempts"][0]
    assert attempt["status_code"] is None and attempt["error"].startswith("refused: host 127.0.0.1 resolves to 127.0.0.1")
    assert receiver.requests == []


def test_another_users_webhook_never_receives_my_jobs_events(manager, receivers, fake_config):
    alice, bob, admin = (ScopedWebhooks(manager.webhooks, user) for user in (ALICE, BOB, ADMIN))
    heard = {name: receivers() for name in ("alice", "bob", "global")}
    mine = alice.create(url=heard["alice"].url, events=None)
    bob.create(url=heard["bob"].url, events=None)
    admin.create(url=heard["global"].url, events=None, scope="global")
    with pytest.raises(WebhookForbidden, match="^scope: global webhooks"):
        bob.create(url=heard["bob"].url, events=None, scope="global")
    jobs = {owner: run_to_end(manager, fake_config, owner=owner) for owner in ("alice", "bob")}
    wait_for(lambda: len(heard["global"].requests) == 2 and heard["alice"].requests and heard["bob"].requests,
             timeout=10, message="every receiver")
    assert [r.event["data"]["id"] for r in heard["alice"].requests] == [jobs["alice"]]
    assert [r.event["data"]["id"] for r in heard["bob"].requests] == [jobs["bob"]]
    assert {r.event["data"]["id"] for r in heard["global"].requests} == set(jobs.values())
    assert [e["id"] for e in alice.list()] == [mine["id"]] and len(admin.list()) == 3
    with pytest.raises(WebhookNotFound, match=f"^Webhook {mine['id']} not found$"):
        bob.deliveries(mine["id"])
    with pytest.raises(WebhookNotFound):
        bob.delete(mine["id"])


def test_http_register_list_deliveries_redeliver_delete(manager, receivers, fake_config, client_for):
    receiver = receivers()
    client = client_for(manager)
    created = client.post("/api/webhooks", json={"url": receiver.url, "events": ["fine_tuning.job.started"]})
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and hook["scope"] == "user" and hook["owner"] is None
    listed = client.get("/api/webhooks").json()["webhooks"]
    assert listed == [{k: v for k, v in hook.items() if k != "secret"}]  # the secret is shown once
    job_id = manager.create_job(fake_config)
    manager.start_job(job_id)
    wait_for(lambda: receiver.requests, timeout=10, message="the started event")
    page = client.get(f"/api/webhooks/{hook['id']}/deliveries")
    [delivery] = page.json()["deliveries"]
    assert delivery["payload"]["data"] == {"id": job_id, "status": "running", "attempt": 1}
    again = client.post(f"/api/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 202, again.text
    wait_for(lambda: len(receiver.requests) == 2, timeout=10, message="the redelivery")
    assert receiver.requests[0].webhook_id == receiver.requests[1].webhook_id == delivery["id"]
    assert receiver.requests[0].body == receiver.requests[1].body

    bad = client.post("/api/webhooks", json={"url": receiver.url, "events": ["fine_tuning.job.nope"]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "events.0"
    unknown = client.post("/api/webhooks", json={"url": receiver.url, "secret": "mine"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "secret"
    scheme = client.post("/api/webhooks", json={"url": "ftp://127.0.0.1/x"})
    assert scheme.status_code == 400 and error_detail(scheme) == "url: 'ftp://127.0.0.1/x' must start with http:// or https://"
    deleted = client.delete(f"/api/webhooks/{hook['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == hook["id"]
    for answer in (client.get(f"/api/webhooks/{hook['id']}"), client.get(f"/api/webhooks/{hook['id']}/deliveries"),
                   client.delete(f"/api/webhooks/{hook['id']}")):
        assert answer.status_code == 404 and error_detail(answer) == f"Webhook {hook['id']} not found"
    missing = client.post(f"/api/webhooks/wh_nope/deliveries/{delivery['id']}/redeliver")
    assert missing.status_code == 404
