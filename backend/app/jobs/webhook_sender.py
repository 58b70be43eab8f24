"""How webhooks leave the server: the URL rule, Standard Webhooks signing, one HTTP attempt, and the
sender thread that works through the outbox.

- **Signing** (Standard Webhooks, as OpenAI signs its own): ``webhook-id`` (the delivery's id, the same on
  every retry), ``webhook-timestamp`` (seconds), ``webhook-signature: v1,<base64 HMAC-SHA256 of
  "id.timestamp.body" under the secret's bytes>``; ``openai.OpenAI(webhook_secret=...).webhooks.unwrap``
  verifies it.
- **Safety**: the host is resolved, every address checked (loopback, private, link-local, metadata and
  other non-global addresses are refused unless allowed), and the request goes to the address checked,
  so a DNS answer that changes in between (rebinding) cannot redirect it. Redirects are not followed;
  only a short prefix of the answer is read and kept; one attempt takes at most the timeout, a watchdog
  closes a receiver that drips its answer.
- **The sender**: one thread reads due deliveries from the store and hands each to a small pool, at most
  one in flight per endpoint, so a dead or slow receiver holds one worker and delays only its own
  deliveries. It never holds the manager's lock: training, the API and other receivers do not wait for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

#: The longest wait between two attempts of one delivery.
MAX_BACKOFF_SECONDS = 3600.0
#: Characters of a receiver's answer kept with an attempt (the rest is not read).
RESPONSE_PREFIX_CHARS = 256
#: How often the sender looks at the outbox when nobody wakes it.
POLL_SECONDS = 1.0
USER_AGENT = "sft-service-webhooks/1"


class UnsafeUrl(ValueError):
    """A webhook URL that may not be used; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where one attempt goes: the URL's parts and the address checked for it."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


