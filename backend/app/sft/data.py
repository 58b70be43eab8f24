"""Load a dataset from its source (a bundled name, a file or folder under the allowed roots, a Hub id)
as raw rows, and prepare the datasets a config names (the row formats are in ``formats.py``)."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DatasetError
from .formats import RawRows, convert_rows
from .hub import HUB_ID, HubUnreachable, hub_problem
from .jsontext import JSONTextError, loads_text
from .paths import PathRefused, check_path_text, resolve_allowed_path

if TYPE_CHECKING:
    import datasets

DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
BUNDLED_PREFIX = "bundled:"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "demo"

def bundled_datasets() -> list[str]:
    """Names of the datasets shipped with the service."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(BUNDLED_PREFIX + p.name.replace("_", "-") for p in BUNDLED_DIR.iterdir() if p.is_dir())


_BUNDLED_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def looks_local(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a Hub id.

    Anything that is not shaped like a Hub id is a path. A Hub-shaped name that exists on disk
    (relative to the working directory) is a path too: ``datasets`` and ``transformers`` would read
    that directory instead of asking the Hub, so it must pass the path policy like any other path.
    """
    return (
        name.startswith(BUNDLED_PREFIX)
        or not HUB_ID.match(name)
        or name.lower().endswith(DATA_FILE_SUFFIXES)
        or os.path.lexists(name)
    )


def resolve_local_path(name: str, *, allowed_roots: list[Path] | None = None) -> Path:
    """Resolve a local dataset reference through the path policy (``app.sft.paths``).

    ``bundled:NAME`` resolves inside the bundled data only; any other path must resolve (symlinks
    followed) under ``allowed_roots`` (None allows any). Raises DatasetError, naming ``name``.
    """
    if name.startswith(BUNDLED_PREFIX):
        return _resolve_bundled(name)
    try:
        path = resolve_allowed_path(name, roots=allowed_roots, kind="dataset")
    except PathRefused as exc:
        raise DatasetError(str(exc), source=name) from None
    if not path.exists():
        raise DatasetError("file or directory not found", source=name)
    return path


def _resolve_bundled(name: str) -> Path:
    slug = name[len(BUNDLED_PREFIX):]
    missing = DatasetError(f"no bundled dataset '{name}' (bundled: {', '.join(bundled_datasets()) or 'none'})",
                           source=name)
    # Bundled names use hyphens; their folders, underscores. A name is a slug, never a path.
    if not _BUNDLED_NAME.match(slug):
        raise missing
    try:
        path = resolve_allowed_path(BUNDLED_DIR / slug.replace("-", "_"), roots=[BUNDLED_DIR])
    except PathRefused:
        raise missing from None
    if not path.is_dir():
        raise missing
    return path


def _dataset_roots(name: str, allowed_roots: list[Path] | None) -> list[Path] | None:
    """The roots that files picked inside ``name``'s directory must stay under."""
    return [BUNDLED_DIR] if name.startswith(BUNDLED_PREFIX) else allowed_roots


def read_rows(
    name: str,
    split: str = "train",
    *,
    limit: int | None = None,
    allowed_roots: list[Path] | None = None,
) -> RawRows:
    """Read up to ``limit`` raw rows of ``split`` from a bundled name, local path or Hub id."""
    try:
        check_path_text(name)
    except PathRefused as exc:
        raise DatasetError(str(exc), source=repr(name)) from None
    if looks_local(name):
        path = resolve_local_path(name, allowed_roots=allowed_roots)
        if path.is_dir():
            return _read_directory(path, split, limit=limit, label=name,
                                   roots=_dataset_roots(name, allowed_roots))
        return _read_file(path, limit=limit, label=name)
    return _read_hub(name, split, limit=limit)


def _read_file(path: Path, *, limit: int | None, label: str) -> RawRows:
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or (suffix == ".json" and _first_char(path) == "{"):
        return RawRows(label, list(_iter_jsonl(path, label, limit)), lambda i: f"line {i + 1}")
    if suffix == ".json":
        return _read_json_array(path, label, limit)
    if suffix == ".csv":
        return _read_csv(path, label, limit)
    if suffix == ".parquet":
        return _read_parquet(path, label, limit)
    raise DatasetError(
        f"unsupported file type '{suffix or path.name}' (use {', '.join(DATA_FILE_SUFFIXES)})", source=label
    )


def _first_char(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.strip()[0]
    return ""


def _iter_jsonl(path: Path, label: str, limit: int | None) -> Iterator[dict[str, Any]]:
    count = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if limit is not None and count >= limit:
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DatasetError("not UTF-8 text", source=label, location=f"line {lineno}") from None
            if not line.strip():
                continue
            try:
                row = loads_text(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"not JSON ({exc.msg})", source=label, location=f"line {lineno}") from None
            except JSONTextError as exc:
                raise DatasetError(str(exc), source=label, location=f"line {lineno}") from None
            if not isinstance(row, dict):
                raise DatasetError(
                    f"expected a JSON object, got {type(row).__name__}", source=label, location=f"line {lineno}"
                )
            count += 1
            yield row
    if count == 0:
        raise DatasetError("the file has no rows", source=label)


def _read_json_array(path: Path, label: str, limit: int | None) -> RawRows:
    try:
        data = loads_text(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"not JSON ({exc.msg})", source=label, location=f"line {exc.lineno}") from None
    except UnicodeDecodeError:
        raise DatasetError("not UTF-8 text", source=label) from None
    except JSONTextError as exc:
        raise DatasetError(str(exc), source=label) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DatasetError("expected a JSON array of objects (or JSON Lines)", source=label)
        data = lists[0]
    if not isinstance(data, list) or not data:
        raise DatasetError("expected a non-empty JSON array of objects (or JSON Lines)", source=label)
    rows = data[:limit] if limit is not None else data
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(
                f"expected a JSON object, got {type(row).__name__}", source=label, location=f"item {i + 1}"
            )
    return RawRows(label, rows, lambda i: f"item {i + 1}")


def _read_csv(path: Path, label: str, limit: int | None) -> RawRows:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise DatasetError("the CSV file has no header row", source=label)
        for row in reader:
            if limit is not None and len(rows) >= limit:
                break
            if None in row:
                raise DatasetError(
                    "more values than header columns", source=label, location=f"line {reader.line_num}"
                )
            rows.append(row)
    if not rows:
        raise DatasetError("the file has no rows", source=label)
    # Header is line 1; without multi-line cells row i sits on line i + 2.
    return RawRows(label, rows, lambda i: f"line {i + 2}")


def _read_parquet(path: Path, label: str, limit: int | None) -> RawRows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DatasetError(f"not a readable Parquet file ({exc})", source=label) from None
    if limit is not None:
        table = table.slice(0, limit)
    rows = table.to_pylist()
    if not rows:
        raise DatasetError("the file has no rows", source=label)
    return RawRows(label, rows, lambda i: f"row {i + 1}")


def _read_directory(path: Path, split: str, *, limit: int | None, label: str,
                    roots: list[Path] | None) -> RawRows:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        import datasets

        _check_tree_inside(path, label, roots)
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DatasetError(
                    f"no split '{split}' (splits: {', '.join(loaded)})", source=label
                )
            loaded = loaded[split]
        if limit is not None:
            loaded = loaded.select(range(min(limit, len(loaded))))
        return RawRows(label, loaded.to_list(), lambda i: f"row {i + 1}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in DATA_FILE_SUFFIXES)
    matching = [p for p in files if p.stem == split]
    if matching:
        chosen = matching[0]
    elif len(files) == 1:
        chosen = files[0]
    elif not files:
        raise DatasetError(f"no data files ({', '.join(DATA_FILE_SUFFIXES)}) in the directory", source=label)
    else:
        names = ", ".join(p.name for p in files)
        raise DatasetError(f"no file for split '{split}' among {names}", source=label)
    chosen_label = f"{label}/{chosen.name}" if label.startswith(BUNDLED_PREFIX) else str(chosen)
    # The directory is inside a root, but the file in it may be a symlink to anywhere.
    try:
        resolved = resolve_allowed_path(chosen, roots=roots, kind="dataset")
    except PathRefused as exc:
        raise DatasetError(str(exc), source=chosen_label) from None
    return _read_file(resolved, limit=limit, label=chosen_label)


#: Folders walked in a ``save_to_disk`` directory before ``datasets`` opens it.
_MAX_TREE_FOLDERS = 10_000


def _check_tree_inside(path: Path, label: str, roots: list[Path] | None) -> None:
    """Refuse a ``save_to_disk`` directory any of whose files or folders link outside ``roots``."""
    if roots is None:
        return
    for count, (folder, dirs, files) in enumerate(os.walk(path)):
        for entry in [*dirs, *files]:
            try:
                resolve_allowed_path(Path(folder) / entry, roots=roots, kind="dataset")
            except PathRefused as exc:
                where = Path(folder, entry).relative_to(path)
                raise DatasetError(f"{where}: {exc}", source=label) from None
        if count > _MAX_TREE_FOLDERS:
            raise DatasetError(f"more than {_MAX_TREE_FOLDERS:,} folders in the dataset directory", source=label)


def _check_hub_dataset(name: str) -> None:
    """Fail in seconds, with a reason, when the Hub does not have ``name`` or cannot be reached.

    Without it, ``datasets`` retries an unreachable Hub for about half a minute before failing.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return  # datasets reads its local cache
    try:
        problem = hub_problem(name, repo_type="dataset")
    except HubUnreachable as exc:
        raise DatasetError(
            f"the Hugging Face Hub could not be reached ({exc}). Connect to it, set "
            "HF_HUB_OFFLINE=1 to use a copy in your local cache, or use a local file",
            source=name,
        ) from None
    if problem:
        raise DatasetError(problem, source=name)


def _read_hub(name: str, split: str, *, limit: int | None) -> RawRows:
    import datasets

    _check_hub_dataset(name)

    try:
        if limit is not None:
            stream = datasets.load_dataset(name, split=split, streaming=True)
            rows = [dict(row) for _, row in zip(range(limit), stream)]
        else:
            rows = datasets.load_dataset(name, split=split).to_list()
    except Exception as exc:  # datasets raises many types: connection, missing repo, bad split
        raise DatasetError(
            f"could not load from the Hugging Face Hub or its cache ({type(exc).__name__}: {exc}). "
            "Check the id, the split, and that the Hub is reachable (or use a local file)",
            source=name,
        ) from None
    if not rows:
        raise DatasetError(f"split '{split}' has no rows", source=name)
    return RawRows(name, rows, lambda i: f"row {i + 1}")


# Whole datasets


@dataclass
class PreparedData:
    """What the trainer needs: TRL-shaped train (and eval) datasets and what was detected."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    dataset_format: str
    train_rows: int
    eval_rows: int


def prepare_datasets(config: Any, *, allowed_roots: list[Path] | None = None) -> PreparedData:
    """Load, convert and split the datasets an ``SFTConfig`` names."""
    import datasets

    raw = read_rows(config.dataset_name, config.dataset_split, limit=config.max_samples,
                    allowed_roots=allowed_roots)
    rows, fmt = convert_rows(raw, dataset_format=config.dataset_format, column_mapping=config.column_mapping)
    train = datasets.Dataset.from_list(rows)
    evaluation = None
    if config.eval_dataset_name:
        eval_raw = read_rows(config.eval_dataset_name, config.eval_dataset_split, allowed_roots=allowed_roots)
        eval_rows, _ = convert_rows(eval_raw, dataset_format=fmt, column_mapping=config.column_mapping)
        evaluation = datasets.Dataset.from_list(eval_rows)
    elif config.validation_split:
        if len(train) < 2:
            raise DatasetError("validation_split needs at least 2 rows", source=config.dataset_name)
        parts = train.train_test_split(test_size=config.validation_split, seed=config.seed)
        train, evaluation = parts["train"], parts["test"]
    return PreparedData(train, evaluation, fmt, len(train), len(evaluation) if evaluation is not None else 0)


def check_dataset(
    name: str,
    split: str,
    *,
    dataset_format: str = "auto",
    column_mapping: dict[str, str] | None = None,
    rows: int = 1000,
    allowed_roots: list[Path] | None = None,
) -> str:
    """Parse the first ``rows`` rows in the declared (or detected) format; return the format.

    A local file's answer is remembered until the file changes (its size or mtime), so submitting
    many jobs on one dataset reads it once; an error is never remembered."""
    key = _check_key(name, split, dataset_format, column_mapping, rows, allowed_roots)
    if key is not None and key in _checked:
        return _checked[key]
    raw = read_rows(name, split, limit=rows, allowed_roots=allowed_roots)
    _, fmt = convert_rows(raw, dataset_format=dataset_format, column_mapping=column_mapping)
    if key is not None:
        if len(_checked) >= _CHECKED_MAX:
            _checked.pop(next(iter(_checked)))
        _checked[key] = fmt
    return fmt


#: Successful checks of local files: (path, size, mtime, arguments) -> format. Oldest dropped first.
_checked: dict[tuple, str] = {}
_CHECKED_MAX = 256


def _check_key(name: str, split: str, dataset_format: str, column_mapping: dict[str, str] | None,
               rows: int, allowed_roots: list[Path] | None) -> tuple | None:
    """The cache key of a local file's check, or None (not a local file: a Hub dataset or a typo)."""
    try:
        path = Path(name).expanduser().resolve()
        stat = path.stat()
    except (OSError, ValueError, RuntimeError):
        return None
    if not path.is_file():
        return None
    roots = tuple(str(root) for root in allowed_roots) if allowed_roots is not None else None
    mapping = tuple(sorted((column_mapping or {}).items()))
    return (str(path), stat.st_size, stat.st_mtime_ns, split, dataset_format, mapping, rows, roots)
