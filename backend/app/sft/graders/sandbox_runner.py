"""Runs a python grader's ``grade(sample, item)`` over a batch, inside the sandbox process.

Started by ``sandbox.py`` as ``python -I -S sandbox_runner.py`` with an empty environment, its working
directory a fresh temporary folder and the payload on stdin. Before the user's code runs it sets resource
limits (address space, CPU seconds, file size, open files, processes) and installs an audit hook that
refuses files outside that folder (the standard library may be read, for imports), sockets, subprocesses,
exec/spawn/fork, signals to other processes, ctypes and changes to the environment. Writes one JSON line
of results to the real stdout; what the grader prints is discarded. Standard library only, by design.
"""

import collections  # noqa: F401  (pre-imported for graders: imports after the hook read only the stdlib)
import difflib  # noqa: F401
import io
import itertools  # noqa: F401
import json
import math
import os
import re  # noqa: F401
import resource
import signal
import statistics  # noqa: F401
import string  # noqa: F401
import sys
import sysconfig

_REFUSED_PREFIXES = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                     "os.system", "os.kill", "os.killpg", "os.putenv", "os.unsetenv", "ctypes.", "_posixsubprocess",
                     "pty.", "resource.setrlimit", "resource.prlimit", "signal.pthread_kill", "sys.remote_exec",
                     "webbrowser.", "urllib.", "http.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "nntplib.",
                     "telnetlib.", "shutil.", "os.setns", "os.unshare", "mmap.", "socket")
_PATH_EVENTS = ("os.listdir", "os.scandir", "os.chdir", "os.remove", "os.rename", "os.rmdir", "os.mkdir",
                "os.symlink", "os.link", "os.chmod", "os.chown", "os.truncate", "os.utime", "os.chflags",
                "os.lchflags", "os.setxattr", "os.removexattr", "os.listxattr", "os.getxattr", "glob.glob")
_REFUSED_IMPORTS = {"ctypes", "_ctypes", "socket", "_socket", "subprocess", "_posixsubprocess", "multiprocessing",
                    "_multiprocessing", "ssl", "_ssl", "mmap", "pty", "select", "selectors", "asyncio", "threading",
                    "_thread", "concurrent"}


class GraderTimeout(Exception):
    pass


def _inside(path, root):
    return path == root or path.startswith(root + os.sep)


def _install_hook(workdir, stdlib):
    def refuse(what):
        raise PermissionError(f"sandbox: {what} is not allowed in a python grader")

    def hook(event, args):
        if event == "open":
            path, mode = args[0], args[1]
            if isinstance(path, int) or path is None:
                return
            real = os.path.realpath(os.fsdecode(path))
            reading = mode in (None, "r", "rb") and not (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR))
            if _inside(real, workdir) or (reading and _inside(real, stdlib)):
                return
            refuse(f"opening {os.fsdecode(path)!r} (outside the grader's folder)")
        elif event == "import":
            if args[0].split(".")[0] in _REFUSED_IMPORTS:
                refuse(f"importing {args[0]}")
        elif event.startswith(_REFUSED_PREFIXES):
            refuse(event)
        elif event in _PATH_EVENTS:
            for arg in args:
                if isinstance(arg, (str, bytes)) and not _inside(os.path.realpath(os.fsdecode(arg)), workdir):
                    refuse(f"{event}({os.fsdecode(arg)!r}) outside the grader's folder")

    sys.addaudithook(hook)


def _limit(kind, value):
    resource.setrlimit(kind, (value, value))


def _score(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"grade() returned {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise ValueError(f"grade() returned {value}")
    return float(value)


def main():
    payload = json.loads(sys.stdin.read())
    out = sys.stdout
    limits = payload["limits"]
    _limit(resource.RLIMIT_AS, limits["memory_bytes"])
    _limit(resource.RLIMIT_CPU, limits["cpu_seconds"])
    _limit(resource.RLIMIT_FSIZE, limits["file_bytes"])
    _limit(resource.RLIMIT_NOFILE, 16)
    _limit(resource.RLIMIT_NPROC, 0)
    _limit(resource.RLIMIT_CORE, 0)

    def on_alarm(signum, frame):
        raise GraderTimeout(f"grade() ran past its time limit of {limits['seconds_per_sample']} s")

    signal.signal(signal.SIGALRM, on_alarm)
    sys.stdout = sys.stderr = io.StringIO()
    _install_hook(os.path.realpath(os.getcwd()), os.path.realpath(sysconfig.get_paths()["stdlib"]))
    del payload["limits"]
    results = []
    try:
        namespace = {"__name__": "grader"}
        exec(compile(payload["source"], "<grader>", "exec"), namespace)
        grade = namespace.get("grade")
        if not callable(grade):
            raise TypeError("the source does not define grade(sample, item)")
    except BaseException as exc:  # the user's module failed: every sample fails with its error
        error = f"{type(exc).__name__}: {exc}"
        results = [{"error": error} for _ in payload["pairs"]]
    else:
        for sample, item in payload["pairs"]:
            signal.setitimer(signal.ITIMER_REAL, limits["seconds_per_sample"])
            try:
                results.append({"score": _score(grade(sample, item))})
            except MemoryError:
                results.append({"error": f"MemoryError: grade() ran past the memory limit of "
                                         f"{limits['memory_bytes'] // 2**20} MiB"})
            except BaseException as exc:
                results.append({"error": f"{type(exc).__name__}: {exc}"[:2000]})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    out.write(json.dumps(results) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
