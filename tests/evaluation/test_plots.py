from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from agegender.evaluation.plots import plot_learning_curves, read_history

HEADER = (
    "epoch,phase,train_loss,train_gender_loss,train_age_loss,train_gender_acc,train_age_mae,"
    "val_loss,val_gender_loss,val_age_loss,val_gender_acc,val_age_mae,lr,seconds"
)
ROWS = (
    "1,phase1,2.0,0.7,1.3,0.55,12.0,2.1,0.69,1.4,0.5,13.0,0.001,3.5",
    "2,phase1,1.5,0.5,1.0,0.7,9.0,1.8,0.6,1.2,0.65,10.0,0.001,3.4",
    "3,phase2,1.2,0.4,0.8,0.8,7.0,1.6,0.5,1.1,0.7,8.5,0.0001,3.6",
)
# FIGURE_SIZE_INCHES (10 x 7.5) at 110 dpi.
EXPECTED_PIXELS = (1100, 825)


def _write_csv(path: Path, rows: tuple[str, ...]) -> Path:
    path.write_text("\n".join((HEADER, *rows)) + "\n", encoding="utf-8")
    return path


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_read_history_types(tmp_path: Path) -> None:
    rows = read_history(_write_csv(tmp_path / "h.csv", ROWS))
    assert len(rows) == 3
    assert rows[2]["phase"] == "phase2"
    assert rows[1]["val_gender_acc"] == pytest.approx(0.65)
    assert rows[0]["epoch"] == 1.0


def test_read_history_empty_cell_is_nan(tmp_path: Path) -> None:
    row = "1,train,2.0,0.7,1.3,0.55,12.0,,,,,,0.001,3.5"
    rows = read_history(_write_csv(tmp_path / "h.csv", (row,)))
    assert math.isnan(rows[0]["val_age_mae"])


def test_plot_with_phase_change(tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path / "h.csv", ROWS)
    out = plot_learning_curves(csv_path, tmp_path / "plots" / "curves.png", title="run")
    assert out == tmp_path / "plots" / "curves.png"
    assert out.stat().st_size > 0
    assert _png_size(out) == EXPECTED_PIXELS


def test_plot_single_row(tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path / "h.csv", ROWS[:1])
    out = plot_learning_curves(csv_path, tmp_path / "one.png")
    assert _png_size(out) == EXPECTED_PIXELS


def test_plot_rejects_empty_history(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no rows"):
        plot_learning_curves(_write_csv(tmp_path / "h.csv", ()), tmp_path / "x.png")
