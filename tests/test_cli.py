"""The CLI end to end on tiny synthetic data: every verb once, and user errors as exit code 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from agegender.config import load_config
from agegender.models.checkpoint import build_meta, load_checkpoint, read_meta, save_checkpoint
from agegender.training.callbacks import HistoryCSV

TINY = ["--image-size", "32", "--batch-size", "16", "--set", "model.widths=[8,16]", "--set", "model.head_hidden=16"]




def assert_one_error_line(err: str, *names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])


def test_train_then_resume(run_cli, utkface, tmp_path):
    run_dir = tmp_path / "run"
    cache = tmp_path / "cache"
    code, _, err = run_cli(
        "train", "--data", utkface.path, "--out", run_dir, "--epochs", "1", "--lr", "0.00005",
        *TINY, "--set", f"data.cache_dir={cache}",
    )  # fmt: skip
    assert code == 0, err
    config = load_config(run_dir / "config.yaml")
    assert config.model.widths == (8, 16) and config.data.image_size == 32
    assert config.train.lr == 5e-05  # the CLI writes 0.00005 as "5e-05"
    assert config.data.cache_dir == str(cache) and list(cache.glob("*.npy"))
    for name in ("best.safetensors", "last.safetensors", "history.csv", "metrics.json", "learning_curves.png"):
        assert (run_dir / name).is_file(), name
    assert "2 skipped" in err and "unreadable" in err  # the data summary names what was dropped

    code, _, err = run_cli("train", "--resume", run_dir, "--epochs", "2")
    assert code == 0, err
    assert f"resumed {run_dir} after epoch 1" in err.replace("\n", "")
    assert [r["epoch"] for r in HistoryCSV(run_dir / "history.csv").rows()] == ["1", "2"]

    code, _, err = run_cli("train", "--resume", run_dir, "--threads", "1")  # no --epochs: the run is complete
    assert code == 0, err
    assert [r["epoch"] for r in HistoryCSV(run_dir / "history.csv").rows()] == ["1", "2"]
    assert load_config(run_dir / "config.yaml").train.epochs == 2

    code, _, err = run_cli("train", "--resume", run_dir, "--model", "mobilenet_v2")
    assert code == 2
    assert_one_error_line(err, str(run_dir), "not 'mobilenet_v2'")

    code, _, err = run_cli("train", "--resume", run_dir, "--epochs", "1")
    assert code == 2
    assert_one_error_line(err, str(run_dir), "set to 2 epochs", "can add epochs, not remove them")

    for changed in (["--lr", "0.1"], ["--set", "train.lr=0.1"], ["--data", utkface.path]):
        code, _, err = run_cli("train", "--resume", run_dir, *changed)
        assert code == 2, changed
        assert "with its own config.yaml" in err and "Traceback" not in err, err
    assert load_config(run_dir / "config.yaml").train.lr == 5e-05  # nothing was changed

    code, _, err = run_cli("train", "--data", utkface.path, "--out", run_dir, *TINY)
    assert code == 2
    assert_one_error_line(err, str(run_dir), "already holds a run")


def test_evaluate_json(run_cli, trained_run):
    code, out, err = run_cli("evaluate", "--data", trained_run.data.path, "--model", trained_run.best, "--json")
    assert code == 0, err
    report = json.loads(out)
    for key in ("n", "gender_accuracy", "age_mae", "cs5", "per_race", "per_gender", "per_age_band"):
        assert key in report, key
    assert report["n"] == len(trained_run.data.parsed) - 2
    assert report["split"] == "all" and report["model"] == str(trained_run.best)
    assert set(report["per_gender"]) == {"male", "female"}
    assert "2 unreadable images skipped" in err


def test_evaluate_test_split(run_cli, trained_run):
    code, out, err = run_cli(
        "evaluate", "--data", trained_run.data.path, "--model", trained_run.best, "--split", "test", "--json"
    )
    assert code == 0, err
    metrics = json.loads((trained_run.run_dir / "metrics.json").read_text())
    report = json.loads(out)
    assert report["split"] == "test"
    assert report["n"] == metrics["split_sizes"]["test"]
    assert report["age_mae"] == pytest.approx(metrics["test"]["age_mae"], rel=1e-5)


def test_evaluate_table(run_cli, trained_run):
    code, out, err = run_cli("evaluate", "--data", trained_run.data.path, "--model", trained_run.best)
    assert code == 0, err
    assert out.startswith("Overall: n=42")
    assert "By race" in out and "By age band" in out


def test_evaluate_unknown_split(run_cli, trained_run):
    code, _, err = run_cli("evaluate", "--data", trained_run.data.path, "--model", trained_run.best, "--split", "dev")
    assert code == 2
    assert_one_error_line(err, "unknown split 'dev'")


@pytest.fixture
def stub_registered(monkeypatch, stub_detector):
    """`--detector stub` picks tests/conftest.py's StubFaceDetector."""
    from agegender.inference import detect

    monkeypatch.setitem(detect.DETECTORS, "stub", type(stub_detector))


