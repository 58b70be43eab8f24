"""Every route of the OpenAPI document, with keys on: no key and a revoked key get 401 (with
WWW-Authenticate), user B gets 404 on user A's objects (the message a missing id gets) and none of
A's objects in lists, A and an admin get the normal answer.

The cases are listed per route below; a route the document has and this table lacks fails the
test (``test_every_route_has_a_case``), and a route that answers without a key fails the first
sweep, so a route added later is covered from the start.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.openai import jobs as openai_jobs
from app.core.errors import JobConflict
from app.core.settings import Settings
from app.main import create_app
from app.store.keys import KeyStore
from factories import contact_rows, wait_for, write_jsonl

#: Reached without a key (and showing no one's data then).
OPEN_ROUTES = {("GET", "/health")}


@dataclass
class Call:
    """One request; ``target`` is the id of A's object it is about (None: it is about no one's object)."""

    method: str
    url: str
    json: Any = None
    files: Any = None
    data: Any = None
    target: str | None = None
    cleanup: Callable[[], None] | None = None


@dataclass
class Case:
    #: Builds a fresh request (fresh objects where the call consumes one: delete, stop...).
    build: Callable[[Any], Call]
    #: The normal status for the owner and an admin.
    status: int = 200
    #: "object": B gets 404; "list": B gets the normal status, without A's objects; "any": B gets the
    #: normal answer (the route holds no one's objects); "admin": only admins, 403 for A and B.
    kind: str = "object"
    #: B's call needs its own request (its own upload...), built from its view.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    manager: Any
    client: TestClient
    keys: dict[str, str]
    tiny_config: dict
    chat_jsonl: Path
    tiny_model_dir: Path
    trained: str = ""
    config_id: str = ""
    file_id: str = ""
    export_id: str = ""
    export_file: str = ""
    ft_model: str = ""
    webhook_id: str = ""

    def as_(self, who: str | None, call: Call):
        headers = {} if who is None else {"Authorization": f"Bearer {self.keys[who]}"}
        return self.client.request(call.method, call.url, json=call.json, files=call.files, data=call.data,
                                   headers=headers)

    def fresh_job(self, *, stopped: bool = False) -> str:
        job_id = self.manager.create_job(self.tiny_config, owner="alice")
        if stopped:
            self.manager.stop_job(job_id)
        return job_id

    def stop_quietly(self, job_id: str) -> None:
        job = self.manager.jobs.get(job_id)
        if job is not None and not job.status.is_terminal():
            with contextlib.suppress(JobConflict):  # it may end between the look and the stop
                self.manager.stop_job(job_id)

    def fresh_config(self) -> str:
        return self.manager.save_config(f"cfg-{uuid.uuid4().hex[:8]}", {"max_steps": 2}, owner="alice")

    def fresh_file(self) -> str:
        with self.chat_jsonl.open("rb") as f:
            response = self.as_("alice", Call("POST", "/v1/files", files={"file": ("c.jsonl", f)},
                                              data={"purpose": "fine-tune"}))
        assert response.status_code == 200, response.text
        return response.json()["id"]


def _job(path: str = "") -> Callable[[World], Call]:
    return lambda w, method="GET": Call(method, f"/api/sft/jobs/{w.trained}{path}", target=w.trained)


def _stop_after(call: Call, w: World, job_id: str) -> Call:
    call.cleanup = lambda: w.stop_quietly(job_id)
    return call


def _train_from_config(w: World) -> Call:
    call = Call("POST", "/api/sft/train", json={"config_id": w.config_id, "overrides": w.tiny_config},
                target=w.config_id)

    def cleanup():
        for job in list(w.manager.jobs.values()):
            w.stop_quietly(job.job_id)

    call.cleanup = cleanup
    return call


def _resume(w: World) -> Call:
    job_id = w.fresh_job(stopped=True)
    return _stop_after(Call("POST", f"/api/sft/jobs/{job_id}/resume", target=job_id), w, job_id)


def _v1_create(w: World) -> Call:
    call = Call("POST", "/v1/fine_tuning/jobs", json={"model": str(w.tiny_model_dir), "training_file": w.file_id},
                target=w.file_id)
    call.cleanup = lambda: [w.stop_quietly(j.job_id) for j in list(w.manager.jobs.values())]
    return call


def _paused(w: World) -> str:
    job_id = w.fresh_job()
    w.manager.stop_job(job_id)
    openai_jobs.update_extras(w.manager, job_id, stop={"kind": "pause", "attempts": 0})
    return job_id


def _v1_resume(w: World) -> Call:
    job_id = _paused(w)
    return _stop_after(Call("POST", f"/v1/fine_tuning/jobs/{job_id}/resume", target=job_id), w, job_id)


def _delete_model(w: World) -> Call:
    call = Call("DELETE", f"/v1/models/{w.ft_model}", target=w.trained)
    call.cleanup = lambda: openai_jobs.update_extras(w.manager, w.trained, model_deleted=False)
    return call


def _export(path: str = "") -> Callable[[World], Call]:
    return lambda w: Call("GET", f"/api/sft/jobs/{w.trained}/exports/{w.export_id}{path}", target=w.trained)


def _delete_export(w: World) -> Call:
    """A fresh (failed) export of A's job to delete: the shared completed one stays for the other cases."""
    export_id = str(uuid.uuid4())
    w.manager.store.insert_export({
        "export_id": export_id, "job_id": w.trained, "format": "gguf", "type": "f16", "status": "failed",
        "path": str(Path(w.manager.get_job(w.trained).output_dir) / "exports" / export_id),
        "created_at": "2026-01-01T00:00:00+00:00", "error": "made by the test"})
    return Call("DELETE", f"/api/sft/jobs/{w.trained}/exports/{export_id}", target=w.trained)


