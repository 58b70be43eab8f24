"""Where model requests (generate, evaluate, merge, chat, streamed chat) run: their own few threads,
a bounded queue, a time limit, and cancellation when the client leaves or the server stops.

FastAPI runs plain ``def`` routes on one shared thread pool; long generations parked there once
made ``/health`` wait 30 s, and 45 streamed chats each waiting there for the model's lock once
took all 40 threads for good. Model routes hand their work to a ``ModelRequestGate`` instead and
await it (a stream's chunks arrive through an asyncio queue), so a waiting request holds no thread
and the shared pool (and the event loop) stay free for everything else.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

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
        budget = self._admit()
        queued = self._submit(self._call, work, budget)
        future = asyncio.wrap_future(queued)
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_SECONDS)
                if done:
                    if future.cancelled():  # dropped from the queue (close(), or its client left): it never ran
                        self._release(budget)
                        raise RequestCancelled(self._cancelled_message())
                    return future.result()
                if await request.is_disconnected():
                    budget.cancel("the client disconnected")
                    queued.cancel()  # still queued: its place is freed now, not when a thread reaches it
        except asyncio.CancelledError:  # the server cancelled the request (shutdown timeout)
            budget.cancel("the request was cancelled")
            if queued.cancel():
                self._release(budget)
            raise

    async def stream(self, request: Request, produce: Callable[[Budget], Iterator[T]]) -> tuple[T, AsyncIterator[T]]:
        """Run the generator ``produce(budget)`` on a model thread; its first item (errors before it raise
        here, while an HTTP error can still be answered) and an async iterator of the rest.

        The chunks cross to the event loop through a queue, so neither the waiting nor the reading
        holds a thread of the shared pool. Leaving the iterator early (the client went away) cancels
        the generation at its next token and frees its place at once.

        Raises:
            ServiceBusy: the queue is full (503 with Retry-After), or the server is stopping.
        """
        budget = self._admit()
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def post(kind: str, value: Any = None) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, (kind, value))
            except RuntimeError:  # the loop is closed: nobody reads any more
                budget.cancel("the server stopped")

        def pump() -> None:
            chunks = produce(budget)
            try:
                for item in chunks:
                    post("item", item)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, who raises it
                post("error", exc)
            finally:
                chunks.close()
                post("end")

        queued = self._submit(self._call, lambda _: pump(), budget)

        def ended(future: Future) -> None:  # a thread never ran pump(): the reader still hears why
            if future.cancelled():
                post("error", RequestCancelled(self._cancelled_message()))
            elif future.exception() is not None:
                post("error", future.exception())
            post("end")

        queued.add_done_callback(ended)

        def leave(reason: str) -> None:
            budget.cancel(reason)
            if queued.cancel():
                self._release(budget)

        async def next_item(*, poll: bool) -> tuple[str, Any]:
            while True:
                try:
                    return await asyncio.wait_for(items.get(), timeout=DISCONNECT_POLL_SECONDS if poll else None)
                except TimeoutError:
                    if await request.is_disconnected():
                        leave("the client disconnected")

        try:
            kind, first = await next_item(poll=True)
        except BaseException:
            leave("the request was cancelled")
            raise
        if kind == "error":
            raise first
        if kind == "end":
            raise RequestCancelled("stopped before the first chunk")

        async def rest() -> AsyncIterator[T]:
            try:
                while True:
                    kind, value = await next_item(poll=False)  # a disconnect cancels this await (Starlette)
                    if kind == "end":
                        return
                    if kind == "error":
                        raise value
                    yield value
            finally:
                leave("the client went away")

        return first, rest()

    def _cancelled_message(self) -> str:
        return "stopped: " + ("the server is shutting down" if self._closing.is_set() else "the client disconnected")

    def _admit(self) -> Budget:
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
        return budget

    def _submit(self, call: Callable[..., T], work: Callable[[Budget], Any], budget: Budget) -> Future:
        try:
            return self._executor.submit(call, work, budget)
        except RuntimeError:  # the executor was shut down between the check and now
            self._release(budget)
            raise ServiceBusy("the server is shutting down", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) \
                from None

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
