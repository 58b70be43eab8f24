"""Which graders this server runs for a user: their judges' addresses, and python graders.

**Judges** (score_model graders' own ``base_url``): a user's (non-admin key's) grader may only name a public address: otherwise any user could make the server call
its internal network (a metadata service, an admin port) and read the answer back in a grader's error. The admin's
``SFT_JUDGE_BASE_URL`` may be private, admins may name any judge, and ``SFT_JUDGE_ALLOW_PRIVATE=true`` allows
private judges for everyone (a local vLLM shared by the team).

**Python graders** run the user's code on the server in a sandbox that is not a security boundary (see
``sft/graders/sandbox.py``): only admins may use them unless ``SFT_PYTHON_GRADERS_FOR_USERS=true``.

With keys off every caller is the admin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..core.errors import InvalidConfig
from ..core.settings import Settings
from ..sft.graders import MultiGrader, PythonGrader, ScoreModelGrader, parse_grader
from .webhook_sender import resolve

POLICY = ("a user's judges go to public addresses only (an admin's SFT_JUDGE_BASE_URL or "
          "SFT_JUDGE_ALLOW_PRIVATE=true allows private ones)")


def judge_url_guard(settings: Settings, user: Any) -> Callable[[str], None] | None:
    """The check ``user``'s grader's own ``base_url`` passes before it is called (None: every address allowed).
    It raises ValueError (``UnsafeUrl``) saying why."""
    if user.admin or settings.judge_allow_private:
        return None

    def check(url: str) -> None:
        resolve(url, allow_private=False, policy=POLICY)

    return check


PYTHON_POLICY = ("python graders run code on the server, and only admins may use them here "
                 "(SFT_PYTHON_GRADERS_FOR_USERS=true lets every key)")


def _singles(grader: Any, field: str) -> Iterator[tuple[str, Any]]:
    """``grader`` itself, or each grader inside a multi grader, with the field that names it."""
    if isinstance(grader, MultiGrader):
        for name, sub in grader.named_graders().items():
            yield f"{field}.graders.{name}", sub
    else:
        yield field, grader


def check_graders(graders: dict[str, Any], settings: Settings, user: Any) -> None:
    """InvalidConfig naming the field when one of ``user``'s graders (field name -> definition, parsed or not;
    those that do not parse are the validation's to refuse) is one this server will not run for them: a judge at
    a private address, or a python grader."""
    if user.admin:
        return
    guard = judge_url_guard(settings, user)
    for field, raw in graders.items():
        try:
            grader = parse_grader(raw) if isinstance(raw, dict) else raw
        except ValueError:
            continue
        for name, single in _singles(grader, field):
            if isinstance(single, PythonGrader) and not settings.python_graders_for_users:
                raise InvalidConfig(f"{name}: {PYTHON_POLICY}", field=name)
            if isinstance(single, ScoreModelGrader) and single.base_url and guard is not None:
                try:
                    guard(single.base_url)
                except ValueError as exc:
                    raise InvalidConfig(f"{name}.base_url: {exc}", field=f"{name}.base_url") from None


def listed(graders: list[Any], field: str) -> dict[str, Any]:
    """``graders`` keyed by the field that names each: ``field[0]``, ``field[1]``..."""
    return {f"{field}[{n}]": grader for n, grader in enumerate(graders)}
