"""The dashboard with graders, in a real headless Chromium: the job page charts each grader's score beside the
loss with the base model's score as a line, and Compare runs shows the grader scores side by side."""

from __future__ import annotations

from factories import wait_for

FUZZY = {"type": "text_similarity", "name": "fuzzy", "input": "{{sample.output_text}}",
         "reference": "{{item.reference}}", "evaluation_metric": "fuzzy_match"}


def number(value: float) -> str:
    """As the page's formatNumber writes a score."""
    if value == int(value):
        return str(int(value))
    return f"{value:.2e}" if abs(value) < 1e-3 else f"{value:#.4g}"


def grader_points(page, key: str) -> list[list[float]]:
    return page.evaluate(f"() => window.sftDashboard.graderChart.series.find(s => s.key === '{key}').points")


def test_the_job_page_charts_grader_scores_with_the_base_line_and_compare_shows_them(page, server):
    config = {"base_model": server.model, "dataset_name": server.dataset, "max_steps": 4, "learning_rate": 2e-2,
              "validation_split": 0.25, "eval_steps": 2, "graders": [FUZZY], "eval_max_rows": 4,
              "eval_max_new_tokens": 8, "keep": {"metric": "fuzzy", "mode": "max"}}
    graded = server.api("POST", "/api/sft/train", json={"config": config}).json()["job_id"]
    plain = server.api("POST", "/api/sft/train", json={"config": {
        "base_model": server.model, "dataset_name": server.dataset, "max_steps": 2}}).json()["job_id"]
    for job_id in (graded, plain):
        wait_for(lambda: server.api("GET", f"/api/sft/jobs/{job_id}").json()["status"] == "completed", timeout=120,
                 interval=0.2, message="the jobs")
    scores = {p["step"]: p["grader_fuzzy"] for p in server.api("GET", f"/api/sft/jobs/{graded}/metrics").json()["metrics"]
              if "grader_fuzzy" in p}
    assert sorted(scores) == [0, 2, 4]

    page.goto(f"{server.url}/#/jobs/{graded}")
    page.locator("#grader-chart").wait_for()
    wait_for(lambda: [p[0] for p in grader_points(page, "grader_fuzzy")] == [0, 2, 4], timeout=15,
             message="every eval on the chart")
    assert [p[1] for p in grader_points(page, "grader_fuzzy")] == [scores[0], scores[2], scores[4]]
    # The base line: the step-0 score across the run.
    assert grader_points(page, "base_fuzzy") == [[0, scores[0]], [4, scores[0]]]
    assert page.locator("#grader-panel .legend").inner_text().split("\n") == ["fuzzy", "fuzzy: base"]
    assert page.locator("#loss-chart").is_visible() and page.locator("#grader-chart").is_visible()

    kept = server.api("GET", f"/api/sft/jobs/{graded}").json()["result"]["graders"]["kept"]
    page.goto(f"{server.url}/#/compare?jobs={graded},{plain}")
    row = page.locator("#compare-metrics tbody tr", has_text="grader fuzzy")
    row.wait_for()
    assert row.inner_text().split("\t")[1:] == [
        f"{number(scores[0])} → {number(scores[4])} (step 4), kept step {kept['step']}", "–"]
