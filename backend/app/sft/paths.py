"""The path policy: every local path a request names (a dataset, a model) is checked here.

Two steps, both needed before anything is opened:

- :func:`check_path_text` refuses text no file system takes (a NUL byte, an unpaired surrogate, a
  name longer than the file system allows). Config and request models call it in their validators,
  so such a value is a 400 that names the field, never an ``OSError`` later.
- :func:`resolve_allowed_path` follows every symlink and refuses a result outside the allowed
  roots. Its refusal reads the same whether or not the path exists, and nothing outside the roots
  is opened, so an error tells a caller nothing about files it may not read.

Callers that pick a file inside an allowed directory pass the picked file through
:func:`resolve_allowed_path` again: a symlink inside a root may point anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

#: Longest path accepted, in characters (Linux's PATH_MAX is 4096 bytes).
MAX_PATH_CHARS = 4096
#: Longest single path component, in bytes (NAME_MAX of common Linux and macOS file systems).
MAX_NAME_BYTES = 255


class PathRefused(ValueError):
    """A path reference is refused. The message names no file outside the allowed roots.

    A ``ValueError``, so a pydantic validator that raises it becomes a field error.
    """


def check_path_text(value: str) -> str:
    """Return ``value`` when a file system could take it as a path; raise PathRefused otherwise.

    Hub ids and bundled names pass too: they are short, printable and NUL-free.
    """
    if "\x00" in value:
        raise PathRefused("contains a NUL byte")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise PathRefused("is not valid text (it contains an unpaired surrogate)") from None
    if len(value) > MAX_PATH_CHARS:
        raise PathRefused(f"is {len(value):,} characters long; a path may have at most {MAX_PATH_CHARS:,}")
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > MAX_NAME_BYTES:
        raise PathRefused(
            f"has a path component of {longest:,} bytes; a file or directory name may have at most "
            f"{MAX_NAME_BYTES} bytes"
        )
    return value


def resolve_allowed_path(reference: str | os.PathLike[str], *, roots: Sequence[Path] | None,
                         kind: str = "dataset") -> Path:
    """The one path policy: resolve ``reference`` and require the result under one of ``roots``.

    ``~`` is expanded, relative paths are taken from the working directory, and every symlink is
    followed (``os.path.realpath``) before the check, so neither ``..`` nor a link inside a root
    leads out of it. Nothing is opened or stat-ed outside the roots: the refusal is the same for a
    path that exists and one that does not.

    Args:
        reference: the path as the user wrote it (or a file picked inside an allowed directory).
        roots: allowed directories, already resolved; ``None`` allows any path (the command line,
            where the user reads their own files).
        kind: what the path names, for the message ("dataset", "model").

    Returns:
        The resolved path (it may not exist; the caller says so, now that it is inside a root).

    Raises:
        PathRefused: the text is not a usable path, or it resolves outside every root.
    """
    text = check_path_text(os.fspath(reference))
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~" with no home directory to expand it to
        raise PathRefused("starts with '~' but this server has no home directory to expand it to") from None
    resolved = Path(os.path.realpath(path))
    if roots is not None and not is_within(resolved, roots):
        listed = ", ".join(str(root) for root in roots) or "none configured"
        raise PathRefused(f"local {kind}s must be under an allowed root ({listed})")
    return resolved


def is_within(path: Path, roots: Sequence[Path]) -> bool:
    """Whether the resolved ``path`` lies in one of ``roots`` (each resolved)."""
    return any(path == root or path.is_relative_to(root) for root in roots)
