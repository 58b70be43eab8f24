"""Read a run's checkpoints from disk: plain files, no torch or transformers (the API lists them)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def eval_loss_at(log_history: list[dict[str, Any]], step: int) -> float | None:
    """The last ``eval_loss`` the trainer logged at ``step``, or None."""
    losses = [e["eval_loss"] for e in log_history if "eval_loss" in e and e.get("step") == step]
    return float(losses[-1]) if losses else None


def _complete(output_dir: str | Path) -> list[tuple[int, Path]]:
    # A checkpoint still being written has no trainer_state.json yet.
    found = []
    for path in (Path(output_dir) / "checkpoints").glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / "trainer_state.json").exists():
            found.append((int(step), path))
    return sorted(found)


def list_checkpoints(output_dir: str | Path) -> list[dict[str, Any]]:
    """Checkpoints under ``output_dir/checkpoints``, oldest first: step, path, eval_loss, created_at."""
    found = []
    for step, path in _complete(output_dir):
        state_file = path / "trainer_state.json"
        history = json.loads(state_file.read_text()).get("log_history", [])
        created = datetime.fromtimestamp(state_file.stat().st_mtime, timezone.utc).isoformat()
        found.append({"step": step, "path": str(path), "eval_loss": eval_loss_at(history, step),
                      "created_at": created})
    return found


def latest_checkpoint(output_dir: str | Path) -> tuple[int, Path] | None:
    """Step and path of the newest complete checkpoint (without reading its state), or None."""
    found = _complete(output_dir)
    return found[-1] if found else None
