"""API keys at the edge: who is calling, whether the server may start, and the 401 answer.

- ``AuthGate`` (plain ASGI middleware) reads the key from ``Authorization: Bearer <key>`` or
  ``X-API-Key`` on every request and puts the caller (a ``Principal``) in the request scope. With
  keys on, any path that is not open (``/health``, the dashboard page and its assets, the API docs)
  answers 401 with ``WWW-Authenticate: Bearer`` without a valid key: a route added later is
  protected without saying so.
- ``resolve_auth_mode`` decides at start-up: ``SFT_AUTH`` when set; otherwise off on a loopback
  address and keys on any other, where it refuses to start while no key exists.
- Ownership (another user's object answers 404) is enforced by the dependencies in ``deps.py``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.errors import ServiceError
from ..core.settings import Settings
from ..store.keys import KeyStore
from .guard import exposure_warning, host_name, is_loopback

logger = logging.getLogger(__name__)

#: Where AuthGate leaves the caller in the ASGI scope (None: anonymous, on an open path).
USER_SCOPE_KEY = "sft.user"
#: Paths any caller may load: liveness and the pages (which then ask for a key). They show no user's data.
OPEN_PATHS = frozenset({"/health", "/", "/docs", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/static/",)
KEY_HELP = ("send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>' (an admin creates one with: "
            "python -m app keys create --name NAME)")
MISSING_KEY = f"An API key is required: {KEY_HELP}"
INVALID_KEY = "The API key is not valid: it is malformed, unknown or revoked"


@dataclass(frozen=True)
class Principal:
    """The caller: a key's user, or the local user when keys are off (who is admin)."""

    #: The key's name: the owner recorded on what the caller creates (None with keys off).
    name: str | None
    admin: bool
    key_id: str | None = None

    @property
    def owner(self) -> str | None:
        """What new jobs, configs and files record as their owner."""
        return self.name

    @property
    def scope(self) -> str | None:
        """The owner a list shows the objects of; None: everyone's (admins)."""
        return None if self.admin else self.name

    def sees(self, owner: str | None) -> bool:
        """Whether this caller may see and act on an object of ``owner`` (None: made before keys, the admins')."""
        return self.admin or (owner is not None and owner == self.name)


#: The caller while keys are off: anyone who reaches a loopback port is the machine's user.
LOCAL_USER = Principal(name=None, admin=True)


class Unauthenticated(ServiceError):
    status_code = 401

    def __init__(self, detail: str = MISSING_KEY):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class AdminRequired(ServiceError):
    status_code = 403

    def __init__(self) -> None:
        super().__init__("This needs an admin key (python -m app keys create --name NAME --admin)")


class AuthSetupError(RuntimeError):
    """The server must not start as configured; the message says what to do."""


def bind_host(argv: Sequence[str], environ: dict[str, str] | None = None, explicit: str | None = None) -> str:
    """The address the server listens on: ``explicit`` (``python -m app serve``), uvicorn's ``--host``
    on the command line, ``UVICORN_HOST``, else uvicorn's default 127.0.0.1. A Unix socket is local."""
    if explicit:
        return explicit
    environ = os.environ if environ is None else environ
    for i, arg in enumerate(argv):
        if arg == "--host" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--host="):
            return arg.split("=", 1)[1]
        if arg == "--uds" or arg.startswith("--uds="):
            return "127.0.0.1"
    return environ.get("UVICORN_HOST") or "127.0.0.1"


def resolve_auth_mode(setting: str | None, host: str, keys: KeyStore) -> str:
    """'off' or 'keys' for a server listening on ``host``.

    Raises:
        AuthSetupError: no SFT_AUTH, a non-loopback ``host`` and no key yet.
    """
    if setting is not None:
        return setting
    if is_loopback(host_name(host)):
        return "off"
    if keys.active_count() > 0:
        return "keys"
    raise AuthSetupError(
        f"Refusing to start: this server would listen on {host}, a non-loopback address, and no API key exists, "
        "so anyone who can reach it could train, read every job and delete them. Create a key first: "
        "python -m app keys create --name admin --admin (clients then send 'Authorization: Bearer <key>'), "
        "or set SFT_AUTH=off to serve without keys on purpose."
    )


def startup_warning(mode: str, host: str, keys: KeyStore) -> str | None:
    """What to log at start-up about authentication, if anything."""
    if mode == "off":
        return exposure_warning(host)
    if mode == "keys" and keys.active_count() == 0:
        return ("SFT_AUTH=keys and no API key exists yet: every API call will be refused. Create one with: "
                "python -m app keys create --name admin --admin")
    return None


def presented_key(headers: Headers) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>`` first, then ``X-API-Key``."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    value = headers.get("x-api-key")
    return value.strip() if value and value.strip() else None


class AuthGate:
    """ASGI middleware: the caller of every request, and a 401 where keys are on and none is valid.

    The mode lives in ``app.state.auth_mode`` (set by create_app, settled by the lifespan). The key
    store is ``app.state.keys``. ``implicit_off`` (SFT_AUTH unset) also refuses requests that reach
    a non-loopback address while keys are off: a server started where the host could not be known
    still serves no one beyond this machine without keys.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        path = scope.get("path", "")
        open_path = path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
        if state.auth_mode == "off":
            if state.auth_implicit and not open_path and _non_loopback_ip(scope):
                await _reply(send, 403, path, "This server has no API keys and was reached on a non-loopback "
                             "address; create a key (python -m app keys create --name admin --admin) and restart it, "
                             "or set SFT_AUTH=off to serve without keys on purpose", www_authenticate=False)
                return
            scope[USER_SCOPE_KEY] = LOCAL_USER
            await self.app(scope, receive, send)
            return
        key = presented_key(Headers(scope=scope))
        user = None
        if key is not None:
            record = state.keys.verify(key) if state.keys is not None else None
            if record is not None:
                user = Principal(name=record.name, admin=record.admin, key_id=record.key_id)
        if user is None and not open_path:
            await _reply(send, 401, path, MISSING_KEY if key is None else INVALID_KEY)
            return
        scope[USER_SCOPE_KEY] = user
        await self.app(scope, receive, send)


def document_keys(app: Any) -> None:
    """Declare the two ways to send a key in ``app``'s OpenAPI document, on every operation but the open
    ones (so /docs' Authorize button applies it), and the 401 they may answer."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path, operations in schema["paths"].items():
                if path in OPEN_PATHS:
                    continue
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
                    operation.setdefault("responses", {})["401"] = {
                        "description": "No API key, or not a valid one (servers with keys: SFT_AUTH)"}
        return app.openapi_schema

    app.openapi = openapi


def _non_loopback_ip(scope: Scope) -> bool:
    server = str((scope.get("server") or ("",))[0] or "")
    try:
        address = ipaddress.ip_address(server)
    except ValueError:
        return False  # a test client's made-up name, a Unix socket
    return not address.is_loopback


async def _reply(send: Send, status: int, path: str, message: str, *, www_authenticate: bool = True) -> None:
    # Each API surface keeps its error shape: OpenAI's envelope on /v1 (the SDK raises AuthenticationError).
    if path == "/v1" or path.startswith("/v1/"):
        code = "invalid_api_key" if status == 401 else "forbidden"
        content = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    else:
        content = {"detail": message}
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if www_authenticate:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
