"""JSON that can become text rows: what ``json.loads`` accepts but a dataset, a tokenizer or an answer
cannot use — a number too long to convert, nesting too deep to read, an unpaired UTF-16 surrogate
(``"\\ud800"``, valid JSON but no text) — named as a reason instead of failing later as a crash."""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONTextError(ValueError):
    """A document ``json.loads`` cannot read as text for a reason other than its syntax; the message says why."""


def lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """The dotted path (``config.column_mapping.prompt``, ``messages[0].content``) of the first string in
    ``value`` (a parsed JSON document) holding an unpaired surrogate, as a key or a value; None when none."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where or "the value"
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return f"{where or 'the object'} (a key)"
                children.append((child, f"{where}.{key}" if where else str(key)))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


def heal_text(value: Any) -> Any:
    """``value`` (parsed JSON) with each unpaired surrogate replaced by U+FFFD: for records stored before
    bodies were checked, which could then be sent nowhere (every answer holding one failed)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {heal_text(key): heal_text(child) for key, child in value.items()}
    if isinstance(value, list):
        return [heal_text(child) for child in value]
    return value


def loads_stored(text: str) -> Any:
    """A stored JSON document, healed of unpaired surrogates (only where its text has a \\u escape)."""
    value = json.loads(text)
    return heal_text(value) if "\\u" in text else value


def loads_text(text: str | bytes) -> Any:
    """``json.loads(text)``, whose value holds only text that can be encoded.

    Raises:
        json.JSONDecodeError: ``text`` is not JSON (each caller words that its own way).
        JSONTextError: a number beyond Python's 4,300-digit limit, nesting too deep to read, or an
            unpaired surrogate (the message names where).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise JSONTextError("nested too deeply to read (arrays or objects inside each other thousands of "
                            "levels deep)") from None
    except ValueError as exc:  # int(): "Exceeds the limit (4300 digits) for integer string conversion..."
        raise JSONTextError(f"a number too long to read ({str(exc).split(':')[0]})") from None
    where = lone_surrogate_at(value)
    if where is not None:
        raise JSONTextError(f"{where}: holds an unpaired UTF-16 surrogate (a \\ud800-\\udfff escape that is not "
                            "half of a pair); use valid Unicode text")
    return value
