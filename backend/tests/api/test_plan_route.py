"""POST /api/sft/plan and the fit check at submit, through the API with a pre-flighting manager: the estimate
without a job, a job that cannot fit refused before it exists, the plan kept in the job record (across a
restart) and shown beside the measured peak."""

from __future__ import annotations

import json

import pytest

from app.jobs.fit import memory_report
from app.jobs.models import SFTJob
from app.sft.planner import REFERENCE_MODELS
from app.store import SQLiteStore


@pytest.fixture
def big_model(tmp_path):
    """A model directory holding only Llama 3.1 70B's config.json: all the planner reads."""
    folder = tmp_path / "llama-3.1-70b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(REFERENCE_MODELS["meta-llama/Llama-3.1-70B"]))
    return folder


def test_plan_answers_without_submitting_and_the_job_keeps_its_estimate(checked, checked_client, tiny_config,
                                                                         db_path):
    response = checked_client.post("/api/sft/plan", json={"config": tiny_config})
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["fits"] is True and plan["device"]["kind"] == "cpu" and plan["field"] is None
    assert plan["estimate"]["method"] == "lora" and plan["estimate"]["tokens_per_batch"] == 4 * 1024
    assert plan["estimated_peak_mb"] == plan["estimate"]["total_mb"] > 0
    assert sum(checked.counts().values()) == 0

    job_id = checked_client.post("/api/sft/train", json={"config": tiny_config}).json()["job_id"]
    job = checked_client.get(f"/api/sft/jobs/{job_id}").json()
    assert job["memory_plan"]["estimate"] == plan["estimate"]
    assert job["memory"]["estimated_peak_mb"] == plan["estimated_peak_mb"]
    reader = SQLiteStore(db_path)  # what a restarted server reads back
    try:
        (stored,) = [record for record in reader.load_jobs() if record["job_id"] == job_id]
        assert SFTJob.from_record(stored).memory_plan["estimate"] == plan["estimate"]
    finally:
        reader.close()


def test_a_job_that_cannot_fit_is_a_400_before_a_job_exists(checked, checked_client, tiny_config, big_model):
    config = {**tiny_config, "base_model": str(big_model), "use_lora": False}
    plan = checked_client.post("/api/sft/plan", json={"config": config}).json()
    assert plan["fits"] is False and plan["field"] == "config.base_model"
    assert plan["message"].startswith(f"needs ~{plan['estimated_peak_mb'] / 1024:.0f} GiB per worker (CPU memory); "
                                      "this machine's available memory: ")
    response = checked_client.post("/api/sft/train", json={"config": config})
    assert response.status_code == 400
    error = response.json()
    assert error["errors"][0]["field"] == "config.base_model"
    assert error["detail"].startswith(f"config.base_model: {plan['message'].split(';')[0]}; ")
    assert "no single change the planner tries fits it" in error["detail"]
    assert sum(checked.counts().values()) == 0


def test_plan_refuses_what_train_refuses(checked_client, tiny_config, tmp_path):
    for config in ({**tiny_config, "lora_rank": 8}, {**tiny_config, "base_model": str(tmp_path / "missing")}):
        planned = checked_client.post("/api/sft/plan", json={"config": config})
        trained = checked_client.post("/api/sft/train", json={"config": config})
        assert planned.status_code == trained.status_code == 400
        assert planned.json()["detail"] == trained.json()["detail"]


def test_memory_report_reads_the_measured_peak_of_either_device():
    plan = {"estimated_peak_mb": 3000.0, "estimate": {"total_mb": 3000.0, "overhead_mb": 1024.0},
            "device": {"memory_mb": 24576.0}}
    on_gpu = memory_report(plan, {"peak_gpu_memory_mb": 1976.0})
    assert on_gpu["measured_from"] == "peak_gpu_memory_mb" and on_gpu["compared_estimate_mb"] == 1976.0
    assert on_gpu["error"] == 0.0
    on_cpu = memory_report(plan, {"peak_rss_mb": 2500.0, "peak_gpu_memory_mb": None})
    assert on_cpu["measured_from"] == "peak_rss_mb" and on_cpu["error"] == pytest.approx(0.2)
    assert memory_report(plan, None)["measured_peak_mb"] is None and memory_report(None, {}) is None
