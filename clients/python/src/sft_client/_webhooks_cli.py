"""``sft webhooks``: register, list and delete webhook endpoints; their deliveries; redeliver one."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ._commands import command_group
from ._display import Output, when
from .client import SFTClient

EXIT_OK = 0


def add_webhook_commands(commands: Any, add_common: Callable[..., None]) -> None:
    """``sft webhooks [list | add | rm | deliveries | redeliver]`` on the command parser's subparsers."""
    _, action = command_group(commands, "webhooks", "Webhook endpoints: list, add, rm, deliveries, redeliver.",
                              add_common, run=cmd_list)
    action("list", cmd_list, "List your webhook endpoints (an admin's: everyone's).")
    a = action("add", cmd_add, "Register URL; prints the endpoint's id and its signing secret (shown once).")
    a.add_argument("hook_url", metavar="URL")  # not "url": that is the server's (--url)
    a.add_argument("--event", action="append", dest="events", metavar="TYPE",
                   help="An event type to receive (repeatable; default: fine_tuning.job.succeeded, .failed, "
                   ".cancelled). Others: fine_tuning.job.started, .stopping, .checkpoint.saved, .export.finished.")
    a.add_argument("--global", action="store_true", dest="global_scope",
                   help="Receive every user's jobs' events (admin keys only).")
    a.add_argument("--description")
    a = action("rm", cmd_rm, "Delete an endpoint (and its deliveries).")
    a.add_argument("webhook_id", metavar="ID")
    a = action("deliveries", cmd_deliveries, "An endpoint's deliveries, newest first, with their attempts.")
    a.add_argument("webhook_id", metavar="ID")
    a.add_argument("--limit", type=int, default=20, help="At most this many (default 20).")
    a = action("redeliver", cmd_redeliver, "Send a delivery again now (same webhook-id).")
    a.add_argument("webhook_id", metavar="ID")
    a.add_argument("delivery_id", metavar="DELIVERY_ID")


def cmd_list(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    webhooks = client.list_webhooks()
    if out.json:
        out.data([w.raw for w in webhooks])
        return EXIT_OK
    out.table(["ID", "URL", "EVENTS", "SCOPE", "CREATED"],
              [[w.id, w.url, ", ".join(w.events), w.scope, when(w.created_at)] for w in webhooks])
    return EXIT_OK


def cmd_add(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    created = client.create_webhook(args.hook_url, events=args.events, scope="global" if args.global_scope else "user",
                                    description=args.description)
    if out.json:
        out.data(created.raw)
    else:
        out.line(f"Webhook {created.id}: {created.url} ({', '.join(created.events)})")
        out.line(f"Secret (shown once; verify deliveries with it): {created.secret}")
    return EXIT_OK


def cmd_rm(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    deleted = client.delete_webhook(args.webhook_id)
    out.answer(deleted.raw, f"Deleted webhook {deleted.id} ({deleted.url})")
    return EXIT_OK


def cmd_deliveries(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    deliveries = client.webhook_deliveries(args.webhook_id, limit=args.limit)
    if out.json:
        out.data([d.raw for d in deliveries])
        return EXIT_OK
    rows = []
    for d in deliveries:
        last = d.attempts[-1] if d.attempts else None
        result = "" if last is None else (str(last.status_code) if last.status_code is not None else "") + (
            f" {last.error}" if last.error else "") + (f" ({last.latency_ms:.0f} ms)" if last.latency_ms is not None else "")
        rows.append([d.id, d.event_type, d.job_id or "", d.status, str(len(d.attempts)), result.strip(),
                     when(d.created_at)])
    out.table(["DELIVERY", "EVENT", "JOB", "STATUS", "ATTEMPTS", "LAST", "CREATED"], rows)
    return EXIT_OK


def cmd_redeliver(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    delivery = client.redeliver(args.webhook_id, args.delivery_id)
    out.answer(delivery.raw, f"Delivery {delivery.id} ({delivery.event_type}) queued again: {delivery.status}")
    return EXIT_OK
