from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from agegender.config import DataConfig, ModelConfig, RunConfig
from agegender.export.half import save_half_checkpoint
from agegender.export.onnx import export_onnx
from agegender.models.checkpoint import (
    CheckpointError,
    build_meta,
    load_checkpoint,
    save_checkpoint,
    save_ensemble_checkpoint,
)
from agegender.models.ensemble import AreaResize, EnsembleNet, area_resize_matrix
from agegender.models.registry import create_model
from agegender.training.resume_points import init_from_checkpoint


def member_checkpoint(folder, name: str, size: int, seed: int, **data_changes):
    """A tiny custom CNN at `size` px with random (seeded) weights and non-default BatchNorm stats."""
    config = RunConfig(data=DataConfig(image_size=size, **data_changes), model=ModelConfig(widths=(8, 16), head_hidden=16))
    torch.manual_seed(seed)
    model = create_model(config.model).train()
    with torch.no_grad():
        model(torch.rand(4, 3, size, size))
    path = folder / f"{name}.safetensors"
    save_checkpoint(path, model.eval(), build_meta(model, config, {"age_mean": 30.0 + seed}))
    return path, model


@pytest.fixture
def members(tmp_path):
    return [member_checkpoint(tmp_path, "small", 16, seed=1), member_checkpoint(tmp_path, "large", 32, seed=2)]


def test_area_matrix_rows_average_the_covered_pixels():
    rows = area_resize_matrix(160, 64)
    torch.testing.assert_close(rows.sum(1), torch.ones(64))
    torch.testing.assert_close(rows[0, :4], torch.tensor([0.4, 0.4, 0.2, 0.0]))  # pixels 0, 1 and half of 2
    torch.testing.assert_close(rows[1, :6], torch.tensor([0.0, 0.0, 0.2, 0.4, 0.4, 0.0]))
    torch.testing.assert_close(area_resize_matrix(4, 2), torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="shrinks only"):
        area_resize_matrix(32, 64)


def test_area_resize_matches_pillow_box_for_whole_pixel_factors():
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BOX), dtype=np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    ours = AreaResize(48, 16)(x)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - pillow).max() <= 1.0  # Pillow rounds to uint8 after each of its two passes


def test_ensemble_averages_probabilities_and_ages_of_resized_inputs(members):
    (_, small), (_, large) = members
    ensemble = EnsembleNet([small, large], [16, 32]).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = ensemble(x)
        a, b = small(AreaResize(32, 16)(x)), large(x)
    torch.testing.assert_close(out.age, (a.age + b.age) / 2)
    torch.testing.assert_close(torch.sigmoid(out.gender_logit), (torch.sigmoid(a.gender_logit) + torch.sigmoid(b.gender_logit)) / 2)
    assert ensemble.input_size == 32