def test_evaluate_detect_json_counts_photos_without_a_face(run_cli, trained_run, photo_folder, stub_registered):
    args = ("evaluate", "--data", photo_folder.path, "--model", trained_run.best, "--detect", "--detector", "stub")
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    report = json.loads(out)
    detection = report["detection"]
    assert report["split"] == "all" and report["n"] == 6 and set(report["per_gender"]) == {"male", "female"}
    assert detection["images"] == 7 and detection["no_face"] == 1 and detection["no_face_files"] == ["p5.png"]
    assert detection["box_fallbacks"] == 1 and detection["crop"]["method"] == "aligned"
    assert detection["end_to_end_gender_accuracy"] == pytest.approx(report["gender_accuracy"] * 6 / 7)
    assert "1 unreadable images skipped" in err
    code, out, err = run_cli(*args, "--json", "--crop", "box", "--margin", "0.3")
    assert code == 0, err
    assert json.loads(out)["detection"]["crop"] == {"method": "box", "template": "utkface", "margin": 0.3}
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "End to end (no face = wrong): gender acc" in out and "Overall: n=6" in out


def test_evaluate_crop_needs_detect_and_a_known_method(run_cli, trained_run, photo_folder, stub_registered):
    code, _, err = run_cli("evaluate", "--data", photo_folder.path, "--model", trained_run.best, "--crop", "box")
    assert code == 2
    assert_one_error_line(err, "--detect")
    code, _, err = run_cli(
        "evaluate", "--data", photo_folder.path, "--model", trained_run.best, "--detect", "--crop", "tight"
    )
    assert code == 2
    assert_one_error_line(err, "unknown crop method 'tight'")


def test_predict_summary_counts_box_fallbacks(run_cli, trained_run, photo_folder, stub_registered):
    photo = photo_folder.path / "p0.png"
    code, out, err = run_cli("predict", photo, "--model", trained_run.best, "--detector", "stub", "--json")
    assert code == 0, err
    assert "aligned crops (utkface template), 1 box-cropped for want of usable keypoints" in err
    code, out, err = run_cli("predict", photo, "--model", trained_run.best, "--detector", "stub", "--crop", "box")
    assert code == 0, err
    assert "box crops" in err


def test_predict_no_detect_csv(run_cli, trained_run, faces_dir, tmp_path):
    output = tmp_path / "out" / "predictions.csv"
    code, _, err = run_cli("predict", faces_dir, "--model", trained_run.best, "--no-detect", "--output", output)
    assert code == 0, err
    with output.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert {"path", "age", "gender", "p_female"} <= set(reader.fieldnames)
    assert [Path(r["path"]).name for r in rows] == ["face_0.jpg", "face_1.jpg", "face_2.jpg"]
    for row in rows:
        assert row["gender"] in ("male", "female")
        assert row["gender"] == ("female" if float(row["p_female"]) >= 0.5 else "male")
        assert 0 <= float(row["age"]) <= 116 and 0 <= float(row["p_female"]) <= 1