def _preference(w: World) -> dict[str, Any]:
    return {"job_id": w.trained, "prompt": [{"role": "user", "content": "hi"}], "chosen": "hello", "rejected": "hi",
            "source": "corrected"}


def _delete_preference(w: World) -> Call:
    answer = w.as_("alice", Call("POST", "/api/sft/preferences", json=_preference(w)))
    assert answer.status_code == 201, answer.text
    preference_id = answer.json()["id"]
    return Call("DELETE", f"/api/sft/preferences/{preference_id}", target=preference_id)


def _train_on_preferences(w: World) -> Call:
    """A DPO job (needs the dpo branch) on A's preferences of her job, stopped once submitted."""
    assert w.as_("alice", Call("POST", "/api/sft/preferences", json=_preference(w))).status_code == 201
    call = Call("POST", "/api/sft/preferences/train", json={"job_id": w.trained, "overrides": {"max_steps": 1}},
                target=w.trained)
    call.cleanup = lambda: [w.stop_quietly(j.job_id) for j in list(w.manager.jobs.values())]
    return call


#: A receiver address nobody listens on: the cases' deliveries fail quietly (the world allows private addresses).
HOOK_URL = "http://127.0.0.1:9/hook"


def _fresh_webhook(w: World) -> str:
    answer = w.as_("alice", Call("POST", "/api/webhooks", json={"url": HOOK_URL, "events": ["fine_tuning.job.cancelled"]}))
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _webhook(path: str = "", method: str = "GET") -> Callable[[World], Call]:
    def build(w: World) -> Call:
        webhook_id = w.webhook_id if method == "GET" else _fresh_webhook(w)
        return Call(method, f"/api/webhooks/{webhook_id}{path}", target=webhook_id)
    return build


def _redeliver(w: World) -> Call:
    webhook_id = _fresh_webhook(w)
    w.fresh_job(stopped=True)  # its end: one delivery to alice's endpoint
    [delivery] = w.manager.webhooks.deliveries(webhook_id)
    return Call("POST", f"/api/webhooks/{webhook_id}/deliveries/{delivery['id']}/redeliver", target=webhook_id)


def _new_key(w: World) -> Call:
    return Call("POST", "/api/keys", json={"name": "carol"})


def _revoke_key(w: World) -> Call:
    record, _ = w.manager_keys.create("dave")
    return Call("DELETE", f"/api/keys/{record.key_id}")


_STRING_CHECK = {"type": "string_check", "name": "same", "operation": "eq", "input": "{{sample.output_text}}",
                 "reference": "{{item.answer}}"}

