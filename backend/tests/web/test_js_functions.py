"""The page's pure functions (the loss chart's axes, how a dataset reads), run in Node, which the machine
image ships."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).parents[2] / "app" / "web" / "static" / "js"


def chart(expression: str, module: str = "chart.js"):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is part of the machine image (Debian's nodejs)")
    script = f"import({json.dumps((JS / module).as_uri())}).then((m) => console.log(JSON.stringify({expression})))"
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_loss_axis_never_goes_below_zero_and_ticks_are_round():
    low, high = chart("m.axisRange([0.0059, 0.7421])")
    assert low == 0 and 0.7421 < high < 0.8
    assert chart("m.niceTicks(0, 0.7767, 4)") == [0, 0.2, 0.4, 0.6]
    assert chart("m.axisRange([-1, 2])")[0] < -1  # a series that goes negative keeps its margin


def test_step_ticks_are_distinct_integers():
    assert chart("m.niceTicks(0, 40, 5, { integer: true })") == [0, 10, 20, 30, 40]
    assert chart("m.niceTicks(0, 3, 5, { integer: true })") == [0, 1, 2, 3]  # not 0, 1, 1, 2, 2, 3
    assert chart("m.niceTicks(0, 1, 5, { integer: true })") == [0, 1]


def test_an_uploaded_file_reads_as_its_file_id_not_the_server_path():
    assert chart('m.datasetLabel("/srv/sft/data/files/file-3f9c0a1b2d4e.jsonl")', "util.js") == "file-3f9c0a1b2d4e"
    assert chart('m.datasetLabel("bundled:json-extract")', "util.js") == "bundled:json-extract"
    assert chart('m.datasetLabel("/home/me/train.jsonl")', "util.js") == "/home/me/train.jsonl"
