from __future__ import annotations

import os
import pathlib
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from agegender import __version__
from agegender.atomic_write import WriteError, write_atomically
from agegender.config import ModelConfig, RunConfig, config_to_dict
from agegender.data.align import DEFAULT_FACE_CROP, FaceCropSpec
from agegender.models.checkpoint import (
    METADATA_KEY,
    CheckpointError,
    build_meta,
    face_crop_for,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from agegender.models.registry import create_model

CONFIG = replace(RunConfig(), model=ModelConfig(widths=(8, 16), head_hidden=16))
CONFIG = replace(CONFIG, data=replace(CONFIG.data, image_size=32))
STATS = {"n_train": 10, "age_mean": 30.0, "age_std": 12.0, "female_share": 0.5}


def trained_looking_model(config: RunConfig = CONFIG) -> torch.nn.Module:
    """A model whose BatchNorm running statistics are not the defaults, so they must round-trip too."""
    torch.manual_seed(0)
    model = create_model(config.model).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 3, 32, 32))
    return model.eval()


def save_trained_looking(path: pathlib.Path) -> tuple[pathlib.Path, torch.nn.Module]:
    model = trained_looking_model()
    save_checkpoint(path, model, build_meta(model, CONFIG, STATS, epoch=3))
    return path, model


@pytest.fixture
def saved(tmp_path):
    return save_trained_looking(tmp_path / "model.safetensors")


def test_round_trip_gives_identical_outputs(saved):
    path, model = saved
    loaded = load_checkpoint(path)
    assert not loaded.model.training
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x), loaded.model(x)
    torch.testing.assert_close(got.age, expected.age, rtol=0, atol=0)
    torch.testing.assert_close(got.gender_logit, expected.gender_logit, rtol=0, atol=0)
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], tensor, rtol=0, atol=0)


def test_metadata_describes_the_model(saved):
    path, _ = saved
    loaded = load_checkpoint(path)
    assert loaded.config == CONFIG
    meta = read_meta(path)
    assert meta == loaded.meta
    assert meta["config"] == config_to_dict(CONFIG)
    assert meta["preprocessing"]["image_size"] == 32 == loaded.image_size
    assert meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert meta["preprocessing"]["std"] == [0.25, 0.25, 0.25]
    assert meta["label_stats"] == STATS
    assert meta["package_version"] == __version__
    assert meta["epoch"] == 3


def test_atomic_write_leaves_only_the_checkpoint(saved):
    path, _ = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]


