"""The New job form's live memory estimate (POST /api/sft/plan as the form changes), in a real Chromium against
the real server: it fits for the tiny model, it does not for a full fine-tuning of Llama 3.1 70B's shape, and an
error's text is shown as text."""

from __future__ import annotations

import json

from app.sft.planner import REFERENCE_MODELS


def test_the_form_shows_the_estimate_as_it_changes(page, server, tiny_model_dir):
    page.goto(f"{server.url}/#/new")
    page.fill("#f-base_model", server.model)
    page.fill("#f-dataset_name", server.dataset)
    page.fill("#f-max_steps", "5")
    page.locator("#plan-verdict", has_text="Fits").wait_for()
    plan = server.api("POST", "/api/sft/plan", json={"config": {
        "base_model": server.model, "dataset_name": server.dataset, "max_steps": 5}}).json()
    assert page.inner_text("#plan-total") == f"{plan['estimated_peak_mb']:.0f} MiB"

    big = tiny_model_dir.parent / "llama-3.1-70b-config"  # only a config.json: all the planner reads
    big.mkdir(exist_ok=True)
    (big / "config.json").write_text(json.dumps(REFERENCE_MODELS["meta-llama/Llama-3.1-70B"]))
    page.fill("#f-base_model", str(big))
    page.uncheck("#f-use_lora")
    page.locator("#plan-verdict", has_text="Does not fit").wait_for()
    assert page.inner_text("#plan-message").startswith("needs ~")

    page.fill("#f-dataset_name", "<img src=x onerror=alert(1)>.jsonl")
    page.locator("#plan-error").wait_for()
    assert "<img src=x onerror=alert(1)>" in page.inner_text("#plan-error")
    assert page.locator("#plan-panel img").count() == 0