CASES: dict[tuple[str, str], Case] = {
    ("POST", "/api/sft/train"): Case(_train_from_config),
    ("POST", "/api/sft/plan"): Case(lambda w: Call("POST", "/api/sft/plan", json={"config_id": w.config_id,
                                                                             "overrides": w.tiny_config},
                                                   target=w.config_id)),
    ("GET", "/api/sft/jobs"): Case(lambda w: Call("GET", "/api/sft/jobs"), kind="list"),
    ("GET", "/api/sft/jobs/{job_id}"): Case(_job()),
    ("DELETE", "/api/sft/jobs/{job_id}"): Case(
        lambda w: (lambda j: Call("DELETE", f"/api/sft/jobs/{j}", target=j))(w.fresh_job(stopped=True))),
    ("POST", "/api/sft/jobs/{job_id}/stop"): Case(
        lambda w: (lambda j: Call("POST", f"/api/sft/jobs/{j}/stop", target=j))(w.fresh_job())),
    ("POST", "/api/sft/jobs/{job_id}/resume"): Case(_resume),
    ("GET", "/api/sft/jobs/{job_id}/checkpoints"): Case(_job("/checkpoints")),
    ("GET", "/api/sft/jobs/{job_id}/metrics"): Case(_job("/metrics")),
    ("GET", "/api/sft/jobs/{job_id}/logs"): Case(_job("/logs")),
    ("GET", "/api/sft/jobs/{job_id}/events"): Case(_job("/events")),
    ("GET", "/api/sft/configs"): Case(lambda w: Call("GET", "/api/sft/configs"), kind="list"),
    ("POST", "/api/sft/configs"): Case(
        lambda w: Call("POST", "/api/sft/configs", json={"name": f"c-{uuid.uuid4().hex[:8]}", "config": {}}),
        kind="any"),
    ("GET", "/api/sft/configs/{config_id}"): Case(
        lambda w: Call("GET", f"/api/sft/configs/{w.config_id}", target=w.config_id)),
    ("DELETE", "/api/sft/configs/{config_id}"): Case(
        lambda w: (lambda c: Call("DELETE", f"/api/sft/configs/{c}", target=c))(w.fresh_config())),
    ("GET", "/api/sft/config-schema"): Case(lambda w: Call("GET", "/api/sft/config-schema"), kind="any"),
    ("POST", "/api/sft/jobs/{job_id}/generate"): Case(
        lambda w: Call("POST", f"/api/sft/jobs/{w.trained}/generate", json={"prompt": "hi", "max_new_tokens": 2},
                       target=w.trained)),
    ("GET", "/api/sft/jobs/{job_id}/adapter"): Case(_job("/adapter")),
    ("POST", "/api/sft/jobs/{job_id}/merge"): Case(
        lambda w: Call("POST", f"/api/sft/jobs/{w.trained}/merge", target=w.trained)),
    ("POST", "/api/sft/evaluate"): Case(
        lambda w: Call("POST", "/api/sft/evaluate", json={"job_id": w.trained, "dataset_name": str(w.chat_jsonl),
                                                          "split": "train", "max_samples": 1, "max_new_tokens": 2},
                       target=w.trained)),
    ("GET", "/api/sft/models"): Case(lambda w: Call("GET", "/api/sft/models"), kind="any"),
    ("POST", "/api/sft/datasets/preview"): Case(
        lambda w: Call("POST", "/api/sft/datasets/preview",
                       json={"dataset_name": str(w.chat_jsonl), "base_model": str(w.tiny_model_dir)}), kind="any"),
    ("POST", "/v1/files"): Case(
        lambda w: Call("POST", "/v1/files", files={"file": ("c.jsonl", w.chat_jsonl.read_bytes())},
                       data={"purpose": "fine-tune"}), kind="any"),
    ("GET", "/v1/files"): Case(lambda w: Call("GET", "/v1/files"), kind="list"),
    ("GET", "/v1/files/{file_id}"): Case(lambda w: Call("GET", f"/v1/files/{w.file_id}", target=w.file_id)),
    ("DELETE", "/v1/files/{file_id}"): Case(
        lambda w: (lambda f: Call("DELETE", f"/v1/files/{f}", target=f))(w.fresh_file())),
    ("GET", "/v1/files/{file_id}/content"): Case(
        lambda w: Call("GET", f"/v1/files/{w.file_id}/content", target=w.file_id)),
    ("POST", "/v1/fine_tuning/jobs"): Case(_v1_create),
    ("GET", "/v1/fine_tuning/jobs"): Case(lambda w: Call("GET", "/v1/fine_tuning/jobs"), kind="list"),
    ("GET", "/v1/fine_tuning/jobs/{job_id}"): Case(
        lambda w: Call("GET", f"/v1/fine_tuning/jobs/{w.trained}", target=w.trained)),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): Case(
        lambda w: (lambda j: Call("POST", f"/v1/fine_tuning/jobs/{j}/cancel", target=j))(w.fresh_job())),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/pause"): Case(
        lambda w: (lambda j: Call("POST", f"/v1/fine_tuning/jobs/{j}/pause", target=j))(w.fresh_job())),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/resume"): Case(_v1_resume),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/events"): Case(
        lambda w: Call("GET", f"/v1/fine_tuning/jobs/{w.trained}/events", target=w.trained)),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): Case(
        lambda w: Call("GET", f"/v1/fine_tuning/jobs/{w.trained}/checkpoints", target=w.trained)),
    ("GET", "/v1/models"): Case(lambda w: Call("GET", "/v1/models"), kind="list"),
    ("GET", "/v1/models/{model}"): Case(lambda w: Call("GET", f"/v1/models/{w.ft_model}", target=w.trained)),
    ("DELETE", "/v1/models/{model}"): Case(_delete_model),
    ("POST", "/v1/chat/completions"): Case(
        lambda w: Call("POST", "/v1/chat/completions", target=w.trained,
                       json={"model": w.ft_model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})),
    ("GET", "/api/sft/export-formats"): Case(lambda w: Call("GET", "/api/sft/export-formats"), kind="any"),
    ("POST", "/api/sft/jobs/{job_id}/export"): Case(
        lambda w: Call("POST", f"/api/sft/jobs/{w.trained}/export", json={"format": "adapter"}, target=w.trained),
        status=202),
    ("GET", "/api/sft/jobs/{job_id}/exports"): Case(_job("/exports")),
    ("GET", "/api/sft/jobs/{job_id}/exports/{export_id}"): Case(_export()),
    ("DELETE", "/api/sft/jobs/{job_id}/exports/{export_id}"): Case(_delete_export),
    ("GET", "/api/sft/jobs/{job_id}/exports/{export_id}/download"): Case(_export("/download")),
    ("GET", "/api/sft/jobs/{job_id}/exports/{export_id}/files/{name}"): Case(
        lambda w: _export(f"/files/{w.export_file}")(w)),
    ("GET", "/api/keys"): Case(lambda w: Call("GET", "/api/keys"), kind="admin"),
    ("POST", "/api/keys"): Case(_new_key, status=201, kind="admin"),
    ("DELETE", "/api/keys/{key_id}"): Case(_revoke_key, kind="admin"),
    ("GET", "/health"): Case(lambda w: Call("GET", "/health"), kind="any"),
    ("POST", "/api/webhooks"): Case(lambda w: Call("POST", "/api/webhooks", json={"url": HOOK_URL}), status=201,
                                    kind="any"),
    ("GET", "/api/webhooks"): Case(lambda w: Call("GET", "/api/webhooks"), kind="list"),
    ("GET", "/api/webhooks/{webhook_id}"): Case(_webhook()),
    ("DELETE", "/api/webhooks/{webhook_id}"): Case(_webhook(method="DELETE")),
    ("GET", "/api/webhooks/{webhook_id}/deliveries"): Case(_webhook("/deliveries")),
    ("POST", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): Case(_redeliver, status=202),
    ("POST", "/api/sft/preferences"): Case(
        lambda w: Call("POST", "/api/sft/preferences", json=_preference(w), target=w.trained), status=201),
    ("GET", "/api/sft/preferences"): Case(lambda w: Call("GET", "/api/sft/preferences"), kind="list"),
    ("GET", "/api/sft/preferences/download"): Case(lambda w: Call("GET", "/api/sft/preferences/download"), kind="list"),
    ("DELETE", "/api/sft/preferences/{preference_id}"): Case(_delete_preference),
    ("DELETE", "/api/sft/preferences"): Case(
        lambda w: Call("DELETE", f"/api/sft/preferences?job_id={w.trained}", target=w.trained)),
    ("POST", "/api/sft/preferences/train"): Case(_train_on_preferences, status=201),
    ("POST", "/v1/fine_tuning/alpha/graders/validate"): Case(
        lambda w: Call("POST", "/v1/fine_tuning/alpha/graders/validate", json={"grader": _STRING_CHECK}), kind="any"),
    ("POST", "/v1/fine_tuning/alpha/graders/run"): Case(
        lambda w: Call("POST", "/v1/fine_tuning/alpha/graders/run",
                       json={"grader": _STRING_CHECK, "model_sample": "x", "item": {"answer": "x"}}), kind="any"),
}


