"""The README's Python examples run as written (train, evaluate, predict), on a synthetic folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import make_utkface

ROOT = Path(__file__).resolve().parents[1]


def python_examples() -> list[str]:
    """The ```python blocks of the README's "From Python" section, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### From Python", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_shows_train_evaluate_and_predict_in_three_lines_each():
    blocks = python_examples()
    assert [len(block.strip().splitlines()) for block in blocks] == [3, 3, 3]
    assert ["fit(" in blocks[0], "evaluate(" in blocks[1], ".predict(" in blocks[2]] == [True] * 3


def test_the_readme_examples_run(tmp_path, monkeypatch, capsys):
    make_utkface(tmp_path / "faces")
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "astronaut.jpg", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    for block in python_examples():
        exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert (tmp_path / "runs" / "quick" / "best.safetensors").is_file()
    best_epoch, val_gender, val_mae = printed[0].split()
    saved = json.loads((tmp_path / "runs" / "quick" / "metrics.json").read_text())  # what the run wrote
    assert best_epoch in ("1", "2") and best_epoch == str(saved["best_epoch"])
    assert float(val_gender) == pytest.approx(saved["val"]["gender_accuracy"])
    assert float(val_mae) == pytest.approx(saved["val"]["age_mae"])
    assert "'gender': 'female'" in printed[2]  # the bundled model on the example photo of Eileen Collins
