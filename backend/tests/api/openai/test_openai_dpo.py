"""DPO through /v1 with the official ``openai`` SDK: a preference file, a DPO job from a base model and one
from an earlier ``ft:`` model (SFT -> DPO in one call), followed to succeeded and chatted with."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from factories import preference_rows, wait_for, write_jsonl
from openai_live import Live
from test_openai_sdk import PROMPT, supervised, upload, wait_status


def dpo(**hyperparameters) -> dict:
    return {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}


def test_dpo_from_a_base_and_from_an_ft_model(training_server: Live, contacts_file: Path, tiny_model_dir: Path,
                                              tmp_path: Path):
    live, client = training_server, training_server.client
    prefs = upload(live, write_jsonl(tmp_path / "prefs.jsonl", preference_rows(16)))
    job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=prefs.id, seed=3,
                                         method=dpo(beta=0.2, n_epochs=1, batch_size=8, learning_rate_multiplier=20))
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    done = wait_status(live, job.id, "succeeded", "failed")
    assert done.status == "succeeded", done.error
    metrics = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=50) if e.type == "metrics"]
    assert len(metrics) == 2 and all("rewards/margins" in m and "rewards/accuracies" in m for m in metrics)
    csv = client.files.content(done.result_files[0]).text.splitlines()
    assert csv[0].endswith("train_reward_margin,train_reward_accuracy,train_reward_chosen,train_reward_rejected")
    reply = client.chat.completions.create(model=done.fine_tuned_model, messages=PROMPT, max_completion_tokens=6)
    assert reply.choices[0].message.content

    # SFT, then DPO on top of it in one call: the ft: model is the base and the reference.
    contacts = upload(live, contacts_file)
    sft = wait_status(live, client.fine_tuning.jobs.create(
        model=str(tiny_model_dir), training_file=contacts.id, method=supervised(n_epochs=1, batch_size=8)).id,
        "succeeded", "failed")
    assert sft.status == "succeeded", sft.error
    on_top = client.fine_tuning.jobs.create(model=sft.fine_tuned_model, training_file=prefs.id,
                                            method=dpo(n_epochs=1, batch_size=8))
    assert on_top.model == sft.fine_tuned_model and on_top.method.dpo.hyperparameters.beta == 0.1  # "auto"
    config = live.manager.get_job(on_top.id).config
    assert config["base_model"] == str(Path(live.manager.get_job(sft.id).output_dir) / "merged")
    finished = wait_status(live, on_top.id, "succeeded", "failed")
    assert finished.status == "succeeded", finished.error
    reply = client.chat.completions.create(model=finished.fine_tuned_model, messages=PROMPT, max_completion_tokens=6)
    assert reply.choices[0].message.content

    # Preference rows train with dpo only, and chat rows with supervised only: a 400 naming the file.
    with pytest.raises(openai.BadRequestError, match="preference pairs .* method 'dpo'") as caught:
        client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=prefs.id)
    assert caught.value.param == "training_file"
    with pytest.raises(openai.BadRequestError, match="method 'dpo' trains on preference pairs"):
        client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=contacts.id, method=dpo())


def test_broken_preference_lines_and_unknown_ft_models(gated_server: Live, tmp_path: Path, tiny_model_dir: Path):
    client = gated_server.client
    rows = [json.dumps(row) for row in preference_rows(3)]
    broken = preference_rows(1)[0] | {"non_preferred_output": [{"role": "user", "content": "x"}]}
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join([rows[0], rows[1], json.dumps(broken), rows[2]]) + "\n")
    with pytest.raises(openai.BadRequestError, match=r"prefs\.jsonl, line 3: non_preferred_output\[1\] has role "
                                                     "'user'") as caught:
        upload(gated_server, path)
    assert caught.value.param == "file" and caught.value.code == "invalid_file_format"
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [preference_rows(1)[0], preference_rows(1, shape="plain")[0]])
    with pytest.raises(openai.BadRequestError, match="line 2: a preference .* but line 1 is a preference"):
        upload(gated_server, mixed)
    good = upload(gated_server, write_jsonl(tmp_path / "good.jsonl", preference_rows(4)))
    with pytest.raises(openai.BadRequestError, match="does not exist") as caught:
        client.fine_tuning.jobs.create(model="ft:tiny-model::0000", training_file=good.id, method=dpo())
    assert caught.value.param == "model"
    with pytest.raises(openai.BadRequestError, match="beta"):
        client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=good.id, method=dpo(beta=0))
    assert client.fine_tuning.jobs.list().data == []
