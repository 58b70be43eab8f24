"""The service over HTTP with SFT_EXECUTOR=ray, against a real local Ray head (``ray start --head``,
2 CPUs, no GPU) and a real uvicorn server: a job trains on the cluster and /generate serves its
adapter; stop saves; a stop that is not honoured within the grace period is a hard cancel; 4 GPUs
are a 400; the API killed with SIGKILL comes back and re-attaches; an unreachable cluster leaves
the server up with the executor down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from factories import free_port, greedy_text, preference_rows, wait_for, write_jsonl
from ray_cluster import RUN_TIMEOUT

pytestmark = pytest.mark.ray

BACKEND = Path(__file__).resolve().parents[2]


class Server:
    """A uvicorn process of the service; ``url`` is its /api/sft."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.log = Path(env["SFT_DATA_DIR"]).parent / "server.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api/sft"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(BACKEND), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            env=self.env, stdout=self.log.open("a"), stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, timeout=90, interval=0.1, message="the server to start")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def job(self, job_id: str) -> dict:
        return httpx.get(f"{self.url}/jobs/{job_id}", timeout=10).json()

    def submit(self, config: dict) -> httpx.Response:
        return httpx.post(f"{self.url}/train", json={"config": config}, timeout=60)

    def ended(self, job_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        return wait_for(lambda: (lambda job: job if job["status"] in ("completed", "stopped", "failed") else None)(
            self.job(job_id)), timeout=timeout, interval=0.2, message=f"job {job_id} to end")

    def trained_a_step(self, job_id: str) -> None:
        wait_for(lambda: ((self.job(job_id)["progress"] or {}).get("current_step") or 0) >= 1,
                 timeout=RUN_TIMEOUT, interval=0.1, message="a first step")


def server_env(tmp_path: Path, tiny_model_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SFT_DATA_DIR": str(tmp_path / "data"), "SFT_DATASET_ROOTS": json.dumps([str(tmp_path)]),
            "SFT_MODEL_ROOTS": json.dumps([str(tiny_model_dir.parent)]), "OMP_NUM_THREADS": "1",
            "SFT_EXECUTOR": "ray", **extra}


@pytest.fixture(scope="module")
def head(ray_head):
    return ray_head


@pytest.fixture(scope="module")
def server(head, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-api")
    server = Server(server_env(root, tiny_model_dir, SFT_RAY_ADDRESS=head.address, SFT_RAY_STOP_GRACE_SECONDS="2",
                               SFT_DATASET_ROOTS=json.dumps(["/"])))
    yield server
    server.kill()


def test_a_job_trains_on_ray_and_generate_uses_its_adapter(server, tiny_config, tmp_path):
    health = httpx.get(f"{server.base}/health", timeout=5).json()["executor"]
    assert health["name"] == "ray" and health["status"] == "up" and health["cpus"] == 2

    job_id = server.submit(tiny_config).json()["job_id"]

    job = server.ended(job_id)
    assert job["status"] == "completed", job["error"]
    assert job["result"]["global_step"] == 4
    steps = [point["step"] for point in httpx.get(f"{server.url}/jobs/{job_id}/metrics", timeout=5).json()["metrics"]]
    assert steps == [1, 2, 3, 4]
    logs = httpx.get(f"{server.url}/jobs/{job_id}/logs", timeout=5).json()
    assert any("running on Ray node" in line for line in logs["lines"])
    assert_generate_serves_the_adapter(server, job_id, tiny_config["base_model"], job["result"]["adapter_path"])
    prefs = write_jsonl(tmp_path / "prefs.jsonl", preference_rows(8))
    assert_a_dpo_job_from_it_merges_its_base_on_ray(server, job, tiny_config, prefs)


def assert_a_dpo_job_from_it_merges_its_base_on_ray(server: Server, source: dict, config: dict, prefs: Path) -> None:
    """SFT then DPO on Ray: ``job:<id>``'s submit only records the source; the Ray worker merges its adapter
    before training, and the DPO job logs its rewards."""
    merged = Path(source["config"]["output_dir"]) / "merged"
    answer = server.submit({**config, "base_model": f"job:{source['job_id']}", "method": "dpo",
                            "dataset_name": str(prefs), "max_steps": 2})
    assert answer.status_code == 200, answer.text
    assert not merged.exists()
    job = server.ended(answer.json()["job_id"])
    assert job["status"] == "completed", job["error"]
    assert job["config"]["base_model"] == str(merged) and (merged / "config.json").is_file()
    metrics = httpx.get(f"{server.url}/jobs/{job['job_id']}/metrics", timeout=5).json()["metrics"]
    assert [point["step"] for point in metrics if "rewards/margins" in point] == [1, 2]
    events = httpx.get(f"{server.url}/jobs/{job['job_id']}/events", params={"limit": 1000}, timeout=5).json()
    assert [e["data"]["phase"] for e in events["events"] if e["type"] == "phase"] == ["merging_base", "base_ready"]


def assert_generate_serves_the_adapter(server: Server, job_id: str, base_model: str, adapter: str) -> None:
    """/generate of the job answers what its adapter, loaded in plain PEFT in this process, answers greedily."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    messages = [{"role": "user", "content": "hello 3"}]
    served = httpx.post(f"{server.url}/jobs/{job_id}/generate", json={"messages": messages, "max_new_tokens": 16},
                        timeout=120)
    assert served.status_code == 200, served.text
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model), adapter)
    assert served.json()["completion"] == greedy_text(model, AutoTokenizer.from_pretrained(adapter), messages)


def test_stop_saves_the_adapter_and_resume_continues_from_its_checkpoint(server, tiny_config):
    job_id = server.submit({**tiny_config, "max_steps": 300}).json()["job_id"]
    server.trained_a_step(job_id)

    assert httpx.post(f"{server.url}/jobs/{job_id}/stop", timeout=10).json()["status"] == "stopping"

    job = server.ended(job_id)
    assert job["status"] == "stopped", job["error"]
    stopped_at = job["result"]["global_step"]
    assert 1 <= stopped_at < 300
    assert (Path(job["result"]["adapter_path"]) / "adapter_config.json").is_file()

    assert httpx.post(f"{server.url}/jobs/{job_id}/resume", timeout=30).status_code == 200
    job = server.ended(job_id)
    assert job["status"] == "completed", job["error"]
    assert job["result"]["global_step"] == 300
    assert [a["resumed_from_step"] for a in job["attempts"]] == [None, stopped_at]


def test_a_stop_not_honoured_within_the_grace_period_is_a_hard_cancel(server, tiny_model_dir, tmp_path):
    # Preparing 200,000 rows takes many seconds, and a run only stops between phases or steps.
    line = json.dumps({"messages": [{"role": "user", "content": "hello"},
                                    {"role": "assistant", "content": '{"name": "Ada", "age": 36}'}]}) + "\n"
    (tmp_path / "big.jsonl").write_text(line * 200_000)
    job_id = server.submit({"base_model": str(tiny_model_dir), "dataset_name": str(tmp_path / "big.jsonl"),
                            "max_steps": 2}).json()["job_id"]
    wait_for(lambda: (server.job(job_id)["progress"] or {}).get("phase") == "preparing_dataset",
             timeout=RUN_TIMEOUT, interval=0.05, message="the dataset phase")

    httpx.post(f"{server.url}/jobs/{job_id}/stop", timeout=10)

    job = server.ended(job_id, timeout=30)
    assert job["status"] == "failed"
    assert job["error_detail"]["category"] == "cancelled"
    assert job["error"] == ("cancelled: the job did not stop within 2 s of the stop request; Ray killed its worker "
                            "without saving (its last checkpoint is kept)")


def test_more_gpus_than_the_cluster_has_is_a_400_that_says_what_it_has(server, tiny_config):
    response = server.submit({**tiny_config, "num_gpus_per_worker": 4})

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "config.num_gpus_per_worker: 4 GPUs per worker asked, but the Ray cluster has 1 node(s), 2 CPUs and 0 GPUs in "
        "all, at most 2 CPUs and 0 GPUs on one node")
    assert response.json()["errors"] == [{"field": "config.num_gpus_per_worker", "type": "invalid_config", "message": (
        "4 GPUs per worker asked, but the Ray cluster has 1 node(s), 2 CPUs and 0 GPUs in all, at most 2 CPUs and "
        "0 GPUs on one node")}]


def test_the_api_killed_mid_training_reattaches_and_the_job_completes(server, tiny_config):
    job_id = server.submit({**tiny_config, "max_steps": 200}).json()["job_id"]
    wait_for(lambda: ((server.job(job_id)["progress"] or {}).get("current_step") or 0) >= 5,
             timeout=RUN_TIMEOUT, interval=0.1, message="a few steps")
    training = server.job(job_id)
    assert training["status"] == "running" and training["progress"]["current_step"] < 200

    server.kill()
    server.start()

    job = server.ended(job_id)
    assert job["status"] == "completed", job["error"]
    assert job["result"]["global_step"] == 200
    assert len(job["attempts"]) == 1  # re-attached: not resumed
    steps = [point["step"] for point in httpx.get(f"{server.url}/jobs/{job_id}/metrics", timeout=5).json()["metrics"]]
    assert steps == list(range(1, 201))
    events = httpx.get(f"{server.url}/jobs/{job_id}/events?limit=1000", timeout=5).json()["events"]
    types = [event["type"] for event in events]
    assert "interrupted" not in types and "resumed" not in types
    assert types.count("completed") == 1 and types.count("started") == 1
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    listed = httpx.get(f"{server.url}/jobs", timeout=5).json()["jobs"]
    assert [job["job_id"] for job in listed].count(job_id) == 1


def test_an_unreachable_cluster_leaves_the_server_up_with_the_executor_down(tiny_model_dir, tiny_config, tmp_path):
    port = free_port()
    server = Server(server_env(tmp_path, tiny_model_dir, SFT_RAY_ADDRESS=f"127.0.0.1:{port}"))
    try:
        health = httpx.get(f"{server.base}/health", timeout=5).json()
        assert health["status"] == "ok"
        assert health["executor"]["status"] == "down"
        assert health["executor"]["error"].startswith(f"the Ray cluster at 127.0.0.1:{port} is unreachable")

        refused = server.submit(tiny_config)
        assert refused.status_code == 503
        assert refused.json()["detail"].startswith(f"SFT_EXECUTOR=ray: the Ray cluster at 127.0.0.1:{port} is "
                                                   "unreachable")
    finally:
        server.kill()
