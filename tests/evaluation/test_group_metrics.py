"""Age-group metrics by hand, and evaluate()/compare with --age-groups on the session-trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agegender.data.age_groups import resolve_age_groups
from agegender.data.samples import FaceSample
from agegender.evaluation.compare import compare_runs
from agegender.evaluation.evaluate import evaluate
from agegender.evaluation.group_metrics import UNSCORED, score_age_groups, true_group_indices
from agegender.evaluation.report import report_to_dict
from agegender.inference.predictor import Predictor

ADIENCE = resolve_age_groups("adience")


def sample(age=None, gender=None, group=None) -> FaceSample:
    return FaceSample(Path("x.jpg"), age=age, gender=gender, age_group=group)


def one_hot(indices: list[int], n_groups: int = 8) -> np.ndarray:
    return np.eye(n_groups)[indices]


def test_true_groups_from_exact_ages_or_labels():
    samples = [sample(age=35), sample(group="(25, 32)"), sample(group="20-29"), sample(gender=1)]
    assert true_group_indices(samples, ADIENCE).tolist() == [5, 4, UNSCORED, UNSCORED]


def test_exact_and_one_off_accuracy_per_gender_and_group_by_hand():
    samples = [
        sample(age=30, gender=0),  # true 25-32 (4), predicted 4: exact
        sample(age=30, gender=1),  # true 4, predicted 5: 1-off
        sample(group="60+", gender=1),  # true 7, predicted 4: wrong
        sample(group="0-2", gender=0),  # true 0, predicted 0: exact
        sample(gender=0),  # no age label: unscored
    ]
    report = score_age_groups(samples, one_hot([4, 5, 4, 0, 3]), ADIENCE, from_distribution=True)
    assert (report.overall.n, report.overall.accuracy, report.overall.one_off) == (4, 0.5, 0.75)
    assert report.unscored == 1
    assert (report.per_gender["male"].accuracy, report.per_gender["female"].accuracy) == (1.0, 0.0)
    assert report.per_gender["female"].one_off == 0.5
    assert report.per_group["25-32"].n == 2 and report.per_group["25-32"].one_off == 1.0
    assert set(report.per_group) == {"0-2", "25-32", "60+"}
    assert report.confusion[4][4] == 1 and report.confusion[4][5] == 1 and report.confusion[7][4] == 1
    assert sum(map(sum, report.confusion)) == 4


def test_group_probabilities_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"need \(1, 8\) group probabilities"):
        score_age_groups([sample(age=3)], np.ones((1, 9)), ADIENCE, from_distribution=True)


def test_evaluate_with_age_groups_adds_group_metrics_from_the_distribution(trained_run, cache_dir):
    predictor = Predictor.from_checkpoint(trained_run.best)
    plain = evaluate(predictor, trained_run.data.path, cache_dir=cache_dir)
    grouped = evaluate(predictor, trained_run.data.path, cache_dir=cache_dir, age_groups=ADIENCE)
    assert plain.report.age_groups is None
    groups = grouped.report.age_groups
    assert groups.from_distribution and groups.groups == ADIENCE.names
    assert groups.overall.n == grouped.report.n  # every synthetic face has an exact age
    assert 0 <= groups.overall.accuracy <= groups.overall.one_off <= 1
    assert grouped.report.age_mae == pytest.approx(plain.report.age_mae)  # years unchanged
    assert report_to_dict(grouped.report)["age_groups"]["confusion"][0] == list(groups.confusion[0])


def test_predicted_face_group_probabilities_sum_to_one(trained_run, faces_dir):
    predictor = Predictor.from_checkpoint(trained_run.best, age_groups=resolve_age_groups("fairface"))
    face = predictor.predict(next(faces_dir.iterdir()), detect=False).faces[0]
    assert list(face.age_groups) == list(resolve_age_groups("fairface").names)
    assert sum(face.age_groups.values()) == pytest.approx(1.0)
    assert face.age_group == max(face.age_groups, key=face.age_groups.get)


def test_regression_head_gets_the_group_of_its_predicted_age(tmp_path, faces_dir):
    import torch

    from agegender.config import DataConfig, ModelConfig, RunConfig
    from agegender.models.checkpoint import build_meta, save_checkpoint
    from agegender.models.registry import create_model

    config = RunConfig(
        data=DataConfig(image_size=32), model=ModelConfig(widths=(8,), head_hidden=8, age_head="regression")
    )
    torch.manual_seed(0)
    model = create_model(config.model)
    save_checkpoint(tmp_path / "regression.safetensors", model, build_meta(model, config, label_stats={}))
    predictor = Predictor.from_checkpoint(tmp_path / "regression.safetensors", age_groups=ADIENCE)
    face = predictor.predict(next(faces_dir.iterdir()), detect=False).faces[0]
    assert sorted(face.age_groups.values())[-1] == 1.0  # all probability on one group
    assert face.age_group == ADIENCE.names[int(ADIENCE.index_of_ages(np.array([face.age]))[0])]


def test_compare_adds_group_accuracy_and_a_confusion_matrix_per_run(trained_run, tmp_path):
    result = compare_runs([trained_run.run_dir], tmp_path / "report", max_images=20, age_groups=ADIENCE)
    markdown = result.markdown.read_text()
    assert "## Age groups (adience; val split, up to 20 images)" in markdown
    assert "## Age-group confusion: custom (run)" in markdown
    assert "| 60+ |" in markdown and "1-off %" in markdown
