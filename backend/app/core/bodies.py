"""What every JSON body must be before a route sees it: text that can be stored and sent back.

A JSON ``\\ud800`` escape is valid JSON but no text: it cannot be encoded as UTF-8, so a body
carrying one would be stored and then fail every answer that includes it. The request guard
refuses such a body (400 naming the field) for every route, through :func:`check_json_body`.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException

from ..sft.jsontext import lone_surrogate_at

__all__ = ["BodyRejected", "check_json_body", "lone_surrogate_at"]


class BodyRejected(HTTPException):
    """A 400 raised while the body is read (FastAPI passes HTTP errors from body parsing on); ``field``
    is the dotted path of the value at fault, for each surface to present its own way."""

    def __init__(self, detail: str, *, field: str | None):
        super().__init__(400, detail)
        self.field = field


def check_json_body(body: bytes) -> None:
    """Raise :class:`BodyRejected` when ``body`` is JSON holding an unpaired surrogate; a body that is not
    JSON passes (the route's own parsing answers it)."""
    if b"\\u" not in body:
        return
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return
    where = lone_surrogate_at(parsed)
    if where is not None:
        field = where.removesuffix(" (a key)")
        field = "body" if field in ("the value", "the object") else field
        raise BodyRejected(f"{field}: holds an unpaired UTF-16 surrogate{' in a key' if '(a key)' in where else ''} "
                           "(a \\ud800-\\udfff escape that is not half of a pair); send valid Unicode text", field=field)
