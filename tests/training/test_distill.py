"""Distillation: blended targets, the teacher's predictions kept in the run folder, runs that train on them."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console

from agegender.data.dataset import prepare_data
from agegender.errors import UserInputError
from agegender.training import distill
from agegender.training.distill import (
    blend_targets,
    predict_with_mirror,
    teacher_cache_file,
    teacher_predictions,
    with_teacher_targets,
)
from agegender.training.fit import fit

QUIET = Console(file=io.StringIO())


def test_blend_mixes_labels_with_the_teacher_and_fills_missing_labels(utkface, make_config, cache_dir):
    train = prepare_data(make_config(utkface.path, cache_dir).data).train
    n = len(train)
    train = replace(train, gender=np.where(np.arange(n) == 0, np.nan, train.gender).astype(np.float32))
    teacher_age, teacher_p = np.full(n, 50.0, np.float32), np.full(n, 0.8, np.float32)
    blended = blend_targets(train, teacher_age, teacher_p, weight=0.25)
    assert blended.gender[0] == pytest.approx(0.8)  # unlabelled: the teacher's alone
    np.testing.assert_allclose(blended.gender[1:], 0.75 * train.gender[1:] + 0.25 * 0.8, rtol=1e-6)
    np.testing.assert_allclose(blended.age, 0.75 * train.age + 0.25 * 50.0, rtol=1e-6)
    np.testing.assert_allclose(blended.age_targets(np.arange(n)), np.stack([blended.age, blended.age], 1), rtol=1e-6)


def test_a_run_with_a_teacher_trains_on_its_predictions(trained_run, utkface, make_config, cache_dir, tmp_path):
    config = make_config(utkface.path, cache_dir)
    config = replace(config, train=replace(config.train, teacher=str(trained_run.best), teacher_weight=1.0))
    data = prepare_data(config.data)
    distilled = with_teacher_targets(data, config, QUIET)
    age, p_female = predict_with_mirror(trained_run.best, data.train.samples, config)
    np.testing.assert_allclose(distilled.train.gender, p_female, atol=1e-6)  # weight 1: the teacher's targets only
    np.testing.assert_allclose(distilled.train.age, age, atol=1e-4)
    assert not np.array_equal(distilled.train.gender, data.train.gender)
    np.testing.assert_array_equal(distilled.val.gender, data.val.gender)  # validation keeps its labels
    result = fit(config, tmp_path / "run", console=QUIET)
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert result.metrics.train_at_best["train_gender_acc"] > 0.3  # scored against the soft targets' side, not equality


def test_the_teacher_predicts_each_image_once_across_runs(trained_run, utkface, make_config, cache_dir, monkeypatch):
    config = make_config(utkface.path, cache_dir)
    config = replace(config, train=replace(config.train, teacher=str(trained_run.best)))
    samples = prepare_data(config.data).train.samples
    predicted = []
    real = distill.predict_with_mirror
    monkeypatch.setattr(distill, "predict_with_mirror", lambda t, s, c: predicted.append(len(s)) or real(t, s, c))
    first = teacher_predictions(trained_run.best, samples[:10], config, QUIET)
    again = teacher_predictions(trained_run.best, samples, config, QUIET)  # a run with more data
    assert predicted == [10, len(samples) - 10]  # only the images not seen before
    np.testing.assert_array_equal(again[1][:10], first[1])
    assert teacher_cache_file(trained_run.best, config).is_file()
    teacher_predictions(trained_run.best, samples, config, QUIET)  # a resumed run: nothing to predict
    assert len(predicted) == 2


def test_a_missing_teacher_is_one_clear_error(utkface, make_config, cache_dir, tmp_path):
    config = make_config(utkface.path, cache_dir)
    config = replace(config, train=replace(config.train, teacher=str(tmp_path / "nope.safetensors")))
    with pytest.raises(UserInputError, match="nope.safetensors: train.teacher is not a checkpoint file"):
        with_teacher_targets(prepare_data(config.data), config, QUIET)
