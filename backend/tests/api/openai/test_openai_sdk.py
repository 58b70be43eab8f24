"""The official ``openai`` SDK against a live server: upload, train, watch, chat; cancel, pause and
resume; typed errors; paging. The training tests train the tiny model for real."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from app.api.openai.jobs import auto_batch_size, auto_epochs
from factories import MISSING, contact_rows, wait_for, write_jsonl
from openai_live import Live

PROMPT = [{"role": "user", "content": "hello 3"}]


def supervised(**hyperparameters) -> dict:
    return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}


def upload(live: Live, path: Path):
    with path.open("rb") as f:
        return live.client.files.create(file=f, purpose="fine-tune")


def wait_status(live: Live, job_id: str, *statuses: str, timeout: float = 180) -> openai.types.fine_tuning.FineTuningJob:
    return wait_for(lambda: (lambda job: job if job.status in statuses else None)(
        live.client.fine_tuning.jobs.retrieve(job_id)), timeout=timeout, interval=0.1,
        message=f"job {job_id} to be {' or '.join(statuses)}")


def wait_step(live: Live, job_id: str, step: int) -> None:
    wait_for(lambda: (live.manager.get_job(job_id).progress or {}).get("current_step", 0) >= step,
             timeout=120, interval=0.02, message=f"job {job_id} to reach step {step}")


def test_upload_train_watch_and_chat(training_server: Live, contacts_file: Path, tiny_model_dir: Path):
    live, client = training_server, training_server.client
    uploaded = upload(live, contacts_file)
    assert (uploaded.object, uploaded.purpose, uploaded.status) == ("file", "fine-tune", "processed")
    assert uploaded.bytes == contacts_file.stat().st_size and uploaded.filename == "contacts.jsonl"

    job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id, suffix="contacts",
                                         seed=7, metadata={"team": "crm"},
                                         method=supervised(n_epochs=2, batch_size=8, learning_rate_multiplier=2))
    assert job.status in ("queued", "running") and job.fine_tuned_model is None
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (2, 8)
    assert job.hyperparameters.learning_rate_multiplier == 2 and job.seed == 7

    def succeeded_event():
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=5))
        return events if any(e.data.get("event") == "completed" for e in events) else None

    events = wait_for(succeeded_event, timeout=180, interval=0.2, message="the completed event")
    assert [int(e.id.rsplit("-", 1)[1]) for e in events] == sorted((int(e.id.rsplit("-", 1)[1]) for e in events),
                                                                   reverse=True)  # newest first
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.error is None
    assert done.fine_tuned_model == f"ft:tiny-model:contacts:{job.id}"
    assert done.trained_tokens > 0 and done.finished_at >= done.created_at
    assert done.metadata == {"team": "crm"} and done.user_provided_suffix == "contacts"
    all_events = list(client.fine_tuning.jobs.list_events(job.id, limit=3))  # auto-paging, older pages via after
    assert {e.data["event"] for e in all_events} >= {"created", "started", "metrics", "completed"}
    metrics = [e for e in all_events if e.type == "metrics"]
    assert len(metrics) == 4 and all("train_loss" in e.data for e in metrics)

    (results,) = done.result_files
    csv = client.files.content(results).text.splitlines()
    assert csv[0].startswith("step,train_loss,valid_loss") and [line.split(",")[0] for line in csv[1:]] == \
        ["1", "2", "3", "4"]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [4, 2]  # one per epoch, newest first
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-4"

    reply = client.chat.completions.create(model=done.fine_tuned_model, messages=PROMPT, max_completion_tokens=12,
                                           temperature=0)
    text = reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.model == done.fine_tuned_model
    assert reply.usage.completion_tokens >= 1 and reply.usage.total_tokens == \
        reply.usage.prompt_tokens + reply.usage.completion_tokens
    generated = live.http.post(f"/api/sft/jobs/{job.id}/generate",
                               json={"messages": PROMPT, "max_new_tokens": 12}).json()
    assert text == generated["completion"]  # the same model as /generate uses

    stream = client.chat.completions.create(model=done.fine_tuned_model, messages=PROMPT, max_completion_tokens=12,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

    checkpoint_reply = client.chat.completions.create(model=checkpoints[0].fine_tuned_model_checkpoint,
                                                      messages=PROMPT, max_completion_tokens=12, temperature=0)
    assert checkpoint_reply.choices[0].message.content == text  # the last checkpoint is the final adapter

    assert done.fine_tuned_model in [m.id for m in client.models.list()]
    assert client.models.retrieve(done.fine_tuned_model).owned_by == "self-hosted"
    sft_job = live.http.get(f"/api/sft/jobs/{job.id}").json()  # one system: the same job under /api/sft
    assert sft_job["status"] == "completed" and sft_job["config"]["dataset_name"].endswith(f"{uploaded.id}.jsonl")

    assert client.models.delete(done.fine_tuned_model).deleted is True
    assert done.fine_tuned_model not in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model=done.fine_tuned_model, messages=PROMPT, max_completion_tokens=4)


def test_cancel_a_running_job(training_server: Live, contacts_file: Path, tiny_model_dir: Path):
    client = training_server.client
    uploaded = upload(training_server, contacts_file)
    job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id,
                                         method=supervised(n_epochs=50, batch_size=1))
    wait_step(training_server, job.id, 2)
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    wait_for(lambda: training_server.manager.get_job(job.id).status.value == "stopped", timeout=60,
             message="the trainer to stop")
    cancelled = client.fine_tuning.jobs.retrieve(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert cancelled.fine_tuned_model is None and cancelled.result_files == []
    with pytest.raises(openai.ConflictError, match="only a paused job can be resumed"):
        client.fine_tuning.jobs.resume(job.id)
    with pytest.raises(openai.ConflictError, match="cannot be paused"):
        client.fine_tuning.jobs.pause(job.id)


def test_pause_then_resume_to_succeeded(training_server: Live, contacts_file: Path, tiny_model_dir: Path):
    live, client = training_server, training_server.client
    uploaded = upload(live, contacts_file)
    job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id,
                                         method=supervised(n_epochs=10, batch_size=1))
    wait_step(live, job.id, 2)
    assert client.fine_tuning.jobs.pause(job.id).status in ("running", "paused")  # running until the step ends
    paused = wait_status(live, job.id, "paused", "succeeded")
    assert paused.status == "paused" and paused.finished_at is None
    step = live.manager.get_job(job.id).result["global_step"]
    assert 2 <= step < 160
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data[0].step_number == step  # saved by the pause

    assert client.fine_tuning.jobs.resume(job.id).status in ("queued", "running")
    done = wait_status(live, job.id, "succeeded", "failed", "cancelled")
    assert done.status == "succeeded" and done.fine_tuned_model == f"ft:tiny-model::{job.id}"
    attempts = live.http.get(f"/api/sft/jobs/{job.id}").json()["attempts"]
    assert [a["status"] for a in attempts] == ["stopped", "completed"]
    assert attempts[1]["resumed_from_step"] == step


def test_a_broken_line_is_a_bad_request_naming_the_line(gated_server: Live, tmp_path: Path):
    rows = [json.dumps(row) for row in contact_rows(4)]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([rows[0], "", rows[1], '{"messages": [', rows[2]]) + "\n")
    with pytest.raises(openai.BadRequestError, match=r"broken\.jsonl, line 4: not valid JSON") as caught:
        upload(gated_server, broken)
    assert caught.value.param == "file" and caught.value.code == "invalid_file_format"

    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(rows[0] + "\n" + json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(openai.BadRequestError, match="line 2: the last turn must be the assistant's"):
        upload(gated_server, no_answer)

    mixed = write_jsonl(tmp_path / "mixed.jsonl", [contact_rows(1)[0], {"prompt": "a", "completion": "b"}])
    with pytest.raises(openai.BadRequestError, match="line 2: a prompt/completion example, but line 1 is a chat"):
        upload(gated_server, mixed)
    assert gated_server.client.files.list().data == []  # nothing of the refused uploads is kept


def test_unknown_ids_raise_not_found(gated_server: Live):
    client = gated_server.client
    with pytest.raises(openai.NotFoundError, match=f"Job {MISSING} not found"):
        client.fine_tuning.jobs.retrieve(MISSING)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.cancel(MISSING)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.list_events(MISSING)
    with pytest.raises(openai.NotFoundError, match="No such File object: file-nope") as caught:
        client.files.retrieve("file-nope")
    assert caught.value.body["code"] == "file_not_found"
    with pytest.raises(openai.NotFoundError, match="does not exist") as caught:
        client.chat.completions.create(model=f"ft:tiny-model::{MISSING}", messages=PROMPT)
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError, match="No such File object: file-nope") as caught:
        client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file="file-nope")
    assert caught.value.param == "training_file"


def test_only_supervised_and_dpo_fine_tuning_are_offered(gated_server: Live, contacts_file: Path,
                                                         tiny_model_dir: Path):
    client = gated_server.client
    uploaded = upload(gated_server, contacts_file)
    with pytest.raises(openai.BadRequestError, match="method.type 'reinforcement' is not supported") as caught:
        client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id,
                                       method={"type": "reinforcement", "reinforcement": {}})
    assert caught.value.param == "method.type"
    with pytest.raises(openai.BadRequestError, match="Invalid value for 'method.supervised.hyperparameters.n_epochs'"):
        client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id,
                                       method=supervised(n_epochs=0))
    with pytest.raises(openai.BadRequestError, match="model: .*must be under an allowed root") as caught:
        client.fine_tuning.jobs.create(model="./no/such/model", training_file=uploaded.id)
    assert caught.value.param == "model"
    assert client.fine_tuning.jobs.list().data == []  # no refused request left a job behind


def test_auto_hyperparameters_and_the_legacy_place(gated_server: Live, contacts_file: Path, tiny_model_dir: Path):
    client, manager = gated_server.client, gated_server.manager
    uploaded = upload(gated_server, contacts_file)
    job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id)
    assert job.hyperparameters.n_epochs == auto_epochs(16) == 7
    assert job.hyperparameters.batch_size == auto_batch_size(16) == 2
    assert job.hyperparameters.learning_rate_multiplier == 1.0
    config = manager.get_job(job.id).config
    assert config["learning_rate"] == 1e-3  # a tiny model gets the top of the LoRA range
    assert (config["num_train_epochs"], config["per_device_train_batch_size"], config["save_steps"]) == (7, 2, 8)

    legacy = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id,
                                            validation_file=uploaded.id,
                                            hyperparameters={"n_epochs": 3, "batch_size": 4,
                                                             "learning_rate_multiplier": 0.5})
    assert (legacy.hyperparameters.n_epochs, legacy.hyperparameters.batch_size) == (3, 4)
    assert legacy.validation_file == uploaded.id
    config = manager.get_job(legacy.id).config
    assert config["learning_rate"] == 5e-4 and config["eval_steps"] == 4
    assert config["eval_dataset_name"] == config["dataset_name"] == manager.store.get_file(uploaded.id)["path"]


def test_uploads_are_fine_tune_files_within_the_size_limit(make_manager, serve, settings, contacts_file: Path):
    live = serve(make_manager(settings=settings.model_copy(update={"max_upload_bytes": 1000})))
    with pytest.raises(openai.APIStatusError, match="larger than this server accepts") as caught:
        upload(live, contacts_file)  # 2,000 bytes
    assert caught.value.status_code == 413 and caught.value.code == "file_too_large"
    small = write_jsonl(contacts_file.with_name("small.jsonl"), contact_rows(2))
    with small.open("rb") as f, pytest.raises(openai.BadRequestError, match="purpose 'batch' is not supported"):
        live.client.files.create(file=f, purpose="batch")
    assert upload(live, small).bytes == small.stat().st_size
    assert [p.name for p in (settings.resolved_files_dir).iterdir()] == [f"{live.client.files.list().data[0].id}.jsonl"]


def test_after_walks_25_jobs_in_pages_of_10(gated_server: Live, contacts_file: Path, tiny_model_dir: Path):
    client = gated_server.client
    uploaded = upload(gated_server, contacts_file)
    # The jobs never train: the first holds the only slot in a GateRunner, the others wait queued.
    created = [client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id,
                                              metadata={"parity": "even" if i % 2 == 0 else "odd"}).id
               for i in range(25)]
    first = client.fine_tuning.jobs.list(limit=10)
    second = client.fine_tuning.jobs.list(limit=10, after=first.data[-1].id)
    third = client.fine_tuning.jobs.list(limit=10, after=second.data[-1].id)
    assert [len(first.data), len(second.data), len(third.data)] == [10, 10, 5]
    assert [first.has_more, second.has_more, third.has_more] == [True, True, False]
    assert [job.id for page in (first, second, third) for job in page.data] == created[::-1]  # newest first
    assert [job.id for job in client.fine_tuning.jobs.list(limit=10)] == created[::-1]  # the SDK's auto-paging
    odd = client.fine_tuning.jobs.list(limit=100, metadata={"parity": "odd"})
    assert [job.id for job in odd.data] == created[1::2][::-1]


def test_one_system_with_api_sft(gated_server: Live, contacts_file: Path, tiny_model_dir: Path):
    live = gated_server
    sft_id = live.http.post("/api/sft/train", json={"config": {
        "base_model": str(tiny_model_dir), "dataset_name": str(contacts_file), "max_steps": 2}}).json()["job_id"]
    uploaded = upload(live, contacts_file)
    v1_id = live.client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id).id
    assert [job.id for job in live.client.fine_tuning.jobs.list().data] == [v1_id, sft_id]
    assert {job["job_id"] for job in live.http.get("/api/sft/jobs").json()["jobs"]} == {sft_id, v1_id}
    seen = live.client.fine_tuning.jobs.retrieve(sft_id)
    assert (seen.status, seen.training_file, seen.model) == ("running", str(contacts_file), str(tiny_model_dir))
    assert live.client.fine_tuning.jobs.retrieve(v1_id).status == "queued"
    # A stop through /api/sft is a cancel to /v1; errors on /api/sft keep their own shape.
    live.http.post(f"/api/sft/jobs/{sft_id}/stop")
    wait_for(lambda: live.client.fine_tuning.jobs.retrieve(sft_id).status == "cancelled", message="the stop")
    assert live.http.get(f"/api/sft/jobs/{MISSING}").json() == {"detail": f"Job {MISSING} not found"}
    assert live.http.get(f"/v1/fine_tuning/jobs/{MISSING}").json()["error"]["message"] == f"Job {MISSING} not found"


def test_files_list_content_and_delete(gated_server: Live, contacts_file: Path, tiny_model_dir: Path, tmp_path: Path):
    client = gated_server.client
    ids = [upload(gated_server, write_jsonl(tmp_path / f"f{i}.jsonl", contact_rows(2 + i))).id for i in range(3)]
    page = client.files.list(limit=2)
    assert [f.id for f in page.data] == ids[:0:-1] and page.has_more
    assert [f.id for f in client.files.list(limit=2, after=ids[1]).data] == [ids[0]]
    assert [f.id for f in client.files.list(order="asc")] == ids
    assert client.files.content(ids[0]).read() == (tmp_path / "f0.jsonl").read_bytes()

    job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=ids[1])
    with pytest.raises(openai.ConflictError, match=f"used by job {job.id}"):
        client.files.delete(ids[1])
    client.fine_tuning.jobs.cancel(job.id)
    wait_status(gated_server, job.id, "cancelled")
    assert client.files.delete(ids[1]).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(ids[1])


def test_chat_with_a_base_model_and_stop_strings(gated_server: Live, tiny_model_dir: Path):
    client, model = gated_server.client, str(tiny_model_dir)
    sampled = {"model": model, "messages": PROMPT, "max_tokens": 16, "temperature": 1.0, "seed": 11}
    full = client.chat.completions.create(**sampled)
    text = full.choices[0].message.content
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 16
    assert client.chat.completions.create(**sampled).choices[0].message.content == text  # the seed repeats it
    at = next(i for i in range(2, len(text) - 1) if text.index(text[i:i + 2]) == i)
    stop, expected = text[at:at + 2], text[:at]
    cut = client.chat.completions.create(**sampled, stop=[stop, "never-generated"])
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == (expected, "stop")
    chunks = list(client.chat.completions.create(**sampled, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError, match="Invalid value for 'n'"):
        client.chat.completions.create(model=model, messages=PROMPT, n=2)
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: tools"):
        client.chat.completions.create(model=model, messages=PROMPT, tools=[])


def test_chat_waits_for_a_free_training_slot(gated_server: Live, contacts_file: Path, tiny_model_dir: Path):
    client = gated_server.client
    uploaded = upload(gated_server, contacts_file)
    job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id)
    wait_status(gated_server, job.id, "running")
    with pytest.raises(openai.InternalServerError, match="every training slot is taken") as caught:
        client.chat.completions.create(model=str(tiny_model_dir), messages=PROMPT, max_tokens=2)
    assert caught.value.status_code == 503
