"""``sft plan CONFIG.yaml`` against the live server: the estimate term by term, exit 1 when the job cannot fit,
and the same job refused by ``sft train`` before it exists."""

from __future__ import annotations

import json

from app.sft.planner import REFERENCE_MODELS
from client_helpers import write_yaml


def test_plan_shows_the_estimate_and_exits_1_when_it_cannot_fit(cli, server, job_config, tmp_path):
    small = write_yaml(tmp_path / "small.yaml", {**job_config, "max_length": 256})
    run = cli("plan", str(small))
    assert run.returncode == 0, run.stderr
    assert "per worker (CPU memory); this machine's available memory:" in run.stdout and ": it fits" in run.stdout
    assert {"weights", "activations", "logits", "overhead", "total"} <= {line.split()[0] for line in
                                                                           run.stdout.splitlines()[1:] if line}
    # A model directory holding only Llama 3.1 70B's config.json: the planner needs nothing else.
    big_model = server.data_dir / "llama-3.1-70b-config"
    big_model.mkdir(exist_ok=True)
    (big_model / "config.json").write_text(json.dumps(REFERENCE_MODELS["meta-llama/Llama-3.1-70B"]))
    big = write_yaml(tmp_path / "big.yaml", {**job_config, "base_model": str(big_model), "use_lora": False})
    run = cli("plan", str(big), "--json")
    assert run.returncode == 1
    plan = json.loads(run.stdout)
    assert plan["fits"] is False and plan["estimate"]["method"] == "full" and plan["estimated_peak_mb"] > 1_000_000
    jobs_before = cli("jobs", "--json")
    run = cli("train", str(big))
    assert run.returncode == 2
    needs = plan["message"].split(";")[0]  # the device's free memory may move between the two calls
    assert f"Error 400: {plan['field']}: {needs}; this machine's available memory: " in run.stderr
    assert cli("jobs", "--json").stdout == jobs_before.stdout  # nothing was created
