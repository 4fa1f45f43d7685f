"""Seeded, stratified, duplicate-safe train/val/test splits.

Byte-identical files (UTKFace has ~375 such groups, some with conflicting labels) are kept
together as one unit, so no image appears in two splits; so are all photos of one identity
(labels.csv's identity column, compared as text across folders), so no person appears in two.
Several folders (split_folders) are grouped together, so a photo copied into two folders is one
unit too, then split folder by folder: adding a folder leaves the others' splits as they were. A labels.csv
with a split column (train / val / test) fixes its rows' splits: a dataset's own protocol, or a held-out
part chosen once (tools/split_aaf.py).
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass

from agegender.config import ConfigError
from agegender.data.samples import SPLIT_NAMES, FaceSample

STRATUM_AGE_EDGES = (13, 20, 30, 40, 50, 60, 70)


@dataclass(frozen=True)
class Splits:
    train: list[FaceSample]
    val: list[FaceSample]
    test: list[FaceSample]

    def sizes(self) -> str:
        return f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)}"


def file_digest(sample: FaceSample) -> str:
    """SHA-1 of the file's bytes; a file that cannot be read gets a key of its own (the decoder then
    skips and counts it like any unreadable image)."""
    try:
        return hashlib.sha1(sample.path.read_bytes()).hexdigest()
    except OSError as error:
        return f"unreadable:{sample.path}:{error.errno}"


def stratum(sample: FaceSample) -> tuple[object, object]:
    """Gender and age band (or age group) a sample is stratified by."""
    if sample.age is not None:
        band: object = sum(sample.age >= edge for edge in STRATUM_AGE_EDGES)
    else:
        band = sample.age_group
    return (sample.gender, band)


def group_duplicates(samples: list[FaceSample]) -> list[list[FaceSample]]:
    """Groups of samples that must stay together: byte-identical files and photos of one identity,
    joined transitively (a duplicate of one person's photo pulls in all of them). Groups come in the
    order of their first sample, members in sample order."""
    root = list(range(len(samples)))  # union-find over sample indices

    def find(index: int) -> int:
        while root[index] != index:
            root[index] = root[root[index]]
            index = root[index]
        return index

    first_with: dict[tuple[str, str], int] = {}
    for index, sample in enumerate(samples):
        keys = [("file", file_digest(sample))] + ([("identity", sample.identity)] if sample.identity else [])
        for key in keys:
            other = first_with.setdefault(key, index)
            low, high = sorted((find(index), find(other)))
            root[high] = low  # the root is always a group's first sample
    groups: dict[int, list[FaceSample]] = defaultdict(list)
    for index, sample in enumerate(samples):
        groups[find(index)].append(sample)
    return list(groups.values())


def _shuffled_by_stratum(groups: list[list[FaceSample]], rng: random.Random) -> list[list[list[FaceSample]]]:
    by_stratum: dict[tuple, list[list[FaceSample]]] = defaultdict(list)
    for group in groups:
        by_stratum[stratum(group[0])].append(group)
    ordered = [by_stratum[key] for key in sorted(by_stratum, key=repr)]
    for members in ordered:
        rng.shuffle(members)
    return ordered


def _take_fraction(groups: list[list[FaceSample]], fraction: float, rng: random.Random):
    """Split groups into (taken, rest), taking `fraction` of each stratum.

    Largest-remainder rounding makes the total exactly round(len(groups) * fraction).
    """
    strata = _shuffled_by_stratum(groups, rng)
    quotas = [len(members) * fraction for members in strata]
    counts = [int(q) for q in quotas]
    missing = round(len(groups) * fraction) - sum(counts)
    by_remainder = sorted(range(len(strata)), key=lambda i: quotas[i] - counts[i], reverse=True)
    for index in by_remainder[:missing]:
        counts[index] += 1
    taken, rest = [], []
    for members, count in zip(strata, counts):
        taken.extend(members[:count])
        rest.extend(members[count:])
    return taken, rest


def _flatten(groups: list[list[FaceSample]]) -> list[FaceSample]:
    return [sample for group in groups for sample in group]


def _check_split_settings(val_fraction: float, test_fraction: float, limit: int | None) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"data.{name} must be in [0, 1), got {value}")
    if limit is not None and limit < 2:
        raise ConfigError(f"--limit must be at least 2, got {limit}")


def _split_groups(
    groups: list[list[FaceSample]], val_fraction: float, test_fraction: float, seed: int, limit: int | None
) -> tuple[list[list[FaceSample]], ...]:
    """(train, val, test) groups; see split_samples."""
    rng = random.Random(seed)
    groups = sorted(groups, key=lambda g: str(g[0].path))
    test, pool = _take_fraction(groups, test_fraction, rng)
    if limit is not None:
        # Draw from images without byte-identical twins so the subset has exactly `limit` images.
        singles = [group for group in pool if len(group) == 1]
        if limit < len(singles):
            pool, _ = _take_fraction(singles, limit / len(singles), rng)
    val, train = _take_fraction(pool, val_fraction, rng)
    return train, val, test


def _split_folder(
    groups: list[list[FaceSample]], val_fraction: float, test_fraction: float, seed: int, limit: int | None
) -> tuple[list[list[FaceSample]], ...]:
    """(train, val, test) groups of one folder: a group whose first sample names its split (labels.csv's
    split column) goes there as given; the others are split by seed as usual (`limit` applies to those)."""
    given = {name: [g for g in groups if g[0].split == name] for name in SPLIT_NAMES}
    seeded = [g for g in groups if g[0].split is None]
    train, val, test = _split_groups(seeded, val_fraction, test_fraction, seed, limit) if seeded else ([], [], [])
    return given["train"] + train, given["val"] + val, given["test"] + test


def split_samples(
    samples: list[FaceSample],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    limit: int | None = None,
) -> Splits:
    """Hold out `test_fraction` of everything, optionally subsample `limit` images, then split val.

    The test split does not depend on `limit`, so a model trained on the classic 5,000-image
    protocol is measured on the same held-out images as one trained on all of them.
    """
    return split_folders([samples], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, limit=limit)


def split_folders(
    folders: list[list[FaceSample]],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    limit: int | None = None,
) -> Splits:
    """split_samples for several folders' samples: each folder is split on its own (`limit` images
    at most from each), so a folder's test split is the one it has when trained alone and its part
    of a run can be scored by itself. Groups are formed over all folders first: a file copied into
    two folders (or one identity in both) goes with its first folder, never into two splits.
    """
    _check_split_settings(val_fraction, test_fraction, limit)
    folder_of = {id(sample): index for index, samples in enumerate(folders) for sample in samples}
    by_folder: list[list[list[FaceSample]]] = [[] for _ in folders]
    for group in group_duplicates([sample for samples in folders for sample in samples]):
        by_folder[folder_of[id(group[0])]].append(group)
    parts = [_split_folder(groups, val_fraction, test_fraction, seed, limit) for groups in by_folder]
    train, val, test = ([sample for part in parts for sample in _flatten(part[k])] for k in range(3))
    return Splits(train=train, val=val, test=test)
