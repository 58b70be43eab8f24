"""Shared fixtures: a tiny random model built once, isolated settings, managers with seams."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

# Everything the app writes goes to a throwaway directory; set before any app import.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="sft-tests-"))
os.environ.setdefault("SFT_DATA_DIR", str(_SESSION_DIR / "data"))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A suite started in the background (`make test &`, nohup, some CI runners) inherits SIGINT ignored, and so would
# every process it starts: a test that presses Ctrl-C on the `sft` command would wait out its timeout.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402

from app.core.settings import Settings  # noqa: E402
from factories import build_tiny_model, contact_rows, write_jsonl  # noqa: E402

# make_manager, manager, gate, client, fake_config...: the job-service fixtures, for every test directory.
pytest_plugins = ("manager_fixtures",)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Tiny models gain nothing from intra-op threads, and two OpenMP threads fighting another
    # process for 2 cores make each step ~50x slower.
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Point the Hub client at a closed local port: "unreachable" on any machine, network or not."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return build_tiny_model(_SESSION_DIR / "tiny-model")


@pytest.fixture(scope="session")
def ray_head():
    """One local Ray head (2 CPUs, no GPU) for every ray-marked module that needs no cluster of its own: started
    once per session, stopped by its session's process ids (bench/ray_head.py)."""
    from bench.ray_head import LocalRayHead

    head = LocalRayHead(num_cpus=2).start()
    yield head
    head.stop()


@pytest.fixture
def chat_jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", contact_rows(32))


@pytest.fixture(scope="session")
def shared_model_cache() -> Path:
    """The model cache every test shares: the bundled model is converted into it once per session."""
    return _SESSION_DIR / "model-cache"


@pytest.fixture
def settings(tmp_path: Path, shared_model_cache: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", dataset_roots=[tmp_path], model_roots=[tmp_path, _SESSION_DIR],
                    model_cache_dir=shared_model_cache)


@pytest.fixture
def tiny_config(tiny_model_dir: Path, chat_jsonl: Path) -> dict:
    """A config that trains the tiny model for a few fast steps."""
    return {
        "base_model": str(tiny_model_dir),
        "dataset_name": str(chat_jsonl),
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "learning_rate": 5e-3,
        "logging_steps": 1,
    }
