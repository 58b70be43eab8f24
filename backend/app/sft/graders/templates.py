"""OpenAI's grader templates: ``{{item.a.b}}``, ``{{sample.output_text}}``, ``{{sample.output_json.x}}``.

A value that is not a string renders as compact JSON with sorted keys, so two equal JSON values render
to the same text (that is how a string_check compares JSON: see ``json_match_grader``).
"""

from __future__ import annotations

import json
import re
from typing import Any

_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"^(item|sample)(\.[A-Za-z0-9_\-]+)*$")


class TemplateError(ValueError):
    """A template names a variable the sample or item does not have; the message says which."""


def check_template(text: str) -> str:
    """``text`` if each of its templates is a path under item or sample, else ValueError naming it."""
    for match in _TEMPLATE.finditer(text):
        if not _PATH.match(match.group(1)):
            raise ValueError(f"template {{{{{match.group(1)}}}}} must be item.<field>... or sample.<field>... "
                             "(e.g. {{item.reference}}, {{sample.output_text}}, {{sample.output_json.name}})")
    return text


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"),
                                                           ensure_ascii=False)


def lookup(path: str, namespaces: dict[str, Any]) -> Any:
    """The value at a dotted path (``item.a.0.b``); TemplateError when it is missing."""
    root, *parts = path.split(".")
    value = namespaces[root]
    for depth, part in enumerate(parts, start=1):
        where = ".".join([root, *parts[:depth]])
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"{{{{{path}}}}}: {where} is not set")
        if value is None and depth < len(parts):
            raise TemplateError(f"{{{{{path}}}}}: {where} is null")
    if value is None:
        raise TemplateError(f"{{{{{path}}}}} is not set" + (" (the sample is not valid JSON)"
                                                              if path.startswith("sample.output_json") else ""))
    return value


def render(text: str, sample: dict[str, Any], item: dict[str, Any]) -> str:
    """``text`` with every template replaced by its value."""
    namespaces = {"sample": sample, "item": item}
    return _TEMPLATE.sub(lambda m: as_text(lookup(m.group(1), namespaces)), text)


def make_sample(output_text: str) -> dict[str, Any]:
    """The ``sample`` namespace of a model's answer: output_text, and output_json when it parses as JSON."""
    try:
        output_json = json.loads(output_text)
    except ValueError:
        output_json = None
    return {"output_text": output_text, "output_json": output_json}