def schema_routes(app) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}


def test_every_route_has_a_case():
    missing = schema_routes(create_app()) - set(CASES)
    assert not missing, f"routes without an auth case in {__file__}: {sorted(missing)}; add them to CASES"


@pytest.fixture
def world(make_manager, settings: Settings, tiny_config, chat_jsonl, tiny_model_dir) -> World:
    settings = settings.model_copy(update={"auth": "keys", "generate_while_training": True,
                                           "max_active_jobs_per_key": 1000, "webhooks_allow_private": True})
    manager = make_manager(runner=None, preflight=True, settings=settings, max_concurrent_jobs=2)
    keys = KeyStore(manager.store)
    made = {name: keys.create(name, admin=admin) for name, admin in
            (("alice", False), ("bob", False), ("root", True), ("alice-old", False))}
    keys.revoke(made["alice-old"][0].key_id)
    client = TestClient(create_app(manager=manager))
    w = World(manager=manager, client=client, keys={"revoked": made["alice-old"][1],
                                                   **{n: k for n, (_, k) in made.items()}},
              tiny_config=tiny_config, chat_jsonl=chat_jsonl, tiny_model_dir=tiny_model_dir)
    w.manager_keys = keys
    answer = w.as_("alice", Call("POST", "/api/sft/train", json={"config": tiny_config}))
    assert answer.status_code == 200, answer.text
    w.trained = answer.json()["job_id"]
    wait_for(lambda: manager.get_job(w.trained).status.is_terminal(), timeout=180, message="the training job")
    assert manager.get_job(w.trained).status.value == "completed", manager.get_job(w.trained).error
    w.config_id = w.fresh_config()
    w.file_id = w.fresh_file()
    w.ft_model = w.as_("alice", Call("GET", f"/v1/fine_tuning/jobs/{w.trained}")).json()["fine_tuned_model"]
    export = w.as_("alice", Call("POST", f"/api/sft/jobs/{w.trained}/export", json={"format": "adapter"})).json()
    w.export_id = export["export_id"]
    done = wait_for(lambda: (lambda e: e if e["status"] in ("completed", "failed") else None)(
        w.as_("alice", _export()(w)).json()), timeout=120, message="the export")
    assert done["status"] == "completed", done
    w.export_file = done["result"]["files"][0]["name"]
    w.webhook_id = _fresh_webhook(w)
    yield w
    client.close()
    manager.webhooks.close()


