"""The row formats a dataset may come in, detected from its columns, and each turned into the shape
TRL trains on.

Conversational rows become TRL's conversational prompt/completion pairs (the prompt is every turn
before the final assistant turn), so by default the loss covers the final assistant turn only and
no chat template needs generation markers.

Preference rows (for ``method: dpo``) become TRL's preference rows: ``prompt`` / ``chosen`` / ``rejected``,
conversational (the prompt's turns, then one assistant turn each) or plain text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import DatasetError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool"}
MESSAGE_ROLES = {"system", "user", "assistant", "tool"}

#: Columns that identify each format, in the order auto-detection tries them.
FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "openai_preference": ("input", "preferred_output", "non_preferred_output"),
    "preference": ("prompt", "chosen", "rejected"),
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}


#: Formats whose rows are preference pairs: they train with ``method: dpo``, every other format with ``sft``.
PREFERENCE_FORMATS = frozenset({"openai_preference", "preference"})


def method_problem(fmt: str, method: str) -> str | None:
    """Why rows in ``fmt`` cannot train with ``method`` ('sft' or 'dpo'); None when they can."""
    if (fmt in PREFERENCE_FORMATS) == (method == "dpo"):
        return None
    if method == "dpo":
        return (f"method 'dpo' trains on preference pairs, but these rows are {fmt} rows; give prompt/chosen/"
                "rejected rows or OpenAI's preference rows (input, preferred_output, non_preferred_output)")
    return (f"these rows are preference pairs ({fmt}); they train with method 'dpo' (set method: dpo), "
            "method 'sft' needs chat, alpaca, prompt/completion or text rows")


@dataclass(frozen=True)
class RawRows:
    """Rows as read from a source, plus how to name row ``i`` in an error ("line 17", "row 3")."""

    source: str
    rows: list[dict[str, Any]]
    locate: Callable[[int], str]


def detect_format(columns: list[str] | set[str], *, source: str = "") -> str:
    """Pick the row format from the columns present."""
    present = set(columns)
    for fmt, needed in FORMAT_COLUMNS.items():
        if all(col in present for col in needed):
            return fmt
    raise DatasetError(
        f"cannot detect the format from columns {sorted(present)}; expected one of: "
        + "; ".join(f"{fmt} ({', '.join(cols)})" for fmt, cols in FORMAT_COLUMNS.items())
        + ". Set dataset_format, or column_mapping to rename your columns",
        source=source or None,
    )


def convert_rows(
    raw: RawRows, *, dataset_format: str = "auto", column_mapping: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Convert raw rows to TRL rows; return them and the format used (detected when 'auto')."""
    mapping = column_mapping or {}
    rows = [_apply_mapping(row, mapping) for row in raw.rows] if mapping else raw.rows
    fmt = dataset_format
    if fmt == "auto":
        fmt = detect_format(rows[0].keys() if rows else [], source=raw.source)
    convert = _CONVERTERS[fmt]
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(convert(row))
        except _RowError as exc:
            raise DatasetError(str(exc), source=raw.source, location=raw.locate(i)) from None
    return out, fmt


