"""The client's exceptions: one per kind of failure, each carrying the server's ``detail``."""

from __future__ import annotations

from typing import Any

import httpx


class SFTError(Exception):
    """Base of every error the client raises."""


class APIConnectionError(SFTError):
    """The server could not be reached, or the connection was lost before an answer came."""


class APITimeoutError(APIConnectionError):
    """The server did not answer in time."""


class DownloadError(SFTError):
    """A downloaded archive cannot be unpacked where it was asked to go."""


class APIStatusError(SFTError):
    """The server answered with an error status; ``detail`` is its explanation, and ``errors`` (a 400 or
    422) each problem as ``{"field", "message", "type"}``."""

    def __init__(self, status_code: int, detail: str, *, body: Any = None):
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.body = body
        errors = body.get("errors") if isinstance(body, dict) else None
        self.errors: list[dict[str, Any]] = errors if isinstance(errors, list) else []


class BadRequestError(APIStatusError):
    """400: the request cannot run (a config field, a dataset line, a path); ``detail`` names it."""


class AuthenticationError(APIStatusError):
    """401: no API key, or an unknown one."""


class PermissionDeniedError(APIStatusError):
    """403: the key (or the request's origin) is not allowed to do this."""


class NotFoundError(APIStatusError):
    """404: no such job, config or checkpoint."""


class ConflictError(APIStatusError):
    """409: the job's state does not allow it (stop a finished job, use one still training...)."""


class UnprocessableEntityError(APIStatusError):
    """422: the request body does not have the API's shape."""


class RateLimitError(APIStatusError):
    """429: too many requests."""


class ServiceUnavailableError(APIStatusError):
    """503: the request could run, but not now (every training slot is busy...)."""


class InternalServerError(APIStatusError):
    """5xx other than 503: the server failed."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> APIStatusError:
    """The exception for an error ``response`` (its body must have been read)."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    detail = _detail_text(body.get("detail", body) if isinstance(body, dict) else body)
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else APIStatusError
    return cls(response.status_code, detail or response.reason_phrase, body=body)


def _detail_text(detail: Any) -> str:
    # The service answers a string; servers before the one error shape answered a 422 with FastAPI's
    # list of {loc, msg}.
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return detail if isinstance(detail, str) else str(detail)
