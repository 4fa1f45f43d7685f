"""The CLI end to end on tiny synthetic data: every verb once, and user errors as exit code 2."""

from __future__ import annotations

import csv
import json
import re
import shutil
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
    from agegender.inference.detectors import factory as detect

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


def test_evaluate_detect_refuses_age_groups_instead_of_dropping_them(run_cli, trained_run, photo_folder, stub_registered):
    code, _, err = run_cli(
        "evaluate", "--data", photo_folder.path, "--model", trained_run.best, "--detect", "--age-groups", "adience"
    )
    assert code == 2
    assert_one_error_line(err, "--age-groups scores face crops: evaluate --detect does not take it yet")


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
    from agegender.inference.predictor import Predictor

    library = Predictor.from_checkpoint(trained_run.best).predict([r["path"] for r in rows], detect=False)
    for row, prediction in zip(rows, library):  # the file holds what the library predicts, rounded as rows() round
        (expected,) = prediction.rows()
        assert (row["gender"], float(row["age"]), float(row["p_female"])) == (expected["gender"], expected["age"], expected["p_female"])


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
    face = Predictor.from_checkpoint(trained_run.best).predict(faces_dir / "face_1.jpg", detect=False).faces[0]
    assert row["age"] == round(face.age, 1) and row["p_female"] == round(face.p_female, 4)


def test_predict_with_only_unreadable_files_fails(run_cli, trained_run, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"")
    code, _, err = run_cli("predict", tmp_path / "bad.jpg", "--model", trained_run.best, "--no-detect")
    assert code == 2  # a user's mistake, not a bug
    assert "bad.jpg" in err and "error: none of the 1 inputs is a readable image" in err


def test_predict_on_a_missing_file_is_one_error_line(run_cli, trained_run, tmp_path):
    code, _, err = run_cli("predict", tmp_path / "nope.jpg", "--model", trained_run.best)
    assert code == 2
    assert_one_error_line(err, "nope.jpg: input not found")


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
    assert {"custom", "dlib_resnet", "efficientnet_lite0"} <= set(out.split())


def test_models_info_tells_what_the_bundled_model_is_and_how_good(run_cli):
    code, out, _ = run_cli("models", "--info")
    assert code == 0, out
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["name"].startswith("agegender bundled model") and lines["network"] == "dlib_resnet"
    assert "recipes/build_bundled_model.sh" in lines["recipe"] and "UTKFace test split" in lines["metrics"]
    assert lines["int8 companion"].startswith("bundled_model.int8.onnx (static int8, what --runtime auto runs")


def test_models_info_on_a_file_without_a_card_and_on_a_broken_one(run_cli, tiny_checkpoint, tmp_path):
    code, out, _ = run_cli("models", "--info", "--model", tiny_checkpoint)
    assert code == 0 and "name: tiny\n" in out and "network: custom" in out and "metrics" not in out
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"nope")
    code, _, err = run_cli("models", "--info", "--model", broken)
    assert code == 2 and "broken.safetensors" in err


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
        (_unknown_model, "model.name: unknown value 'vgg_face_9000'"),
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
    # checked when the config loads: before any data is read or the run folder is made
    assert_one_error_line(err, "model.name: unknown value 'custon'", "did you mean 'custom'")
    assert not (tmp_path / "run").exists()


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


LOOP_REASON = "cannot read file (Too many levels of symbolic links)"


