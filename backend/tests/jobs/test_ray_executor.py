"""RayExecutor against a real local Ray head (2 CPUs, no GPU): runs, events, stop, cancel, re-attach,
placement refusals, a lost worker, and 2-worker data-parallel training with Ray Train."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from app.jobs.executors.base import JobSpec, RunState
from app.jobs.executors.ray import RayExecutor, RayUnavailable
from app.sft.errors import ConfigError
from app.jobs.executors.training import run_training
from app.sft.events import EventKind, TrainingEvent
from factories import free_port, wait_for, write_jsonl
from ray_cluster import RUN_TIMEOUT, Events, assert_one_stream, spec_for

pytestmark = pytest.mark.ray

@pytest.fixture(scope="module")
def head(ray_head):
    return ray_head


@pytest.fixture(scope="module")
def executor(head):
    import ray

    executor = RayExecutor(address=head.address, poll_seconds=0.1)
    assert executor.error is None, executor.error
    yield executor
    executor.shutdown()
    ray.shutdown()


def _actor_gone(ray, name: str) -> bool:
    try:
        ray.get_actor(name, namespace="sft-service")
    except ValueError:
        return True
    return False


def test_a_new_executor_reattaches_and_continues_the_stream_without_a_gap(head, executor, tiny_config, tmp_path):
    import ray

    report = Events()
    spec = spec_for(tiny_config, tmp_path, "job-reattach", max_steps=30)
    first = RayExecutor(address=head.address, poll_seconds=0.1)
    handle = first.start(spec, report)
    assert json.loads(json.dumps(handle)) == handle
    assert handle["actor"] == "sft-job-job-reattach-1"
    wait_for(lambda: EventKind.STEP in report.kinds(spec.job_id), timeout=RUN_TIMEOUT, interval=0.1,
             message="a first step")
    first.shutdown()  # the API process goes away: nobody pulls events
    seen = report.of(spec.job_id)
    later = Events()

    assert executor.reattach(spec, handle, later, after_seq=seen[-1].seq)

    exited = later.exited(spec.job_id)
    assert exited.payload["status"] == "completed", exited.payload
    events = seen + later.of(spec.job_id)
    assert_one_stream(events)
    assert [e.payload["step"] for e in events if e.kind is EventKind.STEP] == list(range(1, 31))
    assert any(e.kind is EventKind.LOG and "running on Ray node" in e.payload["message"] for e in events)
    result = exited.payload["result"]
    assert result["global_step"] == 30
    assert (Path(result["adapter_path"]) / "adapter_config.json").exists()
    # The actor is killed once its last event is in: its CPU is free again.
    assert executor.state(spec.job_id) is RunState.UNKNOWN
    wait_for(lambda: _actor_gone(ray, handle["actor"]), timeout=30, message="the actor to be killed")


def test_reattach_to_a_run_that_is_gone_is_false(executor, tiny_config, tmp_path):
    spec = spec_for(tiny_config, tmp_path, "job-gone")
    assert executor.reattach(spec, {"actor": "sft-job-job-gone-1", "namespace": "sft-service"}, Events(),
                             after_seq=3) is False


def test_a_worker_that_dies_fails_the_job_as_interrupted(executor, tiny_config, tmp_path):
    report = Events()
    spec = spec_for(tiny_config, tmp_path, "job-killed", max_steps=100_000)
    executor.start(spec, report)
    wait_for(lambda: EventKind.STEP in report.kinds(spec.job_id), timeout=RUN_TIMEOUT, interval=0.1,
             message="a first step")

    os.kill(executor.where(spec.job_id)["pid"], signal.SIGKILL)

    exited = report.exited(spec.job_id, timeout=60)
    assert exited.payload["status"] == "failed"
    detail = exited.payload["error_detail"]
    assert detail["category"] == "interrupted"
    assert detail["message"].startswith("interrupted: the job's Ray worker died; resume the job")


def test_placement_the_cluster_can_never_give_is_refused_naming_the_field(executor, tiny_config, tmp_path):
    with pytest.raises(ConfigError) as gpus:
        executor.check(spec_for(tiny_config, tmp_path, "job-gpus", num_gpus_per_worker=4))
    assert gpus.value.field == "num_gpus_per_worker"
    assert str(gpus.value) == ("4 GPUs per worker asked, but the Ray cluster has 1 node(s), 2 CPUs and 0 GPUs in all, "
                               "at most 2 CPUs and 0 GPUs on one node")
    with pytest.raises(ConfigError) as cpus:
        executor.check(spec_for(tiny_config, tmp_path, "job-cpus", num_cpus_per_worker=3))
    assert cpus.value.field == "num_cpus_per_worker"
    with pytest.raises(ConfigError) as workers:
        executor.check(spec_for(tiny_config, tmp_path, "job-workers", num_workers=3))
    assert workers.value.field == "num_workers"
    assert str(workers.value).endswith(": 2 such workers fit at once")
    executor.check(spec_for(tiny_config, tmp_path, "job-fits", num_workers=2))


def test_callbacks_cannot_travel_to_the_cluster(executor, tiny_config, tmp_path):
    with pytest.raises(ConfigError) as refused:
        executor.start(spec_for(tiny_config, tmp_path, "job-callbacks"), Events(), callbacks=[object()])
    assert refused.value.field == "callbacks"


def test_two_workers_train_data_parallel_with_the_loss_of_one_worker(executor, tiny_model_dir, tmp_path):
    # Rows with different answers (so batches of different rows have different losses), and the same
    # global batch of 4 rows: one worker of 4, or two of 2.
    rows = [{"messages": [{"role": "user", "content": f"hello {i}"},
                          {"role": "assistant", "content": f'{{"name": "{name}", "age": {20 + 3 * i}}}'}]}
            for i, name in enumerate(["Ada", "Bob", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal"] * 2)]
    data = write_jsonl(tmp_path / "varied.jsonl", rows)
    base = {"base_model": str(tiny_model_dir), "dataset_name": str(data), "max_steps": 3, "learning_rate": 5e-3}
    two = Events()
    double = spec_for(base, tmp_path, "job-two-workers", per_device_train_batch_size=2, num_workers=2)
    single = spec_for(base, tmp_path, "job-one-worker", per_device_train_batch_size=4)

    executor.start(double, two)
    # The one-worker reference trains here, with the same training function, while the cluster starts.
    one: list[TrainingEvent] = []
    exited_one = run_training(single, one.append, stop_event=threading.Event())
    exited_two = two.exited(double.job_id)

    assert exited_two.payload["status"] == "completed", exited_two.payload
    assert exited_one.payload["status"] == "completed", exited_one.payload
    assert_one_stream(two.of(double.job_id))
    assert any(e.kind is EventKind.LOG and e.payload["message"] == "Ray Train worker group: 2 workers, torch.distributed gloo"
               for e in two.of(double.job_id))
    losses = [[e.payload["loss"] for e in events if e.kind is EventKind.METRICS and "loss" in e.payload]
              for events in (one, two.of(double.job_id))]
    assert len(losses[0]) == len(losses[1]) == 3
    assert losses[1] == pytest.approx(losses[0], rel=2e-3)
    result = exited_two.payload["result"]
    assert (Path(result["adapter_path"]) / "adapter_config.json").exists()
    # Rank 0 alone writes the job's outputs.
    log = [json.loads(line) for line in (Path(double.output_dir) / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2, 3]


def test_an_unreachable_address_leaves_the_executor_down_with_a_reason():
    port = free_port()
    executor = RayExecutor(address=f"127.0.0.1:{port}")

    health = executor.health()
    assert health["status"] == "down"
    assert health["error"].startswith(f"the Ray cluster at 127.0.0.1:{port} is unreachable: nothing answers at")
    spec = JobSpec(job_id="x", config={"base_model": "m", "dataset_name": "d", "max_steps": 1, "output_dir": "/tmp/x"},
                   output_dir="/tmp/x")
    with pytest.raises(RayUnavailable):
        executor.start(spec, Events())
    assert executor.reattach(spec, {"actor": "a"}, Events(), after_seq=0) is False