def test_predict_no_detect_json_skips_unreadable(run_cli, trained_run, faces_dir):
    (faces_dir / "broken.jpg").write_bytes(b"not a jpeg at all")
    code, out, err = run_cli("predict", faces_dir, "--model", trained_run.best, "--no-detect", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 3
    assert {"path", "age", "gender", "p_female"} <= set(rows[0])
    assert "broken.jpg" in err
    assert "1 unreadable skipped" in err


def test_predict_no_detect_matches_the_library(run_cli, trained_run, faces_dir):
    from agegender.inference.predictor import Predictor

    code, out, _ = run_cli("predict", faces_dir / "face_1.jpg", "--model", trained_run.best, "--no-detect", "--json")
    assert code == 0
    (row,) = json.loads(out)
    face = Predictor.from_checkpoint(trained_run.best).predict_cropped_file(faces_dir / "face_1.jpg").faces[0]
    assert row["age"] == round(face.age, 1) and row["p_female"] == round(face.p_female, 4)


def test_predict_with_only_unreadable_files_fails(run_cli, trained_run, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"")
    code, _, err = run_cli("predict", tmp_path / "bad.jpg", "--model", trained_run.best, "--no-detect")
    assert code == 1
    assert "bad.jpg" in err


def test_predict_without_no_detect(run_cli, trained_run, faces_dir):
    # Face detection is optional at run time: either it runs (these synthetic crops need not contain
    # a detectable face), or the user gets one clear line pointing at --no-detect.
    code, out, err = run_cli("predict", faces_dir, "--model", trained_run.best, "--json")
    if code == 0:
        assert isinstance(json.loads(out), list)
    else:
        assert code == 2
        assert "--no-detect" in err or "detector" in err.lower()
        assert len([line for line in err.splitlines() if line.strip()]) <= 3


def test_models_lists_custom(run_cli):
    code, out, _ = run_cli("models")
    assert code == 0
    assert "custom" in out.split()


@pytest.mark.parametrize(
    "case", ["missing", "empty", "unlabelled"],
)
def test_train_bad_data_folder(run_cli, tmp_path, case):
    folder = tmp_path / case
    if case != "missing":
        folder.mkdir()
    if case == "empty":
        (folder / "readme.txt").write_text("nothing to see")
    if case == "unlabelled":
        (folder / "holiday.jpg").write_bytes(b"x")
    expected = {"missing": "data folder not found", "empty": "no image files found", "unlabelled": "no parseable labels"}
    code, _, err = run_cli("train", "--data", folder, "--out", tmp_path / "run", *TINY)
    assert code == 2
    assert_one_error_line(err, str(folder), expected[case])
    assert not (tmp_path / "run").exists()


def test_evaluate_missing_data_folder(run_cli, trained_run, tmp_path):
    code, _, err = run_cli("evaluate", "--data", tmp_path / "gone", "--model", trained_run.best)
    assert code == 2
    assert_one_error_line(err, str(tmp_path / "gone"), "not found")


def _other_architecture(trained_run, path: Path) -> Path:
    """The trained weights, but metadata describing widths [8, 32]."""
    loaded = load_checkpoint(trained_run.best)
    claimed = replace(loaded.config, model=replace(loaded.config.model, widths=(8, 32)))
    save_checkpoint(path, loaded.model, build_meta(loaded.model, claimed, loaded.meta["label_stats"]))
    return path


def _unknown_model(trained_run, path: Path) -> Path:
    loaded = load_checkpoint(trained_run.best)
    meta = read_meta(trained_run.best)
    meta["config"]["model"]["name"] = "vgg_face_9000"
    save_checkpoint(path, loaded.model, meta)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda run, path: path.write_bytes(b"\x13\x37" * 300) and path, "not a readable safetensors checkpoint"),
        (lambda run, path: path.write_bytes(run.best.read_bytes()[:-200]) and path, ""),
        (_other_architecture, "do not match"),
        (_unknown_model, "cannot build"),
        (lambda run, path: path, "checkpoint not found"),
    ],
    ids=["random-bytes", "truncated", "other-architecture", "unknown-model", "missing"],
)
@pytest.mark.parametrize("verb", ["evaluate", "predict"])
def test_bad_checkpoint(run_cli, trained_run, faces_dir, tmp_path, make, message, verb):
    path = tmp_path / "model.safetensors"
    make(trained_run, path)
    if verb == "evaluate":
        code, _, err = run_cli("evaluate", "--data", trained_run.data.path, "--model", path)
    else:
        code, _, err = run_cli("predict", faces_dir, "--model", path, "--no-detect")
    assert code == 2
    assert_one_error_line(err, str(path), message)


def test_unknown_config_key(run_cli, utkface, tmp_path):
    code, _, err = run_cli("train", "--data", utkface.path, "--out", tmp_path / "run", "--set", "train.epoch=1")
    assert code == 2
    assert_one_error_line(err, "unknown key 'train.epoch'", "did you mean 'epochs'")


def test_unparseable_override_value(run_cli, utkface, tmp_path):
    code, _, err = run_cli("train", "--data", utkface.path, "--out", tmp_path / "run", "--set", "data.path=[oops")
    assert code == 2
    assert_one_error_line(err, "data.path=[oops")


def test_unknown_model_name(run_cli, utkface, tmp_path, cache_dir):
    code, _, err = run_cli(
        "train", "--data", utkface.path, "--out", tmp_path / "run", "--model", "custon", *TINY,
        "--set", f"data.cache_dir={cache_dir}",
    )  # fmt: skip
    assert code == 2
    # fit() reads the data before it builds the model, so the data summary may come first
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert_one_error_line(last, "unknown model 'custon'", "did you mean 'custom'")


def test_train_needs_exactly_one_of_out_and_resume(run_cli, utkface):
    code, _, err = run_cli("train", "--data", utkface.path)
    assert code == 2
    assert "exactly one of --out" in err


def test_module_entry_point_as_a_subprocess(tmp_path):
    """`python -m agegender.cli` really exits 2 with one error line (no traceback)."""
    missing = tmp_path / "no-such-folder"
    result = subprocess.run(
        [sys.executable, "-m", "agegender.cli", "train", "--data", str(missing), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert_one_error_line(result.stderr, str(missing), "data folder not found")


def test_unknown_option_is_a_usage_error(run_cli):
    code, _, err = run_cli("evaluate", "--data", "x", "--no-such-option")
    assert code == 2
    assert "No such option" in err and "Traceback" not in err


def test_ctrl_c_exits_130(run_cli, utkface, tmp_path, monkeypatch):
    from agegender.training import fit as fit_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "fit", interrupted)
    code, _, _ = run_cli("train", "--data", utkface.path, "--out", tmp_path / "run")
    assert code == 130


def test_error_messages_are_not_read_as_markup(run_cli, trained_run, tmp_path):
    missing = tmp_path / "[red]photos[/red] [v2]"
    code, _, err = run_cli("evaluate", "--data", missing, "--model", trained_run.best)
    assert code == 2
    assert_one_error_line(err, str(missing))
