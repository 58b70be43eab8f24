"""``SFTClient`` and ``AsyncSFTClient``: every ``/api/sft`` endpoint, typed, with retries and a
``follow`` that survives a restarting server."""

from __future__ import annotations

import asyncio
import functools
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from . import _api
from ._api import Call
from ._transfer import SSEDecoder, check_destination, unpack
from .errors import APIConnectionError, APITimeoutError, DownloadError, error_from_response
from .types import (
    Checkpoint,
    ConfigSaved,
    Delivery,
    Evaluation,
    Event,
    EventPage,
    Export,
    ExportFormats,
    Generation,
    Health,
    Job,
    JobList,
    JobStart,
    MemoryPlan,
    Merge,
    ModelInfo,
    SavedConfig,
    StopResult,
    Webhook,
    WebhookCreated,
)

__version__ = "0.1.0"

#: An export's statuses after which nothing more happens.
EXPORT_ENDED = ("completed", "failed")


def export_files(export: Export) -> list[str]:
    """The names of a completed export's files (DownloadError otherwise)."""
    if export.status != "completed" or export.result is None:
        raise DownloadError(f"export {export.export_id} is {export.status}"
                            + (f": {export.error}" if export.error else "; only a completed export can be downloaded"))
    return [file.name for file in export.result.files]

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
#: Answers after which a repeatable request is sent again.
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_BACKOFF_SECONDS = 8.0
#: The server sends a keep-alive comment every 15 s; a stream silent for this long is dead.
STREAM_READ_TIMEOUT = 60.0

ProgressCallback = Callable[[int, "int | None"], None]


class _Base:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0, *,
                 max_retries: int = 2, backoff: float = 0.5, work_timeout: float = 1800.0):
        self.base_url = (base_url or os.environ.get("SFT_URL") or DEFAULT_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        self.api_key = api_key if api_key is not None else os.environ.get("SFT_API_KEY") or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.work_timeout = work_timeout

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"sft-client/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _request_args(self, call: Call[Any]) -> dict[str, Any]:
        headers = dict(call.headers)
        if call.method == "POST" and call.json is None:
            # Body-less POSTs say JSON too: servers refuse cross-site state changes without it.
            headers["Content-Type"] = "application/json"
        timeout = httpx.Timeout(self.timeout, read=self.work_timeout) if call.slow else httpx.Timeout(self.timeout)
        return {"method": call.method, "url": call.path, "params": call.params, "json": call.json,
                "headers": headers, "timeout": timeout}

    def _retry_delay(self, repeatable: bool, attempt: int, *, error: Exception | None = None,
                     response: httpx.Response | None = None) -> float | None:
        """Seconds to wait before sending again, or None to give up."""
        if attempt >= self.max_retries:
            return None
        delay = min(self.backoff * 2 ** attempt, MAX_BACKOFF_SECONDS)
        if error is not None:
            # A connection that was never made sent nothing: any request may go again.
            unsent = isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout))
            return delay if unsent or repeatable else None
        if response is None or response.status_code not in RETRY_STATUSES or not repeatable:
            return None
        try:
            return min(max(float(response.headers.get("retry-after", delay)), 0.0), MAX_BACKOFF_SECONDS * 4)
        except ValueError:
            return delay

    def _connection_error(self, error: httpx.HTTPError) -> APIConnectionError:
        if isinstance(error, httpx.TimeoutException):
            return APITimeoutError(f"{self.base_url} did not answer in time ({type(error).__name__})")
        return APIConnectionError(f"cannot reach the SFT server at {self.base_url}: {error or type(error).__name__}")

    def _stream_headers(self, last_event_id: int) -> dict[str, str]:
        return {"Accept": "text/event-stream", "Last-Event-ID": str(last_event_id)}

    def _stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=max(STREAM_READ_TIMEOUT, self.timeout))


