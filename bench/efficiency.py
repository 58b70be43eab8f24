"""Section 11: what `precision: auto` gains, and how close each run comes to the device's peak (issue 28).

The demo job through the service with ``precision: auto`` and with ``fp32``, and the limit loop
(``bench/limit_sft.py``) in the same two dtypes, alternating, ``pairs`` rounds; each service run's efficiency report
(real tokens/s, MFU against the measured or datasheet peak). The limit trains the same batches, so its MFU is the
service's scaled by their steps/s. Then ``bench/step_profile.py`` profiles one bf16 step of the limit loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from .bare_sft import RESULT_PREFIX
from .harness import BENCH, ROOT, Bench, log
from .stats import median

TARGET_SERVICE_VS_LIMIT = 0.95  # service auto ÷ the faster limit, steps/s
TARGET_AUTO_VS_FP32 = 1.3  # service auto ÷ service fp32 steps/s, on a CPU whose auto is bf16 (AMX)
TARGET_LOSS_DRIFT = 0.02  # |train loss auto − fp32| ÷ fp32


def auto_precision(bench: Bench) -> str:
    """What ``precision: auto`` resolves to for the device this run trains on."""
    if bench.precision != "fp32":  # a CUDA GPU: run.py already chose what auto picks there
        return bench.precision
    sys.path.insert(0, str(ROOT / "backend"))
    from app.sft.config import SFTConfig  # no torch on CPU: resolve_precision reads /proc/cpuinfo

    width = json.loads((bench.model_dir / "config.json").read_text()).get("hidden_size")
    return SFTConfig(base_model="m", dataset_name="d", max_steps=1).resolve_precision("cpu", hidden_size=width)


def efficiency_section(bench: Bench, server, *, warm_up: bool = True) -> dict[str, Any]:
    """``warm_up``: run a 1-step job first (a fresh server's first job pays its imports)."""
    plan = bench.plan
    auto = auto_precision(bench)
    dtypes = list(dict.fromkeys([auto, "fp32"]))
    if warm_up:
        log("efficiency: warm-up job")
        server.run_job(bench.config(1, precision=auto), poll=plan.poll)
    rounds = []
    for i in range(plan.pairs):
        row: dict[str, Any] = {}
        for dtype in dtypes:
            server.wait_quiet()
            log(f"efficiency: round {i + 1}/{plan.pairs}: service {dtype}")
            run = server.run_job(bench.config(plan.steps, precision=dtype), poll=plan.poll)
            report = run.result.get("efficiency") or {}
            row[f"service_{dtype}"] = {"steps_per_s": run.steps_per_s, "train_loss": run.result["train_loss"],
                                       "precision": run.result.get("precision"), "mfu": report.get("mfu"),
                                       "real_tokens_per_s": report.get("real_tokens_per_s"),
                                       "peak_tflops": report.get("peak_tflops"),
                                       "peak_source": report.get("peak_source"),
                                       "padding_share": report.get("padding_share"),
                                       "peak_rss_mb": report.get("peak_rss_mb"), "hints": report.get("hints")}
            server.wait_quiet()
            log(f"efficiency: round {i + 1}/{plan.pairs}: limit {dtype}")
            limit = bench.run_bare(plan.steps, tag=f"efficiency-{dtype}-{i + 1}", script="limit_sft.py",
                                   precision=dtype)
            row[f"limit_{dtype}"] = {"steps_per_s": limit["steps_per_s"], "train_loss": limit["train_loss"],
                                     "other_cores": limit.get("other_cores")}
        rounds.append(row)
    runners = list(rounds[0]) if rounds else []
    medians = {name: {key: median([r[name][key] for r in rounds])
                      for key in ("steps_per_s", "train_loss") if all(r[name].get(key) is not None for r in rounds)}
               for name in runners}
    for dtype in dtypes:
        service = medians[f"service_{dtype}"]
        service["mfu"] = median([r[f"service_{dtype}"]["mfu"] or 0.0 for r in rounds])
        service["real_tokens_per_s"] = median([r[f"service_{dtype}"]["real_tokens_per_s"] or 0.0 for r in rounds])
        service["peak_tflops"] = rounds[0][f"service_{dtype}"]["peak_tflops"]
        service["peak_source"] = rounds[0][f"service_{dtype}"]["peak_source"]
        limit = medians[f"limit_{dtype}"]
        limit["mfu"] = service["mfu"] * limit["steps_per_s"] / service["steps_per_s"] if service["mfu"] else None
    profile = step_profile(bench, "autocast" if "bf16" in dtypes else "fp32")
    return {"auto": auto, "dtypes": dtypes, "steps": plan.steps, "rounds": rounds, "medians": medians,
            "profile": profile, "hints": rounds[0][f"service_{dtypes[-1]}"]["hints"] if rounds else None}


def step_profile(bench: Bench, setup: str) -> dict[str, Any] | None:
    """One ``bench/step_profile.py`` run: its steps/s and the profile of one step by operator group."""
    log(f"efficiency: profiling one {setup} step (bench/step_profile.py)")
    cmd = [sys.executable, str(BENCH / "step_profile.py"), "--model", str(bench.model_dir), "--setup", setup,
           "--steps", "2" if bench.plan.mode == "smoke" else "4"]
    out = subprocess.run(cmd, env=bench.env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line.removeprefix(RESULT_PREFIX))
    log(f"efficiency: step_profile.py failed ({out.returncode}): {out.stderr[-500:]}")
    return None


def efficiency_targets(results: dict, add) -> None:
    """The section's targets, through targets.targets' ``add``."""
    e = results.get("efficiency")
    if not e:
        return
    m, auto = e["medians"], e["auto"]
    service = m[f"service_{auto}"]["steps_per_s"]
    fastest = max(m[f"limit_{d}"]["steps_per_s"] for d in e["dtypes"])
    add("eff_service_vs_limit", "efficiency", f"steps/s, service ({auto}) ÷ the faster limit (medians)",
        f"{service / fastest:.3f}", f"≥ {TARGET_SERVICE_VS_LIMIT}", service / fastest >= TARGET_SERVICE_VS_LIMIT,
        f"service {service:.3f} vs limit {fastest:.3f} steps/s.")
    if auto != "fp32":
        fp32 = m["service_fp32"]
        gain = service / fp32["steps_per_s"]
        add("eff_auto_vs_fp32", "efficiency", f"steps/s, service auto ({auto}) ÷ service fp32 (medians)",
            f"{gain:.2f}×", f"≥ {TARGET_AUTO_VS_FP32}×", gain >= TARGET_AUTO_VS_FP32,
            f"{service:.3f} vs {fp32['steps_per_s']:.3f} steps/s.")
        drift = abs(m[f"service_{auto}"]["train_loss"] - fp32["train_loss"]) / fp32["train_loss"]
        add("eff_loss_drift", "efficiency", f"train loss, service {auto} vs fp32 (relative difference)",
            f"{drift:.2%}", f"≤ {TARGET_LOSS_DRIFT:.0%}", drift <= TARGET_LOSS_DRIFT,
            f"{m[f'service_{auto}']['train_loss']:.4f} vs {fp32['train_loss']:.4f}.")


def efficiency_report(w, results: dict, table, section, targets_of) -> None:
    """The section in docs/benchmarks.md (report.py's helpers passed in)."""
    e = section(w, results, "efficiency")
    if not e:
        return
    w(f"`precision: auto` resolves to **{e['auto']}** here. The demo job, {e['steps']} steps, "
      f"{len(e['rounds'])} round(s) of each runner, alternating; medians. MFU: model FLOPs (LoRA 4 × frozen "
      "parameters + 6 × LoRA's, per real token, plus causal attention) ÷ step time ÷ the device's peak for the "
      "dtype; the limit trains the same batches, so its MFU is the service's scaled by steps/s.")
    w("")
    rows = []
    for name, m in e["medians"].items():
        runner, dtype = name.split("_", 1)
        peak = e["medians"][f"service_{dtype}"].get("peak_tflops")
        rows.append([runner + (" (auto)" if dtype == e["auto"] and runner == "service" else ""), dtype,
                     f"{m['steps_per_s']:.3f}", f"{m['train_loss']:.4f}",
                     "—" if m.get("mfu") is None else f"{m['mfu']:.1%}",
                     "—" if peak is None else f"{peak * 1000:,.0f}",
                     "—" if m.get("real_tokens_per_s") is None else f"{m['real_tokens_per_s']:,.0f}"])
    table(w, ["Runner", "dtype", "steps/s", "train loss", "MFU", "peak GFLOP/s", "real tokens/s"], rows)
    sources = {m.get("peak_source") for m in e["medians"].values() if m.get("peak_source")}
    if sources:
        w("Peaks: " + "; ".join(sorted(sources)) + ".")
        w("")
    p = e.get("profile")
    if p:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in p["profile_share"].items())
        w(f"Profile of one `{p['setup']}` step of the limit loop (bench/step_profile.py, torch.profiler self CPU "
          f"time by operator group; {p['steps_per_s']:.3f} steps/s over {p['steps']} steps): {shares}.")
        w("")
    if e.get("hints"):
        w("The fp32 job's own hints: " + " ".join(f"{h['text']}." for h in e["hints"]))
        w("")
    targets_of(w, results, "efficiency")