def parse_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path with query)`` of an http(s) URL. Raises UnsafeUrl."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"{url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"{url!r} must start with http:// or https://")
    if not parts.hostname:
        raise UnsafeUrl(f"{url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl(f"{url!r} carries credentials; put a secret in the path or verify the signature instead")
    if parts.fragment:
        raise UnsafeUrl(f"{url!r} has a #fragment, which is never sent")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def is_public(address: str) -> bool:
    """Whether ``address`` is a global unicast address (not loopback, private, link-local, shared, reserved,
    multicast or a metadata service's)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def lookup(host: str, port: int) -> list[str]:
    """The host's addresses: an address as it is, a name through DNS (tests without a network replace this)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def resolve(url: str, *, allow_private: bool,
            policy: str = "webhooks go to public addresses only (SFT_WEBHOOKS_ALLOW_PRIVATE=true allows them)") -> Target:
    """The URL's target: its host resolved now, every address checked unless ``allow_private``.

    Raises:
        UnsafeUrl: a malformed URL, a host that does not resolve, or one with a non-public address.
    """
    scheme, host, port, path = parse_url(url)
    try:
        addresses = lookup(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl(f"host {host} does not resolve ({exc})") from None
    if not allow_private:
        refused = [address for address in addresses if not is_public(address)]
        if refused:
            raise UnsafeUrl(f"host {host} resolves to {refused[0]}, a loopback, private, link-local or metadata "
                            f"address; {policy}")
    return Target(scheme, host, port, path, addresses[0])


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header of ``body`` (Standard Webhooks ``v1``)."""
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def backoff(attempts: int, first: float) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: ``first``, then doubling, at most an hour."""
    return min(first * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to the address checked, whatever the host name resolves to by now."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the address checked; the certificate is verified for the host name."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass(frozen=True)
class Outcome:
    """One attempt: the answer's status (None: no answer), its start of body, an error, the time it took."""

    status_code: int | None
    response: str | None
    error: str | None
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, *, webhook_id: str, body: str, secret: str, timeout: float, allow_private: bool) -> Outcome:
    """Send one signed delivery (one attempt, no redirects followed). Never raises."""
    started = time.monotonic()

    def outcome(status: int | None = None, response: str | None = None, error: str | None = None) -> Outcome:
        return Outcome(status, response, error, round((time.monotonic() - started) * 1000, 1))

    try:
        target = resolve(url, allow_private=allow_private)
    except UnsafeUrl as exc:
        return outcome(error=f"refused: {exc}")
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "webhook-id": webhook_id,
               "webhook-timestamp": str(timestamp), "webhook-signature": sign(secret, webhook_id, timestamp, body)}
    cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = cls(target, timeout)
    expired = threading.Event()

    def expire() -> None:  # a receiver that drips its answer byte by byte would reset a socket timeout forever
        expired.set()
        if connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target.path, body=body.encode(), headers=headers)
        answer = connection.getresponse()
        prefix = answer.read(RESPONSE_PREFIX_CHARS * 4).decode("utf-8", "replace")[:RESPONSE_PREFIX_CHARS]
        error = None
        if 300 <= answer.status < 400:
            error = f"redirect to {answer.getheader('Location')!r} not followed"
        elif not 200 <= answer.status < 300:
            error = f"answered {answer.status}"
        return outcome(answer.status, prefix, error)
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set() or isinstance(exc, socket.timeout):
            return outcome(error=f"timed out after {timeout:g} s")
        return outcome(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        watchdog.cancel()
        connection.close()


class Sender:
    """The thread that delivers due outbox rows (see the module's docstring).

    Args:
        store: the store, read each time (the manager's may be swapped).
        deliver: ``deliver(row)``: one attempt of a due delivery, recorded (``Webhooks.attempt``).
        requeue: ``requeue(delivery_id)``: queue a delivery again now (a redelivery asked during its attempt).
        workers: deliveries in flight at once.
    """

    def __init__(self, store: Callable[[], Any], deliver: Callable[[dict[str, Any]], None],
                 requeue: Callable[[str], None], *, workers: int):
        self._store = store
        self._deliver = deliver
        self._requeue = requeue
        self._workers = workers
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.in_flight: dict[str, str] = {}  # delivery id -> endpoint id
        self._redo: set[str] = set()

    def start(self) -> None:
        """Start the thread (if it is not running)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._closing = threading.Event()
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="sft-webhook")
            # A daemon: a stopping server does not wait for a slow receiver; what was in flight is still
            # pending in the outbox and goes again after the restart, with the same webhook-id.
            self._thread = threading.Thread(target=self._run, name="sft-webhook-sender", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking deliveries; wait a little for the thread (attempts in flight are not awaited)."""
        with self._lock:
            thread, pool = self._thread, self._pool
            self._thread = self._pool = None
            self._closing.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def redo_after(self, delivery_id: str) -> bool:
        """If the delivery is in flight, note that it goes again once its attempt is recorded (True)."""
        with self._lock:
            if delivery_id in self.in_flight:
                self._redo.add(delivery_id)
                return True
            return False

    def _run(self) -> None:
        closing, pool = self._closing, self._pool
        while not closing.is_set():
            self._wake.clear()
            try:
                due = self._store().due_webhook_deliveries(time.time(), limit=200)
                for row in due:
                    if closing.is_set():
                        return
                    with self._lock:
                        if row["delivery_id"] in self.in_flight or row["endpoint_id"] in self.in_flight.values():
                            continue
                        self.in_flight[row["delivery_id"]] = row["endpoint_id"]
                    pool.submit(self._attempt, row)
                upcoming = self._store().next_webhook_due()
            except Exception as exc:  # noqa: BLE001 - a closed store ends the sender; anything else is logged
                if "closed" in str(exc):
                    return
                logger.exception("webhook sender: reading the outbox failed")
                upcoming = None
            # Due now yet not taken: in flight (or its endpoint is); the attempt's end wakes the thread.
            now = time.time()
            self._wake.wait(POLL_SECONDS if upcoming is None or upcoming <= now else min(POLL_SECONDS, upcoming - now))

    def _attempt(self, row: dict[str, Any]) -> None:
        try:
            self._deliver(row)
        except Exception:  # noqa: BLE001 - one delivery's trouble must not end the sender
            logger.exception("webhook delivery %s: recording the attempt failed", row["delivery_id"])
        finally:
            with self._lock:
                self.in_flight.pop(row["delivery_id"], None)
                redo = row["delivery_id"] in self._redo
                self._redo.discard(row["delivery_id"])
            if redo:
                try:
                    self._requeue(row["delivery_id"])
                except Exception:  # noqa: BLE001
                    logger.exception("webhook delivery %s: queueing it again failed", row["delivery_id"])
            self._wake.set()
