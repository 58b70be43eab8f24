"""Where model requests (generate, evaluate, merge) run: their own few threads, a bounded queue, a
time limit, and cancellation when the client leaves or the server stops.

FastAPI runs plain ``def`` routes on one shared thread pool; long generations parked there once
made ``/health`` wait 30 s. Model routes hand their work to a ``ModelRequestGate`` instead and
await it, so the shared pool (and the event loop) stay free for everything else.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fastapi import Request

from ..core.errors import RequestCancelled, ServiceBusy
from ..sft.budget import Budget

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How often a waiting model request asks whether its client is still connected.
DISCONNECT_POLL_SECONDS = 0.1
#: Retry-After of a 503 when the queue is full: about one short generation.
RETRY_AFTER_SECONDS = 5


class ModelRequestGate:
    """Runs model work on ``workers`` threads; admits at most ``max_queued`` more waiting for them.

    Each admitted request gets a :class:`~app.sft.budget.Budget` (deadline and cancel flag) that
    generation checks at every token: a client that disconnects, a request past its time limit and
    a server that is stopping all end the work at the next token.
    """

    def __init__(self, *, workers: int, max_queued: int, timeout_seconds: float | None):
        self.workers = workers
        self.max_queued = max_queued
        self.timeout_seconds = timeout_seconds
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model-request")
        self._lock = threading.Lock()
        self._active: set[Budget] = set()
        self._running = 0
        self._closing = threading.Event()

    @property
    def admitted(self) -> int:
        """Requests running or waiting (a cancelled one counts until its thread has let go)."""
        with self._lock:
            return len(self._active)

    def budget(self) -> Budget:
        """A fresh budget with the server's time limit for one model request."""
        return Budget(timeout_seconds=self.timeout_seconds,
                      limit_name="the server's limit for one model request (SFT_REQUEST_TIMEOUT_SECONDS)")

    def counts(self) -> dict[str, int]:
        """``{"running": ..., "waiting": ...}`` for /health."""
        with self._lock:
            return {"running": self._running, "waiting": len(self._active) - self._running}

    async def run(self, request: Request, work: Callable[[Budget], T]) -> T:
        """Run ``work(budget)`` on a model thread and return its result.

        Raises:
            ServiceBusy: the queue is full (503 with Retry-After), or the server is stopping.
        """
        budget = self.budget()
        with self._lock:
            if self._closing.is_set():
                raise ServiceBusy("the server is shutting down", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            if len(self._active) >= self.workers + self.max_queued:
                raise ServiceBusy(
                    f"{len(self._active)} model requests are running or queued (at most {self.workers} run at "
                    f"once and {self.max_queued} wait: SFT_MODEL_REQUEST_WORKERS, SFT_MAX_QUEUED_MODEL_REQUESTS); "
                    "try again shortly",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self._active.add(budget)
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._call, work, budget)
        except RuntimeError:  # the executor was shut down between the check and now
            self._release(budget)
            raise ServiceBusy("the server is shutting down", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) \
                from None
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_SECONDS)
                if done:
                    if future.cancelled():  # dropped from the queue by close(): it never ran
                        self._release(budget)
                        raise RequestCancelled("stopped: the server is shutting down")
                    return future.result()
                if await request.is_disconnected():
                    budget.cancel("the client disconnected")
        except asyncio.CancelledError:  # the server cancelled the request (shutdown timeout)
            budget.cancel("the request was cancelled")
            raise

    def _call(self, work: Callable[[Budget], T], budget: Budget) -> T:
        with self._lock:
            self._running += 1
        try:
            budget.raise_if_stopped()  # it may have waited in the queue past its limit, or been abandoned
            return work(budget)
        finally:
            with self._lock:
                self._running -= 1
            self._release(budget)

    def _release(self, budget: Budget) -> None:
        with self._lock:
            self._active.discard(budget)

    def close(self) -> None:
        """Refuse new work and stop what runs at its next token; returns at once."""
        with self._lock:
            self._closing.set()
            active = list(self._active)
        for budget in active:
            budget.cancel("the server is shutting down")
        self._executor.shutdown(wait=False, cancel_futures=True)

    def close_on_signals(self) -> None:
        """Also close when SIGINT / SIGTERM arrive, before the server waits for open requests.

        uvicorn waits for every open request before it runs the app's shutdown, so a generation in
        progress would hold SIGTERM up until it ended. Chained in front of uvicorn's own handler
        (installed with ``signal.signal`` before the app starts); only possible on the main thread.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue

            def handler(number, frame, previous=previous):
                self.close()
                previous(number, frame)

            signal.signal(signum, handler)
