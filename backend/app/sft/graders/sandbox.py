"""Python graders, run in a separate, limited interpreter (``sandbox_runner.py``).

What it does: a fresh ``python -I -S`` (no site-packages, no PYTHON* variables), an empty environment, a
new temporary working folder; rlimits on address space (memory), CPU seconds, file size, open files and
processes; a per-sample alarm; an audit hook installed before the user's code that refuses opening files
outside that folder (the standard library stays readable so imports work), sockets, subprocesses,
exec/spawn/fork, ctypes, signals and environment changes; and a wall-clock limit from here, which kills
the process. A refused action raises PermissionError in the grader, so its sample scores as an error.

What it is not: a security boundary against a determined attacker. Audit hooks are a CPython debugging
and monitoring aid; code running in the interpreter can in principle get around them (by corrupting
interpreter state, for one). The process runs as the server's user, not in a container, namespace or
seccomp filter. Run graders you trust, or put the service itself in a container.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).with_name("sandbox_runner.py")


@dataclass(frozen=True)
class SandboxLimits:
    """The limits of one python grader run (a batch of samples in one process)."""

    #: Wall-clock seconds one grade(sample, item) call may take.
    seconds_per_sample: float = 5.0
    #: Address space of the whole process (the interpreter takes ~30 MiB of it).
    memory_bytes: int = 512 * 1024 * 1024
    #: Largest file the grader may write in its folder.
    file_bytes: int = 16 * 1024 * 1024

    def batch_seconds(self, n: int) -> float:
        """Wall-clock limit of a batch of ``n`` samples: their time limits and a second to start."""
        return self.seconds_per_sample * max(n, 1) + 2.0


class SandboxError(RuntimeError):
    """The sandbox process itself failed (killed at a limit, crashed); the message says how."""


def run_python_grader(source: str, pairs: list[tuple[dict[str, Any], dict[str, Any]]],
                      limits: SandboxLimits | None = None) -> list[dict[str, Any]]:
    """``grade(sample, item)`` of ``source`` for each pair: a ``{"score": x}`` or ``{"error": "..."}`` each.

    Raises:
        SandboxError: the process ran past its CPU or wall-clock limit, or died (every sample failed).
    """
    limits = limits or SandboxLimits()
    wall = limits.batch_seconds(len(pairs))
    payload = {"source": source, "pairs": pairs,
               "limits": {"seconds_per_sample": limits.seconds_per_sample, "memory_bytes": limits.memory_bytes,
                          "file_bytes": limits.file_bytes, "cpu_seconds": int(wall) + 1}}
    with tempfile.TemporaryDirectory(prefix="grader-") as workdir:
        try:
            done = subprocess.run([sys.executable, "-I", "-S", str(RUNNER)], input=json.dumps(payload),
                                  capture_output=True, text=True, timeout=wall, env={}, cwd=workdir, check=False)
        except subprocess.TimeoutExpired:
            raise SandboxError(f"the python grader ran past its time limit of {wall:g} s and was killed") from None
    if done.returncode != 0 or not done.stdout.strip():
        if done.returncode in (-24, -9):  # SIGXCPU, or SIGKILL at the hard CPU limit
            raise SandboxError(f"the python grader ran past its CPU time limit of {int(wall) + 1} s and was killed")
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise SandboxError(f"the python grader's process failed: {tail[0][:500]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return results
