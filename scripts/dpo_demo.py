"""DPO demo through the service: the bundled model, the bundled preference set, held-out preference accuracy
before and after.

Starts the service's job manager in this process (its own data directory), submits a DPO job on
``bundled:json-extract-prefs`` (100 training pairs) from ``smollm2-135m-instruct``, waits for it, and scores the
50 held-out pairs (``app.sft.dpo.score_preferences``: the share where the model gives the exact JSON a higher
log-probability than the wrong answer) with the job's model and with the model it started from. Prints one JSON
line: before, after, the job's training time and the machine.

    PYTHONPATH=backend python scripts/dpo_demo.py [--steps 8] [--beta 0.1] [--learning-rate 1e-3] [--eval-pairs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--eval-pairs", type=int, help="score only the first N held-out pairs")
    args = parser.parse_args()

    from app.api.sft_job_manager import SFTJobManager
    from app.core.settings import Settings
    from app.sft.artifacts import job_artifact
    from app.sft.dpo import preference_pairs, score_preferences
    from app.sft.model_cache import ModelCache
    from app.store import SQLiteStore

    work = Path(tempfile.mkdtemp(prefix="dpo-demo-"))
    settings = Settings(data_dir=work, model_cache_dir=args.model_cache.resolve())
    manager = SFTJobManager(settings=settings, store=SQLiteStore(work / "jobs.db"))
    config = {"base_model": "smollm2-135m-instruct", "dataset_name": "bundled:json-extract-prefs", "method": "dpo",
              "beta": args.beta, "max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
              "learning_rate": args.learning_rate, "max_length": 256, "lora_dropout": 0.0, "seed": 42}
    started = time.perf_counter()
    job = manager.submit(config)
    status = manager.wait_for_job(job.job_id, timeout=6 * 3600)
    if status["status"] != "completed":
        raise SystemExit(f"the DPO job ended {status['status']}: {status.get('error')}")
    job = manager.get_job(job.job_id)
    rows = preference_pairs("bundled:json-extract-prefs", "eval", limit=args.eval_pairs)
    scored = time.perf_counter()
    scores = score_preferences(ModelCache(max_models=1), job_artifact(job), rows,
                               cache_dir=settings.resolved_model_cache_dir)
    print(json.dumps({
        "held_out_pairs": scores["pairs"], "before": scores["base"], "after": scores["tuned"],
        "train_runtime_s": job.result["train_runtime"], "job_wall_s": round(scored - started, 1),
        "score_s": round(time.perf_counter() - scored, 1), "config": config,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}",
    }))
    manager.store.close()


if __name__ == "__main__":
    main()
