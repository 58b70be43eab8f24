from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.sft.checkpoints import latest_checkpoint, list_checkpoints


def _checkpoint(root: Path, name: str, history: list[dict] | None) -> Path:
    path = root / "checkpoints" / name
    path.mkdir(parents=True)
    if history is not None:
        (path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    return path


def test_only_complete_numbered_checkpoints_count_in_step_order(tmp_path):
    _checkpoint(tmp_path, "checkpoint-10", [{"step": 10, "loss": 1.0}, {"step": 10, "eval_loss": 0.5}])
    _checkpoint(tmp_path, "checkpoint-2", [{"step": 2, "eval_loss": 0.9}, {"step": 4, "eval_loss": 0.7}])
    _checkpoint(tmp_path, "checkpoint-12", None)  # still being written
    _checkpoint(tmp_path, "checkpoint-best", [])

    listed = list_checkpoints(tmp_path)
    assert [(c["step"], c["eval_loss"]) for c in listed] == [(2, 0.9), (10, 0.5)]
    assert listed[1]["path"] == str(tmp_path / "checkpoints" / "checkpoint-10")
    assert latest_checkpoint(tmp_path) == (10, tmp_path / "checkpoints" / "checkpoint-10")


def test_no_checkpoints(tmp_path):
    assert list_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None


def test_listing_a_jobs_checkpoints_imports_no_training_stack(tmp_path):
    # GET /jobs/{id}/checkpoints and resume are API paths: they must not pull torch or transformers in.
    code = f"""
import sys
from app.api.sft_job_manager import SFTJobManager
from app.core.settings import Settings
from app.store import SQLiteStore
manager = SFTJobManager(settings=Settings(data_dir={str(tmp_path)!r}), store=SQLiteStore({str(tmp_path / "j.db")!r}),
                        preflight=False, runner=lambda job, emit: {{}})
job_id = manager.create_job({{"base_model": "m", "dataset_name": "d.jsonl", "max_steps": 1}})
assert manager.checkpoints(job_id) == []
print(sorted(m for m in ("torch", "transformers", "trl", "accelerate") if m in sys.modules))
"""
    backend = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=backend, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
