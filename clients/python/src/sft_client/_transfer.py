"""Reading the event stream (Server-Sent Events) and unpacking a downloaded adapter archive."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from .errors import DownloadError
from .types import Event


class SSEDecoder:
    """Turns the lines of a ``text/event-stream`` into :class:`Event` objects (one per blank line)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        """Take one line (without its line ending); return the event it completes, if any."""
        if not line:
            if not self._data:
                return None
            payload, self._data = "\n".join(self._data), []
            return Event.from_dict(json.loads(payload))
        if line.startswith(":"):  # a comment: the server's keep-alive
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        # The event's id and type are in its JSON too (seq, type); the other fields add nothing.
        return None


def check_destination(directory: Path) -> None:
    """``directory`` must not exist yet, or be an empty directory: an adapter never lands on other files."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise DownloadError(f"{directory} already exists and is not an empty directory")


def unpack(archive: Path, directory: Path, *, scratch: Path) -> Path:
    """Unpack ``archive`` (one root folder) so that ``directory`` holds that folder's files.

    ``scratch`` is an empty directory on the same file system as ``directory``.
    """
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        roots = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
        if len(roots) != 1:
            raise DownloadError(f"the archive should hold one folder; it holds {sorted(roots) or 'nothing'}")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(scratch, filter="data")
        else:  # Python before 3.10.12 / 3.11.4: check what the data filter would
            for member in members:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
                    raise DownloadError(f"the archive holds an unsafe entry: {member.name}")
            tar.extractall(scratch)
    root = scratch / roots.pop()
    if directory.is_dir():
        for child in root.iterdir():
            shutil.move(str(child), str(directory / child.name))
    else:
        root.rename(directory)
    return directory
