"""Run configuration: frozen dataclasses, loaded from YAML and `section.key=value` overrides.

Values are parsed with yaml.safe_load and checked against the field's type; nothing a user
writes is ever evaluated as code. Unknown keys are rejected with a "did you mean" hint.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agegender.errors import UserInputError


class ConfigError(UserInputError):
    """A configuration key or value a user wrote is wrong."""


# YAML 1.1 (PyYAML) reads exponent-only numbers such as 1e-3 as text; Python writes 1e-05 that way.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class DataConfig:
    # One labelled folder, or a list of them read together (data.readers.read_folders).
    path: str | tuple[str, ...] = ""
    image_size: int = 64
    # Fractions of the train/val pool; None -> 0.2 with --limit (classic 4,000/1,000 protocol), else 0.1.
    val_fraction: float | None = None
    test_fraction: float = 0.1  # of all images, held out before --limit subsetting
    limit: int | None = None
    seed: int = 0
    cache_dir: str | None = None  # decoded-image cache; None -> ~/.cache/agegender
    # Train/val age labels replaced by the groups of this scheme (adience | fairface | "0-12,13-19,20+"),
    # test labels kept: measures training on group labels against exact ages on the same split.
    hide_ages: str | None = None
    # Training draw weights, KEY=WEIGHT terms multiplied per image (data/sampling.py): a folder's name,
    # age:LOW-HIGH, age:LOW+ or gender:male|female; e.g. [aaf=2, age:0-12=3]. Empty: every image once an epoch.
    sampling: tuple[str, ...] = ()

    def folders(self) -> tuple[str, ...]:
        """The data folders, one or several ("" reads as none)."""
        if isinstance(self.path, tuple):
            return self.path
        return (self.path,) if self.path else ()

    def resolved_val_fraction(self) -> float:
        if self.val_fraction is not None:
            return self.val_fraction
        return 0.2 if self.limit else 0.1


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation; evaluation never augments."""

    hflip: float = 0.5  # probability
    rotation: float = 10.0  # max degrees either way
    zoom: float = 0.1  # max relative scale change either way
    shift: float = 0.08  # max translation as a fraction of the image side
    brightness: float = 0.2  # max relative change either way
    contrast: float = 0.2  # max relative change either way
    erase: float = 0.0  # probability of replacing one random rectangle with noise (random erasing); 0 = off
    # Robustness to what cameras and detectors do to faces at prediction time. Each is off at 0 and then
    # draws nothing from the generator, so recipes written before it existed reproduce exactly.
    grayscale: float = 0.0  # probability of a black-and-white face (ITU-R 601 luma in all three channels)
    lowres: float = 0.0  # probability of a downscale-upscale round trip (a low-resolution or blurred face)
    lowres_scale: tuple[float, ...] = (0.25, 0.75)  # [low, high]: the downscale factor, drawn uniformly
    jpeg: float = 0.0  # probability of JPEG re-compression
    jpeg_quality: tuple[int, ...] = (30, 90)  # [low, high]: the JPEG quality, drawn uniformly (inclusive)
    box_jitter: float = 0.0  # probability of re-cropping as a face detector's imprecise box would
    box_scale: float = 0.15  # box_jitter: max relative change of the box side either way
    box_shift: float = 0.1  # box_jitter: max move of the box centre, as a fraction of its side
    box_rotation: float = 5.0  # box_jitter: max degrees either way


