from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from agegender.config import DataConfig
from agegender.data.dataset import make_splits
from agegender.data.readers import ReadResult
from agegender.data.samples import FaceSample
from agegender.data.splits import group_duplicates, split_folders, split_samples, stratum

# One age per stratum band: 0-12, 13-19, 20-29, 30-39, 40-49 (STRATUM_AGE_EDGES).
BAND_AGES = (5.0, 15.0, 25.0, 35.0, 45.0)


def make_samples(folder: Path, per_stratum: int = 20, duplicate_groups: int = 0) -> list[FaceSample]:
    """`per_stratum` files in each of 10 (gender, age band) strata, distinct bytes unless duplicated.

    Splitting only reads file bytes (for duplicate detection), so the files need not be images.
    """
    samples = []
    for gender in (0, 1):
        for age in BAND_AGES:
            for i in range(per_stratum):
                path = folder / f"{int(age)}_{gender}_{i}.jpg"
                path.write_bytes(f"unique {age} {gender} {i}".encode())
                samples.append(FaceSample(path, age=age, gender=gender, race=i % 5))
    for g in range(duplicate_groups):
        for copy, gender in enumerate((0, 1, 0)):  # conflicting labels, as in UTKFace
            path = folder / f"dup_{g}_{copy}.jpg"
            path.write_bytes(f"duplicate group {g}".encode())
            samples.append(FaceSample(path, age=60.0, gender=gender))
    return samples


def names(samples: list[FaceSample]) -> list[str]:
    return [s.path.name for s in samples]


@pytest.fixture
def samples(tmp_path) -> list[FaceSample]:
    return make_samples(tmp_path)


def test_sizes_follow_the_fractions(samples):
    splits = split_samples(samples, val_fraction=0.1, test_fraction=0.1, seed=0)
    # 200 images: test round(200 * 0.1) = 20; val round(180 * 0.1) = 18; train the other 162
    assert (len(splits.train), len(splits.val), len(splits.test)) == (162, 18, 20)
    assert splits.sizes() == "train 162 / val 18 / test 20"


def test_splits_partition_the_samples(samples):
    splits = split_samples(samples, val_fraction=0.2, test_fraction=0.15, seed=4)
    everything = names(splits.train) + names(splits.val) + names(splits.test)
    assert sorted(everything) == sorted(names(samples))
    assert len(set(everything)) == len(everything)


def test_same_seed_same_splits(samples):
    a = split_samples(samples, val_fraction=0.1, test_fraction=0.1, seed=7)
    b = split_samples(list(reversed(samples)), val_fraction=0.1, test_fraction=0.1, seed=7)
    assert (names(a.train), names(a.val), names(a.test)) == (names(b.train), names(b.val), names(b.test))


def test_different_seeds_differ(samples):
    a = split_samples(samples, val_fraction=0.1, test_fraction=0.1, seed=0)
    b = split_samples(samples, val_fraction=0.1, test_fraction=0.1, seed=1)
    assert set(names(a.test)) != set(names(b.test))
    assert set(names(a.val)) != set(names(b.val))


def test_stratification_holds_exactly_when_quotas_are_whole(samples):
    # 10 strata of 20: a 10% test split must take exactly 2 from each one.
    splits = split_samples(samples, val_fraction=0.25, test_fraction=0.1, seed=3)
    test_strata = Counter(stratum(s) for s in splits.test)
    assert len(test_strata) == 10 and set(test_strata.values()) == {2}
    # the pool then holds 18 per stratum; 25% val quotas are 4.5 each, so 4 or 5 per stratum
    val_strata = Counter(stratum(s) for s in splits.val)
    assert len(splits.val) == round(180 * 0.25)
    assert set(val_strata.values()) <= {4, 5}


def test_stratum_uses_age_group_when_age_is_missing():
    assert stratum(FaceSample(Path("a"), age=None, gender=1, age_group="20-29")) == (1, "20-29")
    assert stratum(FaceSample(Path("a"), age=12.9, gender=0)) == (0, 0)
    assert stratum(FaceSample(Path("a"), age=13.0, gender=0)) == (0, 1)
    assert stratum(FaceSample(Path("a"), age=80.0, gender=None)) == (None, 7)


