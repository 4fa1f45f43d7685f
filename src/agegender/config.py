"""Run configuration: frozen dataclasses, loaded from YAML and `section.key=value` overrides.

Values are parsed with yaml.safe_load and checked against the field's type; nothing a user
writes is ever evaluated as code. Unknown keys are rejected with a "did you mean" hint.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key or value a user wrote is wrong."""


# YAML 1.1 (PyYAML) reads exponent-only numbers such as 1e-3 as text; Python writes 1e-05 that way.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class DataConfig:
    path: str = ""
    image_size: int = 64
    # Fractions of the train/val pool; None -> 0.2 with --limit (classic 4,000/1,000 protocol), else 0.1.
    val_fraction: float | None = None
    test_fraction: float = 0.1  # of all images, held out before --limit subsetting
    limit: int | None = None
    seed: int = 0
    cache_dir: str | None = None  # decoded-image cache; None -> ~/.cache/agegender

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
    weights: str | None = None  # local pretrained weights file, for pretrained backbones
    # Pretrained backbones, phase 2: fine-tune the last N backbone blocks (0: phase 1, heads only)
    unfreeze_blocks: int = 2


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"  # adam | adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 5e-4  # L2 for adam/sgd, decoupled for adamw
    momentum: float = 0.9  # sgd only
    scheduler: str = "cosine"  # plateau | step | cosine | none
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
    # Pretrained backbones (two-phase fine-tuning, training/finetune.py); train.epochs bounds phase 1.
    finetune_epochs: int | None = None  # phase-2 max epochs; None -> train.epochs
    finetune_lr: float | None = None  # phase-2 learning rate; None -> train.lr / 10
    feature_views: int = 4  # cached views per training image: original, flipped, then augmented ones
    # Start a new run from a checkpoint's weights (same model settings) with a fresh optimizer and
    # schedule: a warm restart that continues an earlier run for more epochs.
    init_from: str | None = None


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


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
        return _coerce(value, inner[0], key)
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
        changes[key] = _coerce(value, hints[key], f"{section}.{key}")
    return dataclasses.replace(section_obj, **changes)


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
