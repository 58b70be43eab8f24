"""Preferences from "Try it" in a real Chromium: pick the better answer, write a corrected one, see them kept and
counted, download them, and "Train DPO on these N preferences" opens a DPO job that completes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from factories import wait_for

def generate(page, prompt: str) -> tuple[str, str]:
    page.fill("#try-prompt", prompt)
    page.click("#try-send")  # disables the button until both answers are in
    page.wait_for_function("() => !document.querySelector('#try-send').disabled", timeout=60_000)
    assert page.inner_text("#try-error") == ""
    return page.inner_text("#tuned-answer"), page.inner_text("#base-answer")


def test_picks_in_try_it_become_preferences_and_a_dpo_job_that_completes(page, server):
    # A job trained hard enough that its answers differ from the random base model's.
    config = {"base_model": server.model, "dataset_name": server.dataset, "max_steps": 8, "learning_rate": 5e-2,
              "per_device_train_batch_size": 4, "lora_dropout": 0.0}
    job_id = server.api("POST", "/api/sft/train", json={"config": config}).json()["job_id"]
    wait_for(lambda: server.api("GET", f"/api/sft/jobs/{job_id}").json()["status"] in ("completed", "failed"),
             timeout=120, interval=0.5, message="the tuned job")
    assert server.api("GET", f"/api/sft/jobs/{job_id}").json()["status"] == "completed"

    page.goto(f"{server.url}/#/jobs/{job_id}")
    page.locator("#try-it").wait_for()
    page.fill("#try-max-tokens", "12")
    assert page.inner_text("#pref-count") == "0 preferences" and page.is_disabled("#pref-train")
    assert page.is_hidden("#pref-picks")

    # The random base model answers blank lines: the tuned answer is picked over them; the blank one cannot be.
    tuned, base = generate(page, "hello 3")
    assert tuned.strip() and not base.strip(), (tuned, base)
    assert page.is_disabled("#pref-pick-base")
    page.click("#pref-pick-tuned")
    page.locator("#pref-count", has_text="1 preference").wait_for()
    assert page.is_disabled("#pref-pick-tuned") and page.is_disabled("#pref-save-correction")
    assert page.inner_text("#pref-train") == "Train DPO on this 1 preference"

    tuned2, _ = generate(page, "hello <b>5</b>")  # shown as text, kept as text
    page.fill("#pref-correction", '{"name": "Ada", "age": 37}')
    page.click("#pref-save-correction")
    page.locator("#pref-count", has_text="2 preferences").wait_for()
    assert page.inner_text("#pref-train") == "Train DPO on these 2 preferences"

    kept = server.api("GET", "/api/sft/preferences", params={"job_id": job_id}).json()
    assert kept["total"] == 2
    assert [(p["source"], p["chosen"], p["rejected"]) for p in kept["preferences"]] == [
        ("picked_tuned", tuned, base), ("corrected", '{"name": "Ada", "age": 37}', tuned2)]
    assert kept["preferences"][1]["prompt"] == [{"role": "user", "content": "hello <b>5</b>"}]
    page.click("#pref-details summary")
    assert page.locator("#pref-list li").count() == 2
    assert page.locator("#pref-list li b").count() == 0 and "hello <b>5</b>" in page.inner_text("#pref-list")
    assert "over (a blank answer)" in page.inner_text("#pref-list li >> nth=0")

    with page.expect_download() as download:
        page.click("#pref-download")
    rows = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert rows == [{"prompt": [{"role": "user", "content": "hello 3"}],
                     "chosen": [{"role": "assistant", "content": tuned}],
                     "rejected": [{"role": "assistant", "content": base}]},
                    {"prompt": [{"role": "user", "content": "hello <b>5</b>"}],
                     "chosen": [{"role": "assistant", "content": '{"name": "Ada", "age": 37}'}],
                     "rejected": [{"role": "assistant", "content": tuned2}]}]

    # Train DPO: the page opens the new job, which starts from the tuned one and completes (needs the dpo branch).
    page.fill("#pref-steps", "2")
    page.click("#pref-train")
    page.wait_for_function(f"() => location.hash !== '#/jobs/{job_id}' || "
                           "document.querySelector('#pref-message').textContent.startsWith('Could not')")
    assert not page.url.endswith(job_id), page.inner_text("#pref-message")
    page.wait_for_url(re.compile(r"#/jobs/[\w-]+$"))
    dpo_id = page.url.rsplit("/", 1)[1]
    config = server.api("GET", f"/api/sft/jobs/{dpo_id}").json()["config"]
    merged = f"{server.api('GET', f'/api/sft/jobs/{job_id}').json()['config']['output_dir']}/merged"  # at submit
    assert (config["method"], config["base_model"], config["max_steps"]) == ("dpo", merged, 2)
    ended = page.locator("#job-status [data-status='completed'], #job-status [data-status='failed']")
    ended.wait_for(timeout=120_000)
    assert ended.get_attribute("data-status") == "completed", page.inner_text("#job-failure")
