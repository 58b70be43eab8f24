"""score_model: an LLM judge on any OpenAI-compatible chat endpoint (this service's own /v1 included).

The grader's messages are rendered, a last system message asks for the score as ``{"result": <number>}``
within the grader's range, and the reply is read as that JSON or, failing that, as the one number in it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .templates import render

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class JudgeEndpoint:
    """Where score_model graders without a ``base_url`` send their requests, and the key they send.

    ``check_url``: raises ValueError for a grader's own ``base_url`` this server will not call (the caller's
    address policy: on a server with keys, public addresses only); None calls any.
    """

    base_url: str | None = None
    api_key: str | None = None
    timeout_seconds: float = 60.0
    check_url: Callable[[str], None] | None = None


class JudgeError(RuntimeError):
    """The judge could not be asked (``kind`` "server") or its answer read (``kind`` "parse")."""

    def __init__(self, message: str, *, kind: str):
        super().__init__(message)
        self.kind = kind


def judge_messages(grader: Any, sample: dict[str, Any], item: dict[str, Any]) -> list[dict[str, str]]:
    low, high = grader.range
    messages = [{"role": m.role, "content": render(m.text, sample, item)} for m in grader.input]
    messages.append({"role": "system", "content": f"Answer only with JSON {{\"result\": <score>}}, the score a "
                     f"number from {low:g} to {high:g}."})
    return messages


def ask_judge(grader: Any, messages: list[dict[str, str]], endpoint: JudgeEndpoint) -> tuple[str, int | None]:
    """The judge's reply and the tokens it used (None when the endpoint does not say); ``read_score`` reads it."""
    import httpx

    base_url = grader.base_url or endpoint.base_url
    if not base_url:
        raise JudgeError("no judge endpoint: give the grader a base_url or set SFT_JUDGE_BASE_URL", kind="server")
    if grader.base_url and endpoint.check_url is not None:
        try:
            endpoint.check_url(grader.base_url)
        except ValueError as exc:
            raise JudgeError(f"base_url: {exc}", kind="server") from None
    body: dict[str, Any] = {"model": grader.model, "messages": messages}
    params = grader.sampling_params
    if params is not None:
        for key in ("temperature", "top_p", "seed", "reasoning_effort"):
            if getattr(params, key) is not None:
                body[key] = getattr(params, key)
        if params.max_completions_tokens is not None:
            body["max_tokens"] = params.max_completions_tokens
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        response = send(f"{base_url.rstrip('/')}/chat/completions", body, headers, endpoint.timeout_seconds)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # unreachable, timed out, or no usable URL
        raise JudgeError(f"the judge at {base_url} could not be reached ({type(exc).__name__}: {exc})",
                         kind="server") from None
    if response.status_code != 200:
        raise JudgeError(f"the judge at {base_url} answered {response.status_code}: {response.text[:300]}",
                         kind="server")
    try:
        answer = response.json()
        text = answer["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(f"the judge at {base_url} did not answer as a chat completion", kind="server") from None
    usage = (answer.get("usage") or {}).get("total_tokens")
    return text, usage


def send(url: str, body: dict[str, Any], headers: dict[str, str], timeout_seconds: float) -> Any:
    """POST ``body`` to the judge (the one network call of graders; the API fuzz replaces it)."""
    import httpx

    return httpx.post(url, json=body, headers=headers, timeout=httpx.Timeout(timeout_seconds, connect=10.0))


def read_score(text: str, score_range: list[float]) -> float:
    """The score in a judge's reply: ``{"result": x}`` (or ``score``), else the only number in the text."""
    value: Any = None
    try:
        parsed = json.loads(text)
        value = parsed.get("result", parsed.get("score")) if isinstance(parsed, dict) else parsed
    except ValueError:
        numbers = _NUMBER.findall(text)
        value = float(numbers[0]) if len(numbers) == 1 else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JudgeError(f"the judge's reply holds no score: {text[:200]!r}", kind="parse")
    low, high = score_range
    if not low <= value <= high:
        raise JudgeError(f"the judge's score {value:g} is outside the range [{low:g}, {high:g}]", kind="parse")
    return float(value)
