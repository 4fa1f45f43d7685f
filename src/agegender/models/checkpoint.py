"""Self-describing checkpoints: safetensors weights + JSON metadata (config, preprocessing,
label statistics, package version). Loading never unpickles anything.
"""

from __future__ import annotations

import errno
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from agegender import __version__
from agegender.atomic_write import write_atomically
from agegender.config import RunConfig, config_from_dict, config_to_dict
from agegender.data.align import DEFAULT_FACE_CROP, FaceCropSpec
from agegender.models.ensemble import EnsembleNet
from agegender.models.metadata import FORMAT, FORMAT_VERSION, CheckpointError, validate_meta
from agegender.models.registry import create_model
from agegender.models.spec import backbone_spec

METADATA_KEY = "agegender"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's metadata says about its model (an exported ONNX file carries the same)."""

    config: RunConfig
    meta: dict[str, Any]  # format, config, preprocessing, label_stats, package_version, epoch (build_meta)

    @property
    def image_size(self) -> int:
        return int(self.meta["preprocessing"]["image_size"])

    @property
    def face_crop(self) -> FaceCropSpec:
        return read_face_crop(self.meta)

    @property
    def default_tta(self) -> bool:
        """Whether predictors average each face with its mirror image unless told otherwise (export --tta)."""
        return bool(self.meta.get("inference", {}).get("tta", False))

    @property
    def age_interval_temperature(self) -> float:
        """How much the age distribution is flattened (> 1) or sharpened for age intervals (agegender calibrate)."""
        return float(self.meta.get("inference", {}).get("age_interval_temperature", 1.0))


@dataclass(frozen=True)
class LoadedCheckpoint(CheckpointInfo):
    model: nn.Module


def read_face_crop(meta: dict[str, Any]) -> FaceCropSpec:
    """The crop a checkpoint's model expects; checkpoints saved before face_crop existed (the
    bundled model among them) get DEFAULT_FACE_CROP, the crop measured best for them."""
    stored = meta.get("preprocessing", {}).get("face_crop")
    return DEFAULT_FACE_CROP if stored is None else FaceCropSpec.from_dict(stored)  # checked by validate_meta


def face_crop_for(model: nn.Module) -> FaceCropSpec:
    """The crop `model` expects: the aligned template its pretrained backbone was trained on
    (BackboneSpec.face_template) if it names one, else the default."""
    template = getattr(backbone_spec(model), "face_template", None)
    if template is None:
        return DEFAULT_FACE_CROP
    return FaceCropSpec("aligned", template)


def build_meta(model: nn.Module, config: RunConfig, label_stats: dict, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": config_to_dict(config),
        "preprocessing": {
            "image_size": config.data.image_size,
            "mean": list(model.mean),
            "std": list(model.std),
            "input": "RGB, float32 in [0, 1], (B, 3, H, W); the model normalises internally",
            "face_crop": face_crop_for(model).to_dict(),  # how prediction cuts faces from photos
        },
        "label_stats": label_stats,
        **extra,
    }


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors' save_file, atomically; its I/O failures (a full disk) become the one-line WriteError
    of write_atomically, as every other file's do (safetensors raises them as SafetensorError)."""

    def save(temporary: str) -> None:
        try:
            save_file(tensors, temporary, metadata=metadata)
        except SafetensorError as error:
            raise OSError(errno.EIO, f"safetensors: {str(error).splitlines()[0]}") from error

    write_atomically(Path(path), save)


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    write_safetensors(path, tensors, {METADATA_KEY: json.dumps(meta)})