class SFTClient(_Base):
    """A client of the SFT job service.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``; default ``$SFT_URL``, then that.
        api_key: sent as ``Authorization: Bearer``; default ``$SFT_API_KEY``.
        timeout: seconds to connect and to wait for an ordinary answer.
        max_retries: times a request is sent again after a connection failure (any request) or a
            lost answer / 502 / 503 / 504 (reads, and ``train``, which carries an Idempotency-Key).
        work_timeout: seconds to wait for model work (generate, evaluate, merge, download).
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0, *,
                 max_retries: int = 2, backoff: float = 0.5, work_timeout: float = 1800.0,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, api_key, timeout, max_retries=max_retries, backoff=backoff,
                         work_timeout=work_timeout)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers(), transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SFTClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(**self._request_args(call))
            except httpx.TransportError as error:
                delay = self._retry_delay(call.repeatable, attempt, error=error)
                if delay is None:
                    raise self._connection_error(error) from error
            else:
                delay = self._retry_delay(call.repeatable, attempt, response=response) if response.is_error else None
                if delay is None:
                    if response.is_error:
                        raise error_from_response(response)
                    return call.parse(response.json())
            time.sleep(delay)
            attempt += 1

    def _open_stream(self, path: str, *, headers: dict[str, str], timeout: httpx.Timeout) -> httpx.Response:
        """A streamed GET (the caller closes it); connection failures are retried, error answers raised."""
        attempt = 0
        while True:
            request = self._http.build_request("GET", path, headers=headers, timeout=timeout)
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as error:
                delay = self._retry_delay(False, attempt, error=error)
                if delay is None:
                    raise self._connection_error(error) from error
                time.sleep(delay)
                attempt += 1
                continue
            if response.is_error:
                response.read()
                response.close()
                raise error_from_response(response)
            return response

    # Service

    def health(self) -> Health:
        """Liveness, version and job counts."""
        return self._run(_api.health())

    def list_models(self) -> list[ModelInfo]:
        """Models usable offline, and whether each is ready."""
        return self._run(_api.models())

    def config_schema(self) -> dict[str, Any]:
        """The JSON schema of a training config."""
        return self._run(_api.config_schema())

    # Jobs

    def train(self, config: dict[str, Any] | None = None, *, config_id: str | None = None,
              overrides: dict[str, Any] | None = None, idempotency_key: str | None = None) -> JobStart:
        """Start a job from a full ``config``, or from a saved config (``config_id``) plus ``overrides``.

        Retries carry one Idempotency-Key (``idempotency_key``, or a fresh one), so a retried
        submit never starts a second job.
        """
        return self._run(_api.train(config, config_id=config_id, overrides=overrides,
                                    idempotency_key=idempotency_key))

    def plan(self, config: dict[str, Any] | None = None, *, config_id: str | None = None,
             overrides: dict[str, Any] | None = None) -> MemoryPlan:
        """A config's estimated peak memory per worker against the server's devices, and whether it fits
        (what would, when it does not), without submitting it. A config ``train`` would refuse raises the same."""
        return self._run(_api.plan(config, config_id=config_id, overrides=overrides))

    def list_jobs(self, *, status: str | None = None, limit: int = 100, offset: int = 0,
                  order: str = "desc") -> JobList:
        """A page of jobs, newest first by default, optionally of one status."""
        return self._run(_api.list_jobs(status=status, limit=limit, offset=offset, order=order))

    def get_job(self, job_id: str) -> Job:
        """A job's status, progress, result and error."""
        return self._run(_api.get_job(job_id))

    def stop_job(self, job_id: str) -> StopResult:
        """Stop a job: a pending one at once, a running one at its next step (its adapter is saved)."""
        return self._run(_api.stop(job_id))

    def resume_job(self, job_id: str) -> JobStart:
        """Continue a stopped or failed job from its latest checkpoint."""
        return self._run(_api.resume(job_id))

    def delete_job(self, job_id: str) -> str:
        """Forget a finished job (its files stay on the server's disk); returns the server's message."""
        return self._run(_api.delete_job(job_id))

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        return self._run(_api.checkpoints(job_id))

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        """The job's metrics series: step, loss, learning_rate, grad_norm, eval_loss, ..."""
        return self._run(_api.metrics(job_id))

    def logs(self, job_id: str, *, tail: int | None = None) -> list[str]:
        """The job's log lines (only the last ``tail``)."""
        return self._run(_api.logs(job_id, tail=tail))

    def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> EventPage:
        """One page of the job's events with ``seq`` greater than ``after``."""
        return self._run(_api.events(job_id, after=after, limit=limit))

    def follow(self, job_id: str, *, after: int = 0, reconnect_timeout: float = 300.0,
               on_disconnect: Callable[[Exception], None] | None = None,
               on_reconnect: Callable[[], None] | None = None) -> Iterator[Event]:
        """Yield the job's events after ``after`` as they happen, until it completes, fails or stops.

        A dropped connection (a restarting server) is reopened with ``Last-Event-ID``, so no event
        is lost or repeated; ``on_disconnect(error)`` and ``on_reconnect()`` say when. Raises
        :class:`APIConnectionError` when the server stays unreachable for ``reconnect_timeout`` seconds.
        """
        last, lost_since = after, None
        while True:
            try:
                response = self._open_stream(_api.events_path(job_id), headers=self._stream_headers(last),
                                             timeout=self._stream_timeout())
                if lost_since is not None:
                    lost_since = None
                    if on_reconnect:
                        on_reconnect()
                try:
                    decoder = SSEDecoder()
                    for line in response.iter_lines():
                        event = decoder.feed(line)
                        if event is None:
                            continue
                        last = event.seq
                        yield event
                        if event.is_terminal:
                            return
                finally:
                    response.close()
                # The server ends a stream without a terminal event only when the job has
                # already ended (or the server is shutting down): ask which.
                if self.get_job(job_id).is_terminal:
                    return
                time.sleep(self.backoff)
            except (httpx.TransportError, APIConnectionError) as error:
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    if on_disconnect:
                        on_disconnect(error)
                if now - lost_since > reconnect_timeout:
                    raise APIConnectionError(f"lost the event stream of job {job_id} and could not reconnect "
                                             f"to {self.base_url} for {reconnect_timeout:.0f} s: {error}") from error
                time.sleep(min(self.backoff * 2, MAX_BACKOFF_SECONDS))

    def wait(self, job_id: str, **follow_options: Any) -> Job:
        """Follow the job to its end; return its final record."""
        for _ in self.follow(job_id, **follow_options):
            pass
        return self.get_job(job_id)

    # Using a trained job

    def generate(self, job_id: str, prompt: str | None = None, *, messages: list[dict[str, str]] | None = None,
                 max_new_tokens: int = 128, temperature: float = 0.0, top_p: float | None = None,
                 seed: int | None = None, compare_base: bool = False, checkpoint: str | None = None) -> Generation:
        """Complete ``messages`` (a chat) or a raw ``prompt`` with the job's model (greedy by default)."""
        return self._run(_api.generate(job_id, prompt=prompt, messages=messages, max_new_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p, seed=seed,
                                       compare_base=compare_base, checkpoint=checkpoint))

    def evaluate(self, job_id: str, *, dataset_name: str | None = None, split: str | None = None,
                 max_samples: int | None = None, max_new_tokens: int | None = None,
                 checkpoint: str | None = None) -> Evaluation:
        """Exact-match score of the base model and of the job's model (server defaults where None)."""
        return self._run(_api.evaluate(job_id, dataset_name=dataset_name, split=split, max_samples=max_samples,
                                       max_new_tokens=max_new_tokens, checkpoint=checkpoint))

    def merge(self, job_id: str) -> Merge:
        """Merge the LoRA adapter into its base, on the server (``<output_dir>/merged``)."""
        return self._run(_api.merge(job_id))

    def download(self, job_id: str, directory: str | Path, *,
                 on_progress: ProgressCallback | None = None) -> Path:
        """Download the job's adapter (or full model) and unpack it so ``directory`` holds its files.

        ``directory`` must not exist or be empty. ``on_progress(bytes_done, bytes_total)`` follows
        the transfer (``bytes_total`` is None when the server does not say).
        """
        directory = Path(directory)
        check_destination(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".sft-download-", dir=directory.parent) as scratch:
            archive = Path(scratch) / "adapter.tar.gz"
            self._save(_api.adapter_path(job_id), archive, on_progress)
            (Path(scratch) / "unpacked").mkdir()
            return unpack(archive, directory, scratch=Path(scratch) / "unpacked")

    def _save(self, path: str, destination: Path, on_progress: ProgressCallback | None) -> None:
        """Stream ``path``'s answer into the file ``destination``."""
        timeout = httpx.Timeout(self.timeout, read=self.work_timeout)
        response = self._open_stream(path, headers={}, timeout=timeout)
        try:
            with destination.open("wb") as file:
                total = int(response.headers.get("content-length") or 0) or None
                done = 0
                for chunk in response.iter_bytes(1 << 20):
                    file.write(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(done, total)
        except httpx.TransportError as error:
            raise self._connection_error(error) from error
        finally:
            response.close()

    # Exports

    def export_formats(self) -> ExportFormats:
        """What this server can export: formats, the GGUF types it makes (and why others are missing)."""
        return self._run(_api.export_formats())

    def export(self, job_id: str, *, format: str = "gguf", type: str | None = None) -> Export:  # noqa: A002
        """Start exporting a finished job (gguf, merged or adapter); the same format and type asked again
        answers the export the job already has."""
        return self._run(_api.start_export(job_id, fmt=format, gguf_type=type))

    def list_exports(self, job_id: str) -> list[Export]:
        """The job's exports, oldest first."""
        return self._run(_api.list_exports(job_id))

    def get_export(self, job_id: str, export_id: str) -> Export:
        return self._run(_api.get_export(job_id, export_id))

    def delete_export(self, job_id: str, export_id: str) -> Export:
        """Delete an export that is not running: its record and files."""
        return self._run(_api.delete_export(job_id, export_id))

    def wait_export(self, job_id: str, export_id: str, *, poll_seconds: float = 1.0) -> Export:
        """The export once it has completed or failed."""
        while (export := self.get_export(job_id, export_id)).status not in EXPORT_ENDED:
            time.sleep(poll_seconds)
        return export

    def download_export(self, job_id: str, export_id: str, directory: str | Path, *,
                        on_progress: ProgressCallback | None = None) -> list[Path]:
        """Save a completed export's files (the .gguf, Modelfile, README.md...) into ``directory`` (new or
        empty); ``on_progress(bytes_done, bytes_total)`` follows each file."""
        directory = Path(directory)
        check_destination(directory)
        directory.mkdir(parents=True, exist_ok=True)
        saved = []
        for file in export_files(self.get_export(job_id, export_id)):
            self._save(_api.export_file_path(job_id, export_id, file), directory / file, on_progress)
            saved.append(directory / file)
        return saved

    # Saved configs

    def save_config(self, name: str, config: dict[str, Any]) -> ConfigSaved:
        """Save a named config template (it may leave fields out)."""
        return self._run(_api.save_config(name, config))

    def list_configs(self) -> list[SavedConfig]:
        return self._run(_api.list_configs())

    def get_config(self, config_id: str) -> SavedConfig:
        return self._run(_api.get_config(config_id))

    def delete_config(self, config_id: str) -> str:
        return self._run(_api.delete_config(config_id))

    # Webhooks

    def create_webhook(self, url: str, *, events: list[str] | None = None, scope: str = "user",
                       description: str | None = None) -> WebhookCreated:
        """Register a webhook endpoint; its ``secret`` (whsec_...) is in this answer only. ``events``: default a
        job's end (fine_tuning.job.succeeded, .failed, .cancelled); ``scope="global"`` needs an admin key."""
        return self._run(_api.create_webhook(url, events=events, scope=scope, description=description))

    def list_webhooks(self) -> list[Webhook]:
        return self._run(_api.list_webhooks())

    def get_webhook(self, webhook_id: str) -> Webhook:
        return self._run(_api.get_webhook(webhook_id))

    def delete_webhook(self, webhook_id: str) -> Webhook:
        """Delete an endpoint with its deliveries."""
        return self._run(_api.delete_webhook(webhook_id))

    def webhook_deliveries(self, webhook_id: str, *, limit: int = 100) -> list[Delivery]:
        """The endpoint's deliveries, newest first, each with every attempt."""
        return self._run(_api.webhook_deliveries(webhook_id, limit=limit))

    def redeliver(self, webhook_id: str, delivery_id: str) -> Delivery:
        """Send a delivery again now (same webhook-id)."""
        return self._run(_api.redeliver(webhook_id, delivery_id))


class _BuildOnly:
    """Stands in for a client when a sync method is asked only for its request: ``_run`` hands back the
    :class:`Call` the method built, unsent."""

    @staticmethod
    def _run(call: Call[T]) -> Call[T]:
        return call


def _awaited(method: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """``SFTClient.method`` for the async client: the sync method builds the request, this awaits it."""

    @functools.wraps(method)
    async def awaited(self: AsyncSFTClient, *args: Any, **kwargs: Any) -> T:
        return await self._run(method(_BuildOnly, *args, **kwargs))

    return awaited


class AsyncSFTClient(_Base):
    """The asyncio twin of :class:`SFTClient`: the same methods and arguments, awaited
    (``follow`` is an async iterator). Only what loops over I/O (``follow``, ``wait``, ``download``)
    is written again for asyncio; every other method is derived from SFTClient's."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0, *,
                 max_retries: int = 2, backoff: float = 0.5, work_timeout: float = 1800.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, api_key, timeout, max_retries=max_retries, backoff=backoff,
                         work_timeout=work_timeout)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSFTClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(**self._request_args(call))
            except httpx.TransportError as error:
                delay = self._retry_delay(call.repeatable, attempt, error=error)
                if delay is None:
                    raise self._connection_error(error) from error
            else:
                delay = self._retry_delay(call.repeatable, attempt, response=response) if response.is_error else None
                if delay is None:
                    if response.is_error:
                        raise error_from_response(response)
                    return call.parse(response.json())
            await asyncio.sleep(delay)
            attempt += 1

    async def _open_stream(self, path: str, *, headers: dict[str, str], timeout: httpx.Timeout) -> httpx.Response:
        attempt = 0
        while True:
            request = self._http.build_request("GET", path, headers=headers, timeout=timeout)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as error:
                delay = self._retry_delay(False, attempt, error=error)
                if delay is None:
                    raise self._connection_error(error) from error
                await asyncio.sleep(delay)
                attempt += 1
                continue
            if response.is_error:
                await response.aread()
                await response.aclose()
                raise error_from_response(response)
            return response

    async def follow(self, job_id: str, *, after: int = 0, reconnect_timeout: float = 300.0,
                     on_disconnect: Callable[[Exception], None] | None = None,
                     on_reconnect: Callable[[], None] | None = None) -> AsyncIterator[Event]:
        last, lost_since = after, None
        while True:
            try:
                response = await self._open_stream(_api.events_path(job_id), headers=self._stream_headers(last),
                                                   timeout=self._stream_timeout())
                if lost_since is not None:
                    lost_since = None
                    if on_reconnect:
                        on_reconnect()
                try:
                    decoder = SSEDecoder()
                    async for line in response.aiter_lines():
                        event = decoder.feed(line)
                        if event is None:
                            continue
                        last = event.seq
                        yield event
                        if event.is_terminal:
                            return
                finally:
                    await response.aclose()
                if (await self.get_job(job_id)).is_terminal:
                    return
                await asyncio.sleep(self.backoff)
            except (httpx.TransportError, APIConnectionError) as error:
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    if on_disconnect:
                        on_disconnect(error)
                if now - lost_since > reconnect_timeout:
                    raise APIConnectionError(f"lost the event stream of job {job_id} and could not reconnect "
                                             f"to {self.base_url} for {reconnect_timeout:.0f} s: {error}") from error
                await asyncio.sleep(min(self.backoff * 2, MAX_BACKOFF_SECONDS))

    async def wait(self, job_id: str, **follow_options: Any) -> Job:
        async for _ in self.follow(job_id, **follow_options):
            pass
        return await self.get_job(job_id)

    async def download(self, job_id: str, directory: str | Path, *,
                       on_progress: ProgressCallback | None = None) -> Path:
        directory = Path(directory)
        check_destination(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".sft-download-", dir=directory.parent) as scratch:
            archive = Path(scratch) / "adapter.tar.gz"
            await self._save(_api.adapter_path(job_id), archive, on_progress)
            (Path(scratch) / "unpacked").mkdir()
            return await asyncio.to_thread(unpack, archive, directory, scratch=Path(scratch) / "unpacked")

    async def _save(self, path: str, destination: Path, on_progress: ProgressCallback | None) -> None:
        timeout = httpx.Timeout(self.timeout, read=self.work_timeout)
        response = await self._open_stream(path, headers={}, timeout=timeout)
        try:
            with destination.open("wb") as file:
                total = int(response.headers.get("content-length") or 0) or None
                done = 0
                async for chunk in response.aiter_bytes(1 << 20):
                    file.write(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(done, total)
        except httpx.TransportError as error:
            raise self._connection_error(error) from error
        finally:
            await response.aclose()

    async def wait_export(self, job_id: str, export_id: str, *, poll_seconds: float = 1.0) -> Export:
        while (export := await self.get_export(job_id, export_id)).status not in EXPORT_ENDED:
            await asyncio.sleep(poll_seconds)
        return export

    async def download_export(self, job_id: str, export_id: str, directory: str | Path, *,
                              on_progress: ProgressCallback | None = None) -> list[Path]:
        directory = Path(directory)
        check_destination(directory)
        directory.mkdir(parents=True, exist_ok=True)
        saved = []
        for file in export_files(await self.get_export(job_id, export_id)):
            await self._save(_api.export_file_path(job_id, export_id, file), directory / file, on_progress)
            saved.append(directory / file)
        return saved

    # The endpoints without I/O loops of their own: SFTClient's methods, awaited (same arguments, docs).
    health = _awaited(SFTClient.health)
    list_models = _awaited(SFTClient.list_models)
    config_schema = _awaited(SFTClient.config_schema)
    train = _awaited(SFTClient.train)
    plan = _awaited(SFTClient.plan)
    list_jobs = _awaited(SFTClient.list_jobs)
    get_job = _awaited(SFTClient.get_job)
    stop_job = _awaited(SFTClient.stop_job)
    resume_job = _awaited(SFTClient.resume_job)
    delete_job = _awaited(SFTClient.delete_job)
    checkpoints = _awaited(SFTClient.checkpoints)
    metrics = _awaited(SFTClient.metrics)
    logs = _awaited(SFTClient.logs)
    events = _awaited(SFTClient.events)
    generate = _awaited(SFTClient.generate)
    evaluate = _awaited(SFTClient.evaluate)
    merge = _awaited(SFTClient.merge)
    export_formats = _awaited(SFTClient.export_formats)
    export = _awaited(SFTClient.export)
    list_exports = _awaited(SFTClient.list_exports)
    get_export = _awaited(SFTClient.get_export)
    delete_export = _awaited(SFTClient.delete_export)
    save_config = _awaited(SFTClient.save_config)
    list_configs = _awaited(SFTClient.list_configs)
    get_config = _awaited(SFTClient.get_config)
    delete_config = _awaited(SFTClient.delete_config)
    create_webhook = _awaited(SFTClient.create_webhook)
    list_webhooks = _awaited(SFTClient.list_webhooks)
    get_webhook = _awaited(SFTClient.get_webhook)
    delete_webhook = _awaited(SFTClient.delete_webhook)
    webhook_deliveries = _awaited(SFTClient.webhook_deliveries)
    redeliver = _awaited(SFTClient.redeliver)
