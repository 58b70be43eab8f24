"""The benchmark harness (``make bench``) in smoke mode: tiny model, tiny counts, every section reported.

Also checks that the bare TRL baseline trains with exactly the arguments the service gives TRL, so the
overhead comparison stays fair when either side changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bare_sft import CHATML_TEMPLATE, trl_args

ROOT = Path(__file__).resolve().parents[2]

SECTION_HEADINGS = [
    "## Machine",
    "## Summary",
    "## 1. Training overhead",
    "## 2. Responsiveness under training",
    "## 3. Submit and list at scale",
    "## 4. Memory across jobs",
    "## 5. Throughput knobs",
    "## 6. Training overhead on a CUDA GPU",
    "## 7. Dashboard: page weight and speed",
    "## 8. Chat latency: OpenAI-compatible /v1/chat/completions vs /generate",
    "## 9. What API keys cost",
    "## 10. Executors: the same job on threads and on a local Ray",
    "## 11. The fit planner against these runs' measured peaks",
    "## 13. Efficiency: precision auto vs fp32, service vs limit, MFU",
    "## 14. Preference tuning (DPO): service vs bare TRL DPOTrainer vs a plain forward + backward",
    "## 15. Eval during training: the demo job with and without per-checkpoint graders",
]


@pytest.fixture(scope="module")
def smoke(tiny_model_dir: Path, tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench")
    report, raw = out / "benchmarks.md", out / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFT_")}
    process = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--tiny-model", str(tiny_model_dir),
         "--out", str(report), "--json", str(raw)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    return report.read_text(), json.loads(raw.read_text())


def test_smoke_report_has_every_section_and_target(smoke):
    report, results = smoke
    for heading in SECTION_HEADINGS:
        assert heading in report, heading
    for figure in ("CPU", "Cores", "RAM", "torch / transformers / trl / peft", "Date"):
        assert f"| {figure}" in report, figure
    assert "Not run: not run in smoke mode." in report  # the GPU section says why it did not run

    sections = {t["section"] for t in results["targets"]}
    assert sections == {"overhead", "latency", "scale", "memory", "chat", "auth", "ray", "planner", "efficiency", "dpo",
                        "eval"}
    keys = {t["key"] for t in results["targets"]}
    assert {"steps_ratio", "steps_vs_limit", "ttr", "ttr_vs_bare", "rss_vs_bare", "p99_job", "p99_list",
            "p99_factor_job", "p99_factor_list", "list_top", "rss", "chat_ratio",
            "chat_stream_ratio", "auth_cost", "ray_steps_ratio", "planner_error", "planner_submit_safe",
            "dpo_vs_bare", "dpo_vs_limit"} <= keys
    assert sum(k.startswith("submit_") for k in keys) == 3  # one per stored-job level
    for target in results["targets"]:
        assert isinstance(target["met"], bool)
        assert ("**met**" if target["met"] else "**missed**") in report
        if not target["met"]:
            assert target["why"] and f"*Why {target['figure']} was missed:*" in report


def test_smoke_figures_are_sane(smoke):
    report, results = smoke
    overhead = results["overhead"]
    assert overhead["same_loss"], "the bare script, the service job and the limit loop trained different things"
    assert overhead["loss_path"] == "cross_entropy"  # loss_path auto on CPU
    for run in overhead["runs"]:
        assert run["a"]["global_step"] == run["b"]["global_step"] == run["c"]["global_step"] == overhead["steps"]
        assert run["a"]["ttr_s"] > 0 and run["b"]["ttr_s"] > 0 and run["c"]["ttr_s"] > 0
        assert run["a"]["peak_rss_mb"] > 0 and run["b"]["peak_rss_mb"] > 0 and run["c"]["peak_rss_mb"] > 0
    assert "| c: limit |" in report
    assert results["latency"]["idle"]["job"]["n"] > 0 and results["latency"]["training"]["job"]["n"] > 0
    assert results["latency"]["running"]["job"]["n"] >= results["latency"]["training"]["job"]["n"]
    levels = results["scale"]["levels"]
    assert [lv["stored_at_list"] for lv in levels] == [lv["level"] for lv in levels]
    # Each level's submits start with the level's jobs stored (at level 0, the job holding the slot: 1).
    assert [lv["stored_at_submit"] for lv in levels] == [max(lv["level"], 1) for lv in levels]
    for lv in levels:
        first, n = lv["stored_at_submit"], lv["submit"]["n"]
        assert f"| {lv['level']:,} | " in report and f" | {first:,}–{first + n - 1:,} | " in report
    assert all(rss > 0 for rss in results["memory"]["after_mb"])
    assert [run["name"] for run in results["knobs"]["runs"]] == ["baseline", "packing", "gradient checkpointing"]
    assert all(run["train_tokens_per_second"] for run in results["knobs"]["runs"])
    # The planner's error on every run above: 3 per overhead round and the 3 knobs runs, each measured.
    planner = results["planner"]
    assert len(planner["runs"]) == 3 * len(overhead["runs"]) + 3
    assert all(run["measured_mb"] > 0 and run["submit_estimate_mb"] > 0 for run in planner["runs"])
    page = results["page"]
    if page.get("status") != "not run":  # not run where there is no browser (said in the report)
        assert page["points"] == 1000 and page["first_load"]["requests"] >= 3 and page["first_load"]["bytes"] > 0
        assert 0 < page["chart_ms_median"] and 0 < page["drawn_points_5000"] < 5000
        assert f"| Job page with 1,000 points: chart drawn after | {page['chart_ms_median']:.0f} ms |" in report
    chat = results["chat"]
    assert chat["same_text"], "/generate and /v1/chat/completions answered the same prompt differently"
    assert all(chat["median_ms"][key] > 0 for key in ("generate", "chat", "stream_first", "stream_total"))
    assert chat["median_ms"]["stream_first"] <= chat["median_ms"]["stream_total"]
    ray = results["ray"]
    assert [ray["runs"][name]["executor"] for name in ("thread", "ray")] == ["thread", "ray"]
    assert all(ray["runs"][name]["global_step"] == ray["steps"] for name in ("thread", "ray"))
    assert ray["head_start_s"] > 0 and ray["ratio_steps_per_s"] > 0
    efficiency = results["efficiency"]
    assert efficiency["auto"] == "fp32"  # the 64-wide tiny model stays in fp32 on any CPU
    service, limit = efficiency["medians"]["service_fp32"], efficiency["medians"]["limit_fp32"]
    assert 0 < service["mfu"] < 1 and service["steps_per_s"] > 0 and limit["steps_per_s"] > 0
    assert abs(service["train_loss"] - limit["train_loss"]) < 1e-4  # the same batches, the same loss
    assert efficiency["profile"]["profile_share"] and "Profile of one `fp32` step" in report


def test_bare_baseline_gives_trl_what_the_service_gives_it():
    """bench/bare_sft.py's trl.SFTConfig arguments equal app.sft.config.SFTConfig.to_trl's for the demo job."""
    from app.sft.config import SFTConfig
    from app.sft.models import CHATML_TEMPLATE as SERVICE_CHATML_TEMPLATE

    # bench/bare_sft.py copies the service's fallback chat template (it imports nothing from the service).
    assert CHATML_TEMPLATE == SERVICE_CHATML_TEMPLATE

    for packing, checkpointing in ((False, False), (True, False), (False, True)):
        service = SFTConfig(base_model="m", dataset_name="d", max_steps=20, per_device_train_batch_size=8,
                            learning_rate=1e-3, lora_r=16, lora_alpha=32, lora_dropout=0.05, max_length=256,
                            seed=42, precision="fp32", packing=packing, gradient_checkpointing=checkpointing,
                            output_dir="/tmp/x").to_trl(output_dir="/tmp/x/checkpoints", device="cpu")
        bare = type(service)(**trl_args(output_dir="/tmp/x/checkpoints", max_steps=20, learning_rate=1e-3,
                                         batch_size=8, max_length=256, seed=42, precision="fp32", packing=packing,
                                         gradient_checkpointing=checkpointing, use_cpu=True))
        assert bare.to_dict() == service.to_dict()


def test_bare_dpo_gives_trl_what_a_dpo_job_gives_it():
    """bench/bare_dpo.py's trl.DPOConfig arguments equal SFTConfig.to_trl's for a DPO job, and the three DPO
    runners of the smoke run trained the same thing."""
    from bench.bare_dpo import dpo_args
    from app.sft.config import SFTConfig

    service = SFTConfig(base_model="m", dataset_name="d", max_steps=20, per_device_train_batch_size=8,
                        learning_rate=1e-3, max_length=256, seed=42, precision="fp32", method="dpo", beta=0.2,
                        loss_type="ipo", output_dir="/tmp/x").to_trl(output_dir="/tmp/x/checkpoints", device="cpu")
    bare = type(service)(**dpo_args(output_dir="/tmp/x/checkpoints", max_steps=20, learning_rate=1e-3,
                                    batch_size=8, max_length=256, seed=42, precision="fp32", use_cpu=True,
                                    beta=0.2, loss_type="ipo"))
    assert type(service).__name__ == "DPOConfig" and bare.to_dict() == service.to_dict()


def test_smoke_dpo_runners_train_the_same_pairs(smoke):
    dpo = smoke[1]["dpo"]
    assert dpo["same_loss"] and all(r[x]["global_step"] == dpo["steps"] for r in dpo["runs"] for x in "abc")


def test_smoke_waits_on_the_event_stream_and_poll_mode_still_works(smoke, tiny_model_dir, tmp_path):
    report, results = smoke
    assert results["plan"]["poll"] is None
    assert "to the job's terminal event on its SSE stream" in report

    polled = tmp_path / "polled.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFT_")}
    process = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--tiny-model", str(tiny_model_dir), "--sections",
         "overhead", "--poll", "0.02", "--out", str(polled)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    assert "to the status poll (`GET /api/sft/jobs/{id}` every 20 ms) that sees `completed`" in polled.read_text()
