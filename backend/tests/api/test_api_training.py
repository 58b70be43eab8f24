"""Real training on the tiny model: over HTTP, stopped mid-run, two at once, events, metrics, logs,
and nothing keeping a finished job's model alive."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
from transformers import TrainerCallback

from job_helpers import job_thread_alive
from app.api.sft_job_manager import JobStatus
from factories import contact_rows, wait_for, write_jsonl

TRAIN_TIMEOUT = 120


@pytest.fixture
def trainer_manager(make_manager):
    """A manager whose runner really trains (pre-flight on)."""
    return make_manager(runner=None, preflight=True)


def _ended(manager, job_id: str) -> bool:
    return manager.get_job(job_id).status.is_terminal()


def test_training_over_http_completes_with_an_adapter(trainer_manager, client_for, tiny_config):
    client = client_for(trainer_manager)
    response = client.post("/api/sft/train", json={"config": tiny_config})
    assert response.status_code == 200
    job_id = response.json()["job_id"]
    seen = []

    def finished():
        body = client.get(f"/api/sft/jobs/{job_id}").json()
        seen.append(body)
        return body["status"] in ("completed", "failed", "stopped")

    wait_for(finished, timeout=TRAIN_TIMEOUT, interval=0.05, message="the job to end")
    body = seen[-1]
    assert body["status"] == "completed", body["error"]
    assert body["error"] is None
    result = body["result"]
    assert Path(result["adapter_path"]).is_dir()
    assert (Path(result["adapter_path"]) / "adapter_config.json").is_file()
    assert result["global_step"] == 4
    assert result["stopped"] is False
    assert body["progress"]["phase"] == "completed"
    assert body["progress"]["current_step"] == 4
    assert body["attempts"][0]["status"] == "completed"
    for snapshot in seen:  # the internal bookkeeping never leaks into the API
        progress = snapshot["progress"] or {}
        assert "started_monotonic" not in progress
        assert "start_step" not in progress


def test_events_and_metrics_of_a_real_job(trainer_manager, client_for, tiny_config):
    client = client_for(trainer_manager)
    job_id = trainer_manager.submit(tiny_config).job_id
    wait_for(lambda: _ended(trainer_manager, job_id), timeout=TRAIN_TIMEOUT, message="the job to end")
    assert trainer_manager.get_job(job_id).status is JobStatus.COMPLETED

    events = client.get(f"/api/sft/jobs/{job_id}/events").json()["events"]
    assert [e["type"] for e in events] == [
        "created", "queued", "started", "model_loaded", "dataset_ready",
        "metrics", "metrics", "metrics", "metrics", "efficiency", "completed",
    ]
    assert [e["seq"] for e in events] == list(range(1, 12))
    assert events[4]["message"] == "Dataset ready: 32 training rows, 0 eval rows (messages)"
    assert events[5]["message"].startswith("Step 1/4: loss ")
    assert events[-1]["data"]["result"]["global_step"] == 4
    efficiency = events[-1]["data"]["result"]["efficiency"]
    assert events[-2]["data"] == efficiency and events[-2]["message"].startswith("Efficiency: ")

    response = client.get(f"/api/sft/jobs/{job_id}/metrics")
    assert response.status_code == 200
    metrics = response.json()
    assert metrics["job_id"] == job_id and metrics["efficiency"] == efficiency
    assert [point["step"] for point in metrics["metrics"]] == [1, 2, 3, 4]
    for point in metrics["metrics"]:
        assert point["attempt"] == 1
        assert point["loss"] > 0
        assert {"learning_rate", "grad_norm", "elapsed_seconds"} <= set(point)


def test_stop_real_job_during_training_saves_its_adapter(trainer_manager, tiny_config):
    job_id = trainer_manager.submit(tiny_config | {"max_steps": 5000}).job_id
    wait_for(lambda: trainer_manager.get_job(job_id).progress.get("current_step", 0) >= 1,
             timeout=TRAIN_TIMEOUT, message="the first training step")
    assert trainer_manager.stop_job(job_id) is JobStatus.STOPPING
    wait_for(lambda: _ended(trainer_manager, job_id), timeout=TRAIN_TIMEOUT, message="the job to stop")
    job = trainer_manager.get_job(job_id)
    assert job.status is JobStatus.STOPPED, job.error
    assert job.result["stopped"] is True
    assert 1 <= job.result["global_step"] < 5000
    assert (Path(job.result["adapter_path"]) / "adapter_config.json").is_file()
    types = [e["type"] for e in trainer_manager.events(job_id)]
    assert types[-1] == "stopped"
    assert types.count("stopping") == 1  # a step may still log between the request and the stop
    assert trainer_manager.events(job_id)[-1]["message"] == "Stopped; the adapter trained so far is saved"


class _ModelSpy(TrainerCallback):
    """Keeps only a weak reference to the model it is shown."""

    def __init__(self) -> None:
        self.ref = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.ref = weakref.ref(model)


def test_finished_job_keeps_no_model_alive(trainer_manager, tiny_config):
    spy = _ModelSpy()
    job_id = trainer_manager.submit(tiny_config, callbacks=[spy]).job_id
    wait_for(lambda: _ended(trainer_manager, job_id), timeout=TRAIN_TIMEOUT, message="the job to end")
    assert trainer_manager.get_job(job_id).status is JobStatus.COMPLETED
    wait_for(lambda: not job_thread_alive(job_id), timeout=30, message="the job thread to exit")
    assert spy.ref is not None
    gc.collect()
    assert spy.ref() is None, gc.get_referrers(spy.ref())


def test_two_real_jobs_run_at_once_with_their_own_adapters_and_logs(make_manager, tiny_config, tmp_path):
    import torch
    from transformers import PreTrainedModel

    patched_while_loading = (torch.nn.init.normal_, torch.nn.init.kaiming_uniform_, torch.linspace,
                             PreTrainedModel.init_weights, PreTrainedModel.tie_weights)
    manager = make_manager(runner=None, preflight=True, max_concurrent_jobs=2)
    other_data = write_jsonl(tmp_path / "other.jsonl", contact_rows(24))
    a = manager.submit(tiny_config).job_id
    b = manager.submit(tiny_config | {"dataset_name": str(other_data)}).job_id
    assert manager.get_job(a).status is JobStatus.RUNNING
    assert manager.get_job(b).status is JobStatus.RUNNING
    wait_for(lambda: _ended(manager, a) and _ended(manager, b), timeout=TRAIN_TIMEOUT, message="both jobs to end")
    job_a, job_b = manager.get_job(a), manager.get_job(b)
    assert job_a.status is JobStatus.COMPLETED, job_a.error
    assert job_b.status is JobStatus.COMPLETED, job_b.error
    assert job_a.result["adapter_path"] != job_b.result["adapter_path"]
    assert Path(job_a.result["adapter_path"]).is_relative_to(job_a.output_dir)
    assert Path(job_b.result["adapter_path"]).is_relative_to(job_b.output_dir)
    for job in (job_a, job_b):
        assert (Path(job.result["adapter_path"]) / "adapter_config.json").is_file()
    assert (job_a.result["train_rows"], job_b.result["train_rows"]) == (32, 24)
    assert all(0 < job.result["train_loss"] < 100 for job in (job_a, job_b))
    # Loading swaps these process-wide; two loads at once must not leave them swapped.
    assert (torch.nn.init.normal_, torch.nn.init.kaiming_uniform_, torch.linspace,
            PreTrainedModel.init_weights, PreTrainedModel.tie_weights) == patched_while_loading

    # Each job's log holds its own lines only.
    logs_a, logs_b = manager.logs.read(a), manager.logs.read(b)
    assert any(f"on {tiny_config['dataset_name']}" in line for line in logs_a)
    assert any(f"on {other_data}" in line for line in logs_b)
    assert not any(str(other_data) in line or b in line for line in logs_a)
    assert not any(tiny_config["dataset_name"] in line or a in line for line in logs_b)
    assert any("event completed" in line for line in logs_a)


def test_logs_endpoint_returns_that_jobs_lines(trainer_manager, client_for, tiny_config, tmp_path):
    client = client_for(trainer_manager)
    job_id = trainer_manager.submit(tiny_config).job_id
    wait_for(lambda: _ended(trainer_manager, job_id), timeout=TRAIN_TIMEOUT, message="the job to end")
    # A second job, recorded and stopped before it starts: its lines must not leak into the first's log.
    other_data = write_jsonl(tmp_path / "second.jsonl", contact_rows(4))
    other = trainer_manager.create_job({"base_model": tiny_config["base_model"], "dataset_name": str(other_data),
                                        "max_steps": 1})
    trainer_manager.stop_job(other)
    response = client.get(f"/api/sft/jobs/{job_id}/logs")
    assert response.status_code == 200
    lines = response.json()["lines"]
    assert response.json()["job_id"] == job_id
    assert lines[0].endswith(f"INFO event created: Job created: {tiny_config['base_model']} on "
                             f"{tiny_config['dataset_name']}")
    assert any("event completed: Training completed" in line for line in lines)
    assert not any(other in line for line in lines)
    tail = client.get(f"/api/sft/jobs/{job_id}/logs?tail=2").json()["lines"]
    assert tail == lines[-2:]
    assert client.get("/api/sft/jobs/nope/logs").status_code == 404
