"""/api/sft/preferences: keep the answers picked in Try it, list, download as TRL JSONL, delete, train DPO on them.

One app with keys (alice, bob, an admin) on a manager whose runner trains nothing (a GateRunner): what is tested is
the service around the preferences; the DPO training itself is tests/web/test_preferences_page.py's.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.jobs.manager import SFTJobManager
from app.main import create_app
from app.store.keys import KeyStore
from app.store.sqlite import SQLiteStore
from factories import wait_for
from job_helpers import GateRunner, error_detail, lora_adapter_saver, quiesce

PROMPT = [{"role": "user", "content": "Extract the contact as JSON: Ada, 36, Paris."}]
GOOD = '{"name": "Ada", "age": 36, "city": "Paris"}'


@pytest.fixture(scope="module")
def w(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("preferences")
    settings = Settings(data_dir=root / "data", dataset_roots=[root], model_roots=[root, tiny_model_dir], auth="keys")
    manager = SFTJobManager(settings=settings, store=SQLiteStore(root / "data" / "sft.db"), runner=GateRunner(),
                            max_concurrent_jobs=2, preflight=False)
    keys = KeyStore(manager.store)
    made = {name: keys.create(name, admin=name == "root")[1] for name in ("alice", "bob", "root")}
    client = TestClient(create_app(manager=manager))

    def as_(who: str, method: str, url: str, **kwargs):
        return client.request(method, url, headers={"Authorization": f"Bearer {made[who]}"}, **kwargs)

    config = {"base_model": "tiny-model", "dataset_name": "data.jsonl", "max_steps": 3, "learning_rate": 1e-3,
              "lora_r": 8}

    def job(who: str, *, complete: bool = True, **fields) -> str:
        answer = as_(who, "POST", "/api/sft/train", json={"config": {**config, **fields}})
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["job_id"]
        if complete:
            manager.runner.release(job_id)
            wait_for(lambda: manager.get_job(job_id).status.value == "completed", timeout=10, message="the job")
        return job_id

    yield SimpleNamespace(manager=manager, as_=as_, job=job, alice_job=job("alice"), bob_job=job("bob"),
                          tiny_model_dir=tiny_model_dir)
    client.close()
    quiesce(manager)
    manager.store.close()


def add(w, who: str, job_id: str, **fields):
    body = {"job_id": job_id, "prompt": PROMPT, "chosen": GOOD, "rejected": "Ada is 36.", "source": "picked_tuned",
            **fields}
    return w.as_(who, "POST", "/api/sft/preferences", json=body)


def test_add_list_download_and_delete_ones_own_preferences(w):
    job_id = w.job("alice")
    first = add(w, "alice", job_id)
    assert first.status_code == 201, first.text
    kept = first.json()
    assert kept["id"].startswith("pref_") and kept["owner"] == "alice" and kept["prompt"] == PROMPT
    second = add(w, "alice", job_id, chosen="Ada, 36", rejected="Paris!", source="corrected").json()
    other = add(w, "alice", w.alice_job, source="picked_base").json()

    page = w.as_("alice", "GET", "/api/sft/preferences", params={"job_id": job_id}).json()
    assert page["total"] == 2 and [p["id"] for p in page["preferences"]] == [kept["id"], second["id"]]
    assert w.as_("alice", "GET", "/api/sft/preferences", params={"limit": 1, "offset": 1}).json()["total"] >= 3

    download = w.as_("alice", "GET", "/api/sft/preferences/download", params={"job_id": job_id})
    assert download.status_code == 200 and download.headers["content-type"] == "application/x-ndjson"
    assert f'filename="preferences-{job_id}.jsonl"' in download.headers["content-disposition"]
    rows = [json.loads(line) for line in download.text.splitlines()]
    assert rows == [{"prompt": PROMPT, "chosen": [{"role": "assistant", "content": GOOD}],
                     "rejected": [{"role": "assistant", "content": "Ada is 36."}]},
                    {"prompt": PROMPT, "chosen": [{"role": "assistant", "content": "Ada, 36"}],
                     "rejected": [{"role": "assistant", "content": "Paris!"}]}]
    everything = w.as_("alice", "GET", "/api/sft/preferences/download").text.splitlines()
    assert len(everything) >= 3

    gone = w.as_("alice", "DELETE", f"/api/sft/preferences/{kept['id']}")
    assert gone.status_code == 200 and gone.json() == kept
    again = w.as_("alice", "DELETE", f"/api/sft/preferences/{kept['id']}")
    assert again.status_code == 404 and error_detail(again) == f"Preference {kept['id']} not found"
    cleared = w.as_("alice", "DELETE", "/api/sft/preferences", params={"job_id": job_id})
    assert cleared.json() == {"job_id": job_id, "deleted": 1}
    again = w.as_("alice", "DELETE", "/api/sft/preferences", params={"job_id": job_id})
    assert again.status_code == 200 and again.json()["deleted"] == 0
    assert w.as_("alice", "DELETE", "/api/sft/preferences/download").status_code == 405
    assert w.as_("alice", "GET", "/api/sft/preferences", params={"job_id": job_id}).json()["total"] == 0
    assert other["id"] in [p["id"] for p in w.as_("alice", "GET", "/api/sft/preferences").json()["preferences"]]


def test_users_never_see_each_others_preferences(w):
    alices = add(w, "alice", w.alice_job).json()
    bobs = add(w, "bob", w.bob_job, chosen="bob's answer").json()
    # Bob cannot add to alice's job: 404 as for a missing job.
    foreign, missing = add(w, "bob", w.alice_job), add(w, "bob", "no-such-job")
    assert foreign.status_code == missing.status_code == 404
    assert error_detail(foreign).replace(w.alice_job, "X") == error_detail(missing).replace("no-such-job", "X")
    listed = w.as_("bob", "GET", "/api/sft/preferences").json()["preferences"]
    assert bobs["id"] in [p["id"] for p in listed] and all(p["owner"] == "bob" for p in listed)
    assert w.as_("bob", "GET", "/api/sft/preferences", params={"job_id": w.alice_job}).json()["total"] == 0
    assert w.as_("bob", "GET", "/api/sft/preferences/download", params={"job_id": w.alice_job}).text == ""
    # Deleting alice's preference reads as a missing one, and bob's delete-all for her job deletes nothing of hers.
    theirs, nothing = (w.as_("bob", "DELETE", f"/api/sft/preferences/{i}") for i in (alices["id"], "pref_nothing"))
    assert theirs.status_code == nothing.status_code == 404
    assert error_detail(theirs).replace(alices["id"], "X") == error_detail(nothing).replace("pref_nothing", "X")
    cleared, none = (w.as_("bob", "DELETE", "/api/sft/preferences", params={"job_id": job})
                     for job in (w.alice_job, "nope"))
    assert cleared.status_code == none.status_code == 404
    assert error_detail(cleared).replace(w.alice_job, "X") == error_detail(none).replace("nope", "X")
    trained = w.as_("bob", "POST", "/api/sft/preferences/train", json={"job_id": w.alice_job})
    assert trained.status_code == 404
    # Alice still has hers; the admin sees both.
    assert alices["id"] in [p["id"] for p in w.as_("alice", "GET", "/api/sft/preferences").json()["preferences"]]
    everyones = w.as_("root", "GET", "/api/sft/preferences", params={"limit": 10_000}).json()["preferences"]
    seen = {p["id"] for p in everyones}
    assert {alices["id"], bobs["id"]} <= seen


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"chosen": " \n"}, "chosen", "no text; the preferred answer must say something"),
    ({"rejected": ""}, "rejected", "empty; give the answer that is worse"),
    ({"rejected": GOOD + " "}, "chosen", "the same answer as rejected; a preference needs two different answers"),
    ({"prompt": [{"role": "user", "content": " "}]}, "prompt", "no message has any text"),
])
def test_an_unusable_preference_is_a_400_naming_its_field(w, fields, field, message):
    answer = add(w, "alice", w.alice_job, **fields)
    assert answer.status_code == 400, answer.text
    assert error_detail(answer) == f"{field}: {message}"
    assert answer.json()["errors"] == [{"field": field, "message": message, "type": "invalid_request"}]


@pytest.mark.parametrize(("fields", "field"), [
    ({"source": "liked"}, "source"), ({"prompt": []}, "prompt"), ({"chosen": "x" * 100_001}, "chosen"),
    ({"prompt": [{"role": "robot", "content": "hi"}]}, "prompt.0.role"), ({"colour": "red"}, "colour"),
])
def test_a_malformed_preference_is_a_422_naming_its_field(w, fields, field):
    answer = add(w, "alice", w.alice_job, **fields)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == field
    error_detail(answer)


def test_a_blank_answer_is_one_to_reject(w):
    answer = add(w, "alice", w.alice_job, rejected="\n\n\n")
    assert answer.status_code == 201 and answer.json()["rejected"] == "\n\n\n"


def test_preferences_are_kept_for_a_completed_job_only(w):
    running = w.job("alice", complete=False)
    answer = add(w, "alice", running)
    assert answer.status_code == 409
    assert error_detail(answer).startswith(f"Job {running} is ")
    w.manager.stop_job(running)


def test_training_needs_preferences_and_refuses_overriding_what_they_set(w):
    job_id = w.job("alice")
    files_before = w.as_("alice", "GET", "/v1/files").json()["data"]
    none = w.as_("alice", "POST", "/api/sft/preferences/train", json={"job_id": job_id})
    assert none.status_code == 400
    assert error_detail(none) == f"job_id: no preferences kept for job {job_id}; pick answers in its Try it first"
    add(w, "alice", job_id)
    fixed = w.as_("alice", "POST", "/api/sft/preferences/train",
                  json={"job_id": job_id, "overrides": {"base_model": "other"}})
    assert fixed.status_code == 400
    assert error_detail(fixed) == "overrides.base_model: set by the preferences' DPO job; leave it out"
    bad = w.as_("alice", "POST", "/api/sft/preferences/train", json={"job_id": job_id, "overrides": {"max_steps": 0}})
    assert bad.status_code == 400, bad.text
    assert "overrides.max_steps" in [e["field"] for e in bad.json()["errors"]]
    assert w.as_("alice", "GET", "/v1/files").json()["data"] == files_before  # nothing written for a refused train


def test_train_writes_the_preferences_into_the_users_files_and_submits_dpo_from_the_job(w):
    """The tuned job holds a real LoRA adapter of the tiny model (the GateRunner trains nothing, so one is saved
    for it): the DPO job's base is that job's model (merged when a real run starts)."""
    w.manager.runner.before_return = lora_adapter_saver(w.tiny_model_dir)
    try:
        job_id = w.job("alice", base_model=str(w.tiny_model_dir))
    finally:
        w.manager.runner.before_return = None
    add(w, "alice", job_id)
    add(w, "alice", job_id, chosen="Ada, 36, Paris", source="corrected")
    answer = w.as_("alice", "POST", "/api/sft/preferences/train",
                   json={"job_id": job_id, "overrides": {"max_steps": 2, "beta": 0.2}})
    assert answer.status_code == 201, answer.text
    started = answer.json()
    assert started["preferences"] == 2 and started["base_job_id"] == job_id
    dpo = w.manager.get_job(started["job_id"])
    assert dpo.owner == "alice"
    config = dpo.config
    merged = Path(w.manager.get_job(job_id).output_dir) / "merged"  # job:<id> resolved at submit, merged by the run
    assert (config["method"], config["base_model"], config["max_steps"], config["beta"]) == \
        ("dpo", str(merged), 2, 0.2)
    assert config["base_job"]["job_id"] == job_id and not merged.exists()  # the GateRunner trains (merges) nothing
    assert (config["learning_rate"], config["lora_r"]) == (1e-3, 8)  # the tuned job's settings carried
    record = w.manager.store.get_file(started["file_id"])
    assert config["dataset_name"] == record["path"] and record["owner"] == "alice"
    assert started["file_id"] in [f["id"] for f in w.as_("alice", "GET", "/v1/files").json()["data"]]
    assert started["file_id"] not in [f["id"] for f in w.as_("bob", "GET", "/v1/files").json()["data"]]
    content = w.as_("alice", "GET", f"/v1/files/{started['file_id']}/content")
    assert content.text == w.as_("alice", "GET", "/api/sft/preferences/download", params={"job_id": job_id}).text
    assert w.as_("bob", "GET", f"/v1/files/{started['file_id']}/content").status_code == 404
