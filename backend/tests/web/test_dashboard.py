"""The dashboard in a real headless Chromium against a real server training the tiny model."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from factories import contact_rows, wait_for, write_jsonl

#: Set to a directory (``make screenshots`` sets docs/) to save the README's screenshots from the run.
SCREENSHOTS = os.environ.get("SFT_SCREENSHOTS")


def chart_stats(page) -> dict:
    return page.evaluate("() => window.sftDashboard.chart && window.sftDashboard.chart.stats()")


def chart_steps(page, key: str = "loss") -> list[int]:
    return page.evaluate(f"() => window.sftDashboard.chart.series.find(s => s.key === '{key}').points.map(p => p[0])")


def metric_steps(server, job_id: str, key: str = "loss") -> list[int]:
    """The steps the API has a ``key`` value for, the latest attempt's value winning (as drawn)."""
    steps: dict[int, int] = {}
    for point in server.api("GET", f"/api/sft/jobs/{job_id}/metrics").json()["metrics"]:
        if key in point:
            steps = {s: a for s, a in steps.items() if s < point["step"]}
            steps[point["step"]] = point["attempt"]
    return sorted(steps)


def job_status(server, job_id: str) -> str:
    return server.api("GET", f"/api/sft/jobs/{job_id}").json()["status"]


def screenshot(page, name: str, selector: str | None = None, *, down_to: str | None = None) -> None:
    """Save ``selector``'s element, or the page from its top down to ``down_to``'s element, or the viewport."""
    if not SCREENSHOTS:
        return
    path = Path(SCREENSHOTS) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if selector:
        page.locator(selector).screenshot(path=str(path))
    elif down_to:
        box = page.locator(down_to).bounding_box()
        page.screenshot(path=str(path), full_page=True,
                        clip={"x": 0, "y": 0, "width": page.viewport_size["width"], "height": box["y"] + box["height"] + 24})
    else:
        page.screenshot(path=str(path))


def test_train_stop_resume_and_try_it_from_the_page(page, server):
    page.goto(f"{server.url}/#/new")
    page.fill("#f-base_model", server.model)
    page.fill("#f-dataset_name", server.dataset)
    page.fill("#f-max_steps", "160")
    page.fill("#f-learning_rate", "0.005")
    page.fill("#f-save_steps", "10")
    page.click("summary:has-text('All other settings')")
    page.fill("#f-validation_split", "0.25")
    page.fill("#f-eval_steps", "20")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/[\w-]+$"))
    job_id = page.url.rsplit("/", 1)[1]

    page.goto(f"{server.url}/#/jobs")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    row.wait_for()
    assert row.locator("td").nth(3).inner_text() == server.model
    row.locator("a").click()
    page.wait_for_url(f"**/#/jobs/{job_id}")

    # The chart gains points while the job trains.
    first = wait_for(lambda: chart_stats(page)["counts"]["loss"] >= 3, timeout=90, message="a few points")
    assert first
    seen = chart_stats(page)["counts"]["loss"]
    wait_for(lambda: chart_stats(page)["counts"]["loss"] > seen, timeout=60, message="more points")

    page.click("#stop-button")
    page.locator("#job-status [data-status='stopped']").wait_for(timeout=60_000)
    assert "stop" in page.inner_text("#action-message").lower()
    assert job_status(server, job_id) == "stopped"
    assert not page.is_disabled("#resume-button")

    page.click("#resume-button")
    page.locator("#job-status [data-status='completed']").wait_for(timeout=180_000)
    assert page.inner_text("#action-message").startswith("Resumed")
    # Every logged step is on the chart once, the resumed attempt's values replacing the stopped one's.
    wait_for(lambda: chart_steps(page) == metric_steps(server, job_id), timeout=15, message="the whole curve")
    assert chart_steps(page, "eval_loss") == metric_steps(server, job_id, "eval_loss")
    assert page.locator("#events-list li", has_text="resumed").count() == 1
    assert page.locator("#checkpoints tbody tr").count() >= 1
    # The run's efficiency report, as the API has it.
    efficiency = server.api("GET", f"/api/sft/jobs/{job_id}").json()["result"]["efficiency"]
    page.locator("#job-efficiency #efficiency-figures").wait_for()
    figures = page.inner_text("#efficiency-figures")
    assert "Peak RSS (MiB)" in figures and f"MFU ({efficiency['dtype']})" in figures
    assert f"{100 * efficiency['padding_share']:.1f} %" in figures
    screenshot(page, "dashboard-job.png", down_to="#loss-chart")

    page.fill("#try-prompt", "hello 3")
    page.fill("#try-max-tokens", "12")
    assert page.is_checked("#try-compare")
    page.click("#try-send")
    page.locator("#base-latency", has_text="tokens in").wait_for(timeout=120_000)
    expected = server.api("POST", f"/api/sft/jobs/{job_id}/generate", json={
        "messages": [{"role": "user", "content": "hello 3"}], "max_new_tokens": 12, "compare_base": True}).json()
    assert page.inner_text("#tuned-answer").strip() == expected["completion"].strip()
    assert page.inner_text("#base-answer").strip() == expected["base_completion"].strip()
    assert "ms" in page.inner_text("#tuned-latency")
    assert page.get_attribute("#download-adapter", "href") == f"/api/sft/jobs/{job_id}/adapter"
    screenshot(page, "dashboard-try-it.png", "#try-it")

    # Export: GGUF types from the server; an adapter export followed to completed, a file downloaded, deleted.
    page.locator("#export-type option", has_text="q8_0").wait_for(state="attached")
    assert page.input_value("#export-type") == server.api("GET", "/api/sft/export-formats").json()["default_gguf_type"]
    page.select_option("#export-format", "adapter")
    assert page.is_disabled("#export-type")
    page.click("#export-button")
    row = page.locator("#exports-table tbody tr", has=page.locator("td", has_text="adapter"))
    row.locator(".export-status", has_text="completed").wait_for(timeout=120_000)
    with page.expect_download() as download:
        row.locator("a.export-file", has_text="adapter_config.json").click()
    assert download.value.suggested_filename == "adapter_config.json"
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved["peft_type"] == "LORA"
    row.locator(".export-delete").click()
    row.wait_for(state="detached")
    assert [e["format"] for e in server.api("GET", f"/api/sft/jobs/{job_id}/exports").json()["exports"]] == []


