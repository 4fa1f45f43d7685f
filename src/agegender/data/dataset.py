"""From a data folder to decoded, labelled arrays for each split."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agegender.config import DataConfig
from agegender.data.age_groups import group_interval, resolve_age_groups
from agegender.data.cache import decode_samples
from agegender.data.readers import ReadResult, Skipped, read_folders
from agegender.data.samples import FaceSample
from agegender.data.sampling import SamplingTerm, parse_sampling, sample_weights
from agegender.data.splits import Splits, split_folders


@dataclass(frozen=True)
class LabelledArrays:
    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    age: np.ndarray  # (N,) float32 years, NaN where unlabelled
    gender: np.ndarray  # (N,) float32 0 male / 1 female, NaN where unlabelled
    samples: list[FaceSample]
    # (N, 2) [low, high] years each age label allows: [a, a] for an exact age, a group's interval for an
    # age_group (data/age_groups.py), NaN for neither. None: the exact ages in `age` are all there is.
    age_range: np.ndarray | None = None
    # (N,) training draw weights (data.sampling); None: every image once per epoch.
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def age_targets(self, picked: np.ndarray) -> np.ndarray:
        """(B, 2) float32 [low, high] age targets of the images at `picked` (what the age loss trains on)."""
        if self.age_range is None:
            return np.stack([self.age[picked], self.age[picked]], axis=1)
        return self.age_range[picked]


@dataclass(frozen=True)
class PreparedData:
    train: LabelledArrays
    val: LabelledArrays
    test: LabelledArrays
    read: ReadResult
    undecodable: list[Skipped]

    def summary_line(self) -> str:
        line = self.read.summary_line()
        if self.undecodable:
            names = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in self.undecodable[:5])
            line += f"; {len(self.undecodable)} unreadable images skipped ({names})"
        sizes = f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)}"
        return f"{line}; split {sizes}" + self._split_per_folder()

    def _split_per_folder(self) -> str:
        """Several folders: each one's share of every split, e.g. " (utkface 900 / 100 / 100; lfw 90 / 10 / 10)"."""
        if not self.read.parts:
            return ""
        shares = []
        for folder, part in self.read.parts:
            paths = {sample.path for sample in part.samples}
            counts = [sum(s.path in paths for s in split.samples) for split in (self.train, self.val, self.test)]
            shares.append(f"{Path(folder).name} " + " / ".join(map(str, counts)))
        return " (" + "; ".join(shares) + ")"


def label_arrays(samples: list[FaceSample]) -> tuple[np.ndarray, np.ndarray]:
    age = np.array([np.nan if s.age is None else s.age for s in samples], dtype=np.float32)
    gender = np.array([np.nan if s.gender is None else s.gender for s in samples], dtype=np.float32)
    return age, gender


def age_range_array(samples: list[FaceSample]) -> np.ndarray:
    """(N, 2) [low, high] years per sample; an exact age wins over a group when a sample has both."""
    ranges = np.full((len(samples), 2), np.nan, dtype=np.float32)
    for row, sample in enumerate(samples):
        if sample.age is not None:
            ranges[row] = sample.age
        elif sample.age_group is not None:
            ranges[row] = group_interval(sample.age_group)
    return ranges


def decode_split(samples: list[FaceSample], config: DataConfig) -> tuple[LabelledArrays, list[Skipped]]:
    decoded = decode_samples(samples, config.image_size, Path(config.cache_dir) if config.cache_dir else None)
    age, gender = label_arrays(decoded.samples)
    return LabelledArrays(decoded.images, age, gender, decoded.samples, age_range_array(decoded.samples)), decoded.skipped


def hide_exact_ages(samples: list[FaceSample], scheme_text: str) -> list[FaceSample]:
    """data.hide_ages: each exact age replaced by the name of its group in a scheme (ages in a gap
    between groups get the nearer group), as if the data had been labelled in groups only."""
    scheme = resolve_age_groups(scheme_text)
    aged = [s for s in samples if s.age is not None]
    names = [scheme.names[i] for i in scheme.index_of_ages(np.array([s.age for s in aged]))]
    group_of = {id(s): name for s, name in zip(aged, names)}
    return [replace(s, age=None, age_group=group_of[id(s)]) if id(s) in group_of else s for s in samples]


def folder_of_samples(samples: list[FaceSample], read: ReadResult, folders: tuple[str, ...]) -> np.ndarray:
    """(N,) the data folder (as given) each sample was read from."""
    if not read.parts:
        return np.array([folders[0] if folders else ""] * len(samples), dtype=object)
    owner = {sample.path: folder for folder, part in read.parts for sample in part.samples}
    return np.array([owner[sample.path] for sample in samples], dtype=object)


def dataset_names(samples: list[FaceSample], read: ReadResult) -> list[str] | None:
    """Each sample's data folder by name, for per-dataset reports (None: one folder, nothing to break down)."""
    if not read.parts:
        return None
    return [Path(folder).name for folder in folder_of_samples(samples, read, ())]


def with_sampling_weights(train: LabelledArrays, read: ReadResult, folders: tuple[str, ...],
                          terms: tuple[SamplingTerm, ...]) -> LabelledArrays:  # fmt: skip
    folder_of = folder_of_samples(train.samples, read, folders)
    age_range = train.age_range if train.age_range is not None else np.stack([train.age, train.age], axis=1)
    return replace(train, weight=sample_weights(terms, folder_of, age_range, train.gender))


def make_splits(read: ReadResult, config: DataConfig) -> Splits:
    """The run's split; several folders are split one by one (data.splits.split_folders)."""
    return split_folders(
        [part.samples for _, part in read.parts] if read.parts else [read.samples],
        val_fraction=config.resolved_val_fraction(),
        test_fraction=config.test_fraction,
        seed=config.seed,
        limit=config.limit,
    )


def prepare_data(config: DataConfig) -> PreparedData:
    """Read, split and decode the data folders as `config` describes."""
    terms = parse_sampling(config.sampling, config.folders())  # a bad term fails before any image is decoded
    read = read_folders(config.folders())
    splits = make_splits(read, config)
    arrays, undecodable = {}, []
    for name in ("train", "val", "test"):
        samples = getattr(splits, name)
        if config.hide_ages and name != "test":  # after splitting: the same split as with exact ages
            samples = hide_exact_ages(samples, config.hide_ages)
        arrays[name], skipped = decode_split(samples, config)
        undecodable += skipped
    train = with_sampling_weights(arrays["train"], read, config.folders(), terms)
    return PreparedData(train, arrays["val"], arrays["test"], read, undecodable)


def label_stats(train: LabelledArrays) -> dict[str, float]:
    """Training-label statistics stored in checkpoints (for reports and sanity checks)."""
    return {
        "n_train": len(train),
        "age_mean": float(np.nanmean(train.age)) if np.isfinite(train.age).any() else None,
        "age_std": float(np.nanstd(train.age)) if np.isfinite(train.age).any() else None,
        "female_share": float(np.nanmean(train.gender)) if np.isfinite(train.gender).any() else None,
    }
