"""UserJobs (``app.jobs.scoped.ScopedJobs``): what one user sees, creates and may resume, without HTTP."""

from __future__ import annotations

import io
import json

import pytest

from app.api.auth import LOCAL_USER, Principal
from app.core.errors import ConfigNotFound, JobNotFound, QuotaExceeded
from app.jobs import files
from app.jobs.scoped import ScopedJobs
from factories import contact_rows

ALICE = Principal(name="alice", admin=False)
BOB = Principal(name="bob", admin=False)
ADMIN = Principal(name="root", admin=True)


@pytest.fixture
def limited(make_manager, settings):
    """A manager whose keys may each have one active job."""
    return make_manager(settings=settings.model_copy(update={"max_active_jobs_per_key": 1}))


def test_another_users_job_is_as_missing_as_a_missing_one(limited, tiny_config):
    alice, bob, admin = (ScopedJobs(limited, user) for user in (ALICE, BOB, ADMIN))
    job = alice.submit(tiny_config)
    assert job.owner == "alice" and alice.get(job.job_id) is job and admin.get(job.job_id) is job
    with pytest.raises(JobNotFound, match=f"^Job {job.job_id} not found$"):
        bob.get(job.job_id)
    assert bob.find(job.job_id) is None and alice.find("nope") is None
    assert [j.job_id for j in alice.select()[0]] == [job.job_id] and bob.select() == ([], 0)
    assert sum(alice.counts().values()) == 1 and sum(bob.counts().values()) == 0


def test_an_idempotency_key_is_the_users_own_and_the_quota_counts_per_user(limited, tiny_config):
    alice, bob, admin = (ScopedJobs(limited, user) for user in (ALICE, BOB, ADMIN))
    first = alice.submit(tiny_config, idempotency_key="k")
    assert alice.submit(tiny_config, idempotency_key="k") is first  # a retry: the same job, inside the quota
    assert bob.submit(tiny_config, idempotency_key="k") is not first  # the same key is bob's own
    with pytest.raises(QuotaExceeded, match="SFT_MAX_ACTIVE_JOBS_PER_KEY=1"):
        alice.submit({**tiny_config, "max_steps": 5})
    assert (alice.quota, admin.quota) == (1, None)
    admin.submit({**tiny_config, "max_steps": 6})
    admin.submit({**tiny_config, "max_steps": 7})  # admins are not limited


def test_keys_off_the_local_user_sees_and_owns_everything_as_before(manager, tiny_config):
    local = ScopedJobs(manager, LOCAL_USER)
    owned = ScopedJobs(manager, ALICE).submit(tiny_config)
    mine = local.submit({**tiny_config, "max_steps": 5}, idempotency_key="k")
    assert mine.owner is None and local.idempotency_key("k") == "k"
    assert {j.job_id for j in local.select()[0]} == {owned.job_id, mine.job_id}


def test_configs_and_files_are_scoped_the_same_way(manager, tiny_config):
    alice, bob = ScopedJobs(manager, ALICE), ScopedJobs(manager, BOB)
    config_id = alice.save_config("mine", {"max_steps": 3})
    assert [c["config_id"] for c in alice.configs()] == [config_id] and bob.configs() == []
    assert alice.from_template(config_id, {"lora_r": 4}) == {"max_steps": 3, "lora_r": 4}
    with pytest.raises(ConfigNotFound, match=f"^Config {config_id} not found$"):
        bob.from_template(config_id, None)

    rows = "\n".join(json.dumps(row) for row in contact_rows(2)).encode()
    record = alice.upload(io.BytesIO(rows), filename="chat.jsonl", purpose=files.FINE_TUNE)
    assert alice.file(record["file_id"])["owner"] == "alice"
    assert [r["file_id"] for r in alice.files()] == [record["file_id"]] and bob.files() == []
    with pytest.raises(files.FileNotFound) as caught:
        bob.file(record["file_id"], field="training_file")
    assert (caught.value.status_code, caught.value.field, caught.value.code) == (404, "training_file", "file_not_found")
    assert caught.value.detail == f"No such File object: {record['file_id']}"