@pytest.mark.parametrize("seed", range(5))
def test_duplicates_never_straddle_splits(tmp_path, seed):
    samples = make_samples(tmp_path, per_stratum=4, duplicate_groups=8)
    splits = split_samples(samples, val_fraction=0.3, test_fraction=0.3, seed=seed)
    where = {}
    for split_name in ("train", "val", "test"):
        for sample in getattr(splits, split_name):
            where[sample.path.name] = split_name
    for g in range(8):
        assert len({where[f"dup_{g}_{copy}.jpg"] for copy in range(3)}) == 1


def test_group_duplicates(tmp_path):
    samples = make_samples(tmp_path, per_stratum=1, duplicate_groups=2)
    groups = group_duplicates(samples)
    assert len(groups) == 10 + 2
    assert sorted(len(g) for g in groups) == [1] * 10 + [3, 3]


def test_limit_gives_exactly_limit_images_split_80_20(tmp_path):
    samples = make_samples(tmp_path, per_stratum=20, duplicate_groups=5)
    config = DataConfig(limit=50, seed=2)
    splits = make_splits(ReadResult(samples), config)
    assert config.resolved_val_fraction() == 0.2
    assert len(splits.train) + len(splits.val) == 50
    assert (len(splits.train), len(splits.val)) == (40, 10)
    # --limit draws single images only, so the subset size is exact even with duplicates around
    assert not any(s.path.name.startswith("dup_") for s in splits.train + splits.val)


def test_test_split_does_not_depend_on_limit(tmp_path):
    samples = make_samples(tmp_path, per_stratum=20, duplicate_groups=3)
    full = make_splits(ReadResult(samples), DataConfig(seed=5))
    limited = make_splits(ReadResult(samples), DataConfig(seed=5, limit=30))
    assert names(full.test) == names(limited.test)
    assert set(names(limited.train + limited.val)) <= set(names(full.train + full.val))


def test_limit_larger_than_the_data_keeps_everything(samples):
    splits = split_samples(samples, val_fraction=0.2, test_fraction=0.1, seed=0, limit=10_000)
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(samples)


@pytest.mark.parametrize(("val", "test"), [(1.0, 0.1), (0.1, -0.1), (0.1, 1.5)])
def test_bad_fractions(samples, val, test):
    with pytest.raises(ValueError, match="fraction must be in"):
        split_samples(samples, val_fraction=val, test_fraction=test, seed=0)


def test_limit_below_two(samples):
    with pytest.raises(ValueError, match="at least 2"):
        split_samples(samples, val_fraction=0.2, test_fraction=0.1, seed=0, limit=1)


