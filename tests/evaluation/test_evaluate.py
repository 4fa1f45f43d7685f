"""evaluate() on the session-trained checkpoint (tests/conftest.py: trained_run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agegender.data.cache import load_face
from agegender.data.dataset import make_splits
from agegender.data.images import ImageLoadError
from agegender.data.readers import DataError, read_folder
from agegender.evaluation.evaluate import evaluate, select_split
from agegender.evaluation.metrics import age_mae, cumulative_score, gender_accuracy
from agegender.inference.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return Predictor.from_checkpoint(trained_run.best)


def by_hand(predictor: Predictor, samples) -> dict[str, float]:
    faces = np.stack([load_face(s.path, predictor.model.image_size) for s in samples])
    outputs = predictor.model.forward(faces)
    ages, p_female = outputs.age, outputs.p_female
    age_true = np.array([s.age for s in samples], float)
    gender_true = np.array([s.gender for s in samples], float)
    return {
        "gender_accuracy": float(np.mean((p_female >= 0.5) == gender_true.astype(bool))),
        "age_mae": float(np.mean(np.abs(ages - age_true))),
        "cs5": float(np.mean(np.abs(ages - age_true) <= 5)),
    }


def test_evaluate_all(predictor, trained_run, cache_dir):
    data = trained_run.data
    result = evaluate(predictor, data.path, "all", cache_dir=cache_dir)
    report = result.report
    assert result.split == "all"
    assert report.n == len(data.parsed) - 2
    assert sorted(Path(s.path).name for s in result.undecodable) == sorted(data.undecodable)
    assert len(result.read.skipped) == len(data.malformed)
    decodable = [s for s in result.read.samples if s.path.name not in data.undecodable]
    expected = by_hand(predictor, decodable)
    assert report.gender_accuracy == pytest.approx(expected["gender_accuracy"])
    assert report.age_mae == pytest.approx(expected["age_mae"], rel=1e-5)
    assert report.cs5 == pytest.approx(expected["cs5"])
    assert report.age_group_accuracy is None  # UTKFace names carry no age groups
    assert list(report.per_gender) == ["male", "female"]
    assert sum(g.n for g in report.per_gender.values()) == report.n
    assert sum(g.n for g in report.per_race.values()) == report.n
    assert sum(g.n for g in report.per_age_band.values()) == report.n
    assert list(report.per_race) == ["White", "Black", "Asian", "Indian", "Others"]


def test_evaluate_test_split_uses_the_training_seed(predictor, trained_run, cache_dir):
    data = trained_run.data
    result = evaluate(predictor, data.path, "test", cache_dir=cache_dir)
    splits = make_splits(read_folder(data.path), trained_run.config.data)
    expected = [s for s in splits.test if s.path.name not in data.undecodable]
    assert result.report.n == len(expected)
    assert result.report.age_mae == pytest.approx(by_hand(predictor, expected)["age_mae"], rel=1e-5)


def test_split_selection(trained_run):
    read = read_folder(trained_run.data.path)
    config = trained_run.config.data
    assert select_split(read, "all", config) == read.samples
    splits = make_splits(read, config)
    for name in ("train", "val", "test"):
        assert select_split(read, name, config) == getattr(splits, name)
    with pytest.raises(ValueError, match="unknown split 'holdout'; choose one of all, train, val, test"):
        select_split(read, "holdout", config)


def test_evaluate_labels_csv_with_missing_labels(predictor, labels_folder, cache_dir):
    result = evaluate(predictor, labels_folder.path, cache_dir=cache_dir)
    report = result.report
    assert report.n == labels_folder.n_usable
    assert len(result.read.skipped) == len(labels_folder.bad_lines)
    # 9 rows have an age and 9 a gender: unlabelled ones are left out of each metric, not counted wrong
    with_age = [s for s in result.read.samples if s.age is not None]
    assert len(with_age) == 9
    assert report.age_group_accuracy is not None
    assert sum(g.n for g in report.per_gender.values()) == 9


def test_evaluate_writes_only_to_the_given_cache(predictor, trained_run, tmp_path):
    cache = tmp_path / "eval-cache"
    evaluate(predictor, trained_run.data.path, "val", cache_dir=cache)
    assert list(cache.glob("*.npy"))


def test_evaluate_missing_folder(predictor, tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        evaluate(predictor, tmp_path / "missing")


def test_evaluate_nothing_readable(predictor, tmp_path, cache_dir):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "30_0_0_20170101000000000.jpg.chip.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="no readable images to evaluate"):
        evaluate(predictor, tmp_path / "d", cache_dir=cache_dir)


def test_metric_helpers_agree_with_report(predictor, trained_run, cache_dir):
    # the report's numbers are the pure metric functions applied to the same arrays
    result = evaluate(predictor, trained_run.data.path, "val", cache_dir=cache_dir)
    samples = [s for s in select_split(read_folder(trained_run.data.path), "val", trained_run.config.data)
               if s.path.name not in trained_run.data.undecodable]  # fmt: skip
    faces = np.stack([load_face(s.path, 32) for s in samples])
    outputs = predictor.model.forward(faces)
    ages, p_female = outputs.age, outputs.p_female
    age_true = [s.age for s in samples]
    assert result.report.age_mae == pytest.approx(age_mae(age_true, ages))
    assert result.report.cs5 == pytest.approx(cumulative_score(age_true, ages))
    assert result.report.gender_accuracy == pytest.approx(gender_accuracy([s.gender for s in samples], p_female))


def test_evaluate_with_tta_scores_the_average_of_each_face_and_its_mirror(trained_run, cache_dir):
    plain = Predictor.from_checkpoint(trained_run.best)
    flipped = Predictor.from_checkpoint(trained_run.best, tta=True)
    report = evaluate(flipped, trained_run.data.path, "all", cache_dir=cache_dir).report
    samples = [s for s in read_folder(trained_run.data.path).samples if s.path.stat().st_size > 0]
    faces, kept = [], []
    for sample in samples:
        try:
            faces.append(load_face(sample.path, plain.model.image_size))
            kept.append(sample)
        except ImageLoadError:  # the fixture's truncated JPEG
            continue
    faces = np.stack(faces)
    ages = (plain.model.forward(faces).age + plain.model.forward(faces[:, :, ::-1].copy()).age) / 2
    age_true = np.array([s.age for s in kept], float)
    assert report.n == len(kept)
    assert report.age_mae == pytest.approx(float(np.mean(np.abs(ages - age_true))), abs=1e-4)


def test_two_folders_are_reported_each_and_a_label_one_lacks_is_not_counted(predictor, trained_run, labels_folder,
                                                                            cache_dir):  # fmt: skip
    both = evaluate(predictor, [trained_run.data.path, labels_folder.path], "all", cache_dir=cache_dir).report
    alone = {name: evaluate(predictor, folder, "all", cache_dir=cache_dir).report
             for name, folder in (("utkface", trained_run.data.path), ("labelled", labels_folder.path))}  # fmt: skip
    assert list(both.per_dataset) == ["utkface", "labelled"]
    for name, report in alone.items():
        assert both.per_dataset[name].n == report.n
        assert both.per_dataset[name].gender_accuracy == pytest.approx(report.gender_accuracy)
        assert both.per_dataset[name].age_mae == pytest.approx(report.age_mae)
    assert not alone["utkface"].per_dataset  # one folder: nothing to break down
    # the labels folder's rows without a race are simply not in the race breakdown
    assert sum(group.n for group in both.per_race.values()) < both.n


def test_the_age_intervals_coverage_is_what_the_predicted_intervals_cover(predictor, trained_run, cache_dir):
    report = evaluate(predictor, trained_run.data.path, "all", cache_dir=cache_dir).report
    samples = [s for s in read_folder(trained_run.data.path).samples if s.path.name not in trained_run.data.undecodable]
    faces = np.stack([load_face(s.path, predictor.model.image_size) for s in samples])
    intervals = predictor.model.intervals(predictor.model.forward(faces))
    ages = np.array([s.age for s in samples])
    inside = (ages >= intervals[:, 0]) & (ages <= intervals[:, 1])
    assert report.age_interval_coverage == pytest.approx(inside.mean())
    assert report.age_interval_width == pytest.approx(np.mean(intervals[:, 1] - intervals[:, 0]))


def test_sample_split_faces_is_a_seeded_draw_of_the_split(predictor, trained_run):
    from agegender.evaluation.evaluate import decode_evaluation_split, sample_split_faces

    faces = sample_split_faces(predictor, trained_run.data.path, n=5)
    assert faces.shape == (5, predictor.model.image_size, predictor.model.image_size, 3) and faces.dtype == np.uint8
    assert np.array_equal(faces, sample_split_faces(predictor, trained_run.data.path, n=5))
    assert not np.array_equal(faces, sample_split_faces(predictor, trained_run.data.path, n=5, seed=1))
    train = make_splits(read_folder(trained_run.data.path), trained_run.config.data).train
    _, decoded, unreadable = decode_evaluation_split(predictor, trained_run.data.path, "train")
    assert len(decoded) + len(unreadable) == len(train)
    assert len(sample_split_faces(predictor, trained_run.data.path, n=10**6)) == len(decoded)  # capped at the split
