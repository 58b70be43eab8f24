"""Section ``eval`` of the bench: the demo job with and without per-checkpoint eval (graders).

One server trains the demo job twice after a 1-step warm-up: once plain, once with a JSON-equality grader
(string_check of ``{{sample.output_json}}`` against ``{{item.reference_json}}``) scored on the bundled
held-out split at step 0 (the base model) and every ``eval_every`` steps, with ``keep: best``. Eval runs in
the training thread between steps, so the training part of the graded run is its ``train_runtime`` less the
time its evals took (scoring, and the eval loss HF computes at the same steps); the section reports both
runs' training steps/s and their ratio, the eval's own time, and the score at each eval (base to last) and
the checkpoint kept.
"""

from __future__ import annotations

from typing import Any

from .harness import log

JSON_MATCH = {"type": "string_check", "name": "json_match", "operation": "eq", "input": "{{sample.output_json}}",
              "reference": "{{item.reference_json}}"}


def eval_section(bench) -> dict[str, Any]:
    plan = bench.plan
    steps, every, rows = plan.eval_train_steps, plan.eval_every, plan.eval_rows
    graded = bench.config(steps, eval_dataset_name=bench.dataset, eval_dataset_split="eval", eval_steps=every,
                          graders=[JSON_MATCH], keep={"metric": "json_match", "mode": "max"}, eval_max_rows=rows,
                          eval_max_new_tokens=plan.eval_new_tokens)
    runs: dict[str, Any] = {}
    with bench.server("eval") as server:
        log("eval: warm-up job (imports and first model load in the server)")
        server.run_job(bench.config(1), poll=plan.poll)
        for name, config in (("plain", bench.config(steps)), ("graded", graded)):
            log(f"eval: {name} job, {steps} steps")
            run = server.run_job(config, poll=plan.poll)
            result = run.job["result"]
            graders = result.get("graders") or {}
            eval_s = graders.get("eval_seconds", 0.0) + graders.get("eval_loss_seconds", 0.0)
            training_s = result["train_runtime"] - eval_s
            runs[name] = {"train_runtime_s": result["train_runtime"], "eval_s": round(eval_s, 2),
                          "grading_s": graders.get("eval_seconds"), "eval_loss_s": graders.get("eval_loss_seconds"),
                          "training_s": round(training_s, 2), "global_step": result["global_step"],
                          "steps_per_s": result["global_step"] / training_s, "ttr_s": round(run.wall_s, 2),
                          "other_cores": run.other_cores, "graders": graders or None}
    history = runs["graded"]["graders"]["history"]
    evals = len(history)
    return {
        "steps": steps, "eval_every": every, "eval_rows": rows, "eval_new_tokens": plan.eval_new_tokens,
        "runs": runs,
        "ratio_training_steps_per_s": runs["graded"]["steps_per_s"] / runs["plain"]["steps_per_s"],
        "eval_s_per_eval": runs["graded"]["eval_s"] / evals if evals else None,
        "scores": [[entry["step"], entry["json_match"]] for entry in history],
        "kept": runs["graded"]["graders"]["kept"],
    }
