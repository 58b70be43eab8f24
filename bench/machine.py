"""The machine a benchmark ran on: CPU, memory, packages, commit, load; and whether torch sees a CUDA GPU."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {name: pkg(name) for name in ("torch", "transformers", "trl", "peft", "fastapi", "uvicorn")},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": (commit or "unknown") + (" (with uncommitted changes)" if dirty else ""),
        "load_start": os.getloadavg(),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cuda_info(env: dict[str, str]) -> dict[str, Any]:
    """Whether torch sees a CUDA GPU (asked in a subprocess, so this process never imports torch)."""
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()):
        return {"available": False, "reason": "no CUDA GPU (no NVIDIA driver)"}
    code = ("import json, torch; ok = torch.cuda.is_available(); print(json.dumps({'available': ok, "
            "'name': torch.cuda.get_device_name(0) if ok else None, "
            "'bf16': bool(ok and torch.cuda.is_bf16_supported())}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable GPU
        return {"available": False, "reason": f"no CUDA GPU (torch check failed: {exc})"}
    if not info["available"]:
        info["reason"] = "no CUDA GPU (torch.cuda.is_available() is false)"
    return info
