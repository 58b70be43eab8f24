"""Domain errors and their HTTP mapping, registered once on the app.

The exceptions import nothing from FastAPI so the job manager can raise them anywhere. The training
core (``app.sft``) raises its own errors; :func:`from_sft_error` is the one place they become these.

Outside /v1 every error answers ``{"detail": "<one string>"}``; a 400 (a request that cannot run) and
a 422 (a body that does not parse) also carry ``"errors": [{"field", "message", "type"}, ...]``, one
per problem, ``field`` a dotted path (``config.lora_r``) or null when no one field is at fault.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..sft import errors as sft
from .bodies import BodyRejected

if TYPE_CHECKING:
    from fastapi import FastAPI


class ServiceError(Exception):
    """Base of the errors the service raises on purpose; ``status_code`` is the HTTP mapping."""

    status_code = 500
    #: The ``type`` of the entries of its structured ``errors``.
    error_type = "service_error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None,
                 errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self._errors = errors

    @property
    def errors(self) -> list[dict[str, Any]]:
        """One ``{"field", "message", "type"}`` per problem: as given, else read from ``detail``'s
        ``field: message`` clauses (``config.x: ...; config.y: ...``)."""
        if self._errors is not None:
            return self._errors
        return clauses(self.detail, error_type=self.error_type)


class InvalidConfig(ServiceError, ValueError):
    """The submitted config or request cannot run; ``detail`` names the field, file and line.

    ``field`` names the one field at fault when ``detail`` does not begin with it; ``errors`` gives
    the structured problems outright (otherwise they are read from ``detail``).
    """

    status_code = 400
    error_type = "invalid_config"

    def __init__(self, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None,
                 errors: list[dict[str, Any]] | None = None):
        if errors is None and field is not None:
            errors = [{"field": field, "message": detail.removeprefix(f"{field}: "), "type": self.error_type}]
        super().__init__(detail, headers=headers, errors=errors)


class JobNotFound(ServiceError, LookupError):
    status_code = 404
    error_type = "not_found"

    def __init__(self, job_id: str):
        super().__init__(f"Job {job_id} not found")
        self.job_id = job_id


class ConfigNotFound(ServiceError, LookupError):
    status_code = 404
    error_type = "not_found"

    def __init__(self, config_id: str):
        super().__init__(f"Config {config_id} not found")
        self.config_id = config_id


class CheckpointNotFound(ServiceError, LookupError):
    """The job has no checkpoint of that name."""

    status_code = 404
    error_type = "not_found"


class JobConflict(ServiceError):
    """The request does not fit the job's state (stop a finished job, delete a running one...)."""

    status_code = 409
    error_type = "conflict"


class QuotaExceeded(ServiceError):
    """The user already has as many pending and running jobs as a key may (SFT_MAX_ACTIVE_JOBS_PER_KEY)."""

    status_code = 429
    error_type = "quota_exceeded"


class ServiceBusy(ServiceError):
    """The request could run, but not now."""

    status_code = 503


class RequestTimedOut(ServiceError):
    """A model request ran past the server's time limit and was stopped."""

    status_code = 504


class RequestCancelled(ServiceError):
    """The client went away (or the server is stopping); the work was stopped. Nobody reads the answer."""

    #: nginx's "client closed request": there is no standard status for it.
    status_code = 499


#: A clause of a detail: a field (a dotted path, maybe with [n] indexes) and its message.
_CLAUSE = re.compile(r"^(?P<field>[A-Za-z_][\w\-]*(?:\[\d+\])*(?:\.[\w\-]+(?:\[\d+\])*)*): (?P<message>.+)$", re.S)
#: Where one clause ends: "; " before the next "field: ".
_NEXT_CLAUSE = re.compile(r"; (?=[A-Za-z_][\w\-]*(?:\[\d+\])*(?:\.[\w\-]+(?:\[\d+\])*)*: )")


def clauses(detail: str, *, error_type: str) -> list[dict[str, Any]]:
    """``detail`` as structured errors: one per ``field: message`` clause; the whole detail with a null
    field when it does not begin with a field."""
    found = []
    for part in _NEXT_CLAUSE.split(detail):
        match = _CLAUSE.match(part)
        if match is None:
            return [{"field": None, "message": detail, "type": error_type}]
        found.append({"field": match["field"], "message": match["message"], "type": error_type})
    return found


#: The training core's errors: the service error each becomes (its HTTP status), and the errors' type.
_SFT_ERRORS: list[tuple[type[sft.SFTError], type[ServiceError], str]] = [
    (sft.ConfigError, InvalidConfig, "invalid_config"),
    (sft.DatasetError, InvalidConfig, "invalid_dataset"),
    (sft.ModelError, InvalidConfig, "invalid_model"),
    (sft.RequestError, InvalidConfig, "invalid_request"),
    (sft.ArtifactUnavailable, JobConflict, "conflict"),
    (sft.CheckpointMissing, CheckpointNotFound, "not_found"),
    (sft.GenerationCancelled, RequestCancelled, "cancelled"),
    (sft.GenerationTimedOut, RequestTimedOut, "timed_out"),
]


