"""Section 5: tokens/s and peak RSS of the demo job with packing and with gradient checkpointing."""

from __future__ import annotations

from .harness import Bench, log
from .overhead import service_run_summary
from .service import Service


def knobs_section(bench: Bench, shared: Service | None = None) -> dict:
    """The demo job with both knobs off, with packing, with gradient checkpointing: each the first job of a
    fresh server, so that its peak RSS is its own (a server keeps the heap its earlier jobs freed).

    ``shared``: a running server that trains all three instead (smoke mode, where seconds matter more)."""
    plan = bench.plan
    runs = []
    own = shared is None and plan.mode == "smoke"
    if own:
        shared = bench.server("knobs").start()
    try:
        for name, overrides in (("baseline", {}), ("packing", {"packing": True}),
                                ("gradient checkpointing", {"gradient_checkpointing": True})):
            log(f"knobs: {name}")
            server = shared or bench.server(f"knobs-{name.split()[0]}").start()
            try:
                run = server.run_job(bench.config(plan.knob_steps, **overrides), poll=plan.poll, sample_rss=True)
            finally:
                if server is not shared:
                    server.stop()
            runs.append({"name": name, "packing": bool(overrides.get("packing")),
                         "gradient_checkpointing": bool(overrides.get("gradient_checkpointing")),
                         **service_run_summary(run)})
    finally:
        if own:
            shared.stop()
    return {"steps": plan.knob_steps, "runs": runs}
