"""The comparison report: tables from metrics.json/history.csv, figures from re-run checkpoints."""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import replace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agegender.cli import app
from agegender.config import ModelConfig
from agegender.evaluation.compare import CompareError, compare_runs, convergence_verdict
from agegender.training.fit import fit
from tests.conftest import make_utkface, tiny_config
from tests.models.test_pretrained import write_random_weights


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lite0run")
    data = make_utkface(root / "utkface")
    weights = root / "lite0.pth"
    write_random_weights("efficientnet_lite0", weights)
    config = tiny_config(data.path, root / "cache", epochs=1, feature_views=2)
    config = replace(config, model=ModelConfig(name="efficientnet_lite0", head_hidden=8, weights=str(weights), unfreeze_blocks=1))
    fit(config, root / "run", console=Console(file=io.StringIO()))
    return root / "run"


def test_report_has_every_table_and_embedded_figure(trained_run, lite0_run, tmp_path):
    result = compare_runs([trained_run.run_dir, lite0_run], tmp_path / "report", max_images=20)
    markdown, page = result.markdown.read_text(), result.html.read_text()
    for heading in ("## Architecture", "## Training", "## Performance", "## Per group"):
        assert heading in markdown
    for label in ("custom (run)", "efficientnet_lite0 (run)"):
        assert label in markdown and label in page
    assert "phase1 2e-03 / phase2 2e-04" in markdown  # two-phase learning rates
    assert re.search(r"\| phase1 \d+ / phase2 \d+ \|", markdown)  # ms/step of each phase
    assert "race: " in markdown and "age band: " in markdown and "worst" in markdown
    assert set(result.figures) == {"learning_curves", "examples", "augmentation", "confusion", "age_scatter"}
    for path in result.figures.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{path.name}" in markdown
    assert page.count("src='data:image/png;base64,") == len(result.figures)
    assert "figures/" not in page  # self-contained


def test_moved_data_folder_still_gives_the_tables(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, copy)
    result = compare_runs([copy], tmp_path / "report", data_dir=tmp_path / "nowhere")
    assert result.notes and "pass --data" in result.notes[0]
    assert set(result.figures) == {"learning_curves"}
    assert "## Performance" in result.markdown.read_text()


def test_unfinished_run_is_a_clear_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(CompareError, match="not a finished run.*metrics.json"):
        compare_runs([tmp_path / "run"], tmp_path / "report")


def _history(train, val):
    return [{"epoch": i + 1, "train_loss": t, "val_loss": v} for i, (t, v) in enumerate(zip(train, val))]


def test_verdicts_read_off_the_loss_curves():
    overfit = _history([1.0, 0.8, 0.6, 0.5, 0.4, 0.3], [1.0, 0.9, 0.95, 1.0, 1.1, 1.2])
    assert convergence_verdict(overfit).startswith("overfitting: val loss rose while train loss fell for 4 epochs (from epoch 3)")
    assert convergence_verdict(_history([1.0, 0.9, 0.8], [1.0, 0.9, 0.85])).startswith("still improving")
    assert convergence_verdict(_history([1.0, 0.9, 0.9, 0.9], [1.0, 0.8, 0.8, 0.81])).startswith("converged")
    assert convergence_verdict(_history([1.0], [1.0])).startswith("too short")
    memorising = _history([1.0, 0.8, 0.6, 0.5], [1.0, 0.9, 0.85, 0.8])  # val still falls, train far below it
    assert convergence_verdict(memorising).startswith("overfitting: at the best epoch (4) train loss is 38% below")


def test_compare_command(trained_run, tmp_path):
    result = CliRunner().invoke(app, ["compare", str(trained_run.run_dir), "--out", str(tmp_path / "r"), "--max-images", "8"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "report.md").is_file()


def test_backbone_table_joins_a_models_subset_and_full_runs(trained_run, lite0_run, tmp_path):
    from agegender.evaluation.compare import load_run
    from agegender.evaluation.compare_backbones import backbone_table

    full = load_run(trained_run.run_dir)
    subset = replace(full, run_dir=tmp_path / "custom_5k", config=replace(full.config, data=replace(full.config.data, limit=5000)))
    other = load_run(lite0_run)
    header, rows = backbone_table([subset, full, other, full])
    assert header[1:4] == ["5,000 images: val gender / MAE", "5,000 images: test gender / MAE", "full: test gender / MAE"]
    assert [row[0] for row in rows] == ["custom (custom_5k, run)", "efficientnet_lite0 (run)", "custom (run)"]
    test = full.metrics["test"]
    assert rows[0][3] == f"{100 * test['gender_accuracy']:.1f}% / {test['age_mae']:.2f}"  # full test beside the subset's
    assert rows[1][2] == rows[1][1] == "-"  # lite0: no subset run
    assert rows[0][-2] == f"{full.metrics['model']['parameters'] / 1e6:.2f} M"


def test_faces_per_second_is_timed_on_enough_faces_only():
    import numpy as np

    from agegender.evaluation.compare_backbones import timed_predictions
    from agegender.models import create_model
    from agegender.models.backends import predict_outputs

    model = create_model(ModelConfig(widths=(8, 16), head_hidden=8))
    images = np.zeros((64, 32, 32, 3), np.uint8)
    predicted, speed = timed_predictions(model, images)
    assert speed > 0
    np.testing.assert_allclose(predicted.p_female, predict_outputs(model, images).p_female)  # the timed pass is the result
    assert timed_predictions(model, images[:63])[1] is None


def test_a_broken_evaluation_file_names_itself(trained_run, tmp_path):
    from agegender.evaluation.compare import load_run
    from agegender.evaluation.compare_backbones import EvaluationFileError

    copy = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, copy)
    (copy / "evaluations").mkdir()
    (copy / "evaluations" / "lfw.json").write_text("[1, 2]")
    with pytest.raises(EvaluationFileError, match=r"lfw.json: not an `evaluate --report` JSON object"):
        load_run(copy)
