"""Issue #23's runtime items on an in-process app: bodies that cannot be stored, page headers, logs."""

from __future__ import annotations

import logging

import pytest

from app.core.access_log import RedactQuerySecrets, redact
from app.core.bodies import lone_surrogate_at

SURROGATE_CONFIG = '{"config": {"base_model": "tiny-model", "dataset_name": "data.jsonl", "max_steps": 3, ' \
                   '"column_mapping": {"prompt": "q\\ud800"}}}'


def test_a_lone_surrogate_in_an_api_sft_body_is_a_400_naming_the_field_and_nothing_is_stored(client):
    response = client.post("/api/sft/train", content=SURROGATE_CONFIG, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["detail"].startswith("config.column_mapping.prompt: holds an unpaired UTF-16 surrogate")
    assert body["errors"][0]["field"] == "config.column_mapping.prompt"
    listed = client.get("/api/sft/jobs")
    assert listed.status_code == 200 and listed.json()["jobs"] == []


def test_a_lone_surrogate_in_a_v1_body_is_openais_400_naming_the_param(client):
    body = '{"model": "tiny-model", "training_file": "file-x", "metadata": {"team": "\\udc00x"}}'
    response = client.post("/v1/fine_tuning/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "metadata.team" and error["type"] == "invalid_request_error"
    assert "unpaired UTF-16 surrogate" in error["message"]
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_a_record_stored_with_a_surrogate_before_the_check_no_longer_breaks_the_job_list(make_manager, client_for,
                                                                                       fake_config, db_path):
    from app.store import SQLiteStore

    old = make_manager()  # as the server was: a manager call, no body check in front of it
    job_id = old.create_job({**fake_config, "column_mapping": {"prompt": "\ud800x"}})
    old.stop_job(job_id)
    client = client_for(make_manager(store=SQLiteStore(db_path)))
    listed = client.get("/api/sft/jobs")
    assert listed.status_code == 200, listed.text
    job = next(j for j in listed.json()["jobs"] if j["job_id"] == job_id)
    assert job["config"]["column_mapping"] == {"prompt": "\ufffdx"}
    assert client.get(f"/api/sft/jobs/{job_id}").status_code == 200


def test_surrogates_are_found_in_keys_and_lists_and_pairs_pass():
    assert lone_surrogate_at({"a": [{"b": "ok"}, {"c": "\ud800"}]}) == "a[1].c"
    assert lone_surrogate_at({"a": {"\udfff": 1}}) == "a (a key)"
    assert lone_surrogate_at({"a": "\U0001F600 emoji", "b": [1, 2.5, None]}) is None


def test_a_paired_surrogate_escape_is_text(client):
    body = '{"model": "x", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    response = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code != 400 or "surrogate" not in response.text


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_pages_cannot_be_framed_and_run_no_inline_script_they_were_not_served_with(client, path):
    response = client.get(path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    script_src = next(part for part in policy.split(";") if part.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    if path == "/docs":  # Swagger UI's start-up script, allowed by its hash
        assert "'sha256-" in script_src
    if path == "/":
        assert "<script>" not in response.text


def test_query_string_secrets_are_redacted_in_access_records():
    assert redact("/api/sft/jobs?api_key=sk_abc&limit=3") == "/api/sft/jobs?api_key=***&limit=3"
    assert redact("/x?limit=3&API_KEY=s&token=t#f") == "/x?limit=3&API_KEY=***&token=***#f"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/health?api_key=sk_secret", "1.1", 401), None)
    assert RedactQuerySecrets().filter(record) and "sk_secret" not in record.getMessage()


# Files whose JSON parses but cannot become text rows

GOOD_LINE = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
BAD_LINES = {
    "a long number": ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], '
                      '"n": ' + "9" * 5000 + "}", "a number too long to read"),
    "deep nesting": ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], '
                     '"x": ' + "[" * 60_000 + "]" * 60_000 + "}", "nested too deeply to read"),
    "a lone surrogate": ('{"messages": [{"role": "user", "content": "hi \\ud800"}, '
                         '{"role": "assistant", "content": "yo"}]}', "messages[0].content: holds an unpaired UTF-16"),
}


def bad_file(tmp_path, kind: str):
    line, _ = BAD_LINES[kind]
    path = tmp_path / f"{kind.replace(' ', '-')}.jsonl"
    path.write_text(f"{GOOD_LINE}\n{GOOD_LINE}\n{line}\n")
    return path


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_preview_and_training_name_the_line_a_json_number_nesting_or_surrogate_breaks(
        checked_client, tiny_model_dir, tmp_path, kind):
    path, reason = bad_file(tmp_path, kind), BAD_LINES[kind][1]
    preview = checked_client.post("/api/sft/datasets/preview",
                                  json={"dataset_name": str(path), "base_model": str(tiny_model_dir)})
    assert preview.status_code == 400, preview.text
    assert preview.json()["detail"].startswith(f"dataset_name: {path}, line 3: {reason}")
    train = checked_client.post("/api/sft/train", json={"config": {
        "base_model": str(tiny_model_dir), "dataset_name": str(path), "max_steps": 1}})
    assert train.status_code == 400, train.text
    assert f"{path}, line 3: {reason}" in train.json()["detail"]


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_an_upload_with_such_a_line_is_refused_naming_it(client, tmp_path, kind):
    path, reason = bad_file(tmp_path, kind), BAD_LINES[kind][1]
    response = client.post("/v1/files", data={"purpose": "fine-tune"},
                           files={"file": ("train.jsonl", path.read_bytes())})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"].startswith(f"Invalid file train.jsonl, line 3: {reason}")
    assert error["code"] == "invalid_file_format"
    assert client.get("/v1/files").json()["data"] == []


# Streams in the model request gate


class _Client:
    """What the gate asks of a request: whether its client is still there."""

    def __init__(self) -> None:
        self.gone = False

    async def is_disconnected(self) -> bool:
        return self.gone


def test_a_queued_stream_whose_client_leaves_frees_its_place_at_once_and_the_bound_holds():
    import asyncio
    import threading

    from app.api.model_requests import ModelRequestGate
    from app.core.errors import RequestCancelled, ServiceBusy

    gate = ModelRequestGate(workers=1, max_queued=1, timeout_seconds=30)
    release = threading.Event()

    def produce(budget):
        yield {"n": 0}
        for n in range(1, 1000):
            if budget.should_stop() or release.wait(0.01):
                return
            yield {"n": n}

    async def scenario():
        first_client, second_client = _Client(), _Client()
        first, rest = await gate.stream(first_client, produce)
        assert first == {"n": 0} and gate.counts() == {"running": 1, "waiting": 0}
        waiting = asyncio.create_task(gate.stream(second_client, produce))
        while gate.admitted < 2:
            await asyncio.sleep(0.01)
        with pytest.raises(ServiceBusy) as refused:  # beyond workers + max_queued
            await gate.stream(_Client(), produce)
        assert refused.value.headers["Retry-After"]
        second_client.gone = True
        with pytest.raises(RequestCancelled):
            await asyncio.wait_for(waiting, timeout=2)
        assert gate.admitted == 1  # at once: the first stream still holds the only worker
        assert (await anext(rest))["n"] == 1
        await rest.aclose()  # the first client leaves: generation stops at its next item
        for _ in range(200):
            if gate.admitted == 0:
                break
            await asyncio.sleep(0.01)
        assert gate.admitted == 0

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        gate.close()
