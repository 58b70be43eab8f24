"""The config of a DPO job trained on a tuned job's preferences: the tuned job's training settings, not its data."""

from __future__ import annotations

import pytest

from app.jobs.models import SFTJob
from app.jobs.preferences import DEFAULT_EPOCHS, InvalidPreference, dpo_config, trl_row


def tuned_job() -> SFTJob:
    return SFTJob({"base_model": "tiny", "dataset_name": "chat.jsonl", "dataset_format": "messages",
                            "column_mapping": {"messages": "chat"}, "validation_split": 0.2, "eval_steps": 5,
                            "max_steps": 40, "learning_rate": 1e-3, "lora_r": 8, "output_dir": "/out/job-1",
                            "seed": 7, "loss_path": "cross_entropy"}, job_id="job-1")


def test_the_dpo_job_keeps_the_tuned_jobs_settings_and_starts_from_it():
    config = dpo_config(tuned_job(), "/files/prefs.jsonl", {})
    assert config == {"base_model": "job:job-1", "dataset_name": "/files/prefs.jsonl", "method": "dpo",
                      "learning_rate": 1e-3, "lora_r": 8, "seed": 7, "num_train_epochs": DEFAULT_EPOCHS}


def test_overrides_win_and_a_length_override_replaces_the_default_epochs():
    config = dpo_config(tuned_job(), "p.jsonl", {"max_steps": 5, "beta": 0.3, "learning_rate": 5e-5})
    assert (config["max_steps"], config["beta"], config["learning_rate"]) == (5, 0.3, 5e-5)
    assert "num_train_epochs" not in config


@pytest.mark.parametrize("field", ["method", "base_model", "dataset_name"])
def test_what_the_preferences_set_cannot_be_overridden(field):
    with pytest.raises(InvalidPreference) as raised:
        dpo_config(tuned_job(), "p.jsonl", {field: "x"})
    assert raised.value.errors[0]["field"] == f"overrides.{field}"


def test_a_row_is_trls_conversational_preference():
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert trl_row({"prompt": prompt, "chosen": "Hello.", "rejected": "Good day to you."}) == {
        "prompt": prompt, "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "Good day to you."}]}


def test_the_preference_file_is_an_upload_of_the_users_within_the_upload_limit(tmp_path):
    from app.core.settings import Settings
    from app.jobs.files import FileTooLarge, save_generated
    from app.store import SQLiteStore

    store = SQLiteStore(tmp_path / "x.db")
    settings = Settings(data_dir=tmp_path / "data", max_upload_bytes=1024)
    record = save_generated(b'{"prompt": []}\n', filename="p.jsonl", rows=1, fmt="preference", store=store,
                            settings=settings, owner="alice")
    assert store.load_files(owner="alice") == [store.get_file(record["file_id"])]
    assert open(record["path"], "rb").read() == b'{"prompt": []}\n'
    with pytest.raises(FileTooLarge, match=r"^p.jsonl would be 1,025 bytes, larger than this server accepts"):
        save_generated(b"x" * 1025, filename="p.jsonl", rows=1, fmt="preference", store=store, settings=settings,
                       owner="alice")
    assert len(store.load_files()) == 1 and sorted(p.name for p in settings.resolved_files_dir.iterdir()) == [
        f"{record['file_id']}.jsonl"]
    store.close()
