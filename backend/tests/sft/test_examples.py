from __future__ import annotations

from pathlib import Path

import pytest

from app.sft import SFTConfig

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "config" / "examples").glob("*.yaml"))


def test_examples_exist():
    names = {path.name for path in EXAMPLES}
    assert {"sft_alpaca.yaml", "demo.yaml", "sft_sharegpt.yaml", "sft_messages.yaml", "sft_qlora.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path):
    SFTConfig.from_yaml(path)


def test_cli_rejects_a_bad_config(tmp_path, capsys):
    from app.sft.__main__ import main

    path = tmp_path / "bad.yaml"
    path.write_text("base_model: m\ndataset_name: d.jsonl\nmax_steps: 0\n")
    assert main(["train", str(path)]) == 2
    assert "max_steps" in capsys.readouterr().err


def test_cli_trains(tiny_config, tmp_path, capsys):
    import json

    import yaml

    from app.sft.__main__ import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**tiny_config, "max_steps": 2}))
    assert main(["train", str(path), "--output-dir", str(tmp_path / "out")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["global_step"] == 2 and Path(result["adapter_path"]).exists()
