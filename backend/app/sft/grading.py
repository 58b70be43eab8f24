"""Eval during training: the job's graders score the model on the eval set at step 0 (the base model) and
every ``eval_steps``, and with ``keep`` the best-scoring checkpoint becomes the job's final adapter.

How it is scheduled: ``GradingCallback`` runs in the training thread, between optimizer steps (HF's
``on_train_begin`` and ``on_step_end``), so training pauses while it generates and nothing else competes
with it for the model; the API keeps serving from its own threads. Its cost is bounded at submit:
``eval_max_rows`` rows, ``eval_max_new_tokens`` greedy tokens each, generated ``per_device_eval_batch_size``
at a time. Each eval logs its own wall time (``eval_grading_seconds``) and the run's total is in the result.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from .errors import ConfigError
from .evaluation import generate_answers
from .graders import GradingContext, make_sample, mean_scores, reference_item

#: Prefix of a grader's metric key: grader ``json_match`` logs ``grader_json_match``.
METRIC_PREFIX = "grader_"
#: Where the best checkpoint's adapter (or model) is kept, under the run's output_dir.
BEST_DIR = "best"


def eval_prompts(dataset: Any, limit: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """The prompts and ``item``s of the first ``limit`` rows of a prepared eval set (prompt/completion rows:
    chat messages or text)."""
    if dataset is None or "prompt" not in dataset.column_names or "completion" not in dataset.column_names:
        raise ConfigError("graders need an eval set of prompts and answers (conversational or prompt_completion "
                          "rows); this one has neither", field="graders")
    prompts, items = [], []
    for row in dataset.select(range(min(limit, len(dataset)))):
        completion = row["completion"]
        answer = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
        prompts.append(row["prompt"])
        items.append(reference_item(answer, prompt=row["prompt"]))
    return prompts, items


class GradingCallback(TrainerCallback):
    """Scores the model with the config's graders at step 0 and every ``eval_steps``; keeps the best."""

    def __init__(self, config: Any, eval_dataset: Any, output_dir: Path, context: GradingContext | None = None):
        self.config = config
        self.prompts, self.items = eval_prompts(eval_dataset, config.eval_max_rows)
        self.context = context or GradingContext()
        self.best_dir = output_dir / BEST_DIR
        self.trainer: Trainer | None = None
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.loss_seconds = 0.0
        self.best: dict[str, Any] | None = self._saved_best()

    @classmethod
    def for_run(cls, config: Any, eval_dataset: Any, output_dir: Path) -> GradingCallback | None:
        return cls(config, eval_dataset, output_dir) if config.graders else None

    def attach(self, trainer: Trainer) -> None:
        """The trainer whose log the scores join and whose model is saved as the best."""
        self.trainer = trainer

    # HF hooks

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step == 0:  # a resumed run was scored at step 0 by its first attempt
            self._score(state, model, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        step = state.global_step
        if step % self.config.eval_steps == 0 or step == state.max_steps:
            self._score(state, model, processing_class)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.loss_seconds += float((metrics or {}).get("eval_runtime", 0.0))

    # Scoring and keeping

    def _score(self, state: Any, model: Any, tokenizer: Any) -> None:
        started = time.perf_counter()
        answers = generate_answers(model, tokenizer, self.prompts, max_new_tokens=self.config.eval_max_new_tokens,
                                   batch_size=self.config.per_device_eval_batch_size)
        means, _ = mean_scores(self.config.graders, [make_sample(a) for a in answers], self.items, self.context)
        step = state.global_step
        if self.config.keep is not None:
            self._keep_if_best(step, means[self.config.keep.metric])
        seconds = time.perf_counter() - started  # generation, grading and keeping the best adapter
        self.seconds += seconds
        self.history.append({"step": step, **means})
        logs = {f"{METRIC_PREFIX}{name}": round(value, 6) for name, value in means.items()}
        # Trainer.log, not TRL's override: that one would fold in and clear the pending train metrics.
        Trainer.log(self.trainer, {**logs, "eval_grading_seconds": round(seconds, 3)})

    def _keep_if_best(self, step: int, value: float) -> None:
        keep = self.config.keep
        if self.best is not None and not (value > self.best["value"] if keep.mode == "max"
                                          else value < self.best["value"]):
            return
        shutil.rmtree(self.best_dir, ignore_errors=True)
        self.trainer.save_model(str(self.best_dir))
        self.best = {"step": step, "metric": keep.metric, "mode": keep.mode, "value": value}
        (self.best_dir / "score.json").write_text(json.dumps(self.best))

    def _saved_best(self) -> dict[str, Any] | None:
        path = self.best_dir / "score.json"
        return json.loads(path.read_text()) if self.config.keep is not None and path.is_file() else None

    def keep_best(self, artifact_dir: Path, final_step: int) -> None:
        """Make ``artifact_dir`` (the saved final adapter or model) the best checkpoint's, if that is another."""
        if self.best is None or self.best["step"] == final_step or not self.best_dir.is_dir():
            return
        for path in artifact_dir.iterdir():
            if path.name.endswith((".safetensors", ".bin")) or path.name in ("adapter_config.json", "config.json"):
                path.unlink()
        for path in self.best_dir.iterdir():
            if path.name != "score.json":
                shutil.copy2(path, artifact_dir / path.name)

    def summary(self) -> dict[str, Any]:
        """For the run's result: every eval's scores, the base's (step 0), the best kept, the time spent scoring
        (``eval_seconds``: generation and graders) and computing the eval loss (``eval_loss_seconds``)."""
        base = next((entry for entry in self.history if entry["step"] == 0), None)
        return {"history": self.history, "base": base, "final": self.history[-1] if self.history else None,
                "kept": self.best, "eval_seconds": round(self.seconds, 3),
                "eval_loss_seconds": round(self.loss_seconds, 3), "eval_rows": len(self.prompts)}
