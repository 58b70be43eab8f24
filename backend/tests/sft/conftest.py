"""Fixtures of the training core's tests: finished jobs to generate with, merge and archive."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.api.sft_job_manager import SFTJobManager
from app.core.settings import Settings
from app.store import SQLiteStore
from factories import build_tiny_model, contact_rows, wait_for, write_jsonl

@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model_dir):
    """One manager and three finished jobs (trained once per test session): LoRA (with checkpoints), QLoRA and full fine-tuning."""
    root = tmp_path_factory.mktemp("inference")
    data = write_jsonl(root / "chat.jsonl", contact_rows(32))
    # bitsandbytes' CPU inference path packs weights in blocks of 64: a 32-wide model cannot run it.
    wide_model = build_tiny_model(root / "tiny-64", hidden=64)
    settings = Settings(data_dir=root / "data", dataset_roots=[root], model_cache_dir=root / "model-cache",
                        model_roots=[root, tiny_model_dir.parent])
    manager = SFTJobManager(settings=settings, store=SQLiteStore(root / "db"))
    common = {"dataset_name": str(data), "per_device_train_batch_size": 4, "logging_steps": 5}
    configs = {
        "lora": {"base_model": str(tiny_model_dir), "max_steps": 40, "learning_rate": 5e-2, "save_steps": 20},
        "qlora": {"base_model": str(wide_model), "max_steps": 20, "learning_rate": 5e-2, "use_qlora": True},
        "full": {"base_model": str(tiny_model_dir), "max_steps": 20, "learning_rate": 1e-2, "use_lora": False},
    }
    jobs = {}
    for name, config in configs.items():
        job = manager.submit({**common, **config})
        status = manager.wait_for_job(job.job_id, timeout=120)
        assert status["status"] == "completed", status["error"]
        jobs[name] = manager.get_job(job.job_id)
    yield SimpleNamespace(manager=manager, settings=settings, jobs=jobs, root=root, data=data,
                          cache_dir=settings.resolved_model_cache_dir)
    # Every job has ended; its thread may still be returning from the terminal update.
    wait_for(lambda: not any(job.thread and job.thread.is_alive() for job in list(manager.jobs.values())),
             timeout=60, message="every job thread to exit")
    manager.store.close()
