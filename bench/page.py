"""Section 7: the dashboard's weight and speed in headless Chromium (Playwright, the system's browser).

A job with ``points`` metric points is recorded first by a real ``SFTJobManager`` whose runner reports
those points the way the trainer does (no model: the page's cost does not depend on what trained), in
the data directory of the server the browser then loads the page from.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium() -> str | None:
    return next((p for p in CHROMIUM if os.access(p, os.X_OK)), None) or shutil.which("chromium")


def seed_job(data_dir: Path, points: int) -> str:
    """Record a completed job with ``points`` logged steps (loss and learning rate) in ``data_dir``."""
    from app.api.sft_job_manager import SFTJobManager
    from app.core.settings import Settings
    from app.store import SQLiteStore

    def runner(job, emit) -> dict[str, Any]:
        emit("training_started", {"global_step": 0, "max_steps": points})
        for step in range(1, points + 1):
            emit("step", {"step": step, "max_steps": points})
            emit("metrics", {"step": step, "loss": 0.3 + 2.0 * math.exp(-step / (points / 4)) + 0.05 * math.sin(step),
                             "learning_rate": 1e-3 * (1 - step / points)})
        adapter = Path(job.output_dir) / "adapter"
        adapter.mkdir(parents=True, exist_ok=True)
        return {"global_step": points, "adapter_path": str(adapter)}

    settings = Settings(data_dir=data_dir)
    store = SQLiteStore(settings.resolved_database_path)
    manager = SFTJobManager(settings=settings, store=store, runner=runner, preflight=False)
    try:
        job = manager.submit({"base_model": "bench-seeded-model", "dataset_name": "bench-seeded.jsonl",
                              "max_steps": points})
        final = manager.wait_for_job(job.job_id, timeout=300)
        if final["status"] != "completed":
            raise RuntimeError(f"the seeded job ended {final['status']}: {final.get('error')}")
        return job.job_id
    finally:
        store.close()


def measure(url: str, job_id: str, *, points: int, repeats: int) -> dict[str, Any]:
    """First load of ``/`` (bytes, requests) and time until the job page's chart shows every point."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            context = browser.new_context()
            page = context.new_page()
            finished = []
            page.on("requestfinished", lambda request: finished.append(request))
            page.goto(f"{url}/")
            page.wait_for_selector(f"tr[data-job-id='{job_id}']")
            loaded = list(finished)
            sizes = [request.sizes() for request in loaded]
            first_load = {
                "requests": len(loaded),
                "bytes": sum(s["responseBodySize"] + s["responseHeadersSize"] for s in sizes),
                "body_bytes": sum(s["responseBodySize"] for s in sizes),
                "list_drawn_ms": page.evaluate("performance.now()"),
            }
            context.close()

            chart_ms, redraw_ms, redraw_5000_ms, drawn_5000 = [], [], [], None
            for _ in range(repeats):
                context = browser.new_context()  # a cold cache each time
                page = context.new_page()
                page.goto(f"{url}/#/jobs/{job_id}")
                page.wait_for_function(
                    f"""() => {{ const c = window.sftDashboard && window.sftDashboard.chart;
                        return c && c.count('loss') === {points} && c.lastDrawAt >= c.lastAddAt; }}""",
                    polling="raf", timeout=120_000)
                chart_ms.append(page.evaluate("window.sftDashboard.chart.lastDrawAt"))
                redraw_ms.append(page.evaluate(_REDRAW))
                if drawn_5000 is None:
                    page.evaluate(f"""() => {{ const c = window.sftDashboard.chart;
                        for (let s = {points} + 1; s <= 5000; s++) c.add('loss', s, 1 + Math.sin(s)); }}""")
                    redraw_5000_ms.append(page.evaluate(_REDRAW))
                    drawn_5000 = page.evaluate("window.sftDashboard.chart.drawnPoints")
                context.close()
        finally:
            browser.close()
    return {
        "first_load": first_load,
        "points": points,
        "chart_ms": chart_ms,
        "chart_ms_median": statistics.median(chart_ms),
        "redraw_ms_median": statistics.median(redraw_ms),
        "redraw_5000_ms": redraw_5000_ms[0],
        "drawn_points_5000": drawn_5000,
    }


#: Median time of 20 full redraws of the open chart, in ms.
_REDRAW = """() => { const c = window.sftDashboard.chart, times = [];
    for (let i = 0; i < 20; i++) { const t = performance.now(); c.draw(); times.push(performance.now() - t); }
    times.sort((a, b) => a - b); return times[10]; }"""


def page_section(bench, *, points: int = 1000, repeats: int = 5) -> dict[str, Any]:
    """Seed the job, start a server on its data directory, measure in the browser."""
    if chromium() is None:
        return {"status": "not run", "reason": "no Chromium at /usr/bin/chromium (make test installs it as root)"}
    try:
        import playwright  # noqa: F401
    except ImportError:
        return {"status": "not run", "reason": "the playwright package is not installed"}
    service = bench.server("page")
    job_id = seed_job(service.data_dir, points)
    with service as server:
        return measure(server.url, job_id, points=points, repeats=repeats)
