"""The schema of checkpoint metadata, checked before any tensor or image is built from it.

A checkpoint (and an exported ONNX file, which carries the same JSON) describes itself:

    format            "agegender-checkpoint"             format_version    1
    package_version   text                               config            a RunConfig mapping (config.py
                                                                           checks its types, bounds, names)
    preprocessing     image_size (int, = config.data.image_size), mean and std (3 numbers each, std > 0),
                      input (text, optional), face_crop (optional: {method, template, margin}, data.align)
    label_stats       n_train (int >= 0), age_mean, age_std (years), female_share (0-1); each optional or null
    epoch (int >= 0), phase ("phase1" | "phase2" | "end_to_end"), weights_dtype ("float32" | "float16"),
    source (text), onnx ({input, outputs, quantized}): optional
    inference         optional: {"tta": bool, "age_interval_temperature": number in (0, 100]}, how
                      predictors use the model unless told otherwise (tta: each face averaged with its
                      mirror image, export --tta; the temperature of the age intervals, agegender calibrate)
    ensemble          optional: 2-16 member metadata mappings (each the above, without a nested ensemble);
                      the top-level image size is then the largest member's
    ensemble_weights  optional, with ensemble: {"gender": [...], "age": [...]}, one weight >= 0 per member
                      (each list optional; a positive sum)

Every failure is one CheckpointError line naming the file and the field. Unknown keys are left alone,
so a newer package can add informational fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agegender.config import BOUNDS, Bound, ConfigError, RunConfig, config_from_dict
from agegender.data.align import FaceCropSpec
from agegender.data.samples import MAX_AGE
from agegender.errors import UserInputError
from agegender.models.registry import check_model_name

FORMAT = "agegender-checkpoint"
FORMAT_VERSION = 1
MAX_ENSEMBLE_MEMBERS = 16
QUANTIZATIONS = ("int8", "int8-static")  # an ONNX file's onnx.quantized, besides None (export.quantize)
CHANNELS = 3  # RGB: mean and std have one value per channel
_MEAN = Bound(0, 1)
_STD = Bound(0, 10, low_open=True)
_AGE = Bound(0, MAX_AGE)
_COUNT = Bound(0, 10**9)
_TEMPERATURE = Bound(0, 100, low_open=True)


class CheckpointError(UserInputError):
    """A checkpoint file is missing, corrupt, or does not fit the model it describes."""


class _Invalid(Exception):
    """One field of the metadata is wrong (turned into a CheckpointError naming the file)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field '{field}': {problem}")


def validate_meta(meta: Any, source: Path | str) -> RunConfig:
    """The run config `meta` describes, once every field is checked; else one CheckpointError line."""
    if isinstance(meta, dict) and (meta.get("format"), meta.get("format_version")) != (FORMAT, FORMAT_VERSION):
        found = f"{meta.get('format')!r} v{meta.get('format_version')}"
        raise CheckpointError(f"{source}: unsupported checkpoint format {found} (this version reads {FORMAT!r} v{FORMAT_VERSION})")
    try:
        config = _check_model_meta(meta, "")
        if isinstance(meta, dict) and "ensemble" in meta:
            _check_ensemble(meta, config)
        return config
    except _Invalid as invalid:
        raise CheckpointError(f"{source}: bad checkpoint metadata, {invalid}") from None


def _check_model_meta(meta: Any, prefix: str) -> RunConfig:
    """Everything but the ensemble list; `prefix` names the field's place ("ensemble[1].")."""
    if not isinstance(meta, dict):
        raise _Invalid(prefix.rstrip(".") or "(top level)", f"expected a mapping, got {_kind(meta)}")
    if (meta.get("format"), meta.get("format_version")) != (FORMAT, FORMAT_VERSION):
        found = f"{meta.get('format')!r} v{meta.get('format_version')}"
        raise _Invalid(f"{prefix}format", f"unsupported checkpoint format {found} (expected {FORMAT!r} v{FORMAT_VERSION})")
    _field(meta, "package_version", prefix, str)
    config = _check_config(_field(meta, "config", prefix, dict), prefix)
    _check_preprocessing(_field(meta, "preprocessing", prefix, dict), f"{prefix}preprocessing.", config)
    _check_label_stats(_field(meta, "label_stats", prefix, dict), f"{prefix}label_stats.")
    _number(meta, "epoch", prefix, _COUNT, integer=True, required=False)
    _choice(meta, "phase", prefix, ("phase1", "phase2", "end_to_end"))
    _choice(meta, "weights_dtype", prefix, ("float32", "float16"))
    _field(meta, "source", prefix, str, required=False)
    onnx = _field(meta, "onnx", prefix, dict, required=False)
    if onnx is not None:
        _choice(onnx, "quantized", f"{prefix}onnx.", (None, *QUANTIZATIONS))
    inference = _field(meta, "inference", prefix, dict, required=False)
    if inference is not None:
        _field(inference, "tta", f"{prefix}inference.", bool, required=False)
        _number(inference, "age_interval_temperature", f"{prefix}inference.", _TEMPERATURE, required=False)
    return config


