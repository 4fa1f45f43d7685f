"""From a data folder to decoded, labelled arrays for each split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agegender.config import DataConfig
from agegender.data.cache import decode_samples
from agegender.data.readers import ReadResult, Skipped, read_folder
from agegender.data.samples import FaceSample
from agegender.data.splits import Splits, split_samples


@dataclass(frozen=True)
class LabelledArrays:
    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    age: np.ndarray  # (N,) float32 years, NaN where unlabelled
    gender: np.ndarray  # (N,) float32 0 male / 1 female, NaN where unlabelled
    samples: list[FaceSample]

    def __len__(self) -> int:
        return len(self.samples)


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
        return f"{line}; split {sizes}"


def label_arrays(samples: list[FaceSample]) -> tuple[np.ndarray, np.ndarray]:
    age = np.array([np.nan if s.age is None else s.age for s in samples], dtype=np.float32)
    gender = np.array([np.nan if s.gender is None else s.gender for s in samples], dtype=np.float32)
    return age, gender


def decode_split(samples: list[FaceSample], config: DataConfig) -> tuple[LabelledArrays, list[Skipped]]:
    decoded = decode_samples(samples, config.image_size, Path(config.cache_dir) if config.cache_dir else None)
    age, gender = label_arrays(decoded.samples)
    return LabelledArrays(decoded.images, age, gender, decoded.samples), decoded.skipped


def make_splits(read: ReadResult, config: DataConfig) -> Splits:
    return split_samples(
        read.samples,
        val_fraction=config.resolved_val_fraction(),
        test_fraction=config.test_fraction,
        seed=config.seed,
        limit=config.limit,
    )


def prepare_data(config: DataConfig) -> PreparedData:
    """Read, split and decode a data folder as `config` describes."""
    read = read_folder(config.path)
    splits = make_splits(read, config)
    arrays, undecodable = {}, []
    for name in ("train", "val", "test"):
        arrays[name], skipped = decode_split(getattr(splits, name), config)
        undecodable += skipped
    return PreparedData(arrays["train"], arrays["val"], arrays["test"], read, undecodable)


def label_stats(train: LabelledArrays) -> dict[str, float]:
    """Training-label statistics stored in checkpoints (for reports and sanity checks)."""
    return {
        "n_train": len(train),
        "age_mean": float(np.nanmean(train.age)) if np.isfinite(train.age).any() else None,
        "age_std": float(np.nanstd(train.age)) if np.isfinite(train.age).any() else None,
        "female_share": float(np.nanmean(train.gender)) if np.isfinite(train.gender).any() else None,
    }
