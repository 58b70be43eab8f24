"""``sft preferences``: the preferences picked in "Try it" (or added here): list, add, download, delete, and train
a DPO job on them that starts from the tuned job."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, get_args

from ._commands import command_group
from ._display import Output, when
from .client import SFTClient
from .models import PreferenceSourceName

EXIT_OK = 0
#: Characters of an answer a listing shows.
SHOWN = 40


def add_preference_commands(commands: Any, add_common: Callable[..., None], *,
                            add_interrupt: Callable[[argparse.ArgumentParser], None]) -> None:
    """``sft preferences [list | add | download | delete | train]`` on the command parser's subparsers."""
    group, action = command_group(
        commands, "preferences", "Preferences (chosen/rejected answers of a tuned job): list, add, download, delete, "
        "train.", add_common, run=cmd_list)
    group.set_defaults(job=None, limit=100)
    a = action("list", cmd_list, "List your preferences, oldest first.")
    a.add_argument("--job", metavar="JOB_ID", help="Only this job's.")
    a.add_argument("--limit", type=int, default=100, help="At most this many (default 100).")
    a = action("add", cmd_add, "Keep a preference for your completed job: CHOSEN over REJECTED as answers to PROMPT.")
    a.add_argument("job_id", metavar="JOB_ID")
    a.add_argument("--prompt", required=True, help="The user message the answers reply to.")
    a.add_argument("--system", help="A system message before it.")
    a.add_argument("--chosen", required=True, help="The better answer.")
    a.add_argument("--rejected", required=True, help="The worse answer.")
    a.add_argument("--source", choices=get_args(PreferenceSourceName), default="corrected",
                   help="How it was made (default corrected: you wrote CHOSEN).")
    a = action("download", cmd_download, "Save your preferences as TRL prompt/chosen/rejected JSONL.")
    a.add_argument("--job", metavar="JOB_ID", help="Only this job's.")
    a.add_argument("-o", "--output", metavar="FILE", help="Where (default preferences[-JOB_ID].jsonl here).")
    a = action("delete", cmd_delete, "Delete one preference (ID), or all of a job's (--job).")
    a.add_argument("preference_id", metavar="ID", nargs="?")
    a.add_argument("--job", metavar="JOB_ID", help="Delete all your preferences of this job.")
    a = action("train", cmd_train, "Train a DPO job on your preferences of JOB_ID, starting from that job.")
    a.add_argument("job_id", metavar="JOB_ID")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="A config field of the DPO job (max_steps=20, beta=0.1); repeatable.")
    a.add_argument("-f", "--follow", action="store_true", help="Follow the DPO job to its end.")
    add_interrupt(a)


def short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN else text[:SHOWN - 1] + "…"


def cmd_list(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    page = client.list_preferences(job_id=args.job, limit=args.limit)
    if out.json:
        out.data(page.raw)
        return EXIT_OK
    out.table(["ID", "JOB", "SOURCE", "PROMPT", "CHOSEN", "REJECTED", "CREATED"],
              [[p.id, p.job_id, p.source, short(p.prompt[-1].content), short(p.chosen), short(p.rejected),
                when(p.created_at)] for p in page.preferences])
    if page.total > len(page.preferences):
        out.note(f"{len(page.preferences)} of {page.total} shown (--limit)")
    return EXIT_OK


def cmd_add(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    prompt = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}]
    kept = client.add_preference(args.job_id, prompt=prompt, chosen=args.chosen, rejected=args.rejected,
                                 source=args.source)
    out.answer(kept.raw, f"Preference {kept.id} kept for job {kept.job_id}")
    return EXIT_OK


def cmd_download(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    path = client.download_preferences(args.output or (f"preferences-{args.job}.jsonl" if args.job
                                                       else "preferences.jsonl"), job_id=args.job)
    rows = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    out.answer({"path": str(path), "preferences": rows}, f"Saved {rows} preferences to {path}")
    return EXIT_OK


def cmd_delete(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    from .cli import UsageError

    if (args.preference_id is None) == (args.job is None):
        raise UsageError("preferences delete needs one preference ID or --job JOB_ID")
    if args.job is not None:
        deleted = client.delete_preferences(args.job)
        out.answer(deleted.raw, f"Deleted {deleted.deleted} preferences of job {deleted.job_id}")
    else:
        gone = client.delete_preference(args.preference_id)
        out.answer(gone.raw, f"Deleted preference {gone.id} of job {gone.job_id}")
    return EXIT_OK


def cmd_train(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    from .cli import apply_sets, follow_job

    start = client.train_on_preferences(args.job_id, overrides=apply_sets({}, args.sets) or None)
    out.answer(start.raw, f"DPO job {start.job_id} submitted ({start.status}) on {start.preferences} preferences "
               f"of job {start.base_job_id} (file {start.file_id})")
    if args.follow:
        return follow_job(client, start.job_id, out, stop_on_interrupt=args.stop_on_interrupt)
    return EXIT_OK
