from __future__ import annotations

import math

import pytest

from agegender.training.callbacks import HISTORY_COLUMNS, EarlyStopping, HistoryCSV


def test_early_stopping_patience_and_min_delta():
    stopper = EarlyStopping(patience=2, min_delta=0.1)
    assert stopper.update(1.0, 1) is True  # anything beats inf
    assert stopper.update(0.95, 2) is False  # better, but not by more than min_delta
    assert (stopper.bad_epochs, stopper.should_stop) == (1, False)
    assert stopper.update(0.85, 3) is True  # 0.85 < 1.0 - 0.1 resets patience
    assert (stopper.best, stopper.best_epoch, stopper.bad_epochs) == (0.85, 3, 0)
    assert stopper.update(0.9, 4) is False
    assert stopper.should_stop is False
    assert stopper.update(0.76, 5) is False  # 0.76 is not < 0.85 - 0.1
    assert stopper.should_stop is True
    assert stopper.best_epoch == 3


def test_early_stopping_with_zero_min_delta_needs_strict_improvement():
    stopper = EarlyStopping(patience=1, min_delta=0.0)
    stopper.update(0.5, 1)
    assert stopper.update(0.5, 2) is False and stopper.should_stop


def test_early_stopping_state_round_trip():
    stopper = EarlyStopping(patience=3, min_delta=0.01)
    for epoch, value in enumerate([1.0, 0.8, 0.9, 0.85], start=1):
        stopper.update(value, epoch)
    restored = EarlyStopping(patience=3, min_delta=0.01)
    restored.load_state_dict(stopper.state_dict())
    assert restored.state_dict() == stopper.state_dict() == {"best": 0.8, "best_epoch": 2, "bad_epochs": 2}
    assert restored.update(0.81, 5) is False and restored.should_stop


def test_fresh_early_stopping_state_round_trip():
    restored = EarlyStopping(patience=1, min_delta=0.0)
    restored.load_state_dict(EarlyStopping(patience=1, min_delta=0.0).state_dict())
    assert restored.best == math.inf and restored.best_epoch == 0


def row(epoch: int, value: float = 0.5) -> dict:
    values = {column: value for column in HISTORY_COLUMNS}
    return {**values, "epoch": epoch, "phase": "train"}


def test_history_append_and_read(tmp_path):
    history = HistoryCSV(tmp_path / "history.csv")
    assert history.rows() == []
    history.append(row(1, 1 / 3))
    history.append(row(2, 0.25))
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == ",".join(HISTORY_COLUMNS)
    assert lines[1].startswith("1,train,0.333333,0.333333,")  # floats written with 6 significant digits
    rows = history.rows()
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[1]["val_age_mae"] == "0.25"


def test_history_truncate_then_continue(tmp_path):
    history = HistoryCSV(tmp_path / "history.csv")
    for epoch in (1, 2, 3, 4):
        history.append(row(epoch))
    history.truncate_after(2)
    assert [r["epoch"] for r in history.rows()] == ["1", "2"]
    history.append(row(3, 0.125))
    rows = history.rows()
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[2]["train_loss"] == "0.125"
    assert (tmp_path / "history.csv").read_text().count("epoch,phase") == 1


def test_history_truncate_without_file_writes_a_header(tmp_path):
    history = HistoryCSV(tmp_path / "history.csv")
    history.truncate_after(0)
    assert history.rows() == []
    assert (tmp_path / "history.csv").read_text().strip() == ",".join(HISTORY_COLUMNS)


def test_history_row_must_have_every_column(tmp_path):
    incomplete = row(1)
    del incomplete["lr"]
    with pytest.raises(KeyError):
        HistoryCSV(tmp_path / "history.csv").append(incomplete)