def _detail(response) -> str:
    body = response.json()
    return body["error"]["message"] if "error" in body else body["detail"]


def test_every_route_obeys_keys_and_owners(world: World):
    w = world
    for (method, template), case in CASES.items():
        name = f"{method} {template}"
        if (method, template) in OPEN_ROUTES:
            continue
        for who in (None, "revoked"):
            call = case.build(w)
            response = w.as_(who, call)
            assert response.status_code == 401, f"{name} as {who}: {response.status_code} {response.text}"
            assert response.headers.get("www-authenticate") == "Bearer", name
        for who in ("alice", "root"):
            call = case.build(w)
            response = w.as_(who, call)
            expected = 403 if case.kind == "admin" and who == "alice" else case.status
            assert response.status_code == expected, f"{name} as {who}: {response.status_code} {response.text[:500]}"
            if call.cleanup:
                call.cleanup()
        call = case.build(w)
        response = w.as_("bob", call)
        if case.kind == "object":
            assert response.status_code == 404, f"{name} as bob: {response.status_code} {response.text[:500]}"
            missing_id = str(uuid.uuid4()) if "-" in call.target and not call.target.startswith("file-") \
                else f"file-{uuid.uuid4().hex[:24]}"
            missing = Call(call.method, call.url.replace(call.target, missing_id),
                           json=json.loads(json.dumps(call.json).replace(call.target, missing_id))
                           if call.json is not None else None)
            not_there = w.as_("alice", missing)
            assert not_there.status_code == 404, f"{name} on a missing id: {not_there.status_code}"
            assert _detail(response).replace(call.target, "<id>") == _detail(not_there).replace(missing_id, "<id>"), \
                name
        elif case.kind == "admin":
            assert response.status_code == 403, f"{name} as bob: {response.status_code}"
        else:
            assert response.status_code == case.status, f"{name} as bob: {response.status_code} {response.text[:300]}"
            for secret in (w.trained, w.file_id, w.config_id, w.ft_model):
                assert secret not in response.text, f"{name} shows bob alice's {secret}"
        if call.cleanup:
            call.cleanup()


def test_health_is_open_and_shows_no_ones_jobs_without_a_key(world: World):
    anonymous = world.client.get("/health")
    assert anonymous.status_code == 200 and anonymous.json()["auth"] == "keys"
    assert anonymous.json()["jobs"] == {}
    bob = world.as_("bob", Call("GET", "/health")).json()["jobs"]
    assert sum(bob.values()) == 0
    alice = world.as_("alice", Call("GET", "/health")).json()["jobs"]
    assert alice["completed"] >= 1
    for page in ("/", "/docs", "/redoc", "/openapi.json", "/static/web/js/app.js"):
        assert world.client.get(page).status_code == 200, page
