"""What every JSON body must be before a route sees it: text that can be stored and sent back.

A JSON ``\\ud800`` escape is valid JSON but no text: it cannot be encoded as UTF-8, so a body
carrying one would be stored and then fail every answer that includes it. :func:`lone_surrogate_at`
finds the first one; the request guard refuses such a body (400 naming the field) for every route.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException

_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyRejected(HTTPException):
    """A 400 raised while the body is read (FastAPI passes HTTP errors from body parsing on); ``field``
    is the dotted path of the value at fault, for each surface to present its own way."""

    def __init__(self, detail: str, *, field: str | None):
        super().__init__(400, detail)
        self.field = field


def lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """The dotted path (``config.column_mapping.prompt``, ``messages[0].content``) of the first string in
    ``value`` (a parsed JSON document) holding an unpaired surrogate, as a key or a value; None when none."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where or "body"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                child_path = f"{where}.{key}" if where else str(key)
                if _SURROGATE.search(key):
                    return f"{where or 'body'} (a key)"
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


def check_json_body(body: bytes) -> None:
    """Raise :class:`BodyRejected` when ``body`` is JSON holding an unpaired surrogate; a body that is not
    JSON passes (the route's own parsing answers it)."""
    if b"\\u" not in body:
        return
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return
    field = lone_surrogate_at(parsed)
    if field is not None:
        raise BodyRejected(f"{field}: holds an unpaired UTF-16 surrogate (a \\ud800-\\udfff escape that is not "
                           "half of a pair); send valid Unicode text", field=field.removesuffix(" (a key)"))
