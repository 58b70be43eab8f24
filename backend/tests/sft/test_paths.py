"""The path policy (app.sft.paths) and every reader that goes through it: datasets (bundled, files,
directories, save_to_disk folders) and local models. Escapes by ``..``, absolute paths and symlinks
are refused, and a refusal reads the same whether or not the target exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.sft.config import MAX_TOKENS_PER_BATCH, SFTConfig
from app.sft.data import read_rows
from app.sft.errors import DatasetError, ModelError
from app.sft.models import resolve_model
from app.sft.paths import MAX_NAME_BYTES, PathRefused, check_path_text, resolve_allowed_path
from factories import contact_rows, write_jsonl

SECRET = "secret-column-do-not-leak"


@pytest.fixture
def layout(tmp_path: Path):
    """``root`` (allowed) and ``outside`` (not), with a data file outside that must never be read."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "train.jsonl").write_text('{"%s": "x"}\n' % SECRET)
    (outside / "rows.csv").write_text(f"{SECRET},b\n1,2\n")
    return root.resolve(), outside.resolve()


def refusal(name: str, roots: list[Path]) -> str:
    with pytest.raises(DatasetError) as info:
        read_rows(name, limit=5, allowed_roots=roots)
    message = str(info.value)
    assert SECRET not in message
    return message


def test_policy_resolves_inside_and_refuses_outside(layout):
    root, outside = layout
    assert resolve_allowed_path(root / "a" / ".." / "b.jsonl", roots=[root]) == root / "b.jsonl"
    with pytest.raises(PathRefused, match=r"local datasets must be under an allowed root \("):
        resolve_allowed_path(root / ".." / "outside" / "train.jsonl", roots=[root])
    assert resolve_allowed_path(outside / "train.jsonl", roots=None) == outside / "train.jsonl"


@pytest.mark.parametrize("name", [
    "bundled:/etc", "bundled:../../../..", "bundled:..", "bundled:json-extract/../..", "bundled:",
    "bundled:json_extract", "bundled:~", "bundled:%2e%2e", "bundled:JSON-EXTRACT",
])
def test_bundled_names_are_slugs_never_paths(name):
    with pytest.raises(DatasetError, match=f"no bundled dataset '{name}'"):
        read_rows(name)


def test_bundled_absolute_escape_to_a_real_data_directory(layout):
    _, outside = layout
    for name in (f"bundled:{outside}", f"bundled:../../../../../../..{outside}"):
        message = refusal(name, roots=[layout[0]])
        assert message.endswith("(bundled: bundled:json-extract, bundled:json-extract-prefs)")


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "relative"])
def test_paths_outside_the_roots_are_refused_alike_whether_they_exist_or_not(layout, kind, monkeypatch):
    root, outside = layout
    monkeypatch.chdir(root)
    names = {
        "absolute": (str(outside / "train.jsonl"), str(outside / "nope.jsonl")),
        "dotdot": (f"{root}/../outside/train.jsonl", f"{root}/../outside/nope.jsonl"),
        "relative": ("../outside/train.jsonl", "../outside/nope.jsonl"),
    }[kind]
    existing, missing = (refusal(name, [root]) for name in names)
    assert existing.replace(names[0], "X") == missing.replace(names[1], "X")
    assert existing == f"{names[0]}: local datasets must be under an allowed root ({root})"
    # A directory outside: same refusal, its files never listed.
    assert refusal(str(outside), [root]) == f"{outside}: local datasets must be under an allowed root ({root})"


def test_symlinked_file_inside_a_root_pointing_out(layout):
    root, outside = layout
    (root / "link.jsonl").symlink_to(outside / "train.jsonl")
    (root / "dangling.jsonl").symlink_to(outside / "nope.jsonl")
    link, dangling = str(root / "link.jsonl"), str(root / "dangling.jsonl")
    assert refusal(link, [root]).replace(link, "X") == refusal(dangling, [root]).replace(dangling, "X")
    assert "must be under an allowed root" in refusal(link, [root])


def test_symlinked_directory_inside_a_root_pointing_out(layout):
    root, outside = layout
    (root / "data").symlink_to(outside, target_is_directory=True)
    assert "must be under an allowed root" in refusal(str(root / "data"), [root])
    assert "must be under an allowed root" in refusal(str(root / "data" / "train.jsonl"), [root])


def test_file_picked_inside_an_allowed_directory_is_checked_again(layout):
    root, outside = layout
    folder = root / "ds"
    folder.mkdir()
    (folder / "train.jsonl").symlink_to(outside / "train.jsonl")
    message = refusal(str(folder), [root])
    assert message == f"{folder / 'train.jsonl'}: local datasets must be under an allowed root ({root})"
    # The only file of a directory is picked for any split: checked all the same.
    (folder / "train.jsonl").unlink()
    (folder / "only.csv").symlink_to(outside / "rows.csv")
    assert "must be under an allowed root" in refusal(str(folder), [root])
    # Inside the root, a symlink is fine.
    (folder / "only.csv").unlink()
    write_jsonl(root / "real.jsonl", contact_rows(2))
    (folder / "train.jsonl").symlink_to(root / "real.jsonl")
    assert len(read_rows(str(folder), allowed_roots=[root]).rows) == 2


