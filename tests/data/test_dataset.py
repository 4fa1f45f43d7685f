from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agegender.config import DataConfig
from agegender.data.dataset import LabelledArrays, label_arrays, label_stats, make_splits, prepare_data
from agegender.data.readers import DataError, read_folder
from agegender.data.samples import FaceSample


def data_config(path: Path, cache_dir: Path, **changes) -> DataConfig:
    return replace(DataConfig(path=str(path), image_size=32, cache_dir=str(cache_dir)), **changes)


def test_prepare_utkface_folder(utkface, cache_dir):
    config = data_config(utkface.path, cache_dir)
    # 44 parsed files in 43 duplicate groups: test round(4.3) = 4 groups, val round(3.9) = 4, train 35;
    # the duplicate pair adds one image to the split it lands in.
    splits = make_splits(read_folder(utkface.path), config)
    groups = (len(splits.train), len(splits.val), len(splits.test))
    assert sum(groups) == 44 and sorted(g - e for g, e in zip(groups, (35, 4, 4))) == [0, 0, 1]
    data = prepare_data(config)
    sizes = (len(data.train), len(data.val), len(data.test))
    # the two undecodable files then drop out of whichever split they landed in
    assert sum(sizes) == len(utkface.parsed) - 2
    assert sorted(Path(s.path).name for s in data.undecodable) == sorted(utkface.undecodable)
    for split in (data.train, data.val, data.test):
        assert split.images.shape == (len(split), 32, 32, 3)
        assert split.images.dtype == np.uint8
        assert split.age.dtype == np.float32 and split.gender.dtype == np.float32
        ages = [s.age for s in split.samples]
        np.testing.assert_array_equal(split.age, np.array(ages, np.float32))
    line = data.summary_line()
    assert line.startswith(f"{len(utkface.parsed)} labelled images (utkface), 2 skipped")
    assert "2 unreadable images skipped" in line and utkface.zero_byte in line
    assert line.endswith(f"split train {sizes[0]} / val {sizes[1]} / test {sizes[2]}")


def test_prepare_uses_the_cache_dir_only(utkface, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "must-stay-empty"))
    prepare_data(data_config(utkface.path, cache_dir))
    assert list(cache_dir.glob("*.npy"))
    assert not (tmp_path / "must-stay-empty").exists()


def test_splits_match_make_splits(utkface, cache_dir):
    config = data_config(utkface.path, cache_dir, seed=3)
    data = prepare_data(config)
    expected = make_splits(read_folder(utkface.path), config)
    for name in ("train", "val", "test"):
        decodable = [s for s in getattr(expected, name) if s.path.name not in utkface.undecodable]
        assert getattr(data, name).samples == decodable


def test_missing_labels_become_nan(labels_folder, cache_dir):
    data = prepare_data(data_config(labels_folder.path, cache_dir))
    assert len(data.train) + len(data.val) + len(data.test) == labels_folder.n_usable
    ages = np.concatenate([data.train.age, data.val.age, data.test.age])
    genders = np.concatenate([data.train.gender, data.val.gender, data.test.gender])
    assert int(np.isnan(ages).sum()) == 1  # img_02.jpg has no age
    assert int(np.isnan(genders).sum()) == 1  # img_03.jpg has no gender


def test_label_arrays():
    samples = [FaceSample(Path("a"), 10.0, 0), FaceSample(Path("b"), None, 1), FaceSample(Path("c"), 30.0, None)]
    age, gender = label_arrays(samples)
    np.testing.assert_array_equal(age, np.array([10, np.nan, 30], np.float32))
    np.testing.assert_array_equal(gender, np.array([0, 1, np.nan], np.float32))


def _arrays(ages, genders) -> LabelledArrays:
    n = len(ages)
    return LabelledArrays(
        images=np.zeros((n, 4, 4, 3), np.uint8),
        age=np.array(ages, np.float32),
        gender=np.array(genders, np.float32),
        samples=[FaceSample(Path(f"{i}.jpg")) for i in range(n)],
    )


def test_label_stats_by_hand():
    stats = label_stats(_arrays([10, 20, math.nan], [0, 1, 1]))
    assert stats["n_train"] == 3
    assert stats["age_mean"] == pytest.approx(15.0)
    assert stats["age_std"] == pytest.approx(5.0)
    assert stats["female_share"] == pytest.approx(2 / 3)


def test_label_stats_without_labels():
    stats = label_stats(_arrays([math.nan], [math.nan]))
    assert stats == {"n_train": 1, "age_mean": None, "age_std": None, "female_share": None}


def test_prepare_missing_folder(tmp_path, cache_dir):
    with pytest.raises(DataError, match="data folder not found"):
        prepare_data(data_config(tmp_path / "nope", cache_dir))


def test_age_targets_are_exact_ages_or_group_intervals(labels_folder, cache_dir):
    data = prepare_data(data_config(labels_folder.path, cache_dir, val_fraction=0.0, test_fraction=0.0))
    targets = data.train.age_targets(np.arange(len(data.train)))  # (N, 2)
    by_name = {s.path.name: row for s, row in zip(data.train.samples, targets)}
    assert list(by_name["img_00.jpg"]) == [25, 25]  # age and group given: the exact age wins
    assert np.isnan(by_name["img_02.jpg"]).all()  # neither


def test_age_targets_without_ranges_repeat_the_exact_age():
    arrays = _arrays([30.0, math.nan], [0.0, 1.0])
    np.testing.assert_array_equal(arrays.age_targets(np.array([0, 1])), [[30, 30], [math.nan, math.nan]])


def test_group_only_rows_get_their_interval(tmp_path, cache_dir, face_bytes):
    folder = tmp_path / "groups"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(face_bytes(30, i % 2, seed=i))
    (folder / "labels.csv").write_text("filename,gender,age_group\n0.jpg,m,\"(25, 32)\"\n1.jpg,f,60+\n2.jpg,m,twenty\n")
    data = prepare_data(data_config(folder, cache_dir, val_fraction=0.0, test_fraction=0.0))
    targets = {s.path.name: tuple(row) for s, row in zip(data.train.samples, data.train.age_targets(np.arange(2)))}
    assert targets == {"0.jpg": (24.5, 32.5), "1.jpg": (59.5, math.inf)}
    assert "2.jpg: line 4: unparseable age group: 'twenty'" in data.summary_line()


def test_hide_ages_keeps_the_split_and_replaces_train_val_ages_by_groups(utkface, cache_dir):
    exact = prepare_data(data_config(utkface.path, cache_dir))
    hidden = prepare_data(data_config(utkface.path, cache_dir, hide_ages="adience"))
    for split in ("train", "val", "test"):
        assert [s.path for s in getattr(hidden, split).samples] == [s.path for s in getattr(exact, split).samples]
    assert np.isnan(hidden.train.age).all() and np.isnan(hidden.val.age).all()
    np.testing.assert_array_equal(hidden.test.age, exact.test.age)  # scored on the true ages
    groups = {s.path.name: s.age_group for s in hidden.train.samples}
    ages = {s.path.name: s.age for s in exact.train.samples}
    assert all(groups[name] == {5: "4-6", 22: "15-20", 33: "25-32", 36: "38-43"}.get(age, groups[name]) for name, age in ages.items())
    assert {"4-6", "15-20", "25-32", "38-43"} <= set(groups.values())


def test_hide_ages_with_an_unknown_scheme_is_one_clear_error(utkface, cache_dir):
    with pytest.raises(ValueError, match="unknown age-group scheme 'adiance'"):
        prepare_data(data_config(utkface.path, cache_dir, hide_ages="adiance"))
