"""OpenAI's error envelope for every /v1 route: ``{"error": {"message", "type", "param", "code"}}``.

FastAPI's exception handlers are app-wide, and /api/sft keeps its ``{"detail": ...}`` shape, so /v1
routes use ``OpenAIRoute``: it turns the service's errors (a file error's ``field`` as ``param``; the training core's mapped by
``app.core.errors.from_sft_error``), request validation errors and HTTP errors raised while
handling a /v1 request into the envelope, with the status OpenAI would give
(so the ``openai`` SDK raises its typed exceptions: 400 BadRequestError, 404 NotFoundError...).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ...core.errors import ServiceError, from_sft_error
from ...jobs.files import FileError
from ...sft.errors import SFTError

#: The envelope's ``type`` by status, as OpenAI names them.
ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 409: "invalid_request_error",
               413: "invalid_request_error", 503: "server_error"}


class OpenAIError(ServiceError):
    """An error of the /v1 surface: an HTTP status, and the envelope's ``param`` and ``code``."""

    def __init__(self, status_code: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.param = param
        self.code = code


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> OpenAIError:
    """A 400: the request cannot run; ``param`` names the field."""
    return OpenAIError(400, message, param=param, code=code)


def not_found(message: str, *, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(404, message, param=param, code=code)


class ErrorBody(BaseModel):
    message: str = Field(..., description="What is wrong, naming the parameter, line or id.")
    type: str = Field(..., description="invalid_request_error, or server_error for a busy server.")
    param: str | None = Field(None, description="The request parameter at fault, when one is.")
    code: str | None = Field(None, description="A machine-readable code, when there is one.")


class OpenAIErrorResponse(BaseModel):
    error: ErrorBody


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI error answers of a /v1 route."""
    described = {400: "The request cannot run; param names the field", 404: "Unknown id or model",
                 409: "The job's state does not allow it", 413: "The file is larger than the server accepts",
                 503: "Every training slot is busy, or too many model requests wait (see Retry-After)",
                 504: "Stopped at the request time limit (SFT_REQUEST_TIMEOUT_SECONDS)"}
    return {status: {"model": OpenAIErrorResponse, "description": described[status]} for status in statuses}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind,
                      "param": param, "code": code}}
    # The SDK retries 409s by default; a state conflict answers the same on a retry.
    headers = {"x-should-retry": "false"} if status < 500 else None
    return JSONResponse(status_code=status, content=body, headers=headers)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One sentence per problem, in OpenAI's wording, and the first problem's parameter."""
    parts, params = [], []
    for error in errors:
        loc = [str(part) for part in error["loc"]]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        param = ".".join(loc) or None
        params.append(param)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            parts.append(f"Unrecognized request argument supplied: {param} (this server does not support it)")
        elif error["type"] == "missing":
            parts.append(f"Missing required parameter: '{param}'.")
        elif param:
            parts.append(f"Invalid value for '{param}': {message}")
        else:
            parts.append(message)
    return "; ".join(parts), params[0] if params else None


class OpenAIRoute(APIRoute):
    """A route whose errors answer in OpenAI's envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return error_response(exc.status_code, exc.detail, param=exc.param, code=exc.code)
            except FileError as exc:
                return error_response(exc.status_code, exc.detail, param=exc.field, code=exc.code)
            except (ServiceError, SFTError) as exc:
                error = from_sft_error(exc) if isinstance(exc, SFTError) else exc
                code = {404: "not_found", 409: "conflict", 503: "busy"}.get(error.status_code)
                return error_response(error.status_code, error.detail, code=code)
            except RequestValidationError as exc:
                message, param = validation_message(list(exc.errors()))
                return error_response(400, message, param=param)
            except HTTPException as exc:
                return error_response(exc.status_code, str(exc.detail), param=getattr(exc, "field", None))

        return handle
