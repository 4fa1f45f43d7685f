from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from agegender.config import ConfigError, load_config
from agegender.data.dataset import prepare_data
from agegender.models.checkpoint import CheckpointError, load_checkpoint, read_meta
from agegender.models.registry import create_model
from agegender.training import engine
from agegender.training import fit as fit_module
from agegender.training.callbacks import HISTORY_COLUMNS, HistoryCSV
from agegender.training.distributed import DistributedContext
from agegender.training.fit import RunError, fit, resume
from agegender.training.loop import batch_indices
from agegender.training.results import FitMetrics
from agegender.training.resume_points import init_from_checkpoint, load_training_state


def quiet() -> Console:
    return Console(file=io.StringIO())


def steps_per_epoch(config) -> int:
    """Optimizer steps in one epoch: every batch but a single-image tail (BatchNorm cannot train on it)."""
    n = len(prepare_data(config.data).train)
    return sum(1 for batch in batch_indices(n, config.train.batch_size, None) if len(batch) >= 2)


def averaged_weights(saved_average: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model weights inside a saved AveragedModel state (last_state.pt's "weight_average")."""
    return {key.removeprefix("module."): value for key, value in saved_average.items() if key.startswith("module.")}


def history(run_dir) -> list[dict[str, str]]:
    return HistoryCSV(run_dir / "history.csv").rows()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_run_directory_contents(trained_run):
    run_dir, config = trained_run.run_dir, trained_run.config
    assert load_config(run_dir / "config.yaml") == config
    header = (run_dir / "history.csv").read_text().splitlines()[0]
    assert header.split(",") == list(HISTORY_COLUMNS)
    rows = history(run_dir)
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "train"), ("2", "train")]
    assert all(float(r["seconds"]) > 0 and float(r["lr"]) > 0 for r in rows)
    for name in ("best.safetensors", "last.safetensors", "last_state.pt", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_metrics_json(trained_run):
    metrics = json.loads((trained_run.run_dir / "metrics.json").read_text())
    assert metrics["stopped_epoch"] == 2
    assert metrics["best_epoch"] in (1, 2)
    assert metrics["early_stopped"] is False
    sizes = metrics["split_sizes"]
    assert sizes["train"] + sizes["val"] + sizes["test"] == len(trained_run.data.parsed) - 2
    assert metrics["val"]["n"] == sizes["val"] and metrics["test"]["n"] == sizes["test"]
    for key in ("gender_accuracy", "age_mae", "cs5", "per_race", "per_gender", "per_age_band"):
        assert key in metrics["val"]
    assert metrics["model"]["feature_map"] == [16, 8, 8]
    assert metrics["model"]["name"] == "custom"
    assert set(metrics["timing"]) >= {"median_epoch_seconds", "ms_per_step", "total_seconds"}
    assert "2 unreadable images skipped" in metrics["data_summary"]


def test_fit_result_metrics_are_typed_and_are_what_metrics_json_holds(utkface, cache_dir, make_config, tmp_path):
    result = fit(make_config(utkface.path, cache_dir, epochs=1), tmp_path / "run", console=quiet())
    assert isinstance(result.metrics.val.gender_accuracy, float)
    assert isinstance(result.metrics.test.per_gender["female"].n, int)
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert FitMetrics.from_dict(saved) == result.metrics
    assert FitMetrics.from_dict(saved).to_dict() == saved


def test_checkpoints_describe_themselves(trained_run):
    metrics = json.loads((trained_run.run_dir / "metrics.json").read_text())
    best = read_meta(trained_run.run_dir / "best.safetensors")
    last = read_meta(trained_run.run_dir / "last.safetensors")
    assert best["epoch"] == metrics["best_epoch"] and last["epoch"] == 2
    assert best["label_stats"]["n_train"] == metrics["split_sizes"]["train"]
    assert best["preprocessing"]["image_size"] == 32
    assert load_checkpoint(trained_run.best).config == trained_run.config
    assert load_training_state(trained_run.run_dir / "last_state.pt")["epoch"] == 2


def test_early_stopping_restores_the_best_weights(utkface, cache_dir, make_config, tmp_path, monkeypatch):
    # min_delta so large that nothing after epoch 1 counts as an improvement: stop after epoch 2, best is 1
    config = make_config(utkface.path, cache_dir, epochs=3, early_stopping_patience=1, min_delta=1e9)
    measured = []
    real_split_report = fit_module.split_report

    def recording_split_report(model, arrays, channels_last, read=None):
        measured.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_split_report(model, arrays, channels_last, read)

    monkeypatch.setattr(fit_module, "split_report", recording_split_report)
    result = fit(config, tmp_path / "run", console=quiet())
    assert (result.best_epoch, result.stopped_epoch) == (1, 2)
    assert result.metrics.early_stopped is True
    assert [r["epoch"] for r in history(tmp_path / "run")] == ["1", "2"]
    best = load_file(str(tmp_path / "run" / "best.safetensors"))
    last = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert len(measured) == 2  # val and test were measured ...
    for state in measured:  # ... with the best weights, not the last ones
        assert_same_weights(state, best)
    assert any(not torch.equal(best[k], last[k]) for k in best)


def test_resume_continues_the_epoch_numbering(utkface, cache_dir, make_config, tmp_path):
    run_dir = tmp_path / "run"
    config = make_config(utkface.path, cache_dir, epochs=1)
    fit(config, run_dir, console=quiet())
    assert [r["epoch"] for r in history(run_dir)] == ["1"]
    result = resume(run_dir, epochs=2, console=quiet())
    assert [r["epoch"] for r in history(run_dir)] == ["1", "2"]
    assert result.stopped_epoch == 2
    assert read_meta(run_dir / "last.safetensors")["epoch"] == 2
    assert load_config(run_dir / "config.yaml").train.epochs == 2


def test_resume_takes_a_new_thread_count_but_keeps_what_the_run_learns(trained_run):
    own = load_config(trained_run.run_dir / "config.yaml")
    resumed = fit_module.resume_config(trained_run.run_dir, threads=1, device="cpu")
    assert (resumed.train.threads, resumed.train.device) == (1, "cpu")
    assert replace(resumed, train=replace(resumed.train, threads=own.train.threads, device=own.train.device)) == own
    assert fit_module.resume_config(trained_run.run_dir) == own


def test_resume_without_epochs_never_stretches_a_short_run(trained_run, tmp_path):
    # A default RunConfig says 30 epochs; resuming a finished 1-epoch run must not read that as a request.
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    epochs = load_config(run_dir / "config.yaml").train.epochs
    result = resume(run_dir, console=quiet())
    assert result.stopped_epoch == epochs
    assert len(history(run_dir)) == epochs


def test_resume_cannot_shorten_a_run(trained_run):
    epochs = load_config(trained_run.run_dir / "config.yaml").train.epochs
    with pytest.raises(RunError, match=f"set to {epochs} epochs; a resume can add epochs, not remove them"):
        fit_module.resume_config(trained_run.run_dir, epochs=epochs - 1)


def test_same_command_same_weights_and_the_callers_rng_is_left_alone(utkface, cache_dir, make_config, tmp_path):
    config = make_config(utkface.path, cache_dir, epochs=1)
    assert config.model.dropout > 0  # dropout draws from torch's global RNG, which fit() seeds per run
    before = torch.get_rng_state()
    for name in ("first", "second"):
        torch.manual_seed(len(name))  # whatever the caller's RNG holds
        fit(config, tmp_path / name, console=quiet())
    assert_same_weights(load_file(str(tmp_path / "first" / "last.safetensors")), load_file(str(tmp_path / "second" / "last.safetensors")))
    torch.set_rng_state(before)
    fit(config, tmp_path / "third", console=quiet())
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_interrupted_run_resumes_to_the_same_weights(ema_decay, utkface, cache_dir, make_config, tmp_path, monkeypatch):
    # With dropout on: the global RNG state travels in last_state.pt, so the interrupted-and-resumed
    # run must match an uninterrupted one exactly; so does the weight average (train.ema_decay).
    config = make_config(utkface.path, cache_dir, epochs=2, ema_decay=ema_decay)
    fit(config, tmp_path / "straight", console=quiet())

    real_train_epoch = engine.train_epoch
    calls = []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # after the first optimizer step of epoch 2, as if Ctrl-C arrived
            kwargs["on_batch"] = lambda n, means: (_ for _ in ()).throw(KeyboardInterrupt())
        return real_train_epoch(*args, **kwargs)

    monkeypatch.setattr(engine, "train_epoch", interrupted_in_epoch_2)
    run_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        fit(config, run_dir, console=quiet())
    assert [r["epoch"] for r in history(run_dir)] == ["1"]
    assert load_training_state(run_dir / "last_state.pt")["epoch"] == 1
    assert not (run_dir / "metrics.json").exists()

    monkeypatch.setattr(engine, "train_epoch", real_train_epoch)
    result = resume(run_dir, console=quiet())
    assert result.stopped_epoch == 2
    assert [r["epoch"] for r in history(run_dir)] == ["1", "2"]
    assert (run_dir / "metrics.json").exists()
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_weights(load_file(str(run_dir / name)), load_file(str(tmp_path / "straight" / name)))


def kill_before_state_write(monkeypatch, at_call: int) -> None:
    """The `at_call`-th last_state.pt write dies after last.safetensors was written, as a kill would."""
    from agegender.training import resume_points

    real_save, calls = resume_points.save_training_state, []

    def save_or_die(path, state):
        calls.append(1)
        if len(calls) == at_call:
            raise SystemExit("killed between the weights and the state")
        real_save(path, state)

    monkeypatch.setattr(resume_points, "save_training_state", save_or_die)


def test_kill_between_weights_and_state_resumes_from_the_state_and_says_so(
    utkface, cache_dir, make_config, tmp_path, monkeypatch
):
    config = make_config(utkface.path, cache_dir, epochs=2)
    fit(config, tmp_path / "straight", console=quiet())
    run_dir = tmp_path / "killed"
    kill_before_state_write(monkeypatch, at_call=2)
    with pytest.raises(SystemExit):
        fit(config, run_dir, console=quiet())
    monkeypatch.undo()
    # The mix the kill leaves: weights of epoch 2 beside the training state of epoch 1.
    assert read_meta(run_dir / "last.safetensors")["epoch"] == 2
    assert load_training_state(run_dir / "last_state.pt")["epoch"] == 1

    output = io.StringIO()
    result = resume(run_dir, console=Console(file=output, width=400))
    assert "is not the file the training state of epoch 1 was saved with" in output.getvalue()
    assert "resuming after epoch 1 from the weights inside the training state" in output.getvalue()
    assert result.stopped_epoch == 2 and [r["epoch"] for r in history(run_dir)] == ["1", "2"]
    for name in ("last.safetensors", "best.safetensors"):  # epoch 2 trained once, from epoch 1's weights
        assert_same_weights(load_file(str(run_dir / name)), load_file(str(tmp_path / "straight" / name)))


def kill_before_best_write(monkeypatch, module) -> None:
    """Make `module`'s save_checkpoint die when it comes to best.safetensors (a kill just before it)."""
    real_save = module.save_checkpoint

    def die_at_best(path, model, meta):
        if path.name == "best.safetensors":
            raise SystemExit("killed before the best checkpoint")
        real_save(path, model, meta)

    monkeypatch.setattr(module, "save_checkpoint", die_at_best)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_kill_before_the_best_checkpoint_is_repaired_from_the_state(
    ema_decay, utkface, cache_dir, make_config, tmp_path, monkeypatch
):
    # best.safetensors is written after the training state; a kill in between leaves the state of an
    # epoch that was the best without its best file (here: epoch 1, the first best, never written).
    config = make_config(utkface.path, cache_dir, epochs=2, ema_decay=ema_decay)
    fit(config, tmp_path / "straight", console=quiet())
    kill_before_best_write(monkeypatch, fit_module)
    run_dir = tmp_path / "killed"
    with pytest.raises(SystemExit):
        fit(config, run_dir, console=quiet())
    monkeypatch.undo()
    assert load_training_state(run_dir / "last_state.pt")["epoch"] == 1 and not (run_dir / "best.safetensors").exists()
    output = io.StringIO()
    resume(run_dir, console=Console(file=output, width=400))
    assert "best.safetensors: rewritten with the weights of epoch 1" in output.getvalue()
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_weights(load_file(str(run_dir / name)), load_file(str(tmp_path / "straight" / name)))


def test_run_saved_before_states_carried_weights_still_resumes(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    state = load_training_state(run_dir / "last_state.pt")
    del state["weights"], state["weights_sha256"]
    torch.save(state, run_dir / "last_state.pt")
    output = io.StringIO()
    result = resume(run_dir, epochs=state["epoch"] + 1, console=Console(file=output, width=400))
    assert "saved by an older version, so its match with last.safetensors cannot be checked" in output.getvalue()
    assert result.stopped_epoch == state["epoch"] + 1


def test_resume_with_a_different_model_is_refused(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    with pytest.raises(RunError, match="trained with model 'custom', not 'mobilenet_v2'"):
        resume(run_dir, model="mobilenet_v2", console=quiet())


def test_new_run_in_a_used_directory_is_refused(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    before = (run_dir / "history.csv").read_text()
    with pytest.raises(RunError, match="already holds a run; use --resume"):
        fit(trained_run.config, run_dir, console=quiet())
    assert (run_dir / "history.csv").read_text() == before


def test_resume_without_a_run(tmp_path, trained_run):
    with pytest.raises(RunError, match="nothing to resume"):
        resume(tmp_path / "empty", console=quiet())


def test_too_few_images(tmp_path, cache_dir, make_config, face_bytes):
    folder = tmp_path / "three"
    folder.mkdir()
    for i in range(3):  # 10% of 3 rounds to 0: no validation images
        (folder / f"{20 + i}_0_0_2017010100000000{i}.jpg.chip.jpg").write_bytes(face_bytes(20 + i, 0, seed=i))
    with pytest.raises(RunError, match="too few images to train"):
        fit(make_config(folder, cache_dir), tmp_path / "run", console=quiet())
    assert not (tmp_path / "run").exists()


def test_init_from_starts_a_new_run_from_a_checkpoint(trained_run, tmp_path):
    config = replace(trained_run.config, train=replace(trained_run.config.train, epochs=1, lr=0.0, weight_decay=0.0,
                                                       init_from=str(trained_run.best)))  # fmt: skip
    result = fit(config, tmp_path / "warm", console=quiet())
    # lr 0: the weights cannot move, so the new run must hold exactly the checkpoint's weights
    assert result.stopped_epoch == 1
    assert [r["epoch"] for r in history(tmp_path / "warm")] == ["1"]
    def learned(path) -> dict[str, torch.Tensor]:  # BatchNorm statistics still update at lr 0
        return {k: v for k, v in load_file(str(path)).items() if "running" not in k and "num_batches" not in k}

    assert_same_weights(learned(tmp_path / "warm" / "best.safetensors"), learned(trained_run.best))


def test_init_into_a_gender_head_that_sees_the_age_starts_from_the_checkpoints_predictions(trained_run, tmp_path):
    config = replace(trained_run.config, model=replace(trained_run.config.model, gender_sees_age=True))
    model = create_model(config.model).eval()
    init_from_checkpoint(model, trained_run.best, config.model.name)
    original = load_checkpoint(trained_run.best).model.eval()
    faces = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(faces).gender_logit, original(faces).gender_logit)
        torch.testing.assert_close(model(faces).age, original(faces).age)
    fit(replace(config, train=replace(config.train, epochs=1, init_from=str(trained_run.best))), tmp_path / "run", console=quiet())
    assert load_checkpoint(tmp_path / "run" / "best.safetensors").config.model.gender_sees_age


def test_init_from_a_checkpoint_of_another_model_is_refused(trained_run, tmp_path):
    config = replace(trained_run.config, train=replace(trained_run.config.train, init_from=str(trained_run.best)),
                     model=replace(trained_run.config.model, widths=(4, 8)))  # fmt: skip
    with pytest.raises(CheckpointError, match="weights do not match the model"):
        fit(config, tmp_path / "run", console=quiet())


def test_warmup_counts_optimizer_steps_across_a_resume(utkface, cache_dir, make_config, tmp_path):
    config = make_config(utkface.path, cache_dir, epochs=1, warmup_steps=1000)  # longer than the run
    fit(config, tmp_path / "run", console=quiet())
    after_one = load_training_state(tmp_path / "run" / "last_state.pt")["warmup"]["done"]
    assert after_one == steps_per_epoch(config)
    resume(tmp_path / "run", epochs=2, console=quiet())
    assert load_training_state(tmp_path / "run" / "last_state.pt")["warmup"]["done"] == 2 * after_one

    fit(replace(config, train=replace(config.train, warmup_steps=0)), tmp_path / "plain", console=quiet())
    warm, plain = (history(tmp_path / name)[0]["train_loss"] for name in ("run", "plain"))
    assert warm != plain  # same seed: only the learning rate of the first steps differs


def test_negative_warmup_is_refused_before_any_data_is_read(make_config, tmp_path):
    config = make_config(tmp_path / "no_such_folder", tmp_path / "cache", warmup_steps=-5)
    with pytest.raises(ConfigError, match="warmup_steps"):
        fit(config, tmp_path / "run", console=quiet())
    assert not (tmp_path / "run").exists()


def test_unusable_augmentation_is_refused_before_any_data_is_read(make_config, tmp_path):
    config = make_config(tmp_path / "no_such_folder", tmp_path / "cache")
    config = replace(config, augment=replace(config.augment, jpeg_quality=(90, 30)))
    with pytest.raises(ConfigError, match="augment.jpeg_quality"):
        fit(config, tmp_path / "run", console=quiet())
    assert not (tmp_path / "run").exists()


def test_weight_average_is_validated_and_saved_as_best_without_changing_training(utkface, cache_dir, make_config, tmp_path):
    config = make_config(utkface.path, cache_dir, epochs=1)
    fit(config, tmp_path / "plain", console=quiet())
    fit(replace(config, train=replace(config.train, ema_decay=0.9)), tmp_path / "ema", console=quiet())
    plain, ema = tmp_path / "plain", tmp_path / "ema"
    # the average never feeds back: same raw weights and training metrics as without it
    assert_same_weights(load_file(str(ema / "last.safetensors")), load_file(str(plain / "last.safetensors")))
    assert history(ema)[0]["train_loss"] == history(plain)[0]["train_loss"]
    # best.safetensors (epoch 1, the only one) holds the average, and val metrics are the average's
    state = load_training_state(ema / "last_state.pt")["weight_average"]
    assert int(state["n_averaged"]) == steps_per_epoch(config)
    assert_same_weights(load_file(str(ema / "best.safetensors")), averaged_weights(state))
    assert history(ema)[0]["val_loss"] != history(plain)[0]["val_loss"]


def test_ema_decay_of_one_is_refused_before_any_data_is_read(make_config, tmp_path):
    config = make_config(tmp_path / "no_such_folder", tmp_path / "cache", ema_decay=1.0)
    with pytest.raises(ConfigError, match="ema_decay"):
        fit(config, tmp_path / "run", console=quiet())
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # torch.compile's first compilation alone takes about 30 s on 2 cores
def test_compiled_training_learns_what_eager_training_learns(utkface, cache_dir, make_config, tmp_path):
    config = make_config(utkface.path, cache_dir, epochs=1)
    config = replace(config, model=replace(config.model, dropout=0.0))  # compiled dropout draws other numbers
    fit(config, tmp_path / "eager", console=quiet())
    fit(replace(config, train=replace(config.train, compile=True)), tmp_path / "compiled", console=quiet())
    eager, compiled = (load_file(str(tmp_path / name / "last.safetensors")) for name in ("eager", "compiled"))
    for key in eager:  # same seed and batches; compiled kernels round differently, so close, not equal
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-3, atol=1e-3, msg=key)


def start_training_phase(config) -> tuple[fit_module.Training, engine.PhaseRun]:
    training = fit_module.Training(config, Path(config.data.path), prepare_data(config.data), DistributedContext(), quiet())
    return training, training.start_phase(0, engine.plan_phases(training.model, config)[0])


def test_compile_wraps_the_training_module_only(utkface, cache_dir, make_config):
    config = make_config(utkface.path, cache_dir, compile=True)
    training, phase_run = start_training_phase(config)
    assert isinstance(phase_run.train_module, torch._dynamo.eval_frame.OptimizedModule)
    assert phase_run.train_module._orig_mod is training.model  # evaluation and checkpoints use the same weights
    training, phase_run = start_training_phase(replace(config, train=replace(config.train, compile=False)))
    assert phase_run.train_module is training.model


def make_groups_folder(folder, face_bytes, n: int = 30, exact_every: int = 0):
    """labels.csv with Adience groups (and an exact age on every `exact_every`-th row, if > 0)."""
    folder.mkdir(parents=True)
    groups = {2: "(0, 2)", 10: "8-13", 28: "(25, 32)", 40: "38-43", 70: "60+"}
    rows = ["filename,age,gender,age_group"]
    for i in range(n):
        age = list(groups)[i % len(groups)]
        (folder / f"{i:02d}.jpg").write_bytes(face_bytes(age, i % 2, seed=700 + i))
        exact = str(age) if exact_every and i % exact_every == 0 else ""
        rows.append(f'{i:02d}.jpg,{exact},{i % 2},"{groups[age]}"')
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_trains_on_age_groups_alone_and_mixed_with_exact_ages(tmp_path, make_config, cache_dir, face_bytes):
    for name, exact_every in (("groups", 0), ("mixed", 3)):
        folder = make_groups_folder(tmp_path / name, face_bytes, exact_every=exact_every)
        result = fit(make_config(folder, cache_dir), tmp_path / f"run_{name}", console=quiet())
        row = history(result.run_dir)[0]
        assert float(row["train_age_loss"]) > 0  # the group labels reached the age loss
        assert (float(row["val_age_mae"]) == float(row["val_age_mae"])) == (exact_every > 0)  # MAE: exact ages only


def test_a_dataset_without_any_age_or_group_is_one_clear_error(tmp_path, make_config, cache_dir, face_bytes):
    folder = tmp_path / "gender_only"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i}.jpg").write_bytes(face_bytes(30, i % 2, seed=i))
    (folder / "labels.csv").write_text("filename,gender\n" + "".join(f"{i}.jpg,{i % 2}\n" for i in range(10)))
    with pytest.raises(RunError, match="no training image has an age or an age_group label"):
        fit(make_config(folder, cache_dir), tmp_path / "run", console=quiet())
    assert not (tmp_path / "run").exists()


def test_init_from_a_run_on_exact_ages_into_a_run_on_age_groups(trained_run, tmp_path, cache_dir, face_bytes):
    """--init across datasets and label kinds: the bins head serves years and groups alike."""
    folder = make_groups_folder(tmp_path / "adience_like", face_bytes)
    config = replace(trained_run.config, data=replace(trained_run.config.data, path=str(folder), cache_dir=str(cache_dir)))
    config = replace(config, train=replace(config.train, init_from=str(trained_run.best), epochs=1))
    console = Console(file=io.StringIO(), width=1000)  # no wrapping inside the long temporary path
    result = fit(config, tmp_path / "finetuned", console=console)
    assert f"initial weights from {trained_run.best}" in console.file.getvalue()
    started = load_file(str(trained_run.best))
    finished = load_file(str(result.run_dir / "last.safetensors"))
    assert started.keys() == finished.keys()
    assert any(not torch.equal(started[k], finished[k]) for k in started)  # it trained on from there


def test_a_one_phase_state_saved_by_77dbc71_resumes_like_a_new_one(utkface, cache_dir, make_config, tmp_path):
    """Model A's last_state.pt had no phase fields before the phase runner; such runs still resume."""
    from agegender.training.resume_points import save_training_state

    fit(make_config(utkface.path, cache_dir, epochs=1), tmp_path / "new", console=quiet())
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    state = load_training_state(tmp_path / "old" / "last_state.pt")
    for key in ("phase_index", "phase_epoch", "best_val_loss", "best_epoch", "cache_seconds"):
        del state[key]
    save_training_state(tmp_path / "old" / "last_state.pt", state)
    for run in ("new", "old"):
        assert resume(tmp_path / run, epochs=2, console=quiet()).stopped_epoch == 2
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_weights(load_file(str(tmp_path / "old" / name)), load_file(str(tmp_path / "new" / name)))


def test_a_sampled_run_on_two_folders_trains_and_reports_each_dataset(utkface, labels_folder, cache_dir, make_config,
                                                                       tmp_path):  # fmt: skip
    config = make_config(utkface.path, cache_dir, epochs=1)
    config = replace(config, data=replace(config.data, path=(str(utkface.path), str(labels_folder.path)),
                                          sampling=("labelled=3", "age:0-12=2")))  # fmt: skip
    result = fit(config, tmp_path / "run", console=quiet())
    assert set(result.metrics.val.per_dataset) <= {"utkface", "labelled"} and result.metrics.val.per_dataset
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["per_dataset"].keys() == result.metrics.test.per_dataset.keys()
    plain = fit(replace(config, data=replace(config.data, sampling=())), tmp_path / "plain", console=quiet())
    assert result.metrics.train_at_best != plain.metrics.train_at_best  # other draws, other training


def test_a_sampling_term_naming_no_folder_is_refused_before_any_data_is_read(make_config, tmp_path):
    config = make_config(tmp_path / "utkface", tmp_path / "cache")
    config = replace(config, data=replace(config.data, sampling=("aaf=2",)))
    with pytest.raises(ConfigError, match="'aaf' is not a data folder of this run"):
        fit(config, tmp_path / "run", console=quiet())
    assert not (tmp_path / "run").exists()


def test_a_second_train_on_a_folder_in_use_is_refused(utkface, cache_dir, make_config, tmp_path):
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with (run_dir / ".lock").open("a") as held:  # another process training there
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunError, match="another `agegender train` is running in this folder"):
            fit(make_config(utkface.path, cache_dir, epochs=1), run_dir, console=quiet())
    assert not (run_dir / "history.csv").exists()


def test_a_start_killed_before_its_first_checkpoint_starts_afresh_without_duplicate_epochs(
    utkface, cache_dir, make_config, tmp_path
):
    run_dir = tmp_path / "run"
    config = make_config(utkface.path, cache_dir, epochs=1)
    fit(config, run_dir, console=quiet())
    for name in ("last.safetensors", "last_state.pt", "best.safetensors", "metrics.json"):
        (run_dir / name).unlink()  # as if killed while writing the first checkpoint
    (run_dir / ".last.safetensors.abc.tmp").write_bytes(b"half")
    fit(config, run_dir, console=quiet())
    assert [r["epoch"] for r in history(run_dir)] == ["1"]
    assert not list(run_dir.glob(".*.tmp"))


def test_resume_drops_a_malformed_or_repeated_history_row(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    rows = (run_dir / "history.csv").read_text().splitlines()
    (run_dir / "history.csv").write_text("\n".join([*rows, rows[1], "garbage,,,", "x"]) + "\n")
    resume(run_dir, epochs=3, console=quiet())
    assert [r["epoch"] for r in history(run_dir)] == ["1", "2", "3"]