def _apply_mapping(row: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    renamed = dict(row)
    for target, column in mapping.items():
        if column in row:
            renamed[target] = row[column]
    return renamed


class _RowError(Exception):
    pass


def _text_field(row: dict[str, Any], field: str, *, required: bool = True) -> str:
    if field not in row or row[field] is None:
        if required:
            raise _RowError(f"missing field '{field}'")
        return ""
    value = row[field]
    if not isinstance(value, str):
        raise _RowError(f"field '{field}' must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise _RowError(f"field '{field}' is empty")
    return value


def _split_conversation(messages: list[dict[str, str]]) -> dict[str, Any]:
    if messages[-1]["role"] != "assistant":
        raise _RowError(f"the last turn must be the assistant's, got '{messages[-1]['role']}'")
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise _RowError("a conversation needs a user turn before the assistant's")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def _turns(row: dict[str, Any], field: str, role_key: str, text_key: str, roles: dict[str, str], *,
           blank: bool = False) -> list:
    """The turns of ``field``; ``blank``: a turn's text may be whitespace (a rejected answer may be just that)."""
    turns = row.get(field)
    if turns is None:
        raise _RowError(f"missing field '{field}'")
    if not isinstance(turns, list) or not turns:
        raise _RowError(f"field '{field}' must be a non-empty list of turns")
    messages = []
    for n, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise _RowError(f"{field}[{n}] must be an object with '{role_key}' and '{text_key}'")
        role = turn.get(role_key)
        if role not in roles:
            raise _RowError(
                f"{field}[{n}] has {role_key} {role!r}; expected one of {', '.join(sorted(roles))}"
            )
        text = turn.get(text_key)
        if not isinstance(text, str) or not (text if blank else text.strip()):
            raise _RowError(f"{field}[{n}] ({role}) has empty or missing '{text_key}'")
        messages.append({"role": roles[role], "content": text})
    return messages


def _from_messages(row: dict[str, Any]) -> dict[str, Any]:
    return _split_conversation(_turns(row, "messages", "role", "content", {r: r for r in MESSAGE_ROLES}))


def _from_sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    return _split_conversation(_turns(row, "conversations", "from", "value", SHAREGPT_ROLES))


def _from_alpaca(row: dict[str, Any]) -> dict[str, Any]:
    instruction = _text_field(row, "instruction")
    extra = _text_field(row, "input", required=False)
    output = _text_field(row, "output")
    system = _text_field(row, "system", required=False)
    prompt = [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction}]
    if system.strip():
        prompt.insert(0, {"role": "system", "content": system})
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": output}]}


def _from_prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": _text_field(row, "prompt", required=False), "completion": _text_field(row, "completion")}


def _from_text(row: dict[str, Any]) -> dict[str, Any]:
    return {"text": _text_field(row, "text")}


def _from_preference(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("prompt"), list):  # conversational: the prompt's turns, one assistant answer each
        return _pair(_prompt_turns(row, "prompt"), row, "chosen", "rejected")
    return {"prompt": _text_field(row, "prompt"), "chosen": _text_field(row, "chosen"),
            "rejected": _text_field(row, "rejected")}


def _from_openai_preference(row: dict[str, Any]) -> dict[str, Any]:
    given = row.get("input")
    if not isinstance(given, dict):
        raise _RowError("field 'input' must be an object with 'messages'")
    prompt = _prompt_turns({"input.messages": given.get("messages")}, "input.messages")
    return _pair(prompt, row, "preferred_output", "non_preferred_output")


def _prompt_turns(row: dict[str, Any], field: str) -> list[dict[str, str]]:
    turns = _turns(row, field, "role", "content", {r: r for r in MESSAGE_ROLES})
    if turns[-1]["role"] == "assistant" or not any(m["role"] == "user" for m in turns):
        raise _RowError(f"field '{field}' must hold a user turn and must not end with an assistant turn")
    return turns


def _pair(prompt: list[dict[str, str]], row: dict[str, Any], chosen: str, rejected: str) -> dict[str, Any]:
    """TRL's conversational preference row: the prompt, and one assistant turn for each answer."""
    answers = []
    for field in (chosen, rejected):
        turns = _turns(row, field, "role", "content", {"assistant": "assistant"}, blank=field == rejected)
        if len(turns) != 1:
            raise _RowError(f"field '{field}' must hold exactly one assistant turn, got {len(turns)}")
        answers.append(turns)
    return {"prompt": prompt, "chosen": answers[0], "rejected": answers[1]}


_CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "prompt_completion": _from_prompt_completion,
    "text": _from_text,
    "preference": _from_preference,
    "openai_preference": _from_openai_preference,
}
