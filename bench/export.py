"""Export time and peak memory per format, on the bundled model after a short demo job.

    .venv/bin/python bench/export.py [--steps 10] [--json out.json]

Trains one demo job (LoRA, the bundled smollm2-135m-instruct), then runs each export (adapter,
merged, GGUF f16 / bf16 / q8_0) in a fresh process of its own, so each peak is its own: the peak
resident set (VmHWM) of that process (imports, the fp32 merge) and of the converter it starts,
whichever is higher. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

FORMATS: tuple[tuple[str, str | None], ...] = (
    ("adapter", None), ("merged", None), ("gguf", "f16"), ("gguf", "bf16"), ("gguf", "q8_0"),
)


def _manager(work: Path, model_cache: Path):
    from app.api.sft_job_manager import SFTJobManager
    from app.core.settings import Settings
    from app.store import SQLiteStore

    settings = Settings(data_dir=work / "data", model_cache_dir=model_cache)
    return SFTJobManager(settings=settings, store=SQLiteStore(work / "sft.db"))


def train_demo_job(work: Path, model_cache: Path, steps: int) -> str:
    """A short demo job on the bundled model; its id."""
    manager = _manager(work, model_cache)
    job = manager.submit({"base_model": "smollm2-135m-instruct", "dataset_name": "bundled:json-extract",
                          "max_steps": steps, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                          "max_length": 256, "lora_dropout": 0.0})
    status = manager.wait_for_job(job.job_id)
    manager.store.close()
    if status["status"] != "completed":
        raise SystemExit(f"the demo job did not complete: {status['error']}")
    return job.job_id


def export_once(work: Path, model_cache: Path, job_id: str, fmt: str, gguf_type: str | None) -> dict[str, Any]:
    """Run one export in this process; its record plus this process' and its children's peak RSS."""
    from app.api.export_manager import ExportManager
    from app.sft.device import peak_rss_mb

    manager = _manager(work, model_cache)
    exports = ExportManager.of(manager)
    started = time.perf_counter()
    record = exports.submit(manager.get_job(job_id), fmt=fmt, gguf_type=gguf_type)
    record = exports.wait(job_id, record["export_id"], timeout=3600)
    wall = time.perf_counter() - started
    # VmHWM, not rusage: a process' maxrss starts from its parent's size at the fork.
    own = peak_rss_mb()
    children = (record["result"] or {}).get("tool_peak_rss_mb") or 0.0
    manager.store.close()
    return {"format": fmt, "type": gguf_type, "status": record["status"], "error": record["error"],
            "seconds": round(wall, 1), "size_mb": round((record["result"] or {}).get("size_bytes", 0) / 2**20, 1),
            "peak_rss_mb": round(max(own, children), 1), "process_peak_rss_mb": round(own, 1),
            "converter_peak_rss_mb": round(children, 1) if children else None}


def export_costs(*, work: Path, model_cache: Path, steps: int = 10,
                 formats: tuple[tuple[str, str | None], ...] = FORMATS) -> list[dict[str, Any]]:
    """Train a demo job, then time each export in a fresh process; one row per format."""
    job_id = train_demo_job(work, model_cache, steps)
    rows = []
    for fmt, gguf_type in formats:
        command = [sys.executable, __file__, "--one", job_id, "--work", str(work), "--model-cache", str(model_cache),
                   "--format", fmt] + (["--type", gguf_type] if gguf_type else [])
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| Export | Status | Time (s) | Size (MiB) | Peak RSS (MiB) | Converter peak RSS (MiB) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        name = row["format"] + (f" {row['type']}" if row["type"] else "")
        lines.append(f"| {name} | {row['status']} | {row['seconds']} | {row['size_mb']} | {row['peak_rss_mb']} | "
                     f"{row['converter_peak_rss_mb'] or ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="steps of the demo job")
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models",
                        help="where the bundled model is (or gets) converted")
    parser.add_argument("--work", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--one", metavar="JOB_ID", help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--type", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="export-bench-"))
    model_cache = args.model_cache.resolve()
    if args.one:
        print(json.dumps(export_once(work, model_cache, args.one, args.format, args.type)))
        return 0
    rows = export_costs(work=work, model_cache=model_cache, steps=args.steps)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
