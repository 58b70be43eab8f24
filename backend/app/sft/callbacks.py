"""Training callbacks: our base class, the seed's three, and the ones the trainer adds itself."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .checkpoints import eval_loss_at
from .errors import ConfigError
from .events import EventKind, EventSink, TrainingEvent


class SFTCallback(TrainerCallback):
    """Base for user callbacks: a ``TrainerCallback`` with a simpler metrics hook.

    Override ``on_metrics(step, metrics)`` to see every logged dict (loss, learning_rate, eval_loss...),
    or any ``TrainerCallback`` method for full control.
    """

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Called with each logged metrics dict."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs:
            self.on_metrics(state.global_step, dict(logs))


class ValidationCallback(SFTCallback):
    """Evaluate every ``eval_steps`` steps and keep the history of eval losses."""

    def __init__(self, eval_steps: int = 100):
        if eval_steps < 1:
            raise ConfigError("eval_steps must be at least 1", field="eval_steps")
        self.eval_steps = eval_steps
        self.history: list[tuple[int, float]] = []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.eval_steps == 0:
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self.history.append((state.global_step, float(metrics["eval_loss"])))


class CheckpointCallback(SFTCallback):
    """Save a checkpoint every ``save_steps`` steps and keep the ``keep_best`` best by eval loss.

    Checkpoints without an eval loss rank by recency, so without evaluation the latest are kept.
    """

    def __init__(self, save_steps: int = 500, keep_best: int = 3):
        if save_steps < 1 or keep_best < 1:
            raise ConfigError("save_steps and keep_best must be at least 1")
        self.save_steps = save_steps
        self.keep_best = keep_best
        self.kept: list[tuple[float, int, Path]] = []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.save_steps == 0:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not path.exists():
            return
        score = eval_loss_at(state.log_history, state.global_step)
        score = float("inf") if score is None else score
        self.kept = [entry for entry in self.kept if entry[2] != path]
        self.kept.append((score, -state.global_step, path))
        self.kept.sort(key=lambda entry: (entry[0], entry[1]))
        for _, _, dropped in self.kept[self.keep_best:]:
            shutil.rmtree(dropped, ignore_errors=True)
        self.kept = self.kept[: self.keep_best]

    @property
    def best_checkpoints(self) -> list[Path]:
        return [path for _, _, path in self.kept]


class WandBCallback(SFTCallback):
    """Log metrics to Weights & Biases (``pip install wandb``)."""

    def __init__(self, project: str, **init_kwargs: Any):
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "WandBCallback needs the wandb package: pip install 'sft-service[wandb]'"
            ) from None
        self._wandb = wandb
        self.project = project
        self.init_kwargs = init_kwargs
        self._run = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._run = self._wandb.init(project=self.project, reinit=True, **self.init_kwargs)

    def on_metrics(self, step, metrics):
        if self._run is not None:
            self._run.log(metrics, step=step)

    def on_train_end(self, args, state, control, **kwargs):
        if self._run is not None:
            self._run.finish()
            self._run = None


class StopCallback(TrainerCallback):
    """Ends training at the next step boundary once ``stop_event`` is set.

    It also asks for a checkpoint there, so a stopped job can resume with its optimizer state.
    """

    def __init__(self, stop_event: threading.Event):
        self.stop_event = stop_event
        self.stopped = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_event.is_set():
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True


class ReportingCallback(TrainerCallback):
    """Appends every log to ``log.jsonl`` and reports progress, metrics and checkpoints as ``TrainingEvent``s."""

    def __init__(self, log_path: Path, sink: EventSink | None):
        self.log_path = log_path
        self.sink = sink

    def _emit(self, kind: EventKind, payload: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink(TrainingEvent(kind, payload))

    def on_train_begin(self, args, state, control, **kwargs):
        self._emit(EventKind.TRAINING_STARTED, {"max_steps": state.max_steps, "global_step": state.global_step})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        kind = EventKind.EVAL if any(key.startswith("eval_") for key in logs) else EventKind.METRICS
        self._emit(kind, {**record, "max_steps": state.max_steps})

    def on_step_end(self, args, state, control, **kwargs):
        self._emit(EventKind.STEP, {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch})

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self._emit(EventKind.CHECKPOINT_SAVED, {"step": state.global_step, "path": str(path)})
