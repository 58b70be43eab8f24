"""distributed_strategy fsdp over HTTP with SFT_EXECUTOR=ray, against a real local Ray head (2 CPUs, gloo) and a
real uvicorn server: one 2-worker FSDP job of the tiny model lives through the API killed with SIGKILL and restarted
(it re-attaches), a stop (which saves) and a resume to the end. Its ranks each held half of the parameters (measured
on the workers), its per-step losses are a 1-worker run's with the same global batch and seed, and its adapter
loads in plain PEFT in one process and serves /generate."""

from __future__ import annotations

import json
import platform
import threading
from pathlib import Path

import httpx
import pytest

from app.jobs.executors.training import run_training
from app.sft.events import EventKind
from factories import preference_rows, wait_for, write_jsonl
from ray_cluster import RUN_TIMEOUT, spec_for
from test_api_ray import Server, assert_generate_serves_the_adapter, server_env

pytestmark = pytest.mark.ray

#: Steps of the FSDP job: enough to outlast a stop on a loaded 2-core machine (the tiny model trains ~17 steps/s on
#: 2 gloo workers; a stop lands within a second or so).
STEPS = 100


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # Rows with different answers, so batches of different rows have different losses.
    rows = [{"messages": [{"role": "user", "content": f"hello {i}"},
                          {"role": "assistant", "content": f'{{"name": "{name}", "age": {20 + 3 * i}}}'}]}
            for i, name in enumerate(["Ada", "Bob", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal"] * 2)]
    return write_jsonl(tmp_path_factory.mktemp("fsdp-data") / "varied.jsonl", rows)


@pytest.fixture(scope="module")
def base(tiny_model_dir, data) -> dict:
    # No dropout: the ranks' dropout draws differ from one process' (everything else is deterministic).
    return {"base_model": str(tiny_model_dir), "dataset_name": str(data), "max_steps": STEPS, "learning_rate": 5e-3,
            "lora_dropout": 0.0, "seed": 7}


@pytest.fixture(scope="module")
def lived(ray_head, tiny_model_dir, base, tmp_path_factory):
    """The FSDP job's life: submitted, API killed and restarted mid-training, stopped, resumed to the end; and the
    1-worker reference losses of the same global batch (trained in this process)."""
    root = tmp_path_factory.mktemp("fsdp-api")
    server = Server(server_env(root, tiny_model_dir, SFT_RAY_ADDRESS=ray_head.address, SFT_DATASET_ROOTS=json.dumps(["/"]),
                               SFT_MODEL_ROOTS=json.dumps(["/"])))
    try:
        submitted = server.submit({**base, "num_workers": 2, "distributed_strategy": "fsdp",
                                   "per_device_train_batch_size": 2})
        assert submitted.status_code == 200, submitted.text
        job_id = submitted.json()["job_id"]
        # Killed while its workers start (a fresh process each imports torch: seconds), so that it trains on while
        # the next server starts and re-attaches.
        wait_for(lambda: server.job(job_id)["status"] == "running", timeout=RUN_TIMEOUT, interval=0.05,
                 message="the job to run")
        server.kill()
        server.start()
        after_restart = server.job(job_id)
        step = after_restart["progress"]["current_step"] or 0
        wait_for(lambda: (server.job(job_id)["progress"]["current_step"] or 0) > step, timeout=RUN_TIMEOUT,
                 interval=0.1, message="steps reported after the restart")
        assert httpx.post(f"{server.url}/jobs/{job_id}/stop", timeout=10).json()["status"] == "stopping"
        stopped = server.ended(job_id)
        assert httpx.post(f"{server.url}/jobs/{job_id}/resume", timeout=30).status_code == 200
        reference: list = []  # trained here while the resumed job's workers start
        run_training(spec_for({**base, "per_device_train_batch_size": 4}, root, "one-worker"), reference.append,
                     stop_event=threading.Event())
        completed = server.ended(job_id)
        yield {"server": server, "job_id": job_id, "after_restart": after_restart, "stopped": stopped,
               "completed": completed, "reference": reference}
    finally:
        server.kill()


def test_the_api_killed_mid_training_reattaches_to_the_running_fsdp_job(lived):
    after_restart, stopped = lived["after_restart"], lived["stopped"]
    assert after_restart["status"] == "running", after_restart["error"]
    assert stopped["status"] == "stopped", stopped["error"]
    assert len(stopped["attempts"]) == 1  # re-attached, not resumed
    assert stopped["result"]["global_step"] > (after_restart["progress"]["current_step"] or 0)
    events = httpx.get(f"{lived['server'].url}/jobs/{lived['job_id']}/events?limit=1000", timeout=5).json()["events"]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))  # one stream, no gap
    assert "interrupted" not in [event["type"] for event in events]


def test_stop_saves_and_resume_continues_to_the_end(lived):
    stopped, completed = lived["stopped"], lived["completed"]
    stopped_at = stopped["result"]["global_step"]
    assert 1 <= stopped_at < STEPS
    assert (Path(stopped["result"]["adapter_path"]) / "adapter_config.json").is_file()
    assert completed["status"] == "completed", completed["error"]
    assert completed["result"]["global_step"] == STEPS
    assert [a["resumed_from_step"] for a in completed["attempts"]] == [None, stopped_at]


def test_each_rank_held_half_of_the_parameters_while_training(lived):
    parallelism = lived["completed"]["result"]["parallelism"]
    assert parallelism["strategy"] == "fsdp" and parallelism["world_size"] == 2 and parallelism["fsdp_active"]
    ranks = parallelism["ranks"]
    assert [rank["rank"] for rank in ranks] == [0, 1]
    total = ranks[0]["parameters"]
    for rank in ranks:
        assert rank["sharded_tensors"] > 0
        assert rank["local_parameters"] == pytest.approx(total / 2, rel=0.02)
        assert rank["peak_rss_mb"] > 0
        if platform.libc_ver()[0] == "glibc":  # each rank kept the layers' gathered buffers out of the heap
            assert rank["mmap_threshold_bytes"] == 128 * 1024
    assert sum(rank["local_parameters"] for rank in ranks) == pytest.approx(total, rel=0.02)


def test_the_losses_are_a_one_worker_runs_across_the_stop_and_resume(lived):
    server, job_id = lived["server"], lived["job_id"]
    metrics = httpx.get(f"{server.url}/jobs/{job_id}/metrics", timeout=5).json()["metrics"]
    fsdp = {point["step"]: point["loss"] for point in metrics if point.get("loss") is not None}
    one = [event.payload["loss"] for event in lived["reference"]
           if event.kind is EventKind.METRICS and "loss" in event.payload]
    assert sorted(fsdp) == list(range(1, STEPS + 1))
    # Equal to float rounding at first; over a hundred steps the rounding differences of two sums in another order
    # grow (a 300-step run drifted by up to 2e-3).
    assert [fsdp[step] for step in range(1, 21)] == pytest.approx(one[:20], rel=1e-5)
    assert [fsdp[step] for step in range(1, STEPS + 1)] == pytest.approx(one, rel=1e-3)


def test_the_adapter_loads_in_plain_peft_and_generate_serves_it(lived, base):
    assert_generate_serves_the_adapter(lived["server"], lived["job_id"], base["base_model"],
                                       lived["completed"]["result"]["adapter_path"])


def test_qlora_under_fsdp_on_a_cluster_without_gpus_is_a_400_naming_the_field(lived, base):
    # num_gpus_per_worker unset: the cluster decides (0 here), so the executor's check refuses it, before a job exists.
    response = lived["server"].submit({**base, "num_workers": 2, "distributed_strategy": "fsdp", "use_qlora": True})

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "config.use_qlora"
    assert response.json()["detail"] == (
        "config.use_qlora: use_qlora with distributed_strategy fsdp needs GPU workers and this cluster gives them "
        "none: bitsandbytes' 4-bit weights (bnb_4bit_quant_storage) are sharded on CUDA only; use LoRA or full "
        "fine-tuning, or a cluster with GPUs")


def test_a_dpo_job_shards_with_fsdp_and_trains_a_one_worker_runs_losses(lived, base, tmp_path):
    """DPO under fsdp: the policy and reference forwards (the adapter disabled) run on the sharded model, through
    the answer-token head (loss_path cross_entropy on CPU); losses and reward margins are a 1-worker run's."""
    prefs = write_jsonl(tmp_path / "prefs.jsonl", preference_rows(8))
    dpo = {**base, "dataset_name": str(prefs), "method": "dpo", "max_steps": 3, "learning_rate": 5e-2}
    server = lived["server"]
    submitted = server.submit({**dpo, "num_workers": 2, "distributed_strategy": "fsdp",
                               "per_device_train_batch_size": 2})
    assert submitted.status_code == 200, submitted.text
    job = server.ended(submitted.json()["job_id"])
    assert job["status"] == "completed", job["error"]
    assert job["result"]["parallelism"]["fsdp_active"] and job["result"]["loss_path"] == "cross_entropy"
    reference: list = []
    run_training(spec_for({**dpo, "per_device_train_batch_size": 4}, tmp_path, "one-worker-dpo"), reference.append,
                 stop_event=threading.Event())
    one = [event.payload for event in reference if event.kind is EventKind.METRICS and "loss" in event.payload]
    metrics = httpx.get(f"{server.url}/jobs/{job['job_id']}/metrics", timeout=5).json()["metrics"]
    fsdp = [point for point in metrics if point.get("loss") is not None]
    assert [point["step"] for point in fsdp] == [1, 2, 3]
    for key in ("loss", "rewards/margins"):
        assert [point[key] for point in fsdp] == pytest.approx([point[key] for point in one], rel=1e-4, abs=1e-6)
