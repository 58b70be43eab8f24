"""``base_model: "job:<id>"``: a job that starts from one of the caller's earlier jobs (SFT -> DPO in one call)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.api.auth import Principal
from app.core.errors import InvalidConfig
from app.jobs.scoped import ScopedJobs
from factories import contact_rows, preference_rows, write_jsonl

ALICE, BOB = Principal(name="alice", admin=False), Principal(name="bob", admin=False)


def test_a_dpo_job_starts_from_the_callers_lora_job_and_not_from_anothers(make_manager, settings, tiny_model_dir,
                                                                          tmp_path):
    manager = make_manager(runner=None, preflight=True)
    common = {"base_model": str(tiny_model_dir), "max_steps": 2, "per_device_train_batch_size": 4}
    alice = ScopedJobs(manager, ALICE)
    sft = alice.submit({**common, "dataset_name": str(write_jsonl(tmp_path / "chat.jsonl", contact_rows(8)))})
    assert manager.wait_for_job(sft.job_id, timeout=60)["status"] == "completed"
    prefs = str(write_jsonl(tmp_path / "prefs.jsonl", preference_rows(8)))
    dpo = {**common, "base_model": f"job:{sft.job_id}", "dataset_name": prefs, "method": "dpo"}

    with pytest.raises(InvalidConfig, match=f"config.base_model: job '{sft.job_id}' not found"):
        ScopedJobs(manager, BOB).submit(dpo)  # another user's job reads as missing
    with pytest.raises(InvalidConfig, match="config.base_model: job 'nope' not found"):
        alice.submit({**dpo, "base_model": "job:nope"})

    job = alice.submit(dpo)
    merged = Path(manager.get_job(sft.job_id).output_dir) / "merged"
    assert job.config["base_model"] == str(merged) and (merged / "model.safetensors").is_file()
    status = manager.wait_for_job(job.job_id, timeout=60)
    assert status["status"] == "completed", status.get("error")
    assert job.result["dataset_format"] == "openai_preference"
