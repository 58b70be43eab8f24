"""RequestGuard: what every request must pass before a route sees it.

- **Host**: only names this server answers to (loopback names, the address the request came in
  on, ``SFT_ALLOWED_HOSTS``), so a DNS-rebound name pointing at 127.0.0.1 gets a 400, not the API.
- **Cross-site writes**: a state-changing request (POST, PUT, PATCH, DELETE) is refused with a 403
  when it carries an ``Origin`` that is neither this server nor in ``SFT_ALLOWED_ORIGINS``, and with
  a 415 when its Content-Type is one a web form can send cross-site without a preflight
  (form-urlencoded, multipart, text/plain). Browsers send ``Origin`` on every cross-site POST;
  curl and the Python client send none, and the body-less POSTs (``/stop``, ``/resume``,
  ``/merge``) need no Content-Type, so command-line use is unchanged.
- **Text**: a JSON body holding an unpaired surrogate (``"\\ud800"``) is a 400 naming the field,
  whatever the route (:mod:`app.core.bodies`), so nothing that cannot be encoded is ever stored.
- **Body size**: at most ``SFT_MAX_REQUEST_BYTES`` (413), by Content-Length or as it streams in; a file
  upload path (POST /v1/files) takes multipart bodies, up to its own limit (SFT_MAX_UPLOAD_BYTES).

A plain ASGI middleware (no ``BaseHTTPMiddleware``), so SSE streams pass through untouched.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.bodies import check_json_body

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Content types a cross-site HTML form (or a no-cors fetch) may send without a CORS preflight.
FORM_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})


def host_name(value: str) -> str:
    """The host of a Host header or netloc, lowercased, without the port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def exposure_warning(host: str) -> str | None:
    """The warning to log when the server listens on a non-loopback ``host``; None when it does not."""
    if is_loopback(host_name(host)):
        return None
    return (f"Serving on {host}, a non-loopback address: this API has no authentication (SFT_AUTH=off), so anyone "
            "who can reach it can start and stop jobs, read their outputs and use the models. Create API keys "
            "(python -m app keys create --name admin --admin) and unset SFT_AUTH, or bind to 127.0.0.1.")


class RequestGuard:
    """ASGI middleware: Host allow-list, cross-site write refusal, request body limit."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = (),
                 max_body_bytes: int, uploads: dict[str, int] | None = None):
        self.app = app
        #: Paths that take a multipart file upload (same-origin or Origin-less only, as every write),
        #: and the most bytes each accepts instead of ``max_body_bytes``.
        self.uploads = dict(uploads or {})
        hosts = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in hosts
        self.allowed_hosts = LOOPBACK_HOSTS | hosts
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.max_body_bytes = max_body_bytes
        self._warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        server = scope.get("server") or ("", None)
        if getattr(scope["app"].state, "auth_mode", "off") == "off":
            self._warn_once(str(server[0] or ""))
        problem = self._problem(scope, headers, server_host=host_name(str(server[0] or "")))
        if problem is not None:
            await _reply(send, *problem)
            return
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        is_json = media_type == "application/json" or media_type.endswith("+json")
        await self.app(scope, self._limited(receive, self._body_limit(scope), check_json=is_json), send)

    def _problem(self, scope: Scope, headers: Headers, *, server_host: str) -> tuple[int, str] | None:
        host = host_name(headers.get("host", ""))
        if not (self.any_host or host in self.allowed_hosts or host == server_host):
            return 400, (f"Host header {headers.get('host', '')!r} is not one this server answers to "
                         f"({', '.join(sorted(self.allowed_hosts | {server_host} - {''}))}); "
                         "add it to SFT_ALLOWED_HOSTS if clients really use that name")
        length = headers.get("content-length")
        limit = self._body_limit(scope)
        if length is not None and length.isdigit() and int(length) > limit:
            setting = "SFT_MAX_REQUEST_BYTES" if limit == self.max_body_bytes else "SFT_MAX_UPLOAD_BYTES"
            return 413, (f"the request body is {int(length):,} bytes; this server accepts at most "
                         f"{limit:,} ({setting})")
        if scope["method"] not in STATE_CHANGING_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and not self._same_or_allowed_origin(origin, scope.get("scheme", "http"),
                                                                    headers.get("host", "")):
            return 403, (f"cross-site request refused: Origin {origin!r} may not change anything on this server "
                         "(add it to SFT_ALLOWED_ORIGINS to allow it)")
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        upload = media_type == "multipart/form-data" and self._is_upload(scope)
        if media_type in FORM_CONTENT_TYPES and not upload:
            return 415, (f"Content-Type {media_type} is not accepted: send JSON with Content-Type: "
                         "application/json, or no body at all")
        return None

    def _same_or_allowed_origin(self, origin: str, scheme: str, host_header: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme == scheme and bool(parts.netloc) and parts.netloc == host_header.strip().lower()

    def _is_upload(self, scope: Scope) -> bool:
        # Any method: the router answers a PUT to an upload path with its own 405, not a 415 from here.
        return scope.get("path") in self.uploads

    def _body_limit(self, scope: Scope) -> int:
        return self.uploads[scope["path"]] if self._is_upload(scope) else self.max_body_bytes

    def _limited(self, receive: Receive, limit: int, *, check_json: bool) -> Receive:
        received = 0
        chunks: list[bytes] = []
        setting = "SFT_MAX_REQUEST_BYTES" if limit == self.max_body_bytes else "SFT_MAX_UPLOAD_BYTES"

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside FastAPI's body parsing, which passes HTTPExceptions on: a 413.
                    raise HTTPException(413, f"the request body is over {limit:,} bytes, the most this server "
                                             f"accepts ({setting})")
                if check_json:
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        check_json_body(b"".join(chunks))  # a BodyRejected (400) where FastAPI parses it
            return message

        return limited

    def _warn_once(self, server_host: str) -> None:
        # A server reports the IP address a connection came in on (test clients, a made-up name).
        if self._warned or not _is_ip(server_host):
            return
        self._warned = True
        warning = exposure_warning(server_host)
        if warning:
            logger.warning(warning)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
