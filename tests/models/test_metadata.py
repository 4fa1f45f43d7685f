from __future__ import annotations

import copy
import json
import re
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from agegender.config import DataConfig, ModelConfig, RunConfig
from agegender.models.checkpoint import (
    METADATA_KEY,
    CheckpointError,
    build_meta,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    save_ensemble_checkpoint,
)
from agegender.models.metadata import validate_meta
from agegender.models.registry import create_model

CONFIG = RunConfig(data=DataConfig(image_size=32), model=ModelConfig(widths=(8, 16), head_hidden=8))
STATS = {"n_train": 10, "age_mean": 30.0, "age_std": 12.0, "female_share": 0.5}


def good_meta() -> dict:
    return build_meta(create_model(CONFIG.model), CONFIG, STATS, epoch=3)


def write_raw(path, meta) -> None:
    """A safetensors file with one tiny tensor and `meta` as its agegender metadata, whatever it holds."""
    save_file({"x": torch.zeros(1)}, str(path), metadata={METADATA_KEY: json.dumps(meta)})


def edited(change) -> dict:
    meta = copy.deepcopy(good_meta())
    change(meta)
    return meta


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


# (metadata change, the line it must give after "<file>: ")
HOSTILE = [
    (_set("preprocessing", "image_size", 0), "field 'preprocessing.image_size': 0 is outside [16, 1024]"),
    (_set("preprocessing", "image_size", 40000), "field 'preprocessing.image_size': 40000 is outside [16, 1024]"),
    (_set("preprocessing", "image_size", 10**400), "field 'preprocessing.image_size': 1000000000000000000000000000000000000... is outside [16, 1024]"),
    (_set("preprocessing", "image_size", float("nan")), "field 'preprocessing.image_size': expected an integer, got float nan"),
    (_set("config", "data", "image_size", 40000), "field 'config': data.image_size: 40000 is outside [16, 1024]"),
    (_set("config", "model", "widths", [10**6, 10**6]), "field 'config': model.widths: 1000000 is outside [1, 1024]"),
    (_set("config", "model", "widths", [-5, 64]), "field 'config': model.widths: -5 is outside [1, 1024]"),
    (_set("config", "model", "head_hidden", 10**7), "field 'config': model.head_hidden: 10000000 is outside [1, 4096]"),
    (lambda meta: meta.pop("preprocessing"), "field 'preprocessing': missing"),
    (lambda meta: meta.pop("label_stats"), "field 'label_stats': missing"),
    (_set("preprocessing", "image_size", "32"), "field 'preprocessing.image_size': expected an integer, got str '32'"),
    (_set("preprocessing", "image_size", 48), "field 'preprocessing.image_size': 48 differs from config data.image_size 32"),
    (_set("preprocessing", "std", [0.5, 0.0, 0.5]), "field 'preprocessing.std[1]': 0.0 is outside (0, 10]"),
    (_set("preprocessing", "mean", [0.5, 0.5]), "field 'preprocessing.mean': expected 3 numbers (R, G, B), got 2"),
    (_set("preprocessing", "mean", "grey"), "field 'preprocessing.mean': expected list, got str 'grey'"),
    (_set("label_stats", "female_share", 7), "field 'label_stats.female_share': 7 is outside [0, 1]"),
    (_set("label_stats", "n_train", -1), "field 'label_stats.n_train': -1 is outside [0, 1e+09]"),
    (_set("epoch", True), "field 'epoch': expected an integer, got bool True"),
    (_set("package_version", 1), "field 'package_version': expected str, got int 1"),
    (_set("weights_dtype", "int4"), "field 'weights_dtype': str 'int4' is not one of 'float32', 'float16'"),
    (_set("config", "model", "name", "resnet9000"), "field 'config': model.name: unknown value 'resnet9000'"),
    (_set("config", "train", "optimizer", "adamx"), "field 'config': train.optimizer: unknown value 'adamx'"),
    (_set("config", "model", 5), "field 'config': config section 'model' must be a mapping, got 5"),
    (_set("preprocessing", "face_crop", {"method": "tight"}), "field 'preprocessing.face_crop': unknown crop method 'tight'"),
    (_set("preprocessing", "face_crop", {"method": "aligned", "template": "dlib_9"}), "field 'preprocessing.face_crop': unknown face template 'dlib_9'"),
    (_set("preprocessing", "face_crop", "aligned"), "field 'preprocessing.face_crop': expected dict, got str 'aligned'"),
    (_set("inference", {"tta": "yes"}), "field 'inference.tta': expected bool, got str 'yes'"),
    (_set("inference", True), "field 'inference': expected dict, got bool True"),
]


