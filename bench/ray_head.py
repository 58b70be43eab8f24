"""A real local Ray head: started with ``ray start --head --block`` in a session of its own, and stopped by
the process ids of that session (never ``ray stop``, which would stop every Ray on the machine). Ray's
workers put themselves in process groups of their own, but stay in the session. The Ray tests run their
jobs on it, and ``make bench`` its Ray section."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .service import free_port


#: Ray's object store holds nothing big here (events, small specs); /dev/shm may be small.
OBJECT_STORE_BYTES = 80 * 1024 * 1024


class LocalRayHead:
    """One Ray head node on this machine: ``address`` is its GCS address (``host:port``). With ``join``
    (a head's address), a worker node of that head's cluster instead."""

    def __init__(self, *, num_cpus: int = 2, num_gpus: int = 0, join: str | None = None,
                 env: dict[str, str] | None = None):
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.join = join
        self.env = env or {}
        self.port = free_port()
        self.address = join or f"127.0.0.1:{self.port}"
        # Short: Ray's socket paths under it must stay under the 107-byte limit of a Unix socket path.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalRayHead:
        ray_cli = Path(sys.executable).with_name("ray")
        where = ([f"--address={self.join}"] if self.join else
                 ["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}", "--include-dashboard=false"])
        command = [str(ray_cli), "start", *where, "--block", "--node-ip-address=127.0.0.1",
                   f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}",
                   f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats"]
        # Token auth off explicitly: Ray 2.60 turns it on for a new head when ~/.ray/auth_token exists (a
        # local ray.init() writes one), and a node joining such a head would then be refused.
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **self.env}
        self.log = (self.temp_dir / "head.log").open("w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        try:
            _wait_for(lambda: "Ray runtime started" in (self.temp_dir / "head.log").read_text()
                     or self.proc.poll() is not None, timeout=120, interval=0.2, message="the Ray head to start")
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            text = (self.temp_dir / "head.log").read_text()
            self.stop()
            raise RuntimeError(f"ray start failed:\n{text[-3000:]}")
        return self

    def crash(self) -> None:
        """SIGKILL every process of the node at once, as a machine that is lost would end them."""
        for pid in _session_pids(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.stop()

    def stop(self) -> None:
        """End every process of the head's session: SIGTERM, then SIGKILL for those that linger."""
        if self.proc is None:
            return
        session = self.proc.pid
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            pids = _session_pids(session)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _session_pids(session):
                if self.proc.poll() is None:
                    try:
                        self.proc.wait(timeout=0.2)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.2)
        self.proc.poll()
        self.proc = None
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _session_pids(session: int) -> list[int]:
    """The live processes of ``session`` (zombies waiting for their reaper do not count)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command's ")": state, ppid, pgrp, session.
        if fields[0] != "Z" and int(fields[3]) == session:
            pids.append(int(entry.name))
    return pids


def _wait_for(predicate, *, timeout: float, interval: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