def test_a_file_that_cannot_be_read_gets_a_group_of_its_own(samples, tmp_path):
    # The reader skips such files; this one became a symlink loop after it was read.
    looping = samples[0].path
    looping.unlink()
    looping.symlink_to(looping.name)
    groups = group_duplicates(samples)
    assert [looping] in [[s.path for s in group] for group in groups]
    splits = split_samples(samples, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert sorted(names(splits.train + splits.val + splits.test)) == sorted(names(samples))


def split_of(splits) -> dict[str, str]:
    return {s.path.name: name for name in ("train", "val", "test") for s in getattr(splits, name)}


@pytest.mark.parametrize("seed", range(4))
def test_no_identity_in_two_splits(tmp_path, seed):
    samples = make_samples(tmp_path, per_stratum=6)
    for person in range(12):  # 12 people with 4 photos each, genders and ages mixed within a person
        for photo in range(4):
            path = tmp_path / f"person{person}_{photo}.jpg"
            path.write_bytes(f"photo {person} {photo}".encode())
            samples.append(FaceSample(path, gender=photo % 2, identity=f"person{person}"))
    where = split_of(split_samples(samples, val_fraction=0.3, test_fraction=0.3, seed=seed))
    for person in range(12):
        assert len({where[f"person{person}_{photo}.jpg"] for photo in range(4)}) == 1, person


def test_a_duplicate_pulls_in_every_photo_of_its_identity(tmp_path):
    a, b, c = (tmp_path / f"{name}.jpg" for name in "abc")
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    c.write_bytes(b"other")
    samples = [FaceSample(a, gender=0), FaceSample(b, gender=0, identity="x"), FaceSample(c, gender=0, identity="x")]
    assert [names(group) for group in group_duplicates(samples)] == [["a.jpg", "b.jpg", "c.jpg"]]


@pytest.mark.parametrize("seed", range(3))
def test_a_file_copied_into_two_folders_stays_in_one_split(tmp_path, seed):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    samples = make_samples(first, per_stratum=4)
    copies = []
    for sample in samples[::3]:  # every third file copied into the second folder, with its labels
        copy = second / sample.path.name
        copy.write_bytes(sample.path.read_bytes())
        copies.append(FaceSample(copy, age=sample.age, gender=sample.gender))
    splits = split_samples(samples + copies, val_fraction=0.3, test_fraction=0.3, seed=seed)
    where = {s.path: name for name in ("train", "val", "test") for s in getattr(splits, name)}
    assert all(where[copy.path] == where[first / copy.path.name] for copy in copies)


def test_groups_without_identities_are_the_byte_duplicates(tmp_path):
    samples = make_samples(tmp_path, per_stratum=2, duplicate_groups=2)
    groups = group_duplicates(samples)
    assert len(groups) == 20 + 2 and [len(g) for g in groups[-2:]] == [3, 3]
    assert [g[0] for g in groups] == [s for s in samples if not s.path.name.startswith("dup_")] + [samples[20], samples[23]]


def test_adding_a_folder_leaves_the_first_folders_split_alone(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    alone = make_samples(first, duplicate_groups=2)
    others = make_samples(second, per_stratum=3)
    for sample in others:  # make_samples writes the same bytes in every folder: no copies here
        sample.path.write_bytes(b"second " + sample.path.read_bytes())
    together = split_folders([alone, others], val_fraction=0.2, test_fraction=0.1, seed=3, limit=60)
    by_itself = split_samples(alone, val_fraction=0.2, test_fraction=0.1, seed=3, limit=60)
    for name in ("train", "val", "test"):
        assert [s for s in getattr(together, name) if s.path.parent == first] == getattr(by_itself, name), name
    assert sum(s.path.parent == second for s in together.train + together.val) == 27  # limit: per folder (30 - 3 test)


def test_a_copy_in_a_later_folder_goes_with_the_first(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    samples = make_samples(first, per_stratum=4)
    copy = second / "copy.jpg"
    copy.write_bytes(samples[7].path.read_bytes())
    for seed in range(4):
        splits = split_folders([samples, [FaceSample(copy, gender=1)]], val_fraction=0.3, test_fraction=0.3, seed=seed)
        where = {s.path: name for name in ("train", "val", "test") for s in getattr(splits, name)}
        assert where[copy] == where[samples[7].path]


def test_a_split_column_fixes_its_rows_and_the_rest_are_split_by_seed(tmp_path):
    samples = make_samples(tmp_path)
    given = {0: "test", 1: "val", 2: "train"}  # the first three samples of each stratum name their split
    fixed = [replace(s, split=given[i % 20]) if i % 20 in given else s for i, s in enumerate(samples)]
    splits = split_folders([fixed], val_fraction=0.2, test_fraction=0.2, seed=3)
    for name in ("train", "val", "test"):
        assert {s.path for s in fixed if s.split == name} <= {s.path for s in getattr(splits, name)}
    seeded = split_samples([s for s in fixed if s.split is None], val_fraction=0.2, test_fraction=0.2, seed=3)
    assert sorted(names(splits.test)) == sorted(names(seeded.test) + [n for n in names(fixed) if n.endswith("_0.jpg")])
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(fixed)
