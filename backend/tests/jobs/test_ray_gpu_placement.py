"""A real local Ray cluster: a head that declares 2 GPUs on this CPU machine (``ray start --num-gpus=2``),
a worker node of 2 CPUs, and later one of 3 CPUs whose memory monitor finds any use too much.
Each job's actor gets its own GPUs, a job that does not fit waits in Ray's queue, a job whose node is lost
fails as interrupted, and one Ray kills for memory fails as out_of_memory."""

from __future__ import annotations

import pytest

from app.jobs.executors.base import RunState
from app.jobs.executors.ray import RayExecutor
from app.sft.errors import ConfigError
from app.sft.events import EventKind
from factories import wait_for
from ray_cluster import RUN_TIMEOUT, Events, LocalRayHead, spec_for

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def nodes():
    started: list[LocalRayHead] = []
    try:
        head = LocalRayHead(num_cpus=1, num_gpus=2)
        started.append(head.start())
        started.append(LocalRayHead(num_cpus=2, join=head.address).start())
        yield started
    finally:
        for node in reversed(started):
            node.stop()


@pytest.fixture(scope="module")
def executor(nodes):
    import ray

    executor = RayExecutor(address=nodes[0].address, poll_seconds=0.1)
    assert executor.error is None, executor.error
    wait_for(lambda: executor.health()["nodes"] == 2, timeout=60, message="the worker node to join")
    yield executor
    executor.shutdown()
    ray.shutdown()


def test_two_jobs_get_disjoint_gpus_and_a_third_waits_for_one(executor, tiny_config, tmp_path):
    report = Events()
    # GPUs per worker left to its default: 1, since the cluster has GPUs. CPUs: half each, so that CPUs
    # are not what the third job waits for.
    specs = [spec_for(tiny_config, tmp_path, f"job-gpu-{n}", max_steps=100_000, num_cpus_per_worker=0.5)
             for n in range(3)]
    for spec in specs[:2]:
        executor.start(spec, report)
    for spec in specs[:2]:
        wait_for(lambda: executor.state(spec.job_id) is RunState.RUNNING, timeout=RUN_TIMEOUT, interval=0.1,
                 message=f"{spec.job_id} to be placed")

    placed = [executor.where(spec.job_id) for spec in specs[:2]]
    executor.start(specs[2], report)

    assert sorted(where["cuda_visible_devices"] for where in placed) == ["0", "1"]
    assert [where["gpu_ids"] for where in placed] == [[where["cuda_visible_devices"]] for where in placed]
    assert executor.health()["gpus"] == 2
    # Both GPUs are held: the third job is in Ray's queue, not running.
    wait_for(lambda: executor.state(specs[2].job_id) is RunState.WAITING, timeout=5)
    wait_for(lambda: report.of(specs[2].job_id), timeout=10, message="the third job's phase")
    assert report.of(specs[2].job_id)[0].payload == {"phase": "waiting_for_cluster"}
    for spec in specs:
        executor.cancel(spec.job_id)
    assert all(report.of(spec.job_id)[-1].payload["error_detail"]["category"] == "cancelled" for spec in specs)
    assert [e.kind for e in report.of(specs[2].job_id)] == [EventKind.PHASE, EventKind.EXITED]  # it never ran


def test_more_gpus_per_worker_than_a_node_has_is_refused(executor, tiny_config, tmp_path):
    with pytest.raises(ConfigError) as refused:
        executor.check(spec_for(tiny_config, tmp_path, "job-3-gpus", num_gpus_per_worker=3))
    assert refused.value.field == "num_gpus_per_worker"
    assert "at most 2 CPUs and 2 GPUs on one node" in str(refused.value)


