"""Graders a key that is not the admin's may not use: a score_model judge (its own base_url) at a private address (the
server would call its internal network and hand the answer back), and python graders (the user's code on the server).
Admins may; SFT_JUDGE_ALLOW_PRIVATE and SFT_PYTHON_GRADERS_FOR_USERS open them to every key."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.jobs.manager import SFTJobManager
from app.main import create_app
from app.store.keys import KeyStore
from app.store.sqlite import SQLiteStore
from job_helpers import GateRunner, quiesce


def judge(base_url: str, name: str = "judge") -> dict:
    return {"type": "score_model", "name": name, "model": "judge-1", "base_url": base_url,
            "input": [{"role": "user", "content": "Score {{sample.output_text}}"}]}


def serve(root, **settings):
    manager = SFTJobManager(settings=Settings(data_dir=root / "data", dataset_roots=[root], model_roots=[root],
                                              auth="keys", **settings),
                            store=SQLiteStore(root / "data" / "sft.db"), runner=GateRunner(), preflight=False)
    keys = KeyStore(manager.store)
    made = {name: keys.create(name, admin=name == "root")[1] for name in ("bob", "root")}
    client = TestClient(create_app(manager=manager))

    def as_(who: str, method: str, url: str, **kwargs):
        return client.request(method, url, headers={"Authorization": f"Bearer {made[who]}"}, **kwargs)

    return SimpleNamespace(as_=as_, close=lambda: (client.close(), quiesce(manager), manager.store.close()))


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    server = serve(tmp_path_factory.mktemp("judges"))
    yield server
    server.close()


@pytest.mark.parametrize(("grader", "param", "address"), [
    (judge("http://127.0.0.1:9/v1"), "grader.base_url", "127.0.0.1"),
    (judge("http://169.254.169.254/latest"), "grader.base_url", "169.254.169.254"),
    ({"type": "multi", "name": "m", "calculate_output": "j", "graders": {"j": judge("http://10.1.2.3/v1")}},
     "grader.graders.j.base_url", "10.1.2.3"),
])
def test_a_users_private_judge_is_refused_before_any_call(w, grader, param, address):
    for route in ("validate", "run"):
        body = {"grader": grader} if route == "validate" else {"grader": grader, "model_sample": "x"}
        answer = w.as_("bob", "POST", f"/v1/fine_tuning/alpha/graders/{route}", json=body)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == param and address in error["message"] and "public addresses only" in error["message"]


PYTHON = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0"}


def test_python_graders_are_the_admins_unless_the_server_allows_them(w, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("python-graders")
    answer = w.as_("bob", "POST", "/v1/fine_tuning/alpha/graders/run", json={"grader": PYTHON, "model_sample": "x"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "grader", answer.text
    assert "only admins" in answer.json()["error"]["message"]
    ran = w.as_("root", "POST", "/v1/fine_tuning/alpha/graders/run", json={"grader": PYTHON, "model_sample": "x"})
    assert ran.status_code == 200 and ran.json()["reward"] == 1.0, ran.text
    allowed = serve(tmp_path, python_graders_for_users=True)
    try:
        assert allowed.as_("bob", "POST", "/v1/fine_tuning/alpha/graders/validate",
                           json={"grader": PYTHON}).status_code == 200
    finally:
        allowed.close()


def test_a_training_config_naming_a_private_judge_is_refused_naming_the_field(w):
    config = {"base_model": "tiny-model", "dataset_name": "data.jsonl", "max_steps": 4, "eval_steps": 2,
              "validation_split": 0.25, "graders": [{"type": "string_check", "name": "s", "operation": "eq",
                                                     "input": "{{sample.output_text}}", "reference": "x"},
                                                    judge("http://192.168.1.10/v1")]}
    answer = w.as_("bob", "POST", "/api/sft/train", json={"config": config})
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"][0]["field"] == "config.graders[1].base_url"
    assert w.as_("bob", "GET", "/api/sft/jobs").json()["total"] == 0  # no job was made


def test_admins_and_the_allow_private_setting_may_name_private_judges(w, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("allow-private")
    assert w.as_("root", "POST", "/v1/fine_tuning/alpha/graders/validate",
                 json={"grader": judge("http://127.0.0.1:9/v1")}).status_code == 200
    allowed = serve(tmp_path, judge_allow_private=True)
    try:
        assert allowed.as_("bob", "POST", "/v1/fine_tuning/alpha/graders/validate",
                           json={"grader": judge("http://127.0.0.1:9/v1")}).status_code == 200
    finally:
        allowed.close()
