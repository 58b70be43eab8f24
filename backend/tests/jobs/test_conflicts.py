"""Requests that collide: Idempotency-Key races, output directories shared or nested, crash loops."""

from __future__ import annotations

import threading

import pytest

from app.core.errors import JobConflict
from app.store import SQLiteStore
from factories import wait_for
from job_helpers import error_detail


def _race(manager, bodies: list[dict], key: str) -> list:
    """Submit ``bodies`` at once with one key, each past the first key check before any is recorded."""
    barrier = threading.Barrier(len(bodies), timeout=10)
    validate = manager.validate_config

    def validate_in_step(raw, *, job_id):
        barrier.wait()  # every request has found no job for the key; now each validates and records
        return validate(raw, job_id=job_id)

    manager.validate_config = validate_in_step
    results: list = [None] * len(bodies)

    def submit(i: int) -> None:
        try:
            results[i] = manager.create_job(bodies[i], idempotency_key=key)
        except JobConflict as exc:
            results[i] = exc

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    manager.validate_config = validate
    return results


def test_idempotency_race_with_different_bodies_is_a_409(manager, fake_config):
    results = _race(manager, [fake_config | {"seed": 1}, fake_config | {"seed": 2}], "race-1")
    ids = [r for r in results if isinstance(r, str)]
    conflicts = [r for r in results if isinstance(r, JobConflict)]
    assert len(ids) == 1 and len(conflicts) == 1 and len(manager.jobs) == 1
    assert conflicts[0].detail == f"Idempotency-Key race-1 was used for a different request (job {ids[0]})"


def test_idempotency_race_with_the_same_body_is_one_job(manager, fake_config):
    results = _race(manager, [fake_config] * 3, "race-2")
    assert len(set(results)) == 1 and isinstance(results[0], str) and len(manager.jobs) == 1


def test_idempotency_race_over_http(client, manager, fake_config):
    barrier = threading.Barrier(2, timeout=10)
    validate = manager.validate_config
    manager.validate_config = lambda raw, *, job_id: (barrier.wait(), validate(raw, job_id=job_id))[1]
    responses = []
    threads = [threading.Thread(target=lambda seed=seed: responses.append(client.post(
        "/api/sft/train", json={"config": fake_config | {"seed": seed}}, headers={"Idempotency-Key": "race-3"})))
        for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(r.status_code for r in responses) == [200, 409]


# Output directories


@pytest.mark.parametrize("status", ["running", "completed", "stopped"])
@pytest.mark.parametrize("second, message", [
    ("runs/a", "output_dir {dir} is in use by job {job} ({status})"),
    ("runs/a/inner", "output_dir {dir} is inside the output_dir of job {job} ({status}): {other}"),
    ("runs", "output_dir {dir} contains the output_dir of job {job} ({status}): {other}"),
])
def test_output_dirs_of_existing_jobs_are_never_shared_or_nested(manager, gate, fake_config, settings,
                                                                 status, second, message):
    job_id = manager.submit(fake_config | {"output_dir": "runs/a"}).job_id
    wait_for(lambda: job_id in gate.running, message="the job to run")
    if status == "completed":
        gate.release(job_id)
    elif status == "stopped":
        manager.stop_job(job_id)
    wait_for(lambda: manager.get_job(job_id).status.value == status, message=f"the job to be {status}")
    root = settings.resolved_output_root
    with pytest.raises(JobConflict) as info:
        manager.create_job(fake_config | {"output_dir": second, "seed": 7})
    assert info.value.detail == message.format(dir=root / second, job=job_id, status=status, other=root / "runs/a")
    assert len(manager.jobs) == 1
    assert manager.create_job(fake_config | {"output_dir": "runs/ab"})  # a sibling with a common prefix is fine


def test_resume_refuses_a_directory_another_job_uses(manager, fake_config):
    first = manager.create_job(fake_config | {"output_dir": "one"})
    second = manager.create_job(fake_config | {"output_dir": "two"})
    manager.stop_job(first)
    manager.stop_job(second)
    # A record from before directories were checked: two jobs on one directory.
    manager.get_job(second).config["output_dir"] = manager.get_job(first).output_dir
    with pytest.raises(JobConflict, match=f"is in use by job {first} \\(stopped\\)"):
        manager.resume_job(second)
    assert manager.get_job(second).status.value == "stopped"


# Crash loops


def _died(db_path, name: str):
    """A copy of the database as a server killed now leaves it (each restart gets its own copy, so the
    managers of the test, all still alive, never write over each other's records)."""
    import sqlite3

    copy = db_path.with_name(name)
    with sqlite3.connect(db_path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return SQLiteStore(copy)


def test_automatic_resumes_are_capped(make_manager, db_path, fake_config, settings):
    """Each restart finds the job running (the server died under it); after max_auto_resumes it fails."""
    first = make_manager()
    job_id = first.submit(fake_config).job_id
    wait_for(lambda: job_id in first.runner.running, message="the job to run")
    store = _died(db_path, "restart-0.db")
    for n in range(settings.max_auto_resumes):
        restarted = make_manager(store=store)
        wait_for(lambda: job_id in restarted.runner.running, message="the job to resume")
        store = _died(store.path, f"restart-{n + 1}.db")
    last = make_manager(store=store)
    status = last.get_job_status(job_id)
    assert status["status"] == "failed" and status["error_detail"]["category"] == "interrupted"
    assert status["error"] == (
        "interrupted: the server stopped while this job was running, again after 2 automatic resume(s) "
        "(SFT_MAX_AUTO_RESUMES=2): it may be what stops the server (out of memory?), so it is not resumed "
        "again by itself; check its config and resume it by hand")
    assert [a["status"] for a in status["attempts"]] == ["interrupted", "interrupted", "failed"]
    # A resume by hand starts the count again: the next death is resumed automatically.
    last.resume_job(job_id)
    wait_for(lambda: job_id in last.runner.running, message="the job to run again")
    again = make_manager(store=_died(store.path, "restart-manual.db"))
    wait_for(lambda: job_id in again.runner.running, message="the job to resume after its manual resume")


# Smaller: config names, the database path


@pytest.mark.parametrize("name", ["line\nbreak", "tab\there", "bell\x07", "nul\x00", "del\x7f", "\u200bzero-width"])
def test_config_names_are_printable(client, name):
    response = client.post("/api/sft/configs", json={"name": name, "config": {}})
    assert response.status_code == 400
    assert error_detail(response) == "name: must be printable text (no control characters, tabs or line breaks)"
    assert client.post("/api/sft/configs", json={"name": "ünïcode name ✓", "config": {}}).status_code == 200


def test_database_that_cannot_be_opened_is_named(tmp_path):
    from app.store import DatabaseUnavailable

    (tmp_path / "a-file").write_text("x")
    for path in (tmp_path, tmp_path / "a-file" / "sft.db"):
        with pytest.raises(DatabaseUnavailable) as info:
            SQLiteStore(path)
        assert str(info.value).startswith(f"cannot open the database {path} (")