def from_sft_error(exc: sft.SFTError) -> ServiceError:
    """The service error (and so the HTTP status) of a training-core error; its message is the detail,
    prefixed by its ``field`` when it does not already begin with it."""
    detail = str(exc)
    field = exc.field
    if field and not detail.startswith(f"{field}: "):
        detail = f"{field}: {detail}"
    for kind, service_error, error_type in _SFT_ERRORS:
        if isinstance(exc, kind):
            return service_error(detail, errors=clauses(detail, error_type=error_type))
    return ServiceError(detail)


def error_body(exc: ServiceError) -> dict[str, Any]:
    """``{"detail"}``, and ``errors`` beside it for a 400."""
    if exc.status_code == 400:
        return {"detail": exc.detail, "errors": exc.errors}
    return {"detail": exc.detail}


def validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's request validation errors as ``{"field", "message", "type"}``: the field a dotted path
    inside the body (or the query or path parameter's name)."""
    out = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error")
            position = f" at position {loc[1]}" if len(loc) > 1 else ""
            out.append({"field": "body", "message": f"{message}{position}" + (f": {reason}" if reason else ""),
                        "type": "json_invalid"})
            continue
        path = loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else loc
        field = ".".join(path) or (loc[0] if loc else None)
        out.append({"field": field, "message": message, "type": str(error.get("type", "value_error"))})
    return out


def register_error_handlers(app: FastAPI) -> None:
    """Map every ``ServiceError`` (and the training core's errors) to its status with ``{"detail": ...}``,
    and render request validation errors (422) in the same shape, the input they echo left out."""
    import json

    from fastapi import Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class ASCIIJSONResponse(JSONResponse):
        # An unpaired surrogate (valid as a JSON \\u escape) cannot be encoded as UTF-8: FastAPI's own
        # 422 handler would fail with a 500 echoing it. ASCII JSON escapes it instead.
        def render(self, content) -> bytes:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")

    async def handle(request: Request, exc: ServiceError) -> JSONResponse:
        return ASCIIJSONResponse(status_code=exc.status_code, content=error_body(exc), headers=exc.headers)

    async def handle_sft(request: Request, exc: sft.SFTError) -> JSONResponse:
        return await handle(request, from_sft_error(exc))

    async def handle_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(jsonable_encoder(exc.errors()))
        detail = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
        return ASCIIJSONResponse(status_code=422, content={"detail": detail, "errors": errors})

    async def handle_rejected_body(request: Request, exc: BodyRejected) -> JSONResponse:
        errors = [{"field": exc.field, "message": exc.detail.removeprefix(f"{exc.field}: "), "type": "invalid_text"}]
        return ASCIIJSONResponse(status_code=400, content={"detail": exc.detail, "errors": errors})

    async def handle_method_not_allowed(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        # Starlette's Allow names the methods of the first route that matched the path only; a path
        # served by several routes (GET and DELETE /jobs/{job_id}) would under-report them.
        allowed = ", ".join(sorted(_documented_methods(request.app, request.url.path)))
        return ASCIIJSONResponse(status_code=405, headers={"Allow": allowed},
                                 content={"detail": f"{request.method} is not allowed on {request.url.path}; "
                                                    f"allowed: {allowed}"})

    app.add_exception_handler(ServiceError, handle)
    app.add_exception_handler(sft.SFTError, handle_sft)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(BodyRejected, handle_rejected_body)
    app.add_exception_handler(StarletteHTTPException, handle_method_not_allowed)


_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def _documented_methods(app: FastAPI, path: str) -> set[str]:
    """The methods the app's OpenAPI document gives for ``path`` (and HEAD wherever GET is)."""
    import re

    patterns = getattr(app.state, "path_methods", None)
    if patterns is None:
        patterns = []
        for template, operations in app.openapi()["paths"].items():
            regex = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
            methods = {m.upper() for m in operations if m in _HTTP_METHODS}
            patterns.append((re.compile(regex), template.count("{"),
                             methods | ({"HEAD"} if "GET" in methods else set())))
        app.state.path_methods = patterns
    matches = [(params, methods) for regex, params, methods in patterns if regex.match(path)]
    # The templates with the fewest parameters are the path's: /preferences/download is that route's, not a
    # /preferences/{preference_id} (whose route never takes "download" as an id).
    fewest = min((params for params, _ in matches), default=0)
    return set().union(*(methods for params, methods in matches if params == fewest))