@dataclass(frozen=True)
class ModelConfig:
    name: str = "custom"
    widths: tuple[int, ...] = (32, 64, 128, 256)
    convs_per_block: int = 2
    head_hidden: int = 128
    dropout: float = 0.3
    age_head: str = "bins"  # "bins": expected value over 1-year bins; "regression": one output
    # The gender head also reads the age head's distribution (bins only; detached, so gender's loss does not
    # move the ages): a decision that can differ for a child and an adult of similar features.
    gender_sees_age: bool = False
    weights: str | None = None  # local pretrained weights file, for pretrained backbones
    # Pretrained backbones, phase 2: fine-tune the last N backbone blocks (0: phase 1, heads only)
    unfreeze_blocks: int = 2


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"  # OPTIMIZERS
    lr: float = 2e-3
    weight_decay: float = 5e-4  # L2 for adam/sgd, decoupled for adamw
    momentum: float = 0.9  # sgd only
    scheduler: str = "cosine"  # SCHEDULERS
    step_size: int = 10  # step scheduler
    gamma: float = 0.1  # step scheduler
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    early_stopping_patience: int = 8
    min_delta: float = 1e-3  # improvement of the monitored val loss that resets patience
    label_smoothing: float = 0.05  # gender BCE targets become 0.025 / 0.975
    mixup_alpha: float = 0.0  # > 0: mixup of training pairs, weights ~ Beta(a, a) (training/mixup.py); 0 = off
    warmup_steps: int = 0  # linear lr warm-up over each fresh optimizer's first N steps (each run, each phase)
    ema_decay: float = 0.0  # > 0: validate and save an exponential moving average of the weights (training/averaging.py)
    gender_weight: float = 1.0
    age_weight: float = 0.1  # age loss is L1 in years, so 0.1 puts it on the BCE scale
    # Bins head only: cross-entropy to a Gaussian around the true age (DLDL). It gives every bin a
    # gradient, where L1 on the expected value alone learned age slowly through the shared backbone.
    age_distribution_weight: float = 0.5
    age_sigma: float = 2.0  # years; width of that Gaussian
    channels_last: bool = True
    compile: bool = False  # torch.compile Model A's training steps (not two-phase runs); no gain measured on CPU
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    device: str = "cpu"
    # Pretrained backbones (two-phase fine-tuning, training/engine.py); train.epochs bounds phase 1.
    finetune_epochs: int | None = None  # phase-2 max epochs; None -> train.epochs
    finetune_lr: float | None = None  # phase-2 learning rate; None -> train.lr / 10
    feature_views: int = 4  # cached views per training image: original, flipped, then augmented ones
    # Phase 3 (optional): the whole network end to end on freshly augmented images every epoch.
    end_to_end_epochs: int = 0  # 0: no phase 3
    end_to_end_lr: float | None = None  # None -> the phase-2 rate
    # Start a new run from a checkpoint's weights (same model settings) with a fresh optimizer and
    # schedule: a warm restart that continues an earlier run for more epochs.
    init_from: str | None = None
    # Distillation (training/distill.py): blend each training target with this checkpoint's prediction.
    teacher: str | None = None
    teacher_weight: float = 0.5  # share of the teacher in each blended target


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------- accepted values, checked at load time
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "step", "cosine", "none")
AGE_HEADS = ("bins", "regression")
DEVICE = re.compile(r"cpu|cuda(:\d+)?")
CHOICES = {"train.optimizer": OPTIMIZERS, "train.scheduler": SCHEDULERS, "model.age_head": AGE_HEADS}


