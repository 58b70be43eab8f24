"""A webhook receiver for the tests: a small HTTP server on 127.0.0.1 in a thread, recording every request."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """Answers each POST with the next of ``statuses``, then ``default`` (with ``body``); with ``hang``, holds
    every request until ``release`` is set (``hang`` may be turned off later)."""

    def __init__(self, *, statuses: tuple[int, ...] = (), default: int = 200, body: bytes = b"ok", hang: bool = False):
        self.requests: list[Received] = []
        self.release = threading.Event()
        self.hang = hang
        self._statuses = list(statuses)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                received = Received({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length),
                                    time.monotonic())
                with receiver._lock:
                    receiver.requests.append(received)
                    status = receiver._statuses.pop(0) if receiver._statuses else default
                if receiver.hang:
                    receiver.release.wait(30)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="webhook-receiver", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sft"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
