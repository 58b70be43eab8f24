"""Placement fields of SFTConfig, the thread executor's refusal of what needs a cluster, and the Ray settings
(no Ray needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.errors import InvalidConfig
from app.core.settings import Settings
from app.jobs.executors import LocalThreadExecutor, create_executor
from app.jobs.executors.ray import RayExecutor
from app.sft.config import SFTConfig
from factories import free_port

BASE = {"base_model": "m", "dataset_name": "d", "max_steps": 1}


def test_placement_defaults_and_bounds():
    config = SFTConfig(**BASE)
    assert (config.num_workers, config.num_gpus_per_worker, config.num_cpus_per_worker) == (1, None, 1)
    for field, value in (("num_workers", 0), ("num_gpus_per_worker", -1), ("num_cpus_per_worker", 0),
                         ("num_workers", 1025)):
        with pytest.raises(ValidationError) as refused:
            SFTConfig(**BASE, **{field: value})
        assert refused.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(("field", "value", "detail"), [
    ("num_workers", 2, "config.num_workers: 2 workers need SFT_EXECUTOR=ray; the thread executor trains a job in "
                       "one process"),
    ("num_gpus_per_worker", 2, "config.num_gpus_per_worker: 2 GPUs per worker need SFT_EXECUTOR=ray; the thread "
                               "executor trains a job on one device"),
])
def test_the_thread_executor_refuses_what_needs_a_cluster(make_manager, tiny_config, field, value, detail):
    manager = make_manager()
    assert isinstance(manager.executor, LocalThreadExecutor)
    with pytest.raises(InvalidConfig) as refused:
        manager.create_job({**tiny_config, field: value})
    assert refused.value.detail == detail
    assert sum(manager.counts().values()) == 0  # nothing recorded


def test_ray_storage_is_the_output_root_of_the_ray_executor(tmp_path):
    shared = tmp_path / "shared"
    assert Settings(data_dir=tmp_path, executor="ray", ray_storage=str(shared)).resolved_output_root == shared
    assert Settings(data_dir=tmp_path, ray_storage=str(shared)).resolved_output_root == tmp_path / "outputs"
    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=tmp_path, executor="ray", ray_storage="s3://bucket/sft")
    assert "object-store URIs are not supported yet" in str(refused.value)


def test_create_executor_builds_the_ray_executor_from_the_settings(tmp_path):
    port = free_port()
    executor = create_executor(Settings(data_dir=tmp_path, executor="ray", ray_address=f"127.0.0.1:{port}",
                                        ray_stop_grace_seconds=7))
    assert isinstance(executor, RayExecutor)
    assert executor.stop_grace_seconds == 7
    assert executor.health()["status"] == "down"  # nothing listens there: the server would still start
    with pytest.raises(ValueError):
        create_executor(Settings(data_dir=tmp_path, executor="ray"), runner=lambda run, emit: {})