@dataclass(frozen=True)
class Bound:
    """The finite numbers a setting accepts, from `low` to `high`; an `*_open` end is excluded."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):  # (ints of any size compare exactly)
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


_FRACTION = Bound(0, 1, high_open=True)  # [0, 1)
_PROBABILITY = Bound(0, 1)
_WEIGHT = Bound(0, 1000)
_LEARNING_RATE = Bound(0, 10, low_open=True)
_EPOCHS = Bound(0, 100_000)
# Bounds keep a typo (or a hostile checkpoint) from building a 36 TB model or a 5 GB image before any
# other check runs; they are wide enough for every real setting. A tuple setting bounds each item.
BOUNDS: dict[str, Bound] = {
    "data.image_size": Bound(16, 1024), "data.val_fraction": _FRACTION, "data.test_fraction": _FRACTION,
    "data.limit": Bound(2, 10**9), "data.seed": Bound(0, 2**63 - 1),
    "augment.hflip": _PROBABILITY, "augment.rotation": Bound(0, 180), "augment.zoom": _FRACTION,
    "augment.shift": _FRACTION, "augment.brightness": _PROBABILITY, "augment.contrast": _PROBABILITY,
    "augment.erase": _PROBABILITY,
    "model.widths": Bound(1, 1024), "model.convs_per_block": Bound(1, 8), "model.head_hidden": Bound(1, 4096),
    "model.dropout": _FRACTION, "model.unfreeze_blocks": Bound(0, 1000),
    "train.epochs": _EPOCHS, "train.batch_size": Bound(1, 65_536), "train.lr": _LEARNING_RATE,
    "train.weight_decay": Bound(0, 1), "train.momentum": _FRACTION, "train.step_size": Bound(1, 100_000),
    "train.gamma": Bound(0, 1, low_open=True), "train.plateau_patience": _EPOCHS,
    "train.plateau_factor": Bound(0, 1, low_open=True, high_open=True), "train.early_stopping_patience": _EPOCHS,
    "train.min_delta": Bound(0, 1000), "train.label_smoothing": _FRACTION, "train.mixup_alpha": Bound(0, 100),
    "train.warmup_steps": Bound(0, 10**8), "train.ema_decay": _FRACTION, "train.gender_weight": _WEIGHT,
    "train.age_weight": _WEIGHT, "train.age_distribution_weight": _WEIGHT,
    "train.age_sigma": Bound(0, 100, low_open=True), "train.threads": Bound(1, 1024),
    "train.finetune_epochs": _EPOCHS, "train.finetune_lr": _LEARNING_RATE, "train.feature_views": Bound(1, 64),
    "train.end_to_end_epochs": _EPOCHS, "train.end_to_end_lr": _LEARNING_RATE,
    "train.teacher_weight": _PROBABILITY,
}  # fmt: skip
LENGTHS = {"model.widths": Bound(1, 8)}  # custom CNN blocks; each halves the image


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _section_class(name: str) -> type:
    classes = {f.name: type(f.default_factory()) for f in dataclasses.fields(RunConfig)}
    if name not in classes:
        raise ConfigError(f"unknown config section '{name}'{_did_you_mean(name, classes)}")
    return classes[name]


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check and convert a parsed value to a field's annotated type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        # A list goes to the tuple alternative where there is one (data.path: one folder or several).
        listed = [a for a in inner if typing.get_origin(a) is tuple]
        return _coerce(value, listed[0] if listed and isinstance(value, (list, tuple)) else inner[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected text, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _apply_section(section_obj: Any, section: str, values: dict[str, Any]) -> Any:
    cls = type(section_obj)
    hints = typing.get_type_hints(cls)
    changes = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown key '{section}.{key}'{_did_you_mean(key, hints)}")
        changes[key] = _check_value(f"{section}.{key}", _coerce(value, hints[key], f"{section}.{key}"))
    return dataclasses.replace(section_obj, **changes)


def _check_value(key: str, value: Any) -> Any:
    """`value` if `key` accepts it: within its bounds, one of its choices; else one ConfigError line."""
    if value is None:
        return value
    items = value if isinstance(value, tuple) else (value,)
    if key in LENGTHS and not LENGTHS[key].admits(len(items)):
        raise ConfigError(f"{key}: needs {LENGTHS[key].low:g}-{LENGTHS[key].high:g} items, got {len(items)}")
    if key in BOUNDS:
        for item in items:
            if not BOUNDS[key].admits(item):
                raise ConfigError(f"{key}: {item!r} is outside {BOUNDS[key]}")
    choices = _choices(key, value)
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: unknown value '{value}'{_did_you_mean(value, choices)}; choose one of {', '.join(choices)}")
    return value


def _choices(key: str, value: Any) -> tuple[str, ...] | None:
    """The names `key` accepts (None: free text or a number)."""
    if key == "train.device":
        return (value,) if DEVICE.fullmatch(value) else ("cpu", "cuda", "cuda:N")
    return CHOICES.get(key)


def apply_mapping(config: RunConfig, mapping: dict[str, Any]) -> RunConfig:
    """Return `config` updated from a nested {section: {key: value}} mapping."""
    changes = {}
    for section, values in mapping.items():
        _section_class(section)
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' must be a mapping, got {values!r}")
        changes[section] = _apply_section(getattr(config, section), section, values)
    return dataclasses.replace(config, **changes)


def parse_override(text: str) -> tuple[str, str, Any]:
    """'train.lr=0.001' -> ('train', 'lr', 0.001)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    dotted, raw = text.split("=", 1)
    if dotted.count(".") != 1:
        raise ConfigError(f"override key '{dotted}' must look like section.key (e.g. train.lr)")
    section, key = dotted.split(".")
    try:
        return section, key, yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"override '{text}': cannot parse the value ({reason})") from error


def apply_overrides(config: RunConfig, overrides: typing.Iterable[str]) -> RunConfig:
    mapping: dict[str, dict[str, Any]] = {}
    for text in overrides:
        section, key, value = parse_override(text)
        mapping.setdefault(section, {})[key] = value
    return apply_mapping(config, mapping)


def load_config(path: Path | None = None, overrides: typing.Iterable[str] = ()) -> RunConfig:
    config = RunConfig()
    if path is not None:
        try:
            mapping = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: cannot read config ({error})") from error
        if not isinstance(mapping, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of sections")
        config = apply_mapping(config, mapping)
    return apply_overrides(config, overrides)


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain, YAML/JSON-serialisable form (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def config_from_dict(mapping: dict[str, Any]) -> RunConfig:
    return apply_mapping(RunConfig(), mapping)


def save_config(config: RunConfig, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