def test_a_job_whose_node_is_lost_fails_as_interrupted(nodes, executor, tiny_config, tmp_path):
    report = Events()
    # 2 CPUs and no GPU: only the worker node can hold it.
    spec = spec_for(tiny_config, tmp_path, "job-lost-node", max_steps=100_000, num_gpus_per_worker=0,
                    num_cpus_per_worker=2)
    executor.start(spec, report)
    wait_for(lambda: EventKind.STEP in report.kinds(spec.job_id), timeout=RUN_TIMEOUT, interval=0.1,
             message="a first step")
    import ray

    worker_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and not n["Resources"].get("GPU"))
    assert executor.where(spec.job_id)["node_id"] == worker_node

    nodes[1].crash()

    exited = report.exited(spec.job_id, timeout=120)
    assert exited.payload["status"] == "failed"
    detail = exited.payload["error_detail"]
    assert detail["category"] == "interrupted"
    assert detail["message"].startswith("interrupted: the Ray node running the job was lost; resume the job"), detail


def test_a_job_ray_kills_for_memory_fails_as_out_of_memory(nodes, executor, tiny_config, tmp_path):
    # A node whose memory monitor kills the worker of any task or actor (the machine uses more than 1 %).
    starved = LocalRayHead(num_cpus=3, join=nodes[0].address, env={
        "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "100"}).start()
    nodes.append(starved)
    wait_for(lambda: any(node["CPU"] == 3 for node in executor.cluster()), timeout=60, message="the node to join")
    report = Events()
    # 3 CPUs: only the starved node can hold it.
    spec = spec_for(tiny_config, tmp_path, "job-oom", num_gpus_per_worker=0, num_cpus_per_worker=3)

    executor.start(spec, report)

    exited = report.exited(spec.job_id, timeout=120)
    assert exited.payload["status"] == "failed"
    detail = exited.payload["error_detail"]
    assert detail["category"] == "out_of_memory", detail
    assert detail["message"].startswith("out of memory: Ray killed the job's worker to keep its node alive")


def test_the_fit_planner_reads_what_a_worker_has_and_auto_picks_fsdp_when_it_must(executor, tiny_config, tmp_path):
    """Ray's resources carry no GPU memory: it is read from each GPU node (nvidia-smi, absent on this CPU machine's
    declared GPUs: unknown, never a refusal) or taken from the setting; CPU workers get a node's memory."""
    import json

    from app.core.errors import InvalidConfig
    from app.core.settings import Settings
    from app.jobs.fit import check_fit
    from app.sft.planner import GIB, REFERENCE_MODELS

    assert executor.device_memory(spec_for(tiny_config, tmp_path, "job-gpu-memory")) is None
    gpu = executor.device_memory(spec_for(tiny_config, tmp_path, "job-gpu-memory"), gpu_memory_gb=16)
    assert (gpu.kind, gpu.bytes, gpu.max_workers) == ("cuda", 16 * GIB, 2)
    cpu = executor.device_memory(spec_for(tiny_config, tmp_path, "job-cpu-memory", num_gpus_per_worker=0))
    assert cpu.kind == "cpu" and cpu.bytes > 0

    model = tmp_path / "llama-3.2-1b"  # Llama 3.2 1B's config.json only: full fine-tuning needs ~24 GiB on one GPU
    model.mkdir()
    (model / "config.json").write_text(json.dumps(REFERENCE_MODELS["meta-llama/Llama-3.2-1B"]))
    settings = Settings(data_dir=tmp_path / "data", gpu_memory_gb=16, model_roots=[tmp_path])
    job = {**tiny_config, "base_model": str(model), "use_lora": False, "max_length": 512,
           "per_device_train_batch_size": 1, "gradient_checkpointing": True}
    spec = spec_for(job, tmp_path, "job-auto", num_workers=2)
    resolved, plan = check_fit(spec.config, spec, settings=settings, executor=executor)
    assert resolved.distributed_strategy == "fsdp" and plan["fits"] and plan["estimate"]["strategy"] == "fsdp"
    one = spec_for(job, tmp_path, "job-one")
    with pytest.raises(InvalidConfig) as refused:
        check_fit(one.config, one, settings=settings, executor=executor)
    assert refused.value.detail.startswith("config.num_workers: needs ~24 GiB per GPU; each worker's 1 GPU(s): "
                                           "16 GiB: use fsdp over 2 workers")
