"""Two-phase fine-tuning of a pretrained backbone on tiny synthetic data (random 'ImageNet' weights)."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from agegender.config import ModelConfig
from agegender.data.dataset import prepare_data
from agegender.models.checkpoint import load_checkpoint
from agegender.models.pretrained import load_pretrained_weights
from agegender.models.registry import create_model
from agegender.training.callbacks import HistoryCSV
from agegender.training.engine import evaluate, plan_phases
from agegender.training.fit import RunError, fit, resume
from agegender.training.losses import MultiTaskLoss
from agegender.training.resume_points import load_training_state
from agegender.training.sources import CachedBatches, FinetuneError, FromBlock, ImageBatches, cache_activations
from tests.models.test_pretrained import write_random_weights
from tests.training.test_fit import averaged_weights, steps_per_epoch

QUIET = Console(file=io.StringIO())


@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "lite0.pth"
    write_random_weights("efficientnet_lite0", path)
    return path


def lite0_config(make_config, utkface, cache_dir, weights, **train):
    config = make_config(utkface.path, cache_dir, epochs=1, **{"feature_views": 2, **train})
    return replace(config, model=ModelConfig(name="efficientnet_lite0", head_hidden=8, weights=str(weights), unfreeze_blocks=2))


def test_two_phase_run_writes_phases_and_a_loadable_checkpoint(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights)
    result = fit(config, tmp_path / "run", console=QUIET)
    rows = HistoryCSV(tmp_path / "run" / "history.csv").rows()
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "phase1"), ("2", "phase2")]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [p["name"] for p in metrics["phases"]] == ["phase1", "phase2"]
    assert metrics["phases"][0]["trainable_parameters"] < metrics["phases"][1]["trainable_parameters"]
    assert metrics["feature_cache_seconds"] > 0 and "cache_seconds" not in metrics["phases"][1]  # built with phase 1's
    assert set(metrics["timing"]["ms_per_step_by_phase"]) == {"phase1", "phase2"}
    assert result.best_epoch in (1, 2)
    loaded = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert loaded.config.model.name == "efficientnet_lite0"

    # --resume with more epochs continues phase 2 (its limit follows train.epochs) and keeps the history
    resume(tmp_path / "run", epochs=2, console=QUIET)
    rows = HistoryCSV(tmp_path / "run" / "history.csv").rows()
    assert [r["phase"] for r in rows] == ["phase1", "phase2", "phase2"]


@pytest.mark.parametrize("killed_at", ["state", "best"])
def test_two_phase_run_killed_between_its_writes_resumes_consistently(
    killed_at, make_config, utkface, cache_dir, lite0_weights, tmp_path, monkeypatch
):
    from agegender.training import fit as fit_module
    from tests.training.test_fit import assert_same_weights, kill_before_best_write, kill_before_state_write

    config = lite0_config(make_config, utkface, cache_dir, lite0_weights)
    fit(config, tmp_path / "straight", console=QUIET)
    if killed_at == "state":  # phase 2's only epoch: its weights written, its state not
        kill_before_state_write(monkeypatch, at_call=2)
        expected_note = "is not the file the training state of epoch 1 was saved with"
    else:  # phase 1's state written, its best checkpoint (which phase 2 starts from) not
        kill_before_best_write(monkeypatch, fit_module)
        expected_note = "best.safetensors: rewritten with the weights of epoch 1"
    with pytest.raises(SystemExit):
        fit(config, tmp_path / "killed", console=QUIET)
    monkeypatch.undo()
    output = io.StringIO()
    resume(tmp_path / "killed", console=Console(file=output, width=400))
    assert expected_note in output.getvalue()
    rows = HistoryCSV(tmp_path / "killed" / "history.csv").rows()
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "phase1"), ("2", "phase2")]
    for name in ("last.safetensors", "best.safetensors"):
        straight, resumed = (load_file(str(tmp_path / run / name)) for run in ("straight", "killed"))
        assert_same_weights(resumed, straight)


def test_each_phase_warms_up_its_own_fresh_optimizer(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights, warmup_steps=1000)
    fit(config, tmp_path / "run", console=QUIET)
    state = load_training_state(tmp_path / "run" / "last_state.pt")
    assert state["phase_index"] == 1  # saved by phase 2, whose warm-up started again from step 0
    assert state["warmup"]["done"] == steps_per_epoch(config)


def test_heads_average_is_saved_as_best_without_changing_training(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights)
    config = replace(config, model=replace(config.model, unfreeze_blocks=0))  # phase 1 only
    fit(config, tmp_path / "plain", console=QUIET)
    fit(replace(config, train=replace(config.train, ema_decay=0.9)), tmp_path / "ema", console=QUIET)
    plain, ema = (load_file(str(tmp_path / name / "last.safetensors")) for name in ("plain", "ema"))
    assert all(torch.equal(plain[key], ema[key]) for key in plain)  # the average never feeds back
    averaged = averaged_weights(load_training_state(tmp_path / "ema" / "last_state.pt")["weight_average"])
    best = load_file(str(tmp_path / "ema" / "best.safetensors"))
    assert all(torch.equal(best[key], averaged[key]) for key in best)
    assert any(not torch.equal(best[key], ema[key]) for key in best)


def test_each_phase_starts_its_own_average(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights, ema_decay=0.9)
    fit(config, tmp_path / "run", console=QUIET)
    state = load_training_state(tmp_path / "run" / "last_state.pt")
    assert state["phase_index"] == 1  # saved by phase 2, whose average counts its own steps only
    assert int(state["weight_average"]["n_averaged"]) == steps_per_epoch(config)


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_torchvision_layout_backbones_fine_tune_in_two_phases(name, make_config, utkface, cache_dir, tmp_path):
    path = tmp_path / f"{name}.pth"
    write_random_weights(name, path)
    config = make_config(utkface.path, cache_dir, epochs=1, feature_views=1)
    config = replace(config, model=ModelConfig(name=name, head_hidden=8, weights=str(path), unfreeze_blocks=1))
    fit(config, tmp_path / "run", console=QUIET)
    assert [r["phase"] for r in HistoryCSV(tmp_path / "run" / "history.csv").rows()] == ["phase1", "phase2"]
    assert load_checkpoint(tmp_path / "run" / "best.safetensors").config.model.name == name


def test_two_phase_run_is_reproducible_with_dropout(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights)
    assert config.model.dropout > 0
    for name in ("first", "second"):
        torch.manual_seed(len(name))  # whatever the caller's RNG holds
        fit(config, tmp_path / name, console=QUIET)
    first, second = (load_file(str(tmp_path / name / "last.safetensors")) for name in ("first", "second"))
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_phase1_freezes_the_backbone_and_trains_only_heads(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights)
    config = replace(config, model=replace(config.model, unfreeze_blocks=0))
    fit(config, tmp_path / "run", console=QUIET)
    from agegender.models.pretrained import load_backbone_state

    trained = load_checkpoint(tmp_path / "run" / "best.safetensors").model
    imagenet, _ = load_backbone_state("efficientnet_lite0", lite0_weights)
    for key, tensor in trained.backbone.state_dict().items():
        assert torch.equal(tensor, imagenet[key]), key
    assert [r["phase"] for r in HistoryCSV(tmp_path / "run" / "history.csv").rows()] == ["phase1"]


@pytest.mark.parametrize("first_trained_block", [18, 16])  # pooled features; activations before two blocks
def test_cached_evaluation_equals_the_full_model(make_config, utkface, cache_dir, first_trained_block):
    config = make_config(utkface.path, cache_dir)
    data = prepare_data(config.data)
    from agegender.models import create_model

    model = create_model(ModelConfig(name="efficientnet_lite0", head_hidden=8)).eval()
    loss_fn = MultiTaskLoss(1.0, 0.1, 0.0)
    cache = cache_activations(model, data.val.images, (first_trained_block,), 1, config.augment, torch.Generator(), True)
    cached_source = CachedBatches(cache[first_trained_block], data.val, True, torch.device("cpu"))
    cached = evaluate(FromBlock(model, first_trained_block), cached_source, loss_fn)
    full = evaluate(model, ImageBatches(data.val, None, True, torch.device("cpu")), loss_fn)
    assert cached.loss == pytest.approx(full.loss, rel=1e-5)
    assert cached.age_mae == pytest.approx(full.age_mae, rel=1e-5)


def test_unfreezing_more_blocks_than_exist_is_a_clear_error(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights)
    config = replace(config, model=replace(config.model, unfreeze_blocks=19))
    from agegender.models import create_model

    with pytest.raises(FinetuneError, match=r"unfreeze_blocks=19.*efficientnet_lite0 backbone has 18 blocks.*0\.\.18"):
        plan_phases(create_model(config.model), config)
    with pytest.raises(FinetuneError, match="unfreeze_blocks=19"):
        fit(config, tmp_path / "run", console=QUIET)
    assert not (tmp_path / "run").exists()  # refused before decoding data or creating the run


def test_resume_of_a_run_from_another_model_is_refused(trained_run):
    with pytest.raises(RunError, match="trained with model 'custom', not 'efficientnet_lite0'"):
        resume(trained_run.run_dir, model="efficientnet_lite0", console=QUIET)


def test_compile_of_a_two_phase_run_is_refused(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights, compile=True)
    with pytest.raises(RunError, match="train.compile applies to Model A"):
        fit(config, tmp_path / "run", console=QUIET)
    assert not (tmp_path / "run").exists()


def test_weights_for_a_model_without_pretrained_backbone_is_refused(make_config, utkface, cache_dir, tmp_path):
    config = make_config(utkface.path, cache_dir)
    config = replace(config, model=replace(config.model, weights=str(tmp_path / "w.pth")))
    with pytest.raises(RunError, match="no pretrained backbone"):
        fit(config, tmp_path / "run", console=QUIET)
    assert not (tmp_path / "run").exists()


def test_train_command_trains_and_resumes_a_pretrained_model(utkface, cache_dir, lite0_weights, tmp_path):
    """`agegender train --model efficientnet_lite0`, then `--resume RUN` without repeating --model."""
    from typer.testing import CliRunner

    from agegender.cli import app

    common = ["--epochs", "1", "--image-size", "32", "--batch-size", "16", "--set", f"data.cache_dir={cache_dir}",
              "--set", "train.feature_views=1", "--set", "model.head_hidden=8", "--set", "model.unfreeze_blocks=1"]  # fmt: skip
    run = tmp_path / "run"
    first = CliRunner().invoke(app, ["train", "--data", str(utkface.path), "--model", "efficientnet_lite0",
                                     "--weights", str(lite0_weights), "--out", str(run), *common])  # fmt: skip
    assert first.exit_code == 0, first.output
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert [r["phase"] for r in HistoryCSV(run / "history.csv").rows()] == ["phase1", "phase2", "phase2"]


def test_mixup_blends_cached_activations_in_both_phases(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights, mixup_alpha=0.4)
    fit(config, tmp_path / "run", console=QUIET)
    rows = HistoryCSV(tmp_path / "run" / "history.csv").rows()
    assert [r["phase"] for r in rows] == ["phase1", "phase2"]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)


def dlib_config(make_config, utkface, cache_dir, weights, image_size: int = 104):
    """dlib_resnet needs at least 103 px; unfreeze_blocks=2: the last down-sampling block and the embedding."""
    config = make_config(utkface.path, cache_dir, epochs=1, feature_views=1)
    return replace(
        config,
        data=replace(config.data, image_size=image_size),
        model=ModelConfig(name="dlib_resnet", head_hidden=8, weights=str(weights), unfreeze_blocks=2),
    )


def test_dlib_resnet_fine_tunes_in_two_phases_from_its_dat(make_config, utkface, cache_dir, tmp_path):
    from tests.models.test_dlib_resnet import write_dlib_resnet_dat

    face_net = write_dlib_resnet_dat(tmp_path / "face.dat")
    fit(dlib_config(make_config, utkface, cache_dir, tmp_path / "face.dat"), tmp_path / "run", console=QUIET)
    rows = HistoryCSV(tmp_path / "run" / "history.csv").rows()
    assert [r["phase"] for r in rows] == ["phase1", "phase2"]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    trained = load_checkpoint(tmp_path / "run" / "last.safetensors").model
    frozen = face_net.state_dict()
    for key, tensor in trained.backbone.state_dict().items():  # blocks 0-13 frozen; 14-15 trained
        trained_here = int(key.split(".")[0]) >= 14 and key.endswith(("weight", "bias"))  # affine stats stay fixed
        assert torch.equal(tensor, frozen[key]) != trained_here, key


def test_dlib_resnet_refuses_images_smaller_than_it_accepts(make_config, utkface, cache_dir, tmp_path):
    config = dlib_config(make_config, utkface, cache_dir, tmp_path / "unused.dat", image_size=96)
    with pytest.raises(RunError, match=r"data.image_size=96 is too small for dlib_resnet: it needs at least 103 px"):
        fit(config, tmp_path / "run", console=QUIET)
    assert not (tmp_path / "run").exists()


def test_cydral_age_backbone_fine_tunes_from_a_stand_in_onnx(make_config, utkface, cache_dir, tmp_path, monkeypatch):
    """The ONNX-converted face backbone goes through both phases like the torchvision ones (32 px input)."""
    from tests.models.test_cydral_resnet import random_state, write_age_onnx

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the conversion's cache
    state = random_state()
    path = write_age_onnx(state, tmp_path / "age-v1.onnx")
    config = make_config(utkface.path, cache_dir, epochs=1, feature_views=1)
    config = replace(config, model=ModelConfig(name="cydral_resnet10", head_hidden=8, weights=str(path), unfreeze_blocks=2))
    fit(config, tmp_path / "run", console=QUIET)
    assert [r["phase"] for r in HistoryCSV(tmp_path / "run" / "history.csv").rows()] == ["phase1", "phase2"]
    trained = load_checkpoint(tmp_path / "run" / "best.safetensors").model.backbone.state_dict()
    assert all(torch.equal(trained[k], state[k]) for k in state if int(k.split(".")[0]) < 5)  # frozen prefix
    last = load_checkpoint(tmp_path / "run" / "last.safetensors").model.backbone.state_dict()
    assert not torch.equal(last["6.classifier.weight"], state["6.classifier.weight"])  # phase 2 trained it


def test_end_to_end_phase_trains_every_block_on_images_after_the_two_phases(
    make_config, utkface, cache_dir, lite0_weights, tmp_path
):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights, end_to_end_epochs=1, end_to_end_lr=1e-3)
    fit(config, tmp_path / "run", console=QUIET)
    rows = HistoryCSV(tmp_path / "run" / "history.csv").rows()
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "phase1"), ("2", "phase2"), ("3", "end_to_end")]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    phase2, end_to_end = metrics["phases"][1:]
    total = sum(t.numel() for t in load_file(str(tmp_path / "run" / "last.safetensors")).values()
                if t.is_floating_point())  # fmt: skip
    assert phase2["trainable_parameters"] < end_to_end["trainable_parameters"] <= total
    assert end_to_end["lr"] == 1e-3
    pretrained = create_model(config.model)
    load_pretrained_weights(pretrained, config.model)
    stem = pretrained.backbone[0].state_dict()  # frozen in phases 1 and 2, trained in the end-to-end phase
    last = load_file(str(tmp_path / "run" / "last.safetensors"))
    changed = {name for name, value in stem.items() if not torch.equal(last[f"backbone.0.{name}"], value)}
    assert changed == {"0.weight", "1.weight", "1.bias"}  # its convolution and BatchNorm's affine, not the statistics
    assert load_checkpoint(tmp_path / "run" / "last.safetensors").meta["phase"] == "end_to_end"


def test_end_to_end_only_run_starts_from_its_init_checkpoint(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights)
    fit(config, tmp_path / "two_phase", console=QUIET)
    init = str(tmp_path / "two_phase" / "best.safetensors")
    config = replace(config, model=replace(config.model, unfreeze_blocks=0),
                     train=replace(config.train, epochs=0, end_to_end_epochs=1, init_from=init))  # fmt: skip
    fit(config, tmp_path / "run", console=QUIET)
    rows = HistoryCSV(tmp_path / "run" / "history.csv").rows()
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "end_to_end")]
    resume(tmp_path / "run", console=QUIET)  # nothing left: the same history
    assert len(HistoryCSV(tmp_path / "run" / "history.csv").rows()) == 1


def test_a_run_without_epochs_in_any_phase_is_one_error(make_config, utkface, cache_dir, lite0_weights, tmp_path):
    config = lite0_config(make_config, utkface, cache_dir, lite0_weights)
    config = replace(config, model=replace(config.model, unfreeze_blocks=0), train=replace(config.train, epochs=0))
    with pytest.raises(FinetuneError, match=r"no epochs to train in any phase \(phase1\): raise train.epochs"):
        fit(config, tmp_path / "run", console=QUIET)