def with_inference_default(meta: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`meta` with one of the defaults predictors read (metadata.py's inference mapping) set."""
    return {**meta, "inference": {**meta.get("inference", {}), key: value}}


def save_with_inference_default(source: Path, out: Path, key: str, value: Any) -> Path:
    """A copy of a checkpoint, weights as they are, with one inference default set (agegender calibrate)."""
    meta = with_inference_default(read_meta(source), key, value)
    write_safetensors(out, read_weights(source), {METADATA_KEY: json.dumps(meta)})
    return Path(out)


def model_name(meta: dict[str, Any], path: Path) -> str:
    """What a model file calls itself: its card's name (tools/write_model_card.py), else the file's stem."""
    card = meta.get("card")
    name = card.get("name") if isinstance(card, dict) else None
    return name if isinstance(name, str) and name else Path(path).stem


def describe_model(path: Path) -> dict[str, Any]:
    """What a checkpoint says of itself, for `agegender models --info`: no weights are loaded."""
    meta = read_meta(path)
    validate_meta(meta, path)
    digest = file_sha256(path)
    preprocessing, inference = meta["preprocessing"], meta.get("inference", {})
    described = {
        "name": model_name(meta, path), "file": Path(path).name, "sha256": digest[:16],
        "network": meta["config"]["model"]["name"], "input": f"{preprocessing['image_size']} px",
        "face crop": preprocessing.get("face_crop", DEFAULT_FACE_CROP.to_dict()),
        "mirror averaging": inference.get("tta", False),
        "age interval temperature": inference.get("age_interval_temperature", 1.0),
        "package version": meta.get("package_version"), "weights": meta.get("weights_dtype", "float32"),
    }  # fmt: skip
    if isinstance(meta.get("card"), dict):
        described.update({k: v for k, v in meta["card"].items() if k != "name"})
    return described


def read_meta(path: Path) -> dict[str, Any]:
    """The metadata of a checkpoint, checked, without loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({error})") from error
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without agegender metadata (not an agegender checkpoint)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({error})") from error
    validate_meta(meta, path)  # before anything is built from it (models/metadata.py)
    return meta


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    meta = read_meta(path)
    # read_meta checked every field, model names included: a failure to build now is a bug, not bad input
    config = config_from_dict(meta["config"])
    if "ensemble" in meta:
        model = build_ensemble([config_from_dict(member["config"]) for member in meta["ensemble"]], meta.get("ensemble_weights"))
    else:
        model = create_model(config.model)
    load_weights(model, path)
    model.eval()
    return LoadedCheckpoint(model=model, config=config, meta=meta)


def build_ensemble(configs: list[RunConfig], weights: dict[str, list[float]] | None = None) -> EnsembleNet:
    """An untrained EnsembleNet of the members these run configs describe; `weights`: the metadata's
    ensemble_weights ({"gender": [...], "age": [...]}), None for equal weights."""
    weights = weights or {}
    return EnsembleNet(
        [create_model(c.model) for c in configs], [c.data.image_size for c in configs],
        gender_weights=weights.get("gender"), age_weights=weights.get("age"),
    )  # fmt: skip


# The fields that decide which images are train, val and test: members must agree on them, so that
# `evaluate --split test` means the same held-out images for the ensemble as for each member.
SPLIT_FIELDS = ("seed", "test_fraction", "val_fraction", "limit")


def expand_members(source: Path) -> list[tuple[dict, nn.Module]]:
    """(metadata, trained model) of each model in a checkpoint: its members if it is an ensemble."""
    loaded = load_checkpoint(source)
    if "ensemble" not in loaded.meta:
        return [({**loaded.meta, "source": str(source)}, loaded.model)]
    return list(zip(loaded.meta["ensemble"], loaded.model.members))


def drop_unweighted(members: list, gender_weights: list[float] | None, age_weights: list[float] | None):
    """(members, gender_weights, age_weights) without the members weighted 0 for both tasks."""
    n = len(members)
    for weights in (gender_weights, age_weights):
        if weights is not None and len(weights) != n:
            raise ValueError(f"need {n} finite non-negative member weights with a positive sum, got {weights}")
    used = [i for i in range(n) if (gender_weights or [1] * n)[i] != 0 or (age_weights or [1] * n)[i] != 0]
    kept = [members[i] for i in used]
    return kept, *(None if w is None else [w[i] for i in used] for w in (gender_weights, age_weights))


def save_ensemble_checkpoint(
    sources: list[Path],
    out: Path,
    *,
    gender_weights: list[float] | None = None,
    age_weights: list[float] | None = None,
) -> Path:
    """One checkpoint holding several trained checkpoints that averages their predictions.

    A source that is itself an ensemble contributes its members (so the bundled model can be extended).
    `gender_weights` / `age_weights`: one weight per member, in that expanded order (None: equal); a
    member weighted 0 for both tasks is left out (it would cost time and change nothing).
    The ensemble's config and data split are those of its largest-input member; every member
    must have been trained on the same split, so no member has seen the ensemble's test images.
    """
    members = [member for source in sources for member in expand_members(Path(source))]
    try:
        members, gender_weights, age_weights = drop_unweighted(members, gender_weights, age_weights)
    except ValueError as error:
        raise CheckpointError(f"{out}: {error} (members: {', '.join(m['source'] for m, _ in members)})") from error
    if len(members) < 2:
        raise CheckpointError("an ensemble needs two or more checkpoints (members weighted 0 for both tasks are left out)")
    metas = [meta for meta, _ in members]
    configs = [config_from_dict(meta["config"]) for meta in metas]
    largest = max(range(len(members)), key=lambda i: configs[i].data.image_size)
    for meta, config in zip(metas, configs):
        differing = [f for f in SPLIT_FIELDS if getattr(config.data, f) != getattr(configs[largest].data, f)]
        if differing:
            raise CheckpointError(
                f"{meta['source']}: trained on another data split than {metas[largest]['source']} "
                f"(not the same: data.{', data.'.join(differing)})"
            )
    try:
        sizes = [c.data.image_size for c in configs]
        model = EnsembleNet([m for _, m in members], sizes, gender_weights=gender_weights, age_weights=age_weights)
    except ValueError as error:  # weights that do not fit the members
        raise CheckpointError(f"{out}: {error} (members: {', '.join(m['source'] for m in metas)})") from error
    meta = {
        **{key: metas[largest][key] for key in ("format", "format_version", "config", "label_stats")},
        "package_version": __version__,
        "preprocessing": {**metas[largest]["preprocessing"], "image_size": model.input_size,
                          "input": "RGB, float32 in [0, 1], (B, 3, H, W); each member resizes and normalises internally"},
        "ensemble": metas,
        "ensemble_weights": {"gender": model.gender_weights.tolist(), "age": model.age_weights.tolist()},
    }  # fmt: skip
    save_checkpoint(out, model.float(), meta)
    return Path(out)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors; an unreadable file becomes a CheckpointError naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: corrupt checkpoint weights ({error})") from error


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a checkpoint file's weights into `model`, strictly (see load_state_strictly)."""
    load_state_strictly(model, read_weights(path), Path(path))


def load_state_strictly(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load weights, naming the first mismatches instead of PyTorch's wall of text."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and expected[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong_shape:
            key = wrong_shape[0]
            parts.append(f"shape of {key} is {tuple(state[key].shape)}, model has {tuple(expected[key].shape)}")
        raise CheckpointError(f"{path}: weights do not match the model ({'; '.join(parts)})")
    model.load_state_dict(state)


def file_sha256(path: Path) -> str | None:
    """Hex SHA-256 of a file's bytes; None when there is no such file."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()