@pytest.mark.parametrize("verb", ["train", "evaluate", "predict"])
def test_a_symlink_loop_named_like_a_face_is_skipped_by_every_verb(run_cli, trained_run, utkface, tmp_path, verb):
    (utkface.path / "20_0_0_20170101.jpg.chip.jpg").symlink_to("20_0_0_20170101.jpg.chip.jpg")  # a link to itself
    if verb == "train":
        args = ["--data", utkface.path, "--out", tmp_path / "run", "--epochs", "1", *TINY,
                "--set", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    elif verb == "evaluate":
        args = ["--data", utkface.path, "--model", trained_run.best]
    else:
        args = [utkface.path, "--model", trained_run.best, "--no-detect"]
    code, _, err = run_cli(verb, *args)
    assert code == 0, err
    assert "Traceback" not in err
    err = err.replace("\n", "")
    assert f"20_0_0_20170101.jpg.chip.jpg: {LOOP_REASON}" in err


def test_unknown_optimizer_fails_before_any_data_is_read(run_cli, utkface, tmp_path):
    code, _, err = run_cli("train", "--data", utkface.path, "--out", tmp_path / "run", "--optimizer", "adamx", *TINY)
    assert code == 2
    assert_one_error_line(err, "train.optimizer: unknown value 'adamx' (did you mean 'adam'?); choose one of adam, adamw, sgd")
    assert not (tmp_path / "run").exists()  # no config.yaml written, nothing decoded


def test_checkpoint_with_hostile_image_size_is_one_line(run_cli, trained_run, faces_dir, tmp_path):
    loaded = load_checkpoint(trained_run.best)
    meta = read_meta(trained_run.best)
    meta["preprocessing"]["image_size"] = 40000  # would build a 4.8 GB image if trusted
    path = tmp_path / "huge.safetensors"
    save_checkpoint(path, loaded.model, meta)
    code, _, err = run_cli("predict", faces_dir, "--model", path, "--no-detect")
    assert code == 2
    assert_one_error_line(err, f"{path}: bad checkpoint metadata, field 'preprocessing.image_size': 40000 is outside [16, 1024]")


def test_an_internal_value_error_keeps_its_traceback(tmp_path):
    """A bug is not a user error: a bare ValueError inside a verb exits 1 with a traceback, not 2."""
    script = (
        "import sys, agegender.models as models\n"
        "def broken(): raise ValueError('internal bug')\n"
        "models.list_models = broken\n"
        "sys.argv = ['agegender', 'models']\n"
        "from agegender.cli import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr and "ValueError: internal bug" in result.stderr
    assert "error: internal bug" not in result.stderr


def test_predict_without_inputs_is_a_usage_error(run_cli):
    code, _, err = run_cli("predict")
    assert code == 2
    assert "give images, folders or a video file, or --webcam INDEX" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--margin", "1e9"], "margin 1000000000.0 is outside [0, 2]"),
        (["--detector", "yolo"], "unknown face detector 'yolo'; choose auto or one of"),
        (["--runtime", "tflite"], "unknown runtime 'tflite'; choose one of auto, torch, torch-bf16, onnx"),
    ],
)
def test_predict_options_are_checked_before_any_image(run_cli, trained_run, faces_dir, args, message):
    code, _, err = run_cli("predict", faces_dir, "--model", trained_run.best, *args)
    assert code == 2
    assert_one_error_line(err, message)


def test_evaluate_with_age_groups_json_and_table(run_cli, trained_run):
    code, out, err = run_cli("evaluate", "--data", trained_run.data.path, "--model", trained_run.best, "--json", "--age-groups", "adience")
    assert code == 0, err
    groups = json.loads(out)["age_groups"]
    assert groups["scheme"] == "adience" and groups["groups"][0] == "0-2" and len(groups["confusion"]) == 8
    assert set(groups["overall"]) == {"n", "accuracy", "one_off"}
    code, out, err = run_cli("evaluate", "--data", trained_run.data.path, "--model", trained_run.best, "--age-groups", "0-19,20-39,40+")
    assert code == 0, err
    assert "Age groups (0-19,20-39,40+; most probable group of the age distribution)" in out and "1-off" in out


def test_predict_with_age_groups_writes_the_group_and_its_probabilities(run_cli, trained_run, faces_dir, tmp_path):
    output = tmp_path / "predictions.csv"
    code, out, err = run_cli("predict", faces_dir, "--model", trained_run.best, "--no-detect", "--age-groups", "fairface", "--output", output)
    assert code == 0, err
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 3
    probabilities = [float(rows[0][f"p_age_{name}"]) for name in ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
    assert rows[0]["age_group"] in {"0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"}
    code, out, err = run_cli("predict", faces_dir, "--model", trained_run.best, "--no-detect", "--age-groups", "adience")
    assert code == 0 and ", group " in out.splitlines()[0]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ("adiance", "unknown age-group scheme 'adiance'"),
        ("0-19,twenty", "unparseable age group: 'twenty'"),
        ("0-19,30-20", "age group has low > high: '30-20'"),
        ("0-19,10-29,30+", "age groups '0-19' and '10-29' overlap"),
    ],
)
def test_bad_age_groups_are_one_error_line(run_cli, trained_run, faces_dir, groups, message):
    for verb in (["evaluate", "--data", trained_run.data.path], ["predict", faces_dir, "--no-detect"]):
        code, _, err = run_cli(*verb, "--model", trained_run.best, "--age-groups", groups)
        assert code == 2
        assert_one_error_line(err, message)


