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