def test_save_to_disk_folder_with_a_file_linked_out(layout):
    import datasets

    root, outside = layout
    folder = root / "saved"
    datasets.Dataset.from_list(contact_rows(4)).save_to_disk(str(folder))
    assert len(read_rows(str(folder), allowed_roots=[root]).rows) == 4
    arrow = next(folder.glob("*.arrow"))
    os.replace(arrow, outside / arrow.name)
    arrow.symlink_to(outside / arrow.name)
    message = refusal(str(folder), [root])
    assert message == f"{folder}: {arrow.name}: local datasets must be under an allowed root ({root})"


def test_hub_shaped_name_that_exists_on_disk_is_a_path(layout, monkeypatch):
    root, outside = layout
    monkeypatch.chdir(outside.parent)
    # "outside" is Hub-shaped; datasets would read the local folder of that name: it is a path.
    assert "must be under an allowed root" in refusal("outside", [root])


@pytest.mark.parametrize("text, reason", [
    ("a\x00b.jsonl", "contains a NUL byte"),
    ("x" * 5000, "is 5,000 characters long; a path may have at most 4,096"),
    ("d/" + "n" * 300 + ".jsonl", "has a path component of 306 bytes"),
    ("é" * 200, "has a path component of 400 bytes"),
    ("\ud800.jsonl", "is not valid text (it contains an unpaired surrogate)"),
])
def test_text_no_file_system_takes(text, reason):
    with pytest.raises(PathRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_path_text(text)
    with pytest.raises(DatasetError, match="NUL|long|component|surrogate"):
        read_rows(text)
    with pytest.raises(ModelError, match="NUL|long|component|surrogate"):
        resolve_model(text, cache_dir=Path("/nonexistent-cache"))


def test_the_longest_accepted_name(tmp_path):
    assert check_path_text("a" * MAX_NAME_BYTES) == "a" * MAX_NAME_BYTES


@pytest.mark.parametrize("field", ["base_model", "dataset_name", "eval_dataset_name", "output_dir"])
@pytest.mark.parametrize("value, reason", [("a\x00b", "contains a NUL byte"),
                                           ("n" * 256, "has a path component of 256 bytes"),
                                           ("/x" * 2100, "is 4,200 characters long")])
def test_config_refuses_unusable_paths_in_every_path_field(field, value, reason):
    with pytest.raises(ValueError) as info:
        SFTConfig.model_validate({"base_model": "m", "dataset_name": "d", "max_steps": 1, field: value})
    error = info.value.errors()[0]
    assert error["loc"] == (field,) and reason in error["msg"]


def test_batch_times_length_is_bounded():
    ok = {"base_model": "m", "dataset_name": "d", "max_steps": 1}
    SFTConfig.model_validate(ok | {"per_device_train_batch_size": 64, "max_length": 4096})
    with pytest.raises(ValueError, match=f"per_device_train_batch_size × max_length = 4,096 × 1,024 = "
                                         f"4,194,304 tokens per device batch, above the bound of "
                                         f"{MAX_TOKENS_PER_BATCH:,}"):
        SFTConfig.model_validate(ok | {"per_device_train_batch_size": 4096, "max_length": 1024})
    with pytest.raises(ValueError, match="per_device_eval_batch_size × max_length"):
        SFTConfig.model_validate(ok | {"per_device_eval_batch_size": 1024, "max_length": 1024})


# Models


def test_local_models_outside_the_roots_are_refused_alike(layout, tiny_model_dir, tmp_path):
    root, outside = layout
    (outside / "model.gguf").write_bytes(b"GGUF")
    (outside / "model").mkdir()
    cache = tmp_path / "cache"
    messages = []
    for name in (outside / "model.gguf", outside / "nope.gguf", outside / "model", outside / "nope"):
        with pytest.raises(ModelError) as info:
            resolve_model(str(name), cache_dir=cache, allowed_roots=[root])
        messages.append(str(info.value).replace(str(name), "X"))
    assert len(set(messages)) == 1
    assert messages[0] == f"'X': local models must be under an allowed root ({root}, {cache.resolve()})"


def test_model_symlink_inside_a_root_pointing_out(layout, tiny_model_dir, tmp_path):
    root, _ = layout
    (root / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    with pytest.raises(ModelError, match="must be under an allowed root"):
        resolve_model(str(root / "tiny"), cache_dir=tmp_path / "cache", allowed_roots=[root])
    ref = resolve_model(str(root / "tiny"), cache_dir=tmp_path / "cache", allowed_roots=[root, tiny_model_dir])
    assert ref.kind == "local" and ref.path == str(tiny_model_dir.resolve())


def test_model_cache_is_always_a_root(tmp_path, tiny_model_dir):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache / "converted")
    ref = resolve_model(str(cache / "converted"), cache_dir=cache, allowed_roots=[])
    assert ref.kind == "local"
    assert resolve_model("someone/model", cache_dir=cache, allowed_roots=[]).kind == "hub"