def _check_config(mapping: dict, prefix: str) -> RunConfig:
    try:
        config = config_from_dict(mapping)
        check_model_name(config.model.name)
        return config
    except ConfigError as error:  # already names the key, e.g. "model.widths: 1000000 is outside [1, 1024]"
        raise _Invalid(f"{prefix}config", str(error)) from None


def _check_preprocessing(preprocessing: dict, prefix: str, config: RunConfig) -> None:
    size = _number(preprocessing, "image_size", prefix, BOUNDS["data.image_size"], integer=True)
    if size != config.data.image_size:
        raise _Invalid(f"{prefix}image_size", f"{size} differs from config data.image_size {config.data.image_size}")
    for key, bound in (("mean", _MEAN), ("std", _STD)):
        values = _field(preprocessing, key, prefix, list)
        if len(values) != CHANNELS:
            raise _Invalid(f"{prefix}{key}", f"expected {CHANNELS} numbers (R, G, B), got {len(values)}")
        for index in range(CHANNELS):
            _number(dict(enumerate(values)), index, f"{prefix}{key}", bound)
    _field(preprocessing, "input", prefix, str, required=False)
    face_crop = _field(preprocessing, "face_crop", prefix, dict, required=False)
    if face_crop is not None:
        try:
            FaceCropSpec.from_dict(face_crop)
        except (TypeError, ValueError) as error:  # unknown method, template or key; a bad margin
            raise _Invalid(f"{prefix}face_crop", str(error)) from None


def _check_label_stats(stats: dict, prefix: str) -> None:
    _number(stats, "n_train", prefix, _COUNT, integer=True, required=False)
    for key, bound in (("age_mean", _AGE), ("age_std", _AGE), ("female_share", Bound(0, 1))):
        if stats.get(key) is not None:
            _number(stats, key, prefix, bound)


def _check_ensemble(meta: dict, config: RunConfig) -> None:
    members = _field(meta, "ensemble", "", list)
    if not 2 <= len(members) <= MAX_ENSEMBLE_MEMBERS:
        raise _Invalid("ensemble", f"expected 2-{MAX_ENSEMBLE_MEMBERS} members, got {len(members)}")
    sizes = []
    for index, member in enumerate(members):
        prefix = f"ensemble[{index}]."
        if isinstance(member, dict) and "ensemble" in member:
            raise _Invalid(f"{prefix}ensemble", "an ensemble member cannot itself be an ensemble")
        sizes.append(_check_model_meta(member, prefix).data.image_size)
    if meta["preprocessing"]["image_size"] != max(sizes):
        raise _Invalid("preprocessing.image_size", f"{meta['preprocessing']['image_size']} is not the largest member's {max(sizes)}")
    weights = _field(meta, "ensemble_weights", "", dict, required=False) or {}
    for task in ("gender", "age"):
        _check_member_weights(_field(weights, task, "ensemble_weights.", list, required=False), task, len(members))


def _check_member_weights(values: list | None, task: str, n: int) -> None:
    if values is None:
        return
    if len(values) != n:
        raise _Invalid(f"ensemble_weights.{task}", f"expected {n} weights (one per member), got {len(values)}")
    for index in range(n):
        _number(dict(enumerate(values)), index, f"ensemble_weights.{task}", Bound(0, 1e6))
    if sum(values) <= 0:
        raise _Invalid(f"ensemble_weights.{task}", "the weights sum to 0")


# ---------------------------------------------------------------- typed field readers


def _field(mapping: dict, key: str, prefix: str, kind: type, required: bool = True) -> Any:
    """mapping[key] if it has type `kind`; None when absent and not `required`."""
    if key not in mapping:
        if required:
            raise _Invalid(f"{prefix}{key}", "missing")
        return None
    value = mapping[key]
    if not isinstance(value, kind):
        raise _Invalid(f"{prefix}{key}", f"expected {kind.__name__}, got {_kind(value)}")
    return value


def _number(mapping: dict, key: Any, prefix: str, bound: Bound, integer: bool = False, required: bool = True):
    """A finite number (an int when `integer`) within `bound`; bools are not numbers here."""
    name = f"{prefix}{key}" if isinstance(key, str) else f"{prefix}[{key}]"
    if key not in mapping:
        if required:
            raise _Invalid(name, "missing")
        return None
    value = mapping[key]
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _Invalid(name, f"expected {'an integer' if integer else 'a number'}, got {_kind(value)}")
    if not bound.admits(value):
        raise _Invalid(name, f"{_short(value)} is outside {bound}")
    return value


def _choice(mapping: dict, key: str, prefix: str, choices: tuple) -> None:
    """An optional field that must be one of `choices` when present."""
    if key in mapping and mapping[key] not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise _Invalid(f"{prefix}{key}", f"{_kind(mapping[key])} is not one of {shown}")


def _kind(value: Any) -> str:
    """A short description of a JSON value for messages: its type and its start."""
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any) -> str:
    """repr(value), cut to 40 characters: a hostile field must not make a megabyte-long error line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
