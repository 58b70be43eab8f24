"""Domain errors and their HTTP mapping, registered once on the app.

The exceptions import nothing from FastAPI so the job manager can raise them anywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


class ServiceError(Exception):
    """Base of the errors the service raises on purpose; ``status_code`` is the HTTP mapping."""

    status_code = 500

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class InvalidConfig(ServiceError, ValueError):
    """The submitted config or request cannot run; ``detail`` names the field, file and line."""

    status_code = 400


class JobNotFound(ServiceError, LookupError):
    status_code = 404

    def __init__(self, job_id: str):
        super().__init__(f"Job {job_id} not found")
        self.job_id = job_id


class ConfigNotFound(ServiceError, LookupError):
    status_code = 404

    def __init__(self, config_id: str):
        super().__init__(f"Config {config_id} not found")
        self.config_id = config_id


class CheckpointNotFound(ServiceError, LookupError):
    """The job has no checkpoint of that name."""

    status_code = 404


class JobConflict(ServiceError):
    """The request does not fit the job's state (stop a finished job, delete a running one...)."""

    status_code = 409


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


def register_error_handlers(app: FastAPI) -> None:
    """Map every ``ServiceError`` to its status with ``{"detail": ...}``, and render request
    validation errors (422) so that any input they echo can be written back."""
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
        return ASCIIJSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)

    async def handle_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return ASCIIJSONResponse(status_code=422, content={"detail": jsonable_encoder(exc.errors())})

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
    app.add_exception_handler(RequestValidationError, handle_validation)
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
            patterns.append((re.compile(regex), methods | ({"HEAD"} if "GET" in methods else set())))
        app.state.path_methods = patterns
    return set().union(*(methods for regex, methods in patterns if regex.match(path)))
