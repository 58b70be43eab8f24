"""A group of ``sft`` commands with actions (``sft webhooks add``, ``sft preferences train``): one parser, shared."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

#: ``action(name, run, help)``: adds one action to a group and returns its parser.
Action = Callable[[str, Callable[..., int], str], argparse.ArgumentParser]


def command_group(commands: Any, name: str, help_text: str, add_common: Callable[..., None], *,
                  run: Callable[..., int]) -> tuple[argparse.ArgumentParser, Action]:
    """``sft NAME [ACTION]`` on the command parser's subparsers: its parser (which runs ``run`` without an action)
    and the function that adds each action, every parser taking the common options."""
    group = commands.add_parser(name, help=help_text, description=help_text)
    add_common(group, suppress=True)
    group.set_defaults(run=run)
    actions = group.add_subparsers(title="actions", metavar="ACTION")

    def action(action_name: str, action_run: Callable[..., int], help: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(action_name, help=help, description=help)
        add_common(parser, suppress=True)
        parser.set_defaults(run=action_run)
        return parser

    return group, action
