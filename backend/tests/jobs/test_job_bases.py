"""``base_model: "job:<id>"``: a job that starts from one of the caller's earlier jobs (SFT -> DPO in one call).

Submit only checks the source and records it; the LoRA adapter is merged into its base when the job starts
training (once per source, under a lock), and a source a job still needs cannot be deleted.
"""

from __future__ import annotations

import fcntl
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.api.auth import Principal
from app.core.errors import InvalidConfig, JobConflict
from app.jobs.bases import check_deletable
from app.jobs.scoped import ScopedJobs
from factories import contact_rows, preference_rows, write_jsonl

ALICE, BOB = Principal(name="alice", admin=False), Principal(name="bob", admin=False)


@contextmanager
def merges_held(merged: Path, *, at_most: float = 30.0):
    """Hold the lock a run takes before it merges into ``merged`` (released after ``at_most`` seconds anyway, so
    a submit that merged again would fail the test rather than hang it)."""
    lock = open(merged.parent / f".{merged.name}.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            fcntl.flock(lock, fcntl.LOCK_UN)

    timer = threading.Timer(at_most, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        release()
        lock.close()


def phases(manager, job_id: str) -> list[str]:
    return [e["data"]["phase"] for e in manager.events(job_id, limit=1000) if e["type"] == "phase"]


def test_a_dpo_job_merges_its_lora_base_when_it_starts_not_at_submit(make_manager, tiny_model_dir, tmp_path,
                                                                     client_for):
    manager = make_manager(runner=None, preflight=True, max_concurrent_jobs=2)
    common = {"base_model": str(tiny_model_dir), "max_steps": 2, "per_device_train_batch_size": 4}
    alice = ScopedJobs(manager, ALICE)
    sft = alice.submit({**common, "dataset_name": str(write_jsonl(tmp_path / "chat.jsonl", contact_rows(8)))})
    assert manager.wait_for_job(sft.job_id, timeout=60)["status"] == "completed"
    source_dir = Path(manager.get_job(sft.job_id).output_dir)
    merged, adapter = source_dir / "merged", Path(sft.result["adapter_path"])
    prefs = str(write_jsonl(tmp_path / "prefs.jsonl", preference_rows(8)))
    dpo = {**common, "base_model": f"job:{sft.job_id}", "dataset_name": prefs, "method": "dpo"}

    with pytest.raises(InvalidConfig, match=f"config.base_model: job '{sft.job_id}' not found"):
        ScopedJobs(manager, BOB).submit(dpo)  # another user's job reads as missing
    with pytest.raises(InvalidConfig, match="config.base_model: job 'nope' not found"):
        alice.submit({**dpo, "base_model": "job:nope"})
    adapter.rename(adapter.with_name("gone"))
    with pytest.raises(InvalidConfig, match=f"config.base_model: Job {sft.job_id}'s adapter directory .* is no "
                                            "longer on disk"):
        alice.submit(dpo)  # a source with no model is refused at submit
    adapter.with_name("gone").rename(adapter)

    # Two jobs from one source: submit returns without merging; the runs merge once, the second reuses it.
    with merges_held(merged):
        started = time.monotonic()
        first, second = alice.submit(dpo), alice.submit(dpo)
        assert time.monotonic() - started < 10
        assert not merged.exists()
        assert first.config["base_model"] == str(merged)
        assert first.config["base_job"] == {"job_id": sft.job_id, "adapter_path": str(adapter),
                                            "adapter_base": str(tiny_model_dir), "trust_remote_code": False}
    for job in (first, second):
        status = manager.wait_for_job(job.job_id, timeout=60)
        assert status["status"] == "completed", status.get("error")
        assert job.result["dataset_format"] == "openai_preference"
    assert (merged / "model.safetensors").is_file()
    assert sorted(phases(manager, first.job_id) + phases(manager, second.job_id)) == \
        ["base_ready", "base_ready", "merging_base"]
    loaded = [e for e in manager.events(first.job_id, limit=1000) if e["type"] == "model_loaded"]
    assert loaded and str(merged) in loaded[0]["message"]  # trained from the merged base

    # A config sent again (a copy of the job) is checked from its job id; a base_model it does not match is refused.
    assert alice.plan(first.config)["fits"] in (True, None)
    with pytest.raises(InvalidConfig, match=f"config.base_job: it starts from job {sft.job_id}"):
        alice.plan({**first.config, "base_model": str(tiny_model_dir)})

    # A merge that fails fails the job, naming the source and why.
    with merges_held(merged):
        broken = alice.submit(dpo)
        shutil.rmtree(merged)
        (adapter / "adapter_config.json").write_text("{not json")
    status = manager.wait_for_job(broken.job_id, timeout=60)
    assert status["status"] == "failed"
    assert f"base_model: job {sft.job_id}'s adapter could not be merged into its base" in status["error"]
    assert phases(manager, broken.job_id) == ["merging_base"]

    # The source cannot be deleted while its dependents exist (a failed one could be resumed).
    client = client_for(manager)
    response = client.delete(f"/api/sft/jobs/{sft.job_id}")
    assert response.status_code == 409
    assert response.json()["detail"] == (f"Job {sft.job_id} is the base of {first.job_id}, {second.job_id}, "
                                         f"{broken.job_id}, which still need its model; delete them first")
    for job in (first, second, broken):
        assert client.delete(f"/api/sft/jobs/{job.job_id}").status_code == 200
    assert client.delete(f"/api/sft/jobs/{sft.job_id}").status_code == 200


def test_only_jobs_that_still_need_the_source_block_its_delete():
    source = SimpleNamespace(job_id="s", owner="alice")

    def job(job_id: str, status: str, *, use_lora: bool, owner: str = "alice", base: str = "s"):
        return SimpleNamespace(job_id=job_id, owner=owner, status=status,
                               config={"use_lora": use_lora, "base_job": {"job_id": base}})

    check_deletable(source, [job("full", "completed", use_lora=False), job("elsewhere", "queued", use_lora=True,
                                                                             base="x")])
    for blocking in (job("full", "stopped", use_lora=False), job("lora", "completed", use_lora=True)):
        with pytest.raises(JobConflict, match=f"Job s is the base of {blocking.job_id}, which still need its model; "
                                              "delete it first"):
            check_deletable(source, [blocking])
    with pytest.raises(JobConflict, match=r"Job s is the base of 1 other job\(s\)"):
        check_deletable(source, [job("admins", "queued", use_lora=True, owner="root")])