def test_train_without_any_age_label_is_one_error_line(run_cli, tmp_path, face_bytes):
    folder = tmp_path / "gender_only"
    folder.mkdir()
    for i in range(8):
        (folder / f"{i}.jpg").write_bytes(face_bytes(30, i % 2, seed=i))
    (folder / "labels.csv").write_text("filename,gender,age_group\n" + "".join(f"{i}.jpg,{i % 2},\n" for i in range(8)))
    code, _, err = run_cli("train", "--data", folder, "--out", tmp_path / "run", "--epochs", "1", *TINY)
    assert code == 2
    assert err.splitlines()[-1].startswith("error: ") and "no training image has an age or an age_group label" in err


def make_gender_only_folder(folder: Path, face_bytes) -> Path:
    """LFW-like: gender and identity, no age; 6 people with 2 photos each."""
    folder.mkdir()
    rows = ["filename,gender,identity"]
    for i in range(12):
        (folder / f"g{i}.jpg").write_bytes(face_bytes(30, i % 2, seed=900 + i))
        rows.append(f"g{i}.jpg,{'female' if i % 2 else 'male'},person{i // 2}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_train_and_evaluate_on_two_folders(run_cli, utkface, face_bytes, tmp_path):
    """UTKFace plus a gender-only folder: one split over both, ages of the second simply missing."""
    lfw = make_gender_only_folder(tmp_path / "lfw", face_bytes)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(
        "train", "--data", utkface.path, "--data", lfw, "--out", run_dir, "--epochs", "1", *TINY,
        "--set", f"data.cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    assert code == 0, err
    assert "from 2 folders" in err and "lfw: 12 labelled images (labels.csv), none skipped; labels: gender 12, identity 12" in err
    shares = re.search(r"\(utkface (\d+) / (\d+) / (\d+); lfw (\d+) / (\d+) / (\d+)\)", err)  # each folder's split
    assert shares, err
    lfw_shares = [int(n) for n in shares.groups()[3:]]
    assert sum(lfw_shares) == 12 and all(n % 2 == 0 for n in lfw_shares)  # two photos a person, never apart
    assert load_config(run_dir / "config.yaml").data.folders() == (str(utkface.path), str(lfw))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(metrics["split_sizes"].values()) == len(utkface.parsed) - 2 + 12
    code, out, err = run_cli("evaluate", "--data", utkface.path, "--data", lfw, "--model", run_dir / "best.safetensors",
                             "--split", "test", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n"] == metrics["split_sizes"]["test"]
    code, out, err = run_cli("evaluate", "--data", lfw, "--model", run_dir / "best.safetensors", "--split", "train", "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == lfw_shares[0]  # one folder of the run: its part of the run's split


def test_crop_writes_chips_and_lists_photos_without_one(run_cli, photo_folder, stub_registered, tmp_path):
    code, _, err = run_cli("crop", photo_folder.path, "--out", tmp_path / "chips", "--template", "dlib_150", "--detector", "stub")
    assert code == 0, err
    assert "no chip for 3 photos" in err and "p5.png" in err and "broken.png" in err
    assert "5 chips in" in err and "(dlib_150 template, 150x150): 5 made" in err
    assert len(list((tmp_path / "chips").glob("*.jpg"))) == 5


def test_crop_unknown_template_is_one_error_line(run_cli, photo_folder, tmp_path):
    code, _, err = run_cli("crop", photo_folder.path, "--out", tmp_path / "chips", "--template", "dlib")
    assert code == 2
    assert_one_error_line(err, "unknown face template 'dlib'")
    assert not (tmp_path / "chips").exists()


def test_evaluate_detect_report_is_a_column_of_compare(run_cli, trained_run, photo_folder, stub_registered, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    report = run_dir / "evaluations" / "lfw_photos.json"
    args = ("evaluate", "--data", photo_folder.path, "--model", run_dir / "best.safetensors", "--detect", "--detector", "stub")
    code, out, err = run_cli(*args, "--report", report, "--json")
    assert code == 0, err
    assert json.loads(report.read_text()) == json.loads(out)
    assert json.loads(out)["data"] == [str(photo_folder.path)]
    code, _, err = run_cli("compare", run_dir, "--out", tmp_path / "compare", "--max-images", "8")
    assert code == 0, err
    markdown = (tmp_path / "compare" / "report.md").read_text()
    detection = json.loads(out)["detection"]
    women, men = (f"{100 * detection['end_to_end_per_gender'][g]:.1f}%" for g in ("female", "male"))
    assert "lfw_photos photos: gender (women / men)" in markdown
    assert f"{100 * detection['end_to_end_gender_accuracy']:.1f}% ({women} / {men})" in markdown


def test_compare_shows_an_evaluated_ensemble_in_the_backbone_table(run_cli, trained_run, tmp_path):
    bundle = tmp_path / "bundle"
    code, _, err = run_cli("ensemble", trained_run.best, trained_run.best, "--out", bundle / "best.safetensors")
    assert code == 0, err
    args = ("evaluate", "--data", trained_run.data.path, "--model", bundle / "best.safetensors", "--split", "test")
    code, out, err = run_cli(*args, "--json", "--report", bundle / "evaluations" / "utkface_test.json")
    assert code == 0, err
    test = json.loads(out)
    code, _, err = run_cli("compare", trained_run.run_dir, bundle, "--out", tmp_path / "compare", "--max-images", "8")
    assert code == 0, err
    markdown = (tmp_path / "compare" / "report.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| ensemble (bundle) |"))
    assert f"| {100 * test['gender_accuracy']:.1f}% / {test['age_mae']:.2f} |" in row  # full: test
    architecture = markdown.split("## Architecture")[1].split("##")[0]
    assert "custom (run)" in architecture and "bundle" not in architecture


def test_compare_refuses_a_folder_that_is_neither_run_nor_evaluated_checkpoint(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("compare", tmp_path / "empty", "--out", tmp_path / "compare")
    assert code == 2
    assert_one_error_line(err, "not a finished run", "evaluations/ folder")


def test_predict_gives_each_face_an_age_interval_and_calibrate_sets_its_width(run_cli, trained_run, faces_dir,
                                                                              tmp_path):  # fmt: skip
    output = tmp_path / "predictions.csv"
    code, out, err = run_cli("predict", faces_dir, "--model", trained_run.best, "--no-detect", "--output", output)
    assert code == 0, err
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        assert int(row["age_low"]) <= float(row["age"]) <= int(row["age_high"])
    code, out, err = run_cli("predict", faces_dir / "face_0.jpg", "--model", trained_run.best, "--no-detect")
    assert f"age {float(rows[0]['age']):.0f} ({rows[0]['age_low']}-{rows[0]['age_high']})" in out
    calibrated = tmp_path / "calibrated.safetensors"
    code, out, err = run_cli("calibrate", "--data", trained_run.data.path, "--model", trained_run.best, "--out", calibrated,
                             "--split", "all")  # fmt: skip
    assert code == 0, err
    after = float(re.search(r"-> ([\d.]+)% at temperature", out)[1])
    assert 80.0 <= after < 90.0  # the narrowest intervals that cover 80% of 38 ages
    temperature = read_meta(calibrated)["inference"]["age_interval_temperature"]
    assert temperature > 0 and temperature != 1.0
    code, out, err = run_cli("evaluate", "--data", trained_run.data.path, "--model", calibrated, "--split", "val", "--json")
    assert code == 0, err
    assert json.loads(out)["age_interval_coverage"] is not None


def test_calibrate_refuses_to_overwrite_the_model_itself(run_cli, trained_run, tmp_path):
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(trained_run.best.read_bytes())
    code, _, err = run_cli("calibrate", "--data", trained_run.data.path, "--model", copy, "--out", copy)
    assert code == 2
    assert "--out" in err and "is one of the inputs" in err


def test_train_with_a_negative_sampling_weight_is_one_error_line(run_cli, utkface, tmp_path):
    code, _, err = run_cli("train", "--data", utkface.path, "--out", tmp_path / "run", *TINY,
                           "--set", "data.sampling=[utkface=-2]")  # fmt: skip
    assert code == 2
    assert_one_error_line(err, "data.sampling", "utkface=-2", "weight must be in [0, 1000]")


def test_the_detector_help_says_what_auto_does():
    # cli.py spells the help out so that --help imports no torch; it must say what inference.detectors.factory does.
    from agegender.cli import DETECTOR_HELP
    from agegender.inference.detectors.factory import AUTO_HELP

    assert DETECTOR_HELP == AUTO_HELP