def test_failed_write_keeps_the_old_file_and_no_temporary(saved):
    path, _ = saved
    before = path.read_bytes()

    def half_write_then_crash(temporary: str) -> None:
        pathlib.Path(temporary).write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(WriteError, match=f"{path.name}: cannot write \\(disk full\\); any earlier file is unchanged"):
        write_atomically(path, half_write_then_crash)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="random.safetensors"):
        load_checkpoint(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.safetensors"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_checkpoint(saved, keep):
    path, _ = saved
    data = path.read_bytes()
    truncated = path.with_name("truncated.safetensors")
    truncated.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load_checkpoint(truncated)


def test_safetensors_without_our_metadata(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="foreign.safetensors: safetensors file without agegender metadata"):
        load_checkpoint(path)


def test_corrupt_metadata_json(tmp_path):
    path = tmp_path / "badjson.safetensors"
    save_file({"weight": torch.zeros(1)}, str(path), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(CheckpointError, match="badjson.safetensors: corrupt checkpoint metadata"):
        load_checkpoint(path)


def test_unsupported_format_version(tmp_path):
    model = trained_looking_model()
    meta = {**build_meta(model, CONFIG, STATS), "format_version": 99}
    path = tmp_path / "future.safetensors"
    save_checkpoint(path, model, meta)
    with pytest.raises(CheckpointError, match="future.safetensors: unsupported checkpoint format"):
        load_checkpoint(path)


def test_weights_from_a_different_architecture(tmp_path):
    model = trained_looking_model()
    # metadata claims widths [8, 32], but the tensors are from a [8, 16] model
    claimed = replace(CONFIG, model=replace(CONFIG.model, widths=(8, 32)))
    path = tmp_path / "mismatch.safetensors"
    save_checkpoint(path, model, build_meta(model, claimed, STATS))
    with pytest.raises(CheckpointError, match=r"mismatch.safetensors: weights do not match the model \(shape of"):
        load_checkpoint(path)


def test_weights_with_missing_layers(tmp_path):
    model = trained_looking_model()
    claimed = replace(CONFIG, model=replace(CONFIG.model, widths=(8, 16, 32)))
    path = tmp_path / "missing.safetensors"
    save_checkpoint(path, model, build_meta(model, claimed, STATS))
    with pytest.raises(CheckpointError, match=r"do not match the model \(missing \["):
        load_checkpoint(path)


def test_metadata_naming_an_unknown_model(tmp_path):
    model = trained_looking_model()
    meta = build_meta(model, CONFIG, STATS)
    meta["config"]["model"]["name"] = "resnet9000"
    path = tmp_path / "unknown.safetensors"
    save_checkpoint(path, model, meta)
    message = r"unknown.safetensors: bad checkpoint metadata, field 'config': model.name: unknown value 'resnet9000'"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_metadata_with_unknown_config_key(tmp_path):
    model = trained_looking_model()
    meta = build_meta(model, CONFIG, STATS)
    meta["config"]["train"]["warp_drive"] = True
    path = tmp_path / "newer.safetensors"
    save_checkpoint(path, model, meta)
    with pytest.raises(CheckpointError, match="newer.safetensors: .*warp_drive"):
        load_checkpoint(path)


def _save_with_preprocessing(path, change) -> pathlib.Path:
    model = trained_looking_model()
    meta = build_meta(model, CONFIG, STATS)
    change(meta["preprocessing"])
    save_checkpoint(path, model, meta)
    return path


def test_checkpoints_record_the_face_crop_their_model_expects(saved):
    saved, _ = saved
    assert read_meta(saved)["preprocessing"]["face_crop"] == DEFAULT_FACE_CROP.to_dict()
    assert load_checkpoint(saved).face_crop == DEFAULT_FACE_CROP


def test_checkpoints_from_before_face_crop_load_with_the_default(tmp_path):
    old = _save_with_preprocessing(tmp_path / "old.safetensors", lambda p: p.pop("face_crop"))
    assert load_checkpoint(old).face_crop == DEFAULT_FACE_CROP


def test_an_unusable_face_crop_is_a_checkpoint_error(tmp_path):
    bad = _save_with_preprocessing(tmp_path / "bad.safetensors", lambda p: p.update(face_crop={"method": "blur"}))
    with pytest.raises(CheckpointError, match="face_crop.*unknown crop method 'blur'"):
        load_checkpoint(bad).face_crop


def test_a_face_pretrained_backbone_names_its_template():
    model = create_model(replace(CONFIG.model, name="mobilenet_v2"))
    assert face_crop_for(model) == DEFAULT_FACE_CROP  # an ImageNet backbone names none
    model.spec = replace(model.spec, face_template="dlib_150")
    assert face_crop_for(model) == FaceCropSpec("aligned", "dlib_150")
    assert face_crop_for(create_model(CONFIG.model)) == DEFAULT_FACE_CROP


def test_a_full_disk_while_saving_is_one_error_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import agegender.models.checkpoint as checkpoint

    model = create_model(ModelConfig(widths=(8, 16)))
    meta = build_meta(model, RunConfig(), label_stats={"age_mean": 30.0})
    path = tmp_path / "best.safetensors"
    save_checkpoint(path, model, meta)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):  # what safetensors raises on ENOSPC
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(WriteError, match="best.safetensors: cannot write .*No space left on device") as error:
        save_checkpoint(path, model, meta)
    assert "\n" not in str(error.value) and path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]  # no temporary left
