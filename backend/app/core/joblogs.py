"""Per-job log files: every log record made on a job's thread goes to that job's file only.

transformers keeps its own logger tree (``propagate=False`` outside CI), so the router is attached
to it as well as to the root logger, and a record reaching both is written once. The terminal keeps
what an operator needs: a job thread's records below ERROR (model configs, "share your model on
huggingface.co", per-step lines) go to the job's log and not to transformers' stderr handler.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TAIL_LINES = 200


class JobLogRouter(logging.Handler):
    """Routes records by the thread they were made on to ``<log_dir>/<job_id>.log``."""

    def __init__(self, log_dir: Path):
        super().__init__(level=logging.INFO)
        self.log_dir = log_dir
        self.setFormatter(logging.Formatter(FORMAT))
        self._threads: dict[int, str] = {}
        self._tails: dict[str, deque[str]] = {}
        self._files_lock = threading.Lock()

    def bind(self, job_id: str) -> None:
        """Send records of the calling thread to ``job_id``'s log."""
        self._threads[threading.get_ident()] = job_id
        self._tails.setdefault(job_id, deque(maxlen=TAIL_LINES))

    def unbind(self) -> None:
        self._threads.pop(threading.get_ident(), None)

    def on_job_thread(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` was made on a thread bound to a job."""
        return record.thread in self._threads

    def path(self, job_id: str) -> Path:
        return self.log_dir / f"{job_id}.log"

    def write(self, job_id: str, line: str) -> None:
        """Append a line to a job's log (the manager logs its events here too)."""
        self._tails.setdefault(job_id, deque(maxlen=TAIL_LINES)).append(line)
        with self._files_lock:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with self.path(job_id).open("a", encoding="utf-8") as f:
                f.write(line + "\n")

    def emit(self, record: logging.LogRecord) -> None:
        job_id = self._threads.get(record.thread)
        if job_id is None or getattr(record, "_sft_job_logged", False):
            return
        record._sft_job_logged = True
        try:
            self.write(job_id, self.format(record))
        except Exception:  # a log write must never break training
            self.handleError(record)

    def tail(self, job_id: str, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of a job's log, from memory or from its file."""
        if job_id in self._tails and self._tails[job_id]:
            return list(self._tails[job_id])[-lines:]
        return self.read(job_id, tail=lines)

    def read(self, job_id: str, *, tail: int | None = None) -> list[str]:
        path = self.path(job_id)
        if not path.exists():
            return []
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return text[-tail:] if tail else text

    def forget(self, job_id: str) -> None:
        self._tails.pop(job_id, None)
        self.path(job_id).unlink(missing_ok=True)


class TerminalFilter(logging.Filter):
    """Keeps a job thread's records below ERROR off a terminal handler (its job's log has them)."""

    def __init__(self) -> None:
        super().__init__()
        self.routers: list[JobLogRouter] = []

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not any(r.on_job_thread(record) for r in self.routers)


_terminal_filter = TerminalFilter()
_installed: dict[str, JobLogRouter] = {}
_install_lock = threading.Lock()


def install(log_dir: Path) -> JobLogRouter:
    """The router for ``log_dir``, attached to the root and transformers loggers once."""
    key = str(log_dir.resolve())
    with _install_lock:
        if key in _installed:
            return _installed[key]
        router = JobLogRouter(log_dir)
        # transformers sets its own level from this variable when it first loads (WARNING otherwise),
        # which would drop the Trainer's INFO lines from the job logs.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info")
        logging.captureWarnings(True)
        for name in ("", "transformers"):
            logging.getLogger(name).addHandler(router)
        for name in ("app", "trl", "transformers", "peft", "datasets", "py.warnings"):
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
        _terminal_filter.routers.append(router)
        for handler in logging.getLogger("transformers").handlers:
            if isinstance(handler, logging.StreamHandler) and _terminal_filter not in handler.filters:
                handler.addFilter(_terminal_filter)
        _installed[key] = router
        return router
