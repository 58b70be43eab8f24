"""The ``sft`` command: train, follow with a progress bar, take the result.

Exit codes: 0 done (a followed job completed), 1 a followed job failed or was stopped (or the
server failed), 2 a usage error or a 4xx answer, 3 the server cannot be reached, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ._display import (
    BarFollowView,
    FollowView,
    JsonFollowView,
    Output,
    download_bar,
    indented,
    size,
    step_text,
    when,
)
from ._transfer import check_destination
from ._webhooks_cli import add_webhook_commands
from .client import DEFAULT_URL, SFTClient, __version__
from .errors import APIConnectionError, APIStatusError, ConflictError, DownloadError, SFTError
from .types import JOB_STATUSES, Job, SavedConfig

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: A number as people write it; PyYAML leaves some (1e-3) as strings.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
#: Seconds between two reads of a job's log with ``sft logs -f``.
LOG_POLL_SECONDS = 1.0


class UsageError(Exception):
    """The command line or a local file is wrong; nothing was sent."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 here, as argparse does
    out = Output(as_json=args.json)
    try:
        client = SFTClient(args.url, args.api_key, timeout=args.timeout)
    except ValueError as error:
        out.note(f"sft: error: --url: {error}", style="red")
        return EXIT_USAGE
    try:
        with client:
            return args.run(client, args, out)
    except UsageError as error:
        return fail(out, EXIT_USAGE, f"sft: error: {error}")
    except APIStatusError as error:
        code = EXIT_USAGE if 400 <= error.status_code < 500 else EXIT_JOB_FAILED
        return fail(out, code, f"Error {error.status_code}: {error.detail}", status_code=error.status_code,
                    detail=error.detail)
    except APIConnectionError as error:
        return fail(out, EXIT_UNREACHABLE, f"Error: {error}")
    except SFTError as error:
        return fail(out, EXIT_JOB_FAILED, f"Error: {error}")
    except KeyboardInterrupt:
        out.note("Interrupted")
        return EXIT_INTERRUPTED


def fail(out: Output, code: int, message: str, **fields: Any) -> int:
    if out.json:
        out.err.file.write(json.dumps({"error": message, **fields}) + "\n")
    else:
        out.note(message, style="red")
    return code


# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft", description="Train, follow and use fine-tuning jobs of an SFT job service.",
        epilog="Exit codes: 0 ok / job completed, 1 job failed or stopped, 2 usage error or 4xx, "
        "3 server unreachable.")
    parser.add_argument("--version", action="version", version=f"sft {__version__}")
    add_common(parser, suppress=False)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[..., int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        add_common(sub, suppress=True)
        sub.set_defaults(run=run)
        return sub

    def config_source(sub: argparse.ArgumentParser) -> None:
        """CONFIG.yaml, --set and --from-config: the config ``train`` and ``plan`` read (``config_of``)."""
        sub.add_argument("config", nargs="?", metavar="CONFIG.yaml", help="Training config (SFTConfig fields).")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                         help="Override a field (value read as YAML: 10, 1e-3, true, [q_proj, v_proj]); repeatable.")
        sub.add_argument("--from-config", metavar="NAME", help="Start from this saved config (name or id); "
                         "CONFIG.yaml and --set then override its fields.")

    p = command("train", cmd_train, "Start a training job from a YAML config (or a saved config).")
    config_source(p)
    p.add_argument("-f", "--follow", action="store_true", help="Follow the job to its end.")
    p.add_argument("-q", "--quiet", action="store_true", help="Print only the job id.")
    p.add_argument("--idempotency-key", help="Retries of a submit with the same key return the same job.")
    add_interrupt(p)

    p = command("plan", cmd_plan, "Estimate a config's peak memory per worker and whether it fits (submits nothing).")
    config_source(p)

    p = command("jobs", cmd_jobs, "List jobs, newest first.")
    p.add_argument("--status", choices=JOB_STATUSES)
    p.add_argument("--limit", type=int, default=20, help="At most this many (default 20).")

    p = command("show", cmd_show, "Show a job: status, progress, result, error.")
    p.add_argument("job_id", metavar="ID")

    p = command("stop", cmd_stop, "Stop a job (a running one stops at its next step and saves its adapter).")
    p.add_argument("job_id", metavar="ID")

    p = command("resume", cmd_resume, "Resume a stopped or failed job from its latest checkpoint.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="Follow the job to its end.")
    add_interrupt(p)

    p = command("follow", cmd_follow, "Follow a job with a progress bar until it ends.")
    p.add_argument("job_id", metavar="ID")
    add_interrupt(p)

    p = command("logs", cmd_logs, "Print a job's log lines.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="Keep printing new lines until the job ends.")
    p.add_argument("--tail", type=int, metavar="N", help="Only the last N lines.")

    p = command("events", cmd_events, "Print a job's events.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="Keep printing events until the job ends.")

    p = command("generate", cmd_generate, "Generate with a job's fine-tuned model.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("prompt", help="The user message (or, with --raw, the text to continue).")
    p.add_argument("--compare-base", action="store_true", help="Also answer with the base model.")
    p.add_argument("--raw", action="store_true", help="Send PROMPT as raw text, without the chat template.")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default).")
    p.add_argument("--checkpoint", help="Use this checkpoint (e.g. checkpoint-20) instead of the final adapter.")

    p = command("evaluate", cmd_evaluate, "Exact-match score of the base model and of a job's model.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--dataset", help="Conversational dataset (default: the server's, bundled:json-extract).")
    p.add_argument("--split", help="Split of the dataset (default eval).")
    p.add_argument("--max-samples", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--checkpoint")

    p = command("download", cmd_download, "Download a job's adapter and unpack it into a directory.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="Where the adapter's files go (must not exist, or be empty).")

    p = command("merge", cmd_merge, "Merge a job's LoRA adapter into its base model (on the server).")
    p.add_argument("job_id", metavar="ID")

    p = command("export", cmd_export, "Export a finished job (GGUF, merged or adapter), wait for it and download it.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--format", default="gguf", choices=("gguf", "merged", "adapter"))
    p.add_argument("--type", help="GGUF type (f16, bf16, q8_0...; `sft export-formats` lists this server's).")
    p.add_argument("-o", "--output", metavar="DIR", help="Download the export's files here (new or empty).")
    p.add_argument("--no-wait", action="store_true", help="Start it and print its id; do not wait.")

    p = command("exports", cmd_exports, "List a job's exports, or delete one (--rm EXPORT_ID).")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--rm", metavar="EXPORT_ID", help="Delete this export (its files too).")

    command("export-formats", cmd_export_formats, "What this server can export, and the GGUF types it makes.")

    p = command("configs", cmd_configs_list, "Saved config templates: list, save, show, rm.")
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    a = actions.add_parser("list", help="List saved configs.")
    add_common(a, suppress=True)
    a.set_defaults(run=cmd_configs_list)
    a = actions.add_parser("save", help="Save CONFIG.yaml as a named template.")
    add_common(a, suppress=True)
    a.add_argument("name")
    a.add_argument("config", metavar="CONFIG.yaml")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets")
    a.set_defaults(run=cmd_configs_save)
    a = actions.add_parser("show", help="Print a saved config (by name or id).")
    add_common(a, suppress=True)
    a.add_argument("ref", metavar="NAME")
    a.set_defaults(run=cmd_configs_show)
    a = actions.add_parser("rm", help="Delete a saved config (by name or id).")
    add_common(a, suppress=True)
    a.add_argument("ref", metavar="NAME")
    a.set_defaults(run=cmd_configs_rm)

    add_webhook_commands(commands, add_common)
    command("models", cmd_models, "Models the server can train offline.")
    command("health", cmd_health, "Check that the server answers.")
    return parser


def add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes, before or after the command's name."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--url", default=default(os.environ.get("SFT_URL") or DEFAULT_URL),
                        help=f"The server (env SFT_URL; default {DEFAULT_URL}).")
    parser.add_argument("--api-key", default=default(os.environ.get("SFT_API_KEY")),
                        help="Sent as Authorization: Bearer (env SFT_API_KEY).")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="Print JSON (one document per line) instead of text.")
    parser.add_argument("--timeout", type=float, default=default(30.0), help="Seconds to wait for an answer.")


def add_interrupt(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stop-on-interrupt", action="store_true",
                        help="Ctrl-C stops the job too (by default the job keeps running).")


# Configs from files


def load_config(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of config fields, not a {type(data).__name__}")
    return data


def apply_sets(config: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """``config`` with each ``key=value`` applied; a dotted key sets a field of a mapping (column_mapping.x=y)."""
    config = dict(config)
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as error:
            raise UsageError(f"--set {item!r}: the value is not valid YAML ({error})") from error
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        *parents, leaf = key.strip().split(".")
        target = config
        for part in parents:
            child = target.get(part)
            target[part] = dict(child) if isinstance(child, dict) else {}
            target = target[part]
        target[leaf] = value
    return config


def find_config(client: SFTClient, ref: str) -> SavedConfig:
    configs = client.list_configs()
    match = next((c for c in configs if c.config_id == ref), None) or next(
        (c for c in configs if c.name == ref), None)
    if match is None:
        raise UsageError(f"no saved config named {ref!r} (nor with that id); `sft configs list` shows them")
    return match


# Following


def follow_job(client: SFTClient, job_id: str, out: Output, *, stop_on_interrupt: bool) -> int:
    """Show the job until it ends; the exit code says how it ended."""
    if out.json:
        view: FollowView = JsonFollowView(out, job_id)
    elif out.interactive:
        view = BarFollowView(out, job_id, client)
    else:
        view = FollowView(out, job_id)
    last = 0
    view.start()
    try:
        try:
            for event in client.follow(job_id, on_disconnect=view.disconnected, on_reconnect=view.reconnected):
                last = event.seq
                view.event(event)
        except KeyboardInterrupt:
            view.close()
            if not stop_on_interrupt:
                out.note(f"Stopped following. Job {job_id} keeps running on the server: `sft follow {job_id}` "
                         f"watches it again, `sft stop {job_id}` stops it.", style="yellow")
                return EXIT_INTERRUPTED
            try:
                out.note(client.stop_job(job_id).message + "; waiting for it to stop", style="yellow")
            except ConflictError as error:  # it ended meanwhile
                out.note(error.detail)
            view = JsonFollowView(out, job_id) if out.json else FollowView(out, job_id)
            for event in client.follow(job_id, after=last):
                view.event(event)
        job = client.get_job(job_id)
        view.finish(job)
    finally:
        view.close()
    return EXIT_OK if job.status == "completed" else EXIT_JOB_FAILED


# Commands


def cmd_train(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    config = apply_sets(load_config(args.config) if args.config else {}, args.sets)
    if args.from_config:
        saved = find_config(client, args.from_config)
        start = client.train(config_id=saved.config_id, overrides=config or None,
                             idempotency_key=args.idempotency_key)
    elif args.config:
        start = client.train(config, idempotency_key=args.idempotency_key)
    else:
        raise UsageError("train needs CONFIG.yaml or --from-config NAME")
    if args.quiet and not out.json:
        out.line(start.job_id)
    elif out.json:
        out.data(start.raw)
    else:
        queued = f", queue position {start.queue_position}" if start.queue_position else ""
        out.line(f"Job {start.job_id} submitted ({start.status}{queued})", style="bold")
        if not args.follow:
            out.line(f"Follow it with: sft follow {start.job_id}")
    if args.follow:
        return follow_job(client, start.job_id, out, stop_on_interrupt=args.stop_on_interrupt)
    return EXIT_OK


def cmd_plan(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    """Exit 0 when the config fits (or the server cannot tell), 1 when it does not."""
    config = apply_sets(load_config(args.config) if args.config else {}, args.sets)
    if args.from_config:
        plan = client.plan(config_id=find_config(client, args.from_config).config_id, overrides=config or None)
    elif args.config:
        plan = client.plan(config)
    else:
        raise UsageError("plan needs CONFIG.yaml or --from-config NAME")
    if out.json:
        out.data(plan.raw)
    else:
        est = plan.estimate
        out.line(plan.message, style="bold" if plan.fits is not False else "bold red")
        rows = [[name, f"{value:,.0f}"] for name, value in (
            ("weights", est.weights_mb), ("gradients", est.gradients_mb), ("optimizer", est.optimizer_mb),
            ("activations", est.activations_mb), ("logits", est.logits_mb), ("overhead", est.overhead_mb),
            ("loading", est.loading_mb),
            ("total", est.total_mb))]
        out.table(["TERM", "MiB"], rows)
        out.note(f"{est.model}: {est.params / 1e9:.2f} B parameters, {est.trainable_params:,} trained ({est.method}, "
                 f"{est.precision}, {est.strategy} over {est.num_workers} worker(s), {est.tokens_per_batch:,} tokens "
                 "per batch)")
    return EXIT_OK if plan.fits is not False else EXIT_JOB_FAILED


def cmd_follow(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    return follow_job(client, args.job_id, out, stop_on_interrupt=args.stop_on_interrupt)


def cmd_jobs(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    page = client.list_jobs(status=args.status, limit=args.limit)
    if out.json:
        out.data(page.raw)
        return EXIT_OK
    rows = [[job.job_id, job.status, str(job.config.get("base_model", "")), str(job.config.get("dataset_name", "")),
             step_text(job), when(job.created_at)] for job in page.jobs]
    out.table(["ID", "STATUS", "MODEL", "DATASET", "STEP", "CREATED"], rows)
    if page.total > len(page.jobs) and out.console.is_terminal:
        out.note(f"{len(page.jobs)} of {page.total} jobs (--limit to see more)")
    return EXIT_OK


def cmd_show(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    job = client.get_job(args.job_id)
    if out.json:
        out.data(job.raw)
        return EXIT_OK
    show_job(out, job)
    return EXIT_OK


def show_job(out: Output, job: Job) -> None:
    out.line(f"Job {job.job_id}", style="bold")
    rows = [("status", job.status + (f" (queue position {job.queue_position})" if job.queue_position else "")),
            ("created", when(job.created_at)), ("started", when(job.started_at)),
            ("ended", when(job.completed_at))]
    progress = job.progress
    if progress is not None:
        rows.append(("step", step_text(job) + (f" ({progress.phase})" if progress.phase else "")))
        if progress.loss is not None:
            rows.append(("loss", f"{progress.loss:.4f}"))
        if progress.eta_seconds is not None and not job.is_terminal:
            rows.append(("eta", f"{progress.eta_seconds:.0f} s"))
        if progress.tokens_per_second:
            rows.append(("tokens/s", f"{progress.tokens_per_second:,.0f}"))
    if job.adapter_path:
        rows.append(("adapter", job.adapter_path))
    for key in ("train_loss", "eval_loss", "global_step", "train_runtime"):
        value = (job.result or {}).get(key)
        if value is not None:
            rows.append((key, f"{value:.4f}" if isinstance(value, float) else str(value)))
    if job.error:
        rows.append(("error", job.error))
    if len(job.attempts) > 1:
        rows.append(("attempts", str(len(job.attempts))))
    if job.memory is not None:
        memory = job.memory
        measured = (f", {memory.measured_peak_mb:,.0f} MiB measured ({memory.measured_from})"
                    if memory.measured_peak_mb else "")
        rows.append(("peak memory", f"~{memory.estimated_peak_mb:,.0f} MiB estimated{measured}"))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        out.line(f"  {key:<{width}}  {value}")
    if job.error_detail and job.error_detail.log_tail:
        out.line("Last log lines:")
        indented(out, job.error_detail.log_tail)
    out.line("Config:")
    for line in yaml.safe_dump(job.config.to_dict(), sort_keys=False, allow_unicode=True).splitlines():
        out.line(f"  {line}")


def cmd_stop(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    result = client.stop_job(args.job_id)
    out.answer(result.raw, result.message)
    return EXIT_OK


def cmd_resume(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    start = client.resume_job(args.job_id)
    if out.json:
        out.data(start.raw)
    else:
        queued = f", queue position {start.queue_position}" if start.queue_position else ""
        out.line(f"Job {start.job_id} resumed ({start.status}{queued})")
    if args.follow:
        return follow_job(client, start.job_id, out, stop_on_interrupt=args.stop_on_interrupt)
    return EXIT_OK


def cmd_logs(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    if args.tail is not None and args.tail < 1:
        raise UsageError("--tail must be at least 1")
    if not args.follow:
        lines = client.logs(args.job_id, tail=args.tail)
        if out.json:
            out.data({"job_id": args.job_id, "lines": lines})
        else:
            for line in lines:
                out.line(line)
        return EXIT_OK
    printed = None
    while True:
        job = client.get_job(args.job_id)  # before the lines: the last read then has every line
        lines = client.logs(args.job_id)
        if printed is None:
            printed = max(len(lines) - args.tail, 0) if args.tail else 0
        for line in lines[min(printed, len(lines)):]:
            if out.json:
                out.data(line)
            else:
                out.line(line)
        printed = len(lines)
        if job.is_terminal:
            return EXIT_OK if job.status == "completed" else EXIT_JOB_FAILED
        time.sleep(LOG_POLL_SECONDS)


def cmd_events(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    view = JsonFollowView(out, args.job_id) if out.json else FollowView(out, args.job_id)
    if args.follow:
        for event in client.follow(args.job_id, on_disconnect=view.disconnected, on_reconnect=view.reconnected):
            view.event(event)
        job = client.get_job(args.job_id)
        return EXIT_OK if job.status == "completed" else EXIT_JOB_FAILED
    after = 0
    while True:
        page = client.events(args.job_id, after=after, limit=1000)
        for event in page.events:
            view.event(event)
        if not page.events:
            return EXIT_OK
        after = page.next_after


def cmd_generate(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    prompt = args.prompt if args.raw else None
    messages = None if args.raw else [{"role": "user", "content": args.prompt}]
    result = client.generate(args.job_id, prompt, messages=messages, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, compare_base=args.compare_base,
                             checkpoint=args.checkpoint)
    if out.json:
        out.data(result.raw)
    elif args.compare_base:
        out.line("Fine-tuned:", style="bold")
        out.line(result.completion)
        out.note(f"{result.completion_tokens} tokens in {result.latency_ms:,.0f} ms", style="dim")
        out.line()
        out.line("Base:", style="bold")
        out.line(result.base_completion or "")
        if result.base_latency_ms is not None:
            out.note(f"{result.base_completion_tokens} tokens in {result.base_latency_ms:,.0f} ms", style="dim")
    else:
        out.line(result.completion)
        out.note(f"{result.completion_tokens} tokens in {result.latency_ms:,.0f} ms", style="dim")
    return EXIT_OK


def cmd_evaluate(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    result = client.evaluate(args.job_id, dataset_name=args.dataset, split=args.split, max_samples=args.max_samples,
                             max_new_tokens=args.max_new_tokens, checkpoint=args.checkpoint)
    if out.json:
        out.data(result.raw)
        return EXIT_OK
    out.line(f"Exact match on {result.dataset_name} ({result.split}, {result.tuned.n} rows):", style="bold")
    out.line(f"  base   {result.base.exact_match:.2f}")
    out.line(f"  tuned  {result.tuned.exact_match:.2f}")
    return EXIT_OK


def cmd_download(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    directory = Path(args.output)
    try:
        check_destination(directory)
    except DownloadError as error:
        raise UsageError(f"-o {args.output}: {error}") from error
    bar, on_progress = download_bar(out)
    if bar is not None:
        bar.start()
    try:
        path = client.download(args.job_id, directory, on_progress=on_progress)
    finally:
        if bar is not None:
            bar.stop()
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    if out.json:
        out.data({"job_id": args.job_id, "path": str(path.resolve()), "files": files})
    else:
        total = sum((path / f).stat().st_size for f in files)
        out.line(f"Adapter of job {args.job_id} unpacked into {path} ({len(files)} files, {size(total)})")
    return EXIT_OK


def cmd_merge(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    result = client.merge(args.job_id)
    out.answer(result.raw, f"Merged model (on the server): {result.merged_path} ({size(result.size_bytes)})")
    return EXIT_OK


def cmd_export(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    if args.output:
        try:
            check_destination(Path(args.output))
        except DownloadError as error:
            raise UsageError(f"-o {args.output}: {error}") from error
    export = client.export(args.job_id, format=args.format, type=args.type)
    if not args.no_wait:
        if out.interactive:
            out.note(f"Exporting job {args.job_id} as {args.format}{' ' + export.type if export.type else ''} "
                     f"(export {export.export_id})...")
        export = client.wait_export(args.job_id, export.export_id)
    saved: list[Path] = []
    if args.output and export.status == "completed":
        bar, on_progress = download_bar(out)
        if bar is not None:
            bar.start()
        try:
            saved = client.download_export(args.job_id, export.export_id, args.output, on_progress=on_progress)
        finally:
            if bar is not None:
                bar.stop()
    if out.json:
        out.data({**export.raw, **({"downloaded": [str(p) for p in saved]} if args.output else {})})
    elif export.status == "failed":
        out.note(f"Export {export.export_id} failed: {export.error}", style="red")
    else:
        out.line(f"Export {export.export_id}: {export.status} ({export.format}"
                 f"{', ' + export.type if export.type else ''}) on the server in {export.path}")
        for path in saved:
            out.line(f"  {path} ({size(path.stat().st_size)})")
    return EXIT_JOB_FAILED if export.status == "failed" else EXIT_OK


def cmd_exports(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    if args.rm:
        deleted = client.delete_export(args.job_id, args.rm)
        out.answer(deleted.raw, f"Deleted export {deleted.export_id} ({deleted.format}) of job {args.job_id}")
        return EXIT_OK
    exports = client.list_exports(args.job_id)
    if out.json:
        out.data([e.raw for e in exports])
        return EXIT_OK
    out.table(["EXPORT", "FORMAT", "TYPE", "STATUS", "SIZE", "CREATED"],
              [[e.export_id, e.format, e.type or "", e.status, size(e.result.size_bytes) if e.result else "",
                when(e.created_at)] for e in exports])
    return EXIT_OK


def cmd_export_formats(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    formats = client.export_formats()
    if out.json:
        out.data(formats.raw)
        return EXIT_OK
    out.line(f"Formats: {', '.join(formats.formats)}")
    out.line(f"GGUF types: {', '.join(formats.gguf_types)} (default {formats.default_gguf_type})")
    for name, why in formats.unavailable_gguf_types.items():
        out.line(f"  not here: {name}: {why}")
    return EXIT_OK


def cmd_configs_list(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    configs = client.list_configs()
    if out.json:
        out.data([c.raw for c in configs])
        return EXIT_OK
    rows = [[c.name, c.config_id, str(c.config.get("base_model", "")), when(c.created_at)] for c in configs]
    out.table(["NAME", "ID", "MODEL", "CREATED"], rows)
    return EXIT_OK


def cmd_configs_save(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    saved = client.save_config(args.name, apply_sets(load_config(args.config), args.sets))
    out.answer(saved.raw, f"Saved config {saved.name} ({saved.config_id})")
    return EXIT_OK


def cmd_configs_show(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    saved = client.get_config(find_config(client, args.ref).config_id)
    if out.json:
        out.data(saved.raw)
    else:
        out.line(f"# {saved.name} ({saved.config_id}), saved {when(saved.created_at)}")
        out.line(yaml.safe_dump(saved.config, sort_keys=False, allow_unicode=True).rstrip())
    return EXIT_OK


def cmd_configs_rm(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    saved = find_config(client, args.ref)
    message = client.delete_config(saved.config_id)
    out.answer({"message": message, "config_id": saved.config_id, "name": saved.name},
               f"Deleted config {saved.name} ({saved.config_id})")
    return EXIT_OK


def cmd_models(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    models = client.list_models()
    if out.json:
        out.data([m.raw for m in models])
        return EXIT_OK
    out.table(["NAME", "KIND", "READY", "PATH"],
              [[m.name, m.kind, "yes" if m.ready else "no", m.path] for m in models])
    return EXIT_OK


def cmd_health(client: SFTClient, args: argparse.Namespace, out: Output) -> int:
    health = client.health()
    if out.json:
        out.data(health.raw)
        return EXIT_OK
    jobs = ", ".join(f"{count} {status}" for status, count in sorted(health.jobs.items())) or "none"
    device = f" on {health.device}" if health.device else ""
    out.line(f"{client.base_url}: {health.status}, version {health.version}, "
             f"{health.max_concurrent_jobs} training slot(s){device}; jobs: {jobs}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