def test_ensemble_checkpoint_round_trips_and_exports_to_onnx(members, tmp_path):
    (small_path, small), (large_path, large) = members
    out = save_ensemble_checkpoint([small_path, large_path], tmp_path / "ensemble.safetensors")
    loaded = load_checkpoint(out)
    assert loaded.image_size == 32 and isinstance(loaded.model, EnsembleNet)
    assert loaded.meta["label_stats"] == {"age_mean": 32.0}  # the largest member's
    assert [m["source"] for m in loaded.meta["ensemble"]] == [str(small_path), str(large_path)]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).age, EnsembleNet([small, large], [16, 32]).eval()(x).age)
    half = load_checkpoint(save_half_checkpoint(out, tmp_path / "half.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(half.model(x).age, loaded.model(x).age, atol=0.05, rtol=0)
    report = export_onnx(out, tmp_path / "ensemble.onnx")
    assert report.max_age_diff < 1e-3 and report.max_p_female_diff < 1e-4


def test_bad_ensembles_get_one_clear_error(members, tmp_path):
    (small_path, _), (large_path, _) = members
    with pytest.raises(CheckpointError, match="two or more"):
        save_ensemble_checkpoint([small_path], tmp_path / "one.safetensors")
    config = RunConfig(data=DataConfig(image_size=32, seed=7), model=ModelConfig(widths=(8, 16), head_hidden=16))
    model = create_model(config.model)
    other_split = tmp_path / "other_split.safetensors"
    save_checkpoint(other_split, model, build_meta(model, config, {}))
    with pytest.raises(CheckpointError, match=r"small.safetensors: trained on another data split than .*other_split.safetensors \(not the same: data\.seed\)"):
        save_ensemble_checkpoint([small_path, other_split], tmp_path / "mixed.safetensors")
    ensemble = save_ensemble_checkpoint([small_path, large_path], tmp_path / "ensemble.safetensors")
    with pytest.raises(CheckpointError, match="cannot start a run"):
        init_from_checkpoint(create_model(ModelConfig(widths=(8, 16))), ensemble, "custom")
    for weights in ([1.0], [1.0, -1.0], [0.0, 0.0], [float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(CheckpointError, match=r"weighted.safetensors: need 2 finite non-negative member weights"):
            save_ensemble_checkpoint([small_path, large_path], tmp_path / "weighted.safetensors", age_weights=weights)


def test_member_weights_choose_which_member_answers_each_task(members):
    (_, small), (_, large) = members
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        only_large_gender = EnsembleNet([small, large], [16, 32], gender_weights=[0, 1], age_weights=[3, 1]).eval()(x)
        small_out, large_out = small.eval()(AreaResize(32, 16)(x)), large.eval()(x)
    torch.testing.assert_close(torch.sigmoid(only_large_gender.gender_logit), torch.sigmoid(large_out.gender_logit))
    torch.testing.assert_close(only_large_gender.age, 0.75 * small_out.age + 0.25 * large_out.age)


def test_members_weighted_zero_for_both_tasks_are_left_out(members, tmp_path):
    (small_path, _), (large_path, _) = members
    pair = save_ensemble_checkpoint([small_path, large_path], tmp_path / "pair.safetensors")
    out = save_ensemble_checkpoint(
        [pair, large_path], tmp_path / "two.safetensors", gender_weights=[0, 1, 1], age_weights=[0, 1, 3]
    )
    loaded = load_checkpoint(out)
    assert [m["source"] for m in loaded.meta["ensemble"]] == [str(large_path), str(large_path)]
    assert loaded.meta["ensemble_weights"] == {"gender": [0.5, 0.5], "age": [0.25, 0.75]}
    with pytest.raises(CheckpointError, match="two or more checkpoints"):
        save_ensemble_checkpoint([pair], tmp_path / "one.safetensors", gender_weights=[0, 1], age_weights=[0, 1])


def test_an_ensemble_extends_another_with_its_members_and_keeps_the_weights(members, tmp_path):
    (small_path, _), (large_path, _) = members
    pair = save_ensemble_checkpoint([small_path, large_path], tmp_path / "pair.safetensors")
    trio = save_ensemble_checkpoint([pair, small_path], tmp_path / "trio.safetensors", gender_weights=[1, 2, 1])
    loaded = load_checkpoint(trio)
    assert [m["source"] for m in loaded.meta["ensemble"]] == [str(small_path), str(large_path), str(small_path)]
    assert loaded.meta["ensemble_weights"]["gender"] == pytest.approx([0.25, 0.5, 0.25])
    assert loaded.model.gender_weights.tolist() == pytest.approx([0.25, 0.5, 0.25])
    for member, source in zip(loaded.model.members, (small_path, large_path, small_path)):
        original = load_checkpoint(source).model.state_dict()
        assert all(torch.equal(member.state_dict()[k], original[k]) for k in original)


def test_cli_ensemble_of_a_model_with_itself_evaluates_like_the_model(trained_run, run_cli, tmp_path):
    out = tmp_path / "cli_ensemble.safetensors"
    code, stdout, _ = run_cli("ensemble", trained_run.best, trained_run.best, "--out", out)
    assert code == 0 and "ensemble of 2 models" in stdout and "(gender weight 0.500, age weight 0.500)" in stdout
    reports = []
    for model in (trained_run.best, out):
        code, stdout, stderr = run_cli("evaluate", "--data", trained_run.data.path, "--model", model, "--json")
        assert code == 0, stderr
        reports.append(json.loads(stdout))
    assert reports[1]["gender_accuracy"] == reports[0]["gender_accuracy"]
    assert reports[1]["age_mae"] == pytest.approx(reports[0]["age_mae"], abs=1e-4)
    code, _, stderr = run_cli("ensemble", trained_run.best, tmp_path / "missing.safetensors", "--out", out)
    assert code != 0 and "missing.safetensors: checkpoint not found" in stderr
    code, _, stderr = run_cli("ensemble", trained_run.best, trained_run.best, "--out", out, "--age-weights", "1,x")
    assert code == 2 and "--age-weights takes comma-separated numbers" in stderr