@pytest.mark.parametrize(("change", "problem"), HOSTILE, ids=[line.split(":")[0] + str(i) for i, (_, line) in enumerate(HOSTILE)])
def test_hostile_metadata_is_one_line_naming_file_and_field(tmp_path, change, problem):
    path = tmp_path / "hostile.safetensors"
    write_raw(path, edited(change))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: bad checkpoint metadata, {problem}")
    assert "\n" not in message


@pytest.mark.parametrize("meta", [[1, 2, 3], "text", 42, None])
def test_metadata_that_is_not_a_mapping(tmp_path, meta):
    path = tmp_path / "list.safetensors"
    write_raw(path, meta)
    with pytest.raises(CheckpointError, match=r"list.safetensors: bad checkpoint metadata, field '\(top level\)': expected a mapping"):
        read_meta(path)


def test_valid_metadata_gives_its_config():
    assert validate_meta(good_meta(), "ok.safetensors") == CONFIG


def test_the_bundled_model_passes():
    from agegender.inference.predictor import bundled_model_path

    meta = read_meta(bundled_model_path())  # every field checked (ensembles: _ensemble_meta below)
    assert meta["config"]["model"]["name"] == "dlib_resnet"


def test_label_stats_may_be_partial_or_null():
    meta = edited(_set("label_stats", {"age_mean": None, "n_train": 0}))
    validate_meta(meta, "partial.safetensors")


def _ensemble_meta(tmp_path) -> dict:
    sources = []
    for index, size in enumerate((32, 48)):
        config = replace(CONFIG, data=replace(CONFIG.data, image_size=size))
        model = create_model(config.model)
        sources.append(tmp_path / f"member{index}.safetensors")
        save_checkpoint(sources[-1], model, build_meta(model, config, STATS))
    out = save_ensemble_checkpoint(sources, tmp_path / "ensemble.safetensors")
    return read_meta(out)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_set("ensemble", 1, "config", "model", "widths", [-5, 64]), "field 'ensemble[1].config': model.widths: -5 is outside"),
        (lambda meta: meta["ensemble"][0].pop("preprocessing"), "field 'ensemble[0].preprocessing': missing"),
        (lambda meta: meta["ensemble"].pop(), "field 'ensemble': expected 2-16 members, got 1"),
        (_set("ensemble", 0, "ensemble", []), "field 'ensemble[0].ensemble': an ensemble member cannot itself be"),
        (_set("ensemble", 1, "format_version", 7), "field 'ensemble[1].format': unsupported checkpoint format"),
        (_set("ensemble", 0, 3), "field 'ensemble[0]': expected a mapping, got int 3"),
        (_set("ensemble_weights", "age", [1.0]), "field 'ensemble_weights.age': expected 2 weights (one per member), got 1"),
        (_set("ensemble_weights", "gender", [1.0, -2.0]), "field 'ensemble_weights.gender[1]': -2.0 is outside"),
        (_set("ensemble_weights", "gender", [0, 0]), "field 'ensemble_weights.gender': the weights sum to 0"),
        (_set("ensemble_weights", "age", "1,1"), "field 'ensemble_weights.age': expected list, got str"),
    ],
)
def test_ensemble_members_are_validated(tmp_path, change, problem):
    meta = _ensemble_meta(tmp_path)
    validate_meta(meta, "ensemble.safetensors")  # the unedited one is valid
    change(meta)
    with pytest.raises(CheckpointError, match=r"^ensemble.safetensors: bad checkpoint metadata, " + re.escape(problem)):
        validate_meta(meta, "ensemble.safetensors")