def test_a_bad_field_shows_the_400_detail_beside_it(page, server):
    page.goto(f"{server.url}/#/new")
    page.fill("#f-base_model", server.model)
    page.fill("#f-dataset_name", server.dataset)
    page.fill("#f-max_steps", "5")
    page.click("summary:has-text('All other settings')")
    page.fill("#f-lora_r", "0")
    page.click("#submit-job")
    error = page.locator("#e-lora_r")
    error.wait_for()
    answer = server.api("POST", "/api/sft/train", json={"config": {
        "base_model": server.model, "dataset_name": server.dataset, "max_steps": 5, "lora_r": 0}})
    assert answer.status_code == 400
    assert error.inner_text() == answer.json()["detail"].removeprefix("config.lora_r: ")
    assert page.get_attribute("#f-lora_r", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "f-lora_r"
    assert page.inner_text("#e-max_steps") == ""

    # A pre-flight failure (a dataset outside the allowed roots) lands beside dataset_name.
    page.fill("#f-lora_r", "8")
    page.fill("#f-dataset_name", "/etc/missing.jsonl")
    page.click("#submit-job")
    page.locator("#e-dataset_name", has_text="allowed root").wait_for()
    assert page.inner_text("#e-lora_r") == ""
    assert "/#/new" in page.url


def test_dataset_preview_and_saved_template(page, server):
    from playwright.sync_api import expect  # imported here: without playwright the fixtures skip (or fail in CI)

    page.goto(f"{server.url}/#/new")
    page.fill("#f-base_model", server.model)
    page.fill("#f-dataset_name", server.dataset)
    page.fill("#f-max_length", "30")
    page.fill("#f-max_steps", "7")
    page.click("#preview-button")
    page.locator("#preview-format").wait_for(timeout=120_000)  # the first preview imports transformers
    assert page.inner_text("#preview-format") == "messages"
    assert page.inner_text("#preview-rows") == "32"
    assert "32 rows (100.0 %)" in page.inner_text("#preview-truncated")
    assert page.locator("#preview-result figure").count() == 3
    assert '{"name": "Ada", "age": 36}' in page.locator("#preview-result mark").first.inner_text()

    page.fill("#template-name", "web-template")
    page.click("#save-template")
    page.locator("#form-message", has_text="web-template").wait_for()
    saved = next(c for c in server.api("GET", "/api/sft/configs").json() if c["name"] == "web-template")
    assert saved["config"] == {"base_model": server.model, "dataset_name": server.dataset, "max_length": 30,
                               "max_steps": 7}

    # The demo button fills in the API's own example job (the bundled model on the bundled data).
    page.click("#demo-config")
    expect(page.locator("#f-base_model")).to_have_value("smollm2-135m-instruct")
    assert page.input_value("#f-dataset_name") == "bundled:json-extract"
    assert page.input_value("#f-max_steps") == "40" and page.input_value("#f-max_length") == "256"

    page.goto(f"{server.url}/#/new")
    page.locator(f"#template-select option[value='{saved['config_id']}']").wait_for(state="attached")
    page.select_option("#template-select", saved["config_id"])
    expect(page.locator("#f-max_length")).to_have_value("30")
    page.click("summary:has-text('Paste a YAML or JSON config')")
    page.fill("#paste-config", "max_steps: 3  # short\nlora_target_modules:\n  - q_proj\n  - v_proj\n")
    page.click("#paste-load")
    assert page.input_value("#f-max_steps") == "3"
    assert page.input_value("#f-max_length") == "30"
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/[\w-]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    config = server.api("GET", f"/api/sft/jobs/{job_id}").json()["config"]
    assert (config["max_steps"], config["max_length"], config["lora_target_modules"]) == (3, 30, ["q_proj", "v_proj"])
    wait_for(lambda: job_status(server, job_id) == "completed", timeout=120, interval=0.2, message="the job to end")


def test_a_failed_job_shows_its_error_category_and_last_log_lines(page, server):
    # Pre-flight reads the first 1,000 rows; the bad row after them fails the job while it loads its data.
    rows = contact_rows(1000) + [{"messages": [{"role": "user", "content": "no answer"}]}]
    dataset = write_jsonl(server.root / "late-bad-row.jsonl", rows)
    job_id = server.api("POST", "/api/sft/train", json={"config": {
        "base_model": server.model, "dataset_name": str(dataset), "max_steps": 2}}).json()["job_id"]
    page.goto(f"{server.url}/#/jobs/{job_id}")
    page.locator("#job-status [data-status='failed']").wait_for(timeout=120_000)
    job = server.api("GET", f"/api/sft/jobs/{job_id}").json()
    assert page.inner_text("#failure-category") == job["error_detail"]["category"] == "dataset"
    assert page.inner_text("#failure-message") == job["error_detail"]["message"]
    assert "line 1001" in job["error_detail"]["message"]
    assert page.inner_text("#job-failure pre.log") == "\n".join(job["error_detail"]["log_tail"])
    assert job["error_detail"]["log_tail"]
    assert not page.is_disabled("#resume-button") and page.is_disabled("#stop-button")


def test_reloading_a_job_page_mid_training_shows_the_whole_curve_once(page, server):
    job_id = server.api("POST", "/api/sft/train", json={"config": {
        "base_model": server.model, "dataset_name": server.dataset, "max_steps": 120,
        "per_device_train_batch_size": 4}}).json()["job_id"]
    page.goto(f"{server.url}/#/jobs/{job_id}")
    wait_for(lambda: (chart_stats(page) or {}).get("counts", {}).get("loss", 0) >= 5, timeout=90,
             message="points before the reload")
    page.reload()
    wait_for(lambda: (chart_stats(page) or {}).get("counts", {}).get("loss", 0) >= 1, timeout=30,
             message="points after the reload")
    assert job_status(server, job_id) == "running", "the reload should happen mid-training"
    page.locator("#job-status [data-status='completed']").wait_for(timeout=120_000)
    steps = metric_steps(server, job_id)
    wait_for(lambda: chart_steps(page) == steps, timeout=15, message="the whole curve")
    stats = chart_stats(page)
    assert stats["appended"] == len(steps) * 2  # loss and learning rate, each step once
    assert stats["replaced"] == 0

    page.goto(f"{server.url}/#/jobs")
    page.locator(f"tr[data-job-id='{job_id}'] [data-status='completed']").wait_for()
    screenshot(page, "dashboard-jobs.png")  # after the module's other jobs: completed, failed


def test_jobs_list_filters_by_status_and_pages_past_100(page, server):
    blocker = server.api("POST", "/api/sft/train", json={"config": {
        "base_model": server.model, "dataset_name": server.dataset, "max_steps": 100_000}}).json()["job_id"]
    try:
        # With the one slot taken each new job waits, and a waiting job stops at once.
        for _ in range(101):
            job_id = server.api("POST", "/api/sft/train", json={"config": {
                "base_model": server.model, "dataset_name": server.dataset, "max_steps": 1}}).json()["job_id"]
            assert server.api("POST", f"/api/sft/jobs/{job_id}/stop").json()["status"] == "stopped"
        total = server.api("GET", "/api/sft/jobs?status=stopped&limit=1").json()["total"]
        assert total >= 101
        page.goto(f"{server.url}/#/jobs")
        page.select_option("#status-filter", "stopped")
        page.wait_for_url("**/#/jobs?status=stopped")
        page.locator(".pager p", has_text=f"1–100 of {total}").wait_for()
        assert page.locator("#jobs-table tbody tr").count() == 100
        assert page.locator("#jobs-table tbody [data-status='stopped']").count() == 100
        assert page.is_disabled(".pager button >> nth=0")
        page.click(".pager button >> nth=1")
        page.locator(".pager p", has_text=f"101–{total} of {total}").wait_for()
        assert page.locator("#jobs-table tbody tr").count() == total - 100
        newest_first = server.api("GET", "/api/sft/jobs?status=stopped&limit=100&offset=100").json()["jobs"]
        assert page.locator("#jobs-table tbody tr").first.get_attribute("data-job-id") == newest_first[0]["job_id"]
    finally:
        server.api("POST", f"/api/sft/jobs/{blocker}/stop")
        wait_for(lambda: job_status(server, blocker) == "stopped", timeout=60, interval=0.2, message="the blocker to stop")


def test_compare_runs_and_models(page, server):
    ids = []
    for steps, rate in ((4, 0.005), (6, 0.001)):
        ids.append(server.api("POST", "/api/sft/train", json={"config": {
            "base_model": server.model, "dataset_name": server.dataset, "max_steps": steps,
            "learning_rate": rate}}).json()["job_id"])
    for job_id in ids:
        wait_for(lambda: job_status(server, job_id) == "completed", timeout=120, interval=0.2, message="the jobs")
    page.goto(f"{server.url}/#/compare?jobs={','.join(ids)}")
    page.locator("#compare-config").wait_for()
    wait_for(lambda: chart_stats(page)["counts"] == {i: len(metric_steps(server, i)) for i in ids}, timeout=15,
             message="both curves")
    fields = page.locator("#compare-config tbody th").all_inner_texts()
    assert fields == ["learning_rate", "max_steps"]
    assert page.locator("#compare-metrics tbody tr", has_text="steps").first.inner_text().split("\t")[1:] == ["4", "6"]
    assert page.is_checked(f"#pick-{ids[0]}") and page.is_checked(f"#pick-{ids[1]}")

    page.goto(f"{server.url}/#/models")
    page.locator("#models-table tbody tr").first.wait_for()
    names = page.locator("#models-table tbody td:first-child").all_inner_texts()
    assert names == [m["name"] for m in server.api("GET", "/api/sft/models").json()]


def test_the_status_filter_lists_the_servers_statuses(page, server):
    page.goto(f"{server.url}/#/jobs")
    page.locator("#status-filter option[value='stopped']").wait_for(state="attached")
    options = page.eval_on_selector_all("#status-filter option", "options => options.map(o => o.value)")
    documented = server.api("GET", "/openapi.json").json()["components"]["schemas"]["JobStatusResponse"]
    assert options == ["", *documented["properties"]["status"]["enum"]]


def test_the_form_reads_the_structured_errors_of_an_answer(page, server):
    # A 400 whose detail names no form field: only its errors[] says which field is at fault.
    answer = {"detail": "the config cannot run (see errors)",
              "errors": [{"field": "config.lora_alpha", "message": "must be at least lora_r", "type": "invalid_config"},
                         {"field": None, "message": "and one more thing", "type": "invalid_config"}]}
    page.route("**/api/sft/train", lambda route: route.fulfill(status=400, json=answer))
    page.goto(f"{server.url}/#/new")
    page.fill("#f-base_model", server.model)
    page.fill("#f-dataset_name", server.dataset)
    page.click("#submit-job")
    error = page.locator("#e-lora_alpha")
    error.wait_for()
    page.wait_for_function("() => document.querySelector('#e-lora_alpha').textContent !== ''")
    assert error.inner_text() == "must be at least lora_r"
    assert page.get_attribute("#f-lora_alpha", "aria-invalid") == "true"
    assert page.inner_text("#form-error") == "and one more thing"
