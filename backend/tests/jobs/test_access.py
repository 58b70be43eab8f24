"""The rule for paths under keys (app.jobs.access) with SFT_SHARED_ROOTS set: what a user's key reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.api.auth import Principal
from app.jobs.access import PathAccess, path_access
from app.sft.paths import PathRefused
from factories import contact_rows, write_jsonl

BOB = Principal(name="bob", admin=False)
ROOT = Principal(name="root", admin=True)


def test_declared_shared_roots_are_what_users_read_besides_their_own(make_manager, settings, tmp_path, chat_jsonl):
    (tmp_path / "elsewhere").mkdir()
    shared = write_jsonl(tmp_path / "elsewhere" / "d.jsonl", contact_rows(2))
    keyed = settings.model_copy(update={"auth": "keys", "shared_roots": [shared.parent]})
    manager = make_manager(settings=keyed)
    assert shared.parent in keyed.resolved_dataset_roots and shared.parent in keyed.resolved_model_roots
    access = path_access(manager, BOB)
    access.check(str(shared), kind="dataset")
    # A dataset root that is not declared shared: the admins' only.
    with pytest.raises(PathRefused, match=f"lie under a shared root \\({shared.parent}\\)$"):
        access.check(str(chat_jsonl), kind="dataset")
    path_access(manager, ROOT).check(str(chat_jsonl), kind="dataset")


def test_no_shared_roots_leaves_a_user_their_own_files_and_the_bundled_ones(make_manager, settings, chat_jsonl):
    manager = make_manager(settings=settings.model_copy(update={"auth": "keys", "shared_roots": []}))
    job_id = manager.create_job({"base_model": "tiny-model", "dataset_name": "data.jsonl", "max_steps": 1},
                                owner="bob")
    mine = write_jsonl(Path(manager.get_job(job_id).output_dir) / "mine.jsonl", contact_rows(2))
    access = path_access(manager, BOB)
    access.check(str(mine), kind="dataset")
    access.check("bundled:json-extract", kind="dataset")
    with pytest.raises(PathRefused, match=r"\(none on this server\)$"):
        access.check(str(chat_jsonl), kind="dataset")



@hypothesis_settings(max_examples=300, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))
@given(reference=st.text() | st.sampled_from(["~", "~nobody/x", "/", ".", "..", "a/../../etc/passwd", "x.gguf"]),
       kind=st.sampled_from(["dataset", "model"]))
def test_any_text_is_judged_never_raised_past_the_rule(tmp_path, reference, kind):
    access = PathAccess(own=(tmp_path / "mine",), shared_datasets=(tmp_path,), shared_models=(tmp_path,),
                        private=(tmp_path / "data",))
    try:
        access.check(reference, kind=kind)
    except PathRefused:
        pass
