"""The device a model runs on, and the process memory around models: the ML stack loaded once, memory
handed back once models are dropped, GPU memory figures."""

from __future__ import annotations

import ctypes
import functools
import gc
import platform
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .planner import DeviceMemory

_stack_lock = threading.Lock()
_stack_loaded = False


@functools.cache
def default_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu'. Cached; torch is only imported when a CUDA driver exists
    (the API's pre-flight asks, and must not import torch on a machine without a GPU)."""
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def cpu_identity() -> tuple[str, frozenset[str]]:
    """This CPU's model name and feature flags (from /proc/cpuinfo; the platform's names elsewhere)."""
    model, flags = "", frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def cpu_bf16_units() -> str | None:
    """'AMX' or 'AVX-512 BF16' when this CPU has bf16 matmul units, else None."""
    flags = cpu_identity()[1]
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX-512 BF16"
    return None


def load_ml_stack() -> None:
    """Import torch, transformers, PEFT, TRL and datasets once, then hide them from the cyclic GC.

    Their ~500k import-time objects live as long as the process; left in the collector's view, every
    full collection walks them while holding the GIL (0.25 s on the 2-core reference machine), and
    accelerate collects at the start of each ``Trainer.train`` and ``release_memory`` at the end of
    each job: API requests stall. ``gc.freeze`` moves everything alive now out of the collector's
    view, so this runs before the first model is created (every load path calls it first), never
    with a model alive.
    """
    global _stack_loaded
    with _stack_lock:
        if _stack_loaded:
            return
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import trl  # noqa: F401

        gc.collect()
        gc.freeze()
        _stack_loaded = True


def release_memory() -> None:
    """Return freed model memory to the system (and the GPU's cached blocks) once models are dropped."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        # cuBLAS keeps a workspace per (thread, stream) in the caching allocator; every job runs in a
        # new thread, so each job would leave its workspace allocated (torch 2.x) without this.
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear_workspaces is not None:
            clear_workspaces()
        torch.cuda.empty_cache()
    _trim_heap()


def gpu_memory() -> dict[str, float] | None:
    """This process' CUDA memory in MiB (allocated, reserved, peak allocated), or None without a GPU.

    Never initialises CUDA: before the first job touches the GPU every figure is 0.
    """
    if default_device() != "cuda":
        return None
    import torch

    mib = 1024 * 1024
    return {
        "memory_allocated_mb": round(torch.cuda.memory_allocated() / mib, 1),
        "memory_reserved_mb": round(torch.cuda.memory_reserved() / mib, 1),
        "max_memory_allocated_mb": round(torch.cuda.max_memory_allocated() / mib, 1),
    }


def device_memory(gpu_memory_gb: float | None = None) -> DeviceMemory:
    """What a job trained in this process has (the fit planner's device): the first GPU's total memory
    (``gpu_memory_gb`` when given), or on CPU the memory still available plus what this process holds
    already (the planner's overhead counts the process itself)."""
    from .planner import GIB, DeviceMemory

    if default_device() == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        total = int(gpu_memory_gb * GIB) if gpu_memory_gb else int(props.total_memory)
        return DeviceMemory("cuda", total, f"this GPU ({props.name})")
    available = _meminfo_bytes("MemAvailable") + _meminfo_bytes("VmRSS", "/proc/self/status")
    return DeviceMemory("cpu", available, "this machine's available memory")


def _meminfo_bytes(key: str, path: str = "/proc/meminfo") -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process' peak resident set (VmHWM) in MiB; 0 when it is gone or the system has no /proc. (Not
    ru_maxrss: it keeps the peak of the process that exec'd this one.)"""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


#: glibc's ``mallopt`` parameter for the size from which an allocation gets its own mapping (M_MMAP_THRESHOLD).
_M_MMAP_THRESHOLD = -3
#: glibc's initial mmap threshold (128 KiB): what ``pin_mmap_threshold`` keeps it at.
DEFAULT_MMAP_THRESHOLD = 128 * 1024


def pin_mmap_threshold(size: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Make every later allocation of ``size`` bytes or more in this process its own mapping, handed back to the
    system as soon as it is freed; True when set (glibc), False elsewhere (macOS, musl: nothing to do).

    glibc starts at 128 KiB but raises the threshold to the size of each mapped block that is freed (up to
    32 MiB), so after a few frees most tensors come from the heap, whose freed holes it keeps and reuses only
    for what fits them. Setting the threshold fixes it (and turns that adjustment off) for the whole process,
    every thread's arena included. The cost: a fresh mapping's pages are faulted in again each time."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, size))


def _trim_heap() -> None:
    # glibc keeps the heap a job freed (~1.5 GiB after the demo job) for reuse; malloc_trim hands it
    # back so an idle server is back near its import footprint. Not glibc (macOS, musl): nothing to do.
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
