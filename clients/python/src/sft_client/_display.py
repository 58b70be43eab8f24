"""What the ``sft`` command shows: plain lines, Rich tables and bars on a terminal, JSON for scripts."""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from .client import SFTClient
from .errors import SFTError
from .models import EfficiencyReport
from .types import Event, Job

#: Seconds between two looks at a followed job's progress (the bar moves every step; events come
#: only at each logging step).
POLL_SECONDS = 0.5


class Output:
    """Where results go: stdout (results, JSON) and stderr (errors, notes).

    Rich leaves out colours and bars by itself when a stream is not a terminal (and honours NO_COLOR).
    """

    def __init__(self, *, as_json: bool):
        self.json = as_json
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    @property
    def interactive(self) -> bool:
        """Bars and live displays: only for people at a terminal."""
        return self.console.is_terminal and not self.json

    def data(self, value: Any) -> None:
        """One JSON document on one line of stdout."""
        sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def line(self, text: str | Text = "", style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, soft_wrap=True)

    def answer(self, data: Any, text: str) -> None:
        """A command's answer: ``data`` as one JSON document with --json, otherwise ``text``."""
        if self.json:
            self.data(data)
        else:
            self.line(text)

    def note(self, text: str, style: str | None = None) -> None:
        self.err.print(text, style=style, markup=False, soft_wrap=True)

    def table(self, columns: list[str], rows: list[list[str]]) -> None:
        if not self.console.is_terminal:
            # Pipes and IDE consoles: columns padded to their widest cell, nothing cut to a terminal's width
            # (scripts read --json).
            widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
            for row in [columns, *rows]:
                self.line("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
            return
        table = Table(*columns, box=None, header_style="bold", pad_edge=False)
        for row in rows:
            table.add_row(*row)
        self.console.print(table)


def clock(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return iso


def when(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def indented(out: Output, lines: list[str]) -> None:
    """Log lines, indented (an entry may span several lines: a logged config, a traceback)."""
    for entry in lines:
        for line in entry.splitlines() or [""]:
            out.line(f"  {line}")


def show_efficiency(out: Output, job: Job) -> None:
    """The efficiency report of a job that trained: one summary line, then its hints."""
    data = (job.result or {}).get("efficiency")
    if not data:
        return
    report = EfficiencyReport.model_validate(data)
    out.line(report.summary())
    if report.peak_source:
        out.line(f"  peak: {report.peak_source}")
    for hint in report.hints:
        out.line(f"  hint: {hint.text}")


def step_text(job: Job) -> str:
    progress = job.progress
    if progress is None or progress.current_step is None:
        return "-"
    return f"{progress.current_step}/{progress.max_steps or '?'}"


# Following a job


class FollowView:
    """Shows a followed job's events as they come, then its end. Plain lines by default."""

    def __init__(self, out: Output, job_id: str):
        self.out = out
        self.job_id = job_id

    def start(self) -> None:
        pass

    def event(self, event: Event) -> None:
        style = {"error": "red", "warning": "yellow"}.get(event.level)
        self.out.line(f"{clock(event.time)}  {event.message}", style=style)

    def disconnected(self, error: Exception) -> None:
        self.out.note(f"Connection to the server lost ({error}); reconnecting...", style="yellow")

    def reconnected(self) -> None:
        self.out.note("Reconnected; following the job again", style="green")

    def close(self) -> None:
        pass

    def finish(self, job: Job) -> None:
        result = job.result or {}
        if job.status == "completed":
            parts = [f"{result.get('global_step', '?')} steps"]
            for key in ("train_loss", "eval_loss"):
                if result.get(key) is not None:
                    parts.append(f"{key} {result[key]:.4f}")
            if result.get("train_runtime") is not None:
                parts.append(f"{duration(result['train_runtime'])} of training")
            self.out.line(f"Job {job.job_id} completed: {', '.join(parts)}", style="bold green")
            self.out.line(f"Adapter: {job.adapter_path}")
        elif job.status == "stopped":
            if job.adapter_path:
                self.out.line(f"Job {job.job_id} stopped at step {result.get('global_step', '?')}", style="yellow")
                self.out.line(f"Adapter trained so far: {job.adapter_path}")
            else:
                self.out.line(f"Job {job.job_id} stopped before training began", style="yellow")
        elif job.status == "failed":
            detail = job.error_detail
            category = f" ({detail.category})" if detail else ""
            self.out.line(f"Job {job.job_id} failed{category}: {job.error}", style="bold red")
            tail = detail.log_tail if detail else []
            if tail:
                self.out.line("Last log lines:")
                indented(self.out, tail)
        else:
            self.out.line(f"Job {job.job_id} is {job.status}")


class JsonFollowView(FollowView):
    """JSON Lines: each event as it comes, then the job's final record."""

    def event(self, event: Event) -> None:
        self.out.data(event.raw)

    def finish(self, job: Job) -> None:
        self.out.data(job.raw)


class BarFollowView(FollowView):
    """A Rich progress bar (step / max, loss, ETA, tokens/s) fed by the job's record, with the
    events printed above it."""

    def __init__(self, out: Output, job_id: str, client: SFTClient):
        super().__init__(out, job_id)
        self.client = client
        self.progress = Progress(
            TextColumn("{task.description:<17}"),
            # Rich's default fill is red-pink, which reads as an error while a job trains well.
            BarColumn(complete_style="cyan", finished_style="green"),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[speed]}"),
            console=out.console,
            refresh_per_second=4,
        )
        self.task = self.progress.add_task("waiting", total=None, loss="", eta="", speed="")
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="sft-follow-poll", daemon=True)
        self._offline = False

    def start(self) -> None:
        self.progress.start()
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.show(self.client.get_job(self.job_id))
            except SFTError:  # the server restarting: the event stream says so, the bar waits
                pass
            self._stop.wait(POLL_SECONDS)

    def show(self, job: Job) -> None:
        progress = job.progress
        if progress is None:
            self.progress.update(self.task, description=job.status)
            return
        fields: dict[str, Any] = {}
        if progress.loss is not None:
            fields["loss"] = f"loss {progress.loss:.4f}"
        if progress.eta_seconds is not None and not job.is_terminal:
            fields["eta"] = f"ETA {duration(progress.eta_seconds)}"
        elif progress.phase == "training" and not job.is_terminal:
            fields["eta"] = "ETA estimating…"
        if progress.tokens_per_second:
            fields["speed"] = f"{progress.tokens_per_second:,.0f} tok/s"
        phase = "reconnecting" if self._offline else (progress.phase or job.status)
        self.progress.update(self.task, description=phase.replace("_", " "), completed=progress.current_step or 0,
                             total=progress.max_steps or None, **fields)

    def event(self, event: Event) -> None:
        if event.type == "metrics":
            step, loss = event.data.get("step"), event.data.get("loss")
            fields = {"loss": f"loss {loss:.4f}"} if loss is not None else {}
            if step:  # the end-of-run summary has no step: the bar must not fall back to empty
                fields["completed"] = step
            self.progress.update(self.task, **fields)
            return
        style = {"error": "red", "warning": "yellow"}.get(event.level)
        self.progress.console.print(Text(f"{clock(event.time)}  {event.message}", style=style or ""))

    def disconnected(self, error: Exception) -> None:
        self._offline = True
        self.progress.update(self.task, description="reconnecting")
        self.progress.console.print(Text(f"Connection to the server lost ({error}); reconnecting...",
                                         style="yellow"))

    def reconnected(self) -> None:
        self._offline = False
        self.progress.console.print(Text("Reconnected; following the job again", style="green"))

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(timeout=5)
        self.progress.stop()

    def finish(self, job: Job) -> None:
        self.show(job)
        self.close()
        super().finish(job)


def download_bar(out: Output) -> tuple[Progress | None, Any]:
    """A byte progress bar for a download on a terminal, and the ``on_progress`` callback that feeds it."""
    if not out.interactive:
        return None, None
    progress = Progress(TextColumn("downloading"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=out.console)
    task = progress.add_task("download", total=None)

    def on_progress(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)

    return progress, on_progress
