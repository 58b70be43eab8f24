"""The ``sft`` command with a DPO job: train on preference pairs, follow it, show its reward figures."""

from __future__ import annotations

import re

from client_helpers import write_yaml
from factories import preference_rows, write_jsonl


def test_a_dpo_job_trains_and_shows_its_reward_margin(cli, server, job_config, tmp_path):
    prefs = write_jsonl(server.data_dir / "prefs.jsonl", preference_rows(8))
    config = write_yaml(tmp_path / "dpo.yaml", {**job_config, "dataset_name": str(prefs), "method": "dpo"})
    run = cli("train", str(config), "--set", "max_steps=2", "--follow")
    assert run.returncode == 0, run.stdout + run.stderr
    job_id = re.search(r"^Job (\S+) submitted", run.stdout, re.MULTILINE).group(1)
    shown = cli("show", job_id).stdout
    assert re.search(r"reward margin\s+-?\d+\.\d{4}", shown) and re.search(r"reward accuracy\s+\d\.\d{4}", shown)
    refused = cli("train", str(write_yaml(tmp_path / "sft.yaml", {**job_config, "dataset_name": str(prefs)})))
    assert refused.returncode == 2 and "they train with method 'dpo'" in refused.stderr
