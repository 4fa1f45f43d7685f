"""`agegender` command line: each verb parses its options and calls one library function."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import ProgressColumn
from rich.text import Text

from agegender.atomic_write import write_atomically
from agegender.config import ConfigError, load_config
from agegender.errors import UserInputError
from agegender.export.formats import DEFAULT_CALIBRATION_FACES
from agegender.inference.detectors.base import DetectorUnavailableError
from agegender.outputs import check_output_dir, check_output_file

if TYPE_CHECKING:
    import numpy as np

    from agegender.export.formats import ExportRequest

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Age and gender estimation from face images.")
console = Console(stderr=True, soft_wrap=True)
# Only typed errors: a bare ValueError or OSError from inside a verb is a bug and keeps its traceback.
USER_ERRORS = (UserInputError, DetectorUnavailableError)


def _train_overrides(**options) -> list[str]:
    """CLI flags -> section.key=value overrides (flags left unset change nothing)."""
    names = {
        "data": "data.path", "image_size": "data.image_size", "limit": "data.limit", "seed": "data.seed",
        "model": "model.name", "weights": "model.weights", "epochs": "train.epochs",
        "batch_size": "train.batch_size", "lr": "train.lr", "optimizer": "train.optimizer",
        "scheduler": "train.scheduler", "threads": "train.threads", "device": "train.device",
        "init": "train.init_from",
    }  # fmt: skip
    return [f"{names[k]}={_override_value(v)}" for k, v in options.items() if v is not None]


def _override_value(value) -> str:
    """--data folders as JSON (valid YAML) text, so a path with a colon or comma stays one string;
    several folders become a list."""
    if isinstance(value, (list, tuple)):
        return json.dumps(str(value[0])) if len(value) == 1 else json.dumps([str(v) for v in value])
    return str(value)


@app.command()
def train(
    data: Optional[list[Path]] = typer.Option(
        None, help="UTKFace folder or folder with labels.csv; repeat to train on several (split together)"
    ),
    model: Optional[str] = typer.Option(None, help="model name (see `agegender models`); default custom"),
    out: Optional[Path] = typer.Option(None, help="run directory to create"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this directory"),
    config: Optional[Path] = typer.Option(None, help="YAML config file"),
    epochs: Optional[int] = None,
    image_size: Optional[int] = None,
    limit: Optional[int] = typer.Option(None, help="use N images (classic protocol: 5000 -> 4000 train / 1000 val)"),
    batch_size: Optional[int] = None,
    lr: Optional[float] = None,
    optimizer: Optional[str] = typer.Option(None, help="adam | adamw | sgd"),
    scheduler: Optional[str] = typer.Option(None, help="plateau | step | cosine | none"),
    seed: Optional[int] = None,
    weights: Optional[Path] = typer.Option(None, help="local pretrained weights file"),
    init: Optional[Path] = typer.Option(None, help="start from this checkpoint's weights (fresh optimizer and schedule)"),
    threads: Optional[int] = None,
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:N (under torchrun: cuda uses each rank's GPU)"),
    set_: list[str] = typer.Option([], "--set", help="override any config key: section.key=value"),
) -> None:
    """Train a model; writes checkpoints, history.csv, learning curves and metrics.json."""
    from agegender.models.registry import check_model_name
    from agegender.training.fit import fit
    from agegender.training.fit import resume as resume_run

    if (out is None) == (resume is None):
        raise typer.BadParameter("give exactly one of --out RUN_DIR (new run) or --resume RUN_DIR")
    settings = _train_overrides(
        data=data, image_size=image_size, limit=limit, seed=seed, weights=weights, init=init,
        batch_size=batch_size, lr=lr, optimizer=optimizer, scheduler=scheduler,
    )  # fmt: skip
    if resume is not None:
        if settings or set_ or config is not None:
            # The run continues with its own config.yaml; a changed setting would silently mix two runs.
            raise typer.BadParameter(
                f"--resume continues {resume} with its own config.yaml; only --epochs, --threads, --device "
                "and --model (checked against the run's) apply"
            )
        resume_run(resume, model=model, epochs=epochs, threads=threads, device=device, console=console)
        return
    settings += _train_overrides(model=model, epochs=epochs, threads=threads, device=device)
    run_config = load_config(config, [*settings, *set_])
    check_model_name(run_config.model.name)  # before any data is read or the run folder is made
    if not run_config.data.folders():
        raise typer.BadParameter("--data DIR is required for a new run")
    check_output_dir(out, "--out", [Path(folder) for folder in run_config.data.folders()])
    fit(run_config, out, console=console)


AGE_GROUPS_HELP = (
    "also score / predict the groups of a scheme: adience | fairface | comma-separated groups such as "
    "0-12,13-19,20-39,40+ (probabilities from the model's age distribution)"
)


def _age_group_scheme(text: str | None):
    from agegender.data.age_groups import resolve_age_groups

    return None if text is None else resolve_age_groups(text)


TTA_HELP = "average each face with its mirror image (default: as the model file says; the bundled model does)"
# inference.detectors.factory.AUTO_HELP, spelled out here so that --help imports no torch (a test keeps them equal).
DETECTOR_HELP = (
    "auto (blazeface + mtcnn: faces down to 24 px; on video/webcam mtcnn every 10th frame) "
    "| mtcnn | blazeface (fast; faces over ~1/4 of the frame) | haar | mediapipe"
)
RUNTIME_HELP = (
    "auto (onnxruntime, from an ONNX file built once per checkpoint in ~/.cache/agegender/onnx; PyTorch "
    "where onnxruntime is missing or the cache unwritable) | torch | torch-bf16 (PyTorch in bfloat16: "
    "about 2x torch on CPUs with AMX or AVX512-BF16) | onnx"
)
CROP_HELP = "aligned (warp the detector's keypoints onto the model's face template) | box; default: the model's"
MARGIN_HELP = (
    "crop margin per side (aligned: of the template chip, default 0; box: of the face box, default the detector's)"
)


@app.command()
def evaluate(
    data: list[Path] = typer.Option(
        ..., help="labelled folder (UTKFace or labels.csv); repeat to score several together (--split: the folders trained on)"
    ),
    model: Optional[Path] = typer.Option(None, help="checkpoint; default: the bundled model"),
    split: str = typer.Option("all", help="all | train | val | test (recomputed with the model's own split seed)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout"),
    runtime: str = typer.Option("auto", help=RUNTIME_HELP),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help=TTA_HELP),
    age_groups: Optional[str] = typer.Option(None, help=AGE_GROUPS_HELP),
    detect: bool = typer.Option(False, "--detect", help="photos, not crops: detect, score the largest face per image"),
    detector: str = typer.Option("auto", help=f"--detect: {DETECTOR_HELP}"),
    crop: Optional[str] = typer.Option(None, help=f"--detect: {CROP_HELP}"),
    margin: Optional[float] = typer.Option(None, help=f"--detect: {MARGIN_HELP}"),
    report: Optional[Path] = typer.Option(
        None, help="also write the JSON report here; RUN_DIR/evaluations/NAME.json is a column of `agegender compare`"
    ),
) -> None:
    """Gender accuracy, age MAE, CS@5 and per-race / gender / age-band breakdowns."""
    from agegender.evaluation.evaluate import evaluate as run_evaluation
    from agegender.evaluation.report import report_to_dict
    from agegender.inference.predictor import Predictor

    if not detect and (crop is not None or margin is not None):
        raise ConfigError("--crop and --margin apply to photos: add --detect")
    if detect and age_groups is not None:
        raise ConfigError("--age-groups scores face crops: evaluate --detect does not take it yet")
    scheme = _age_group_scheme(age_groups)
    if report is not None:
        check_output_file(report, "--report", (".json",), [*data, *([model] if model else [])])
    predictor = Predictor.from_checkpoint(model, runtime=runtime, tta=tta, detector=detector, crop=crop, margin=margin)
    result = _evaluate_photos(predictor, data, split) if detect else run_evaluation(predictor, data, split, age_groups=scheme)
    console.print(result.read.summary_line())
    if result.undecodable:
        console.print(f"{len(result.undecodable)} unreadable images skipped: " + "; ".join(
            f"{Path(s.path).name}: {s.reason}" for s in result.undecodable[:5]))
    as_dict = {"split": split, "model": str(predictor.model.source), "data": [str(d) for d in data], **report_to_dict(result.report)}
    if result.detection is not None:
        as_dict["detection"] = report_to_dict(result.detection)
    if report is not None:
        write_atomically(report, lambda temporary: Path(temporary).write_text(json.dumps(as_dict, indent=2)))
    if as_json:
        print(json.dumps(as_dict, indent=2))
    else:
        _print_evaluation(result)


def _evaluate_photos(predictor, data: Path, split: str):
    from rich.progress import Progress

    from agegender.evaluation.photos import evaluate_photos

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("detecting", total=None)  # evaluate_photos tells the total: the folder is read once
        return evaluate_photos(predictor, data, split, progress=lambda n, total: bar.update(task, total=total, advance=n))


def _print_evaluation(result) -> None:
    from agegender.evaluation.photos import print_detection_summary
    from agegender.evaluation.report import print_report

    out = Console(soft_wrap=True)
    if result.detection is not None:
        print_detection_summary(result.detection, out)
    print_report(result.report, out)


@app.command()
def crop(
    source: Path = typer.Argument(..., help="labelled photos: a folder with labels.csv, or UTKFace-named files"),
    out: Path = typer.Option(..., help="folder for the chips, their labels.csv and skipped.csv"),
    template: str = typer.Option("utkface", help="face template the chips are aligned to: utkface | dlib_150"),
    size: Optional[int] = typer.Option(None, min=16, max=1024, help="chip side in pixels; default: the template's"),
    detector: str = typer.Option("auto", help="auto (blazeface + mtcnn) | mtcnn | blazeface | mediapipe (haar gives no keypoints)"),
) -> None:
    """Aligned chips of the largest face in each labelled photo, labels carried over (training data)."""
    from rich.progress import Progress

    from agegender.data.align import get_template
    from agegender.data.face_chips import crop_folder
    from agegender.inference.detectors.factory import create_detector

    get_template(template)  # an unknown name: one error line before any photo is read
    check_output_dir(out, "--out", [source])
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("cropping", total=None)
        run = crop_folder(source, out, create_detector(detector), template=template, size=size,
                          progress=lambda n, total: bar.update(task, total=total, advance=n))  # fmt: skip
    if run.unlabelled:
        console.print(f"{len(run.unlabelled)} source files skipped for their labels: " + "; ".join(
            f"{Path(s.path).name}: {s.reason}" for s in run.unlabelled[:5]))
    if run.skipped:
        console.print(f"no chip for {len(run.skipped)} photos (listed in {out / 'skipped.csv'}): " + ", ".join(
            Path(s.path).name for s in run.skipped[:10]) + (" ..." if len(run.skipped) > 10 else ""))
    console.print(run.summary_line())


@app.command()
def predict(
    paths: list[Path] = typer.Argument(None, help="images, folders (searched recursively) or one video file"),
    model: Optional[Path] = typer.Option(None, help="checkpoint (.safetensors) or exported .onnx file; default: the bundled model"),
    no_detect: bool = typer.Option(False, "--no-detect", help="treat each image as an already-cropped face"),
    detector: str = typer.Option("auto", help=DETECTOR_HELP),
    crop: Optional[str] = typer.Option(None, help=CROP_HELP),
    margin: Optional[float] = typer.Option(None, help=MARGIN_HELP),
    save_dir: Optional[Path] = typer.Option(None, help="write annotated copies of the images here"),
    output: Optional[Path] = typer.Option(None, help="images: predictions .csv/.json; video/webcam: annotated .mp4/.avi"),
    as_json: bool = typer.Option(False, "--json", help="print predictions as JSON on stdout"),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help=TTA_HELP),
    runtime: str = typer.Option("auto", help=RUNTIME_HELP),
    webcam: Optional[int] = typer.Option(None, help="read frames from this camera index instead of files"),
    max_frames: Optional[int] = typer.Option(None, min=1, help="video/webcam: stop after this many frames"),
    age_groups: Optional[str] = typer.Option(None, help=AGE_GROUPS_HELP),
) -> None:
    """Age and gender of every face in images, a video file, or a webcam stream."""
    from agegender.cli_runs import ImageRun, InputError, PredictOptions, plan_inputs
    from agegender.inference.predictor import Predictor

    inputs = plan_inputs(paths or [], webcam, detect=not no_detect)  # lists the folders' files, once
    scheme = _age_group_scheme(age_groups)
    predictor = Predictor.from_checkpoint(
        model, runtime=runtime, detector=detector, margin=margin, tta=tta, crop=crop, age_groups=scheme
    )
    options = PredictOptions(
        detect=not no_detect, save_dir=save_dir, output=output, max_frames=max_frames, collect_rows=as_json
    )
    run = _run_predict_with_progress(predictor, inputs, options)
    for message in run.skipped:
        console.print(f"skipped {message}")
    if as_json:
        print(json.dumps(run.rows, indent=2))
    elif output is None:
        for prediction in run.predictions:
            for line in prediction.text_lines():
                print(line)
    console.print(run.summary())
    if isinstance(run, ImageRun) and not run.images:
        raise InputError(f"none of the {len(run.skipped)} inputs is a readable image")


class _FacesPerSecond(ProgressColumn):
    """'N faces, R faces/s' from the task's `faces` field."""

    def render(self, task) -> Text:
        faces, elapsed = task.fields.get("faces", 0), task.elapsed or 0.0
        rate = f"{faces / elapsed:.1f}" if elapsed > 0 else "-"
        return Text(f"{faces} faces, {rate} faces/s")


def _run_predict_with_progress(predictor, inputs, options):
    """run_predict, with a progress bar (images, faces/s) for image runs."""
    from rich.progress import Progress

    from agegender.cli_runs import run_predict

    if inputs.is_stream:
        return run_predict(predictor, inputs, options)
    with Progress(*Progress.get_default_columns(), _FacesPerSecond(), console=console, transient=True) as bar:
        task = bar.add_task("predicting", total=len(inputs.images), faces=0)
        found = [0]  # faces so far

        def report(images: int, faces: int) -> None:
            found[0] += faces
            bar.update(task, advance=images, faces=found[0])

        return run_predict(predictor, inputs, options, progress=report)


@app.command()
def export(
    out: Path = typer.Option(..., help="file to write, e.g. model.onnx"),
    model: Optional[Path] = typer.Option(None, help="checkpoint; default: the bundled model"),
    format_: str = typer.Option("onnx", "--format", help="onnx | safetensors-fp16 (a checkpoint with half-size weights)"),
    quantize: Optional[str] = typer.Option(
        None, help="onnx: int8 (dynamic, weights only) | int8-static (weights and activations; needs --calibration-data)"
    ),
    calibration_data: Optional[list[Path]] = typer.Option(
        None, help="int8-static: labelled folder whose train split calibrates the activation ranges; repeat for several"
    ),
    calibration_faces: int = typer.Option(
        DEFAULT_CALIBRATION_FACES, min=1, help="int8-static: faces drawn (seeded) from --calibration-data"
    ),
    face_template: Optional[str] = typer.Option(
        None, help="safetensors-fp16: record aligned crops on this template (utkface | dlib_150) instead of the source's"
    ),
    tta: Optional[bool] = typer.Option(
        None, "--tta/--no-tta", help="record whether predictors average each face with its mirror image by default"
    ),
) -> None:
    """Export a checkpoint to ONNX (checked against PyTorch) or to a float16 checkpoint."""
    from agegender.export.formats import ExportRequest, export_format
    from agegender.inference.predictor import bundled_model_path

    source = model or bundled_model_path()
    request = ExportRequest(source, out, tta, quantize, tuple(calibration_data or ()), calibration_faces, face_template)
    chosen = export_format(format_, request)
    check_output_file(out, "--out", (chosen.suffix,), [source])
    if request.calibration_data:
        request = replace(request, calibration=draw_calibration_faces(request))
    print(chosen.write(request))


def draw_calibration_faces(request: ExportRequest) -> np.ndarray:
    """int8-static's calibration faces: a seeded draw of the folders' train splits, cut as the model cuts them."""
    from agegender.evaluation.evaluate import sample_split_faces
    from agegender.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(request.source, runtime="torch")
    return sample_split_faces(predictor, list(request.calibration_data), request.calibration_faces)


@app.command()
def calibrate(
    data: list[Path] = typer.Option(..., help="labelled folder with exact ages; repeat for several (the model's val split)"),
    out: Path = typer.Option(..., help="the calibrated copy of the model file to write"),
    model: Optional[Path] = typer.Option(None, help="checkpoint; default: the bundled model"),
    split: str = typer.Option("val", help="the split the temperature is chosen on (never the one you report)"),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help=TTA_HELP),
) -> None:
    """Make the 80% age intervals cover 80% of true ages on a val split: writes a copy with that temperature."""
    from agegender.evaluation.intervals import calibrate as choose
    from agegender.inference.predictor import Predictor, bundled_model_path
    from agegender.models.checkpoint import save_with_inference_default

    source = model or bundled_model_path()
    check_output_file(out, "--out", (".safetensors",), [source, *data])
    result = choose(Predictor.from_checkpoint(source, tta=tta), data, split)
    save_with_inference_default(source, out, "age_interval_temperature", round(result.temperature, 4))
    print(f"{out}: {result.line()}")


def _member_weights(text: Optional[str], option: str) -> Optional[list[float]]:
    """--gender-weights 1,0,2 -> [1.0, 0.0, 2.0]."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated numbers, one per member, got '{text}'") from None


@app.command()
def ensemble(
    checkpoints: list[Path] = typer.Argument(..., help="checkpoints trained on the same data split (an ensemble adds its members)"),
    out: Path = typer.Option(..., help="checkpoint to write, e.g. ensemble.safetensors"),
    gender_weights: Optional[str] = typer.Option(None, help="one weight per member for P(female), e.g. 1,1,2 (default: equal)"),
    age_weights: Optional[str] = typer.Option(None, help="one weight per member for age, e.g. 0,1,1 (default: equal)"),
) -> None:
    """Join checkpoints into one that averages their predictions (usable wherever a checkpoint is)."""
    from agegender.models.checkpoint import read_meta, save_ensemble_checkpoint

    written = save_ensemble_checkpoint(
        checkpoints, out, gender_weights=_member_weights(gender_weights, "--gender-weights"),
        age_weights=_member_weights(age_weights, "--age-weights"),
    )  # fmt: skip
    meta = read_meta(written)
    weights = meta["ensemble_weights"]
    print(f"{written}: ensemble of {len(meta['ensemble'])} models, {written.stat().st_size / 2**20:.1f} MB")
    for index, member in enumerate(meta["ensemble"]):
        print(f"  {index}: {member['source']} (gender weight {weights['gender'][index]:.3f}, age weight {weights['age'][index]:.3f})")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port, 1-65535"),
    model: Optional[Path] = typer.Option(None, help="checkpoint (.safetensors) or exported .onnx file; default: the bundled model"),
    runtime: str = typer.Option("auto", help=RUNTIME_HELP),
    detector: str = typer.Option("auto", help=f"face detector: {DETECTOR_HELP}"),
    crop: Optional[str] = typer.Option(None, help=CROP_HELP),
    max_concurrent: int = typer.Option(2, min=1, help="requests decoding or predicting at once (memory bound)"),
    read_timeout: float = typer.Option(10.0, min=0.1, help="seconds a client may take to send a request's headers, and the longest pause within its body; slower clients get 408 and are closed"),
    max_connections: int = typer.Option(1000, min=1, help="open connections; one more is answered 503 and closed"),
) -> None:
    """Serve the web page and the JSON API (POST /predict, GET /health, /docs)."""
    from agegender.inference.predictor import Predictor
    from agegender.serving.app import run_server
    from agegender.serving.protocol import ConnectionLimits

    limits = ConnectionLimits(header_timeout=read_timeout, body_idle_timeout=read_timeout, max_connections=max_connections)
    predictor = Predictor.from_checkpoint(model, runtime=runtime, detector=detector, crop=crop)
    run_server(predictor, host=host, port=port, max_concurrent=max_concurrent, limits=limits)


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="run directories written by `agegender train`"),
    out: Path = typer.Option(..., help="folder for report.md, report.html and figures/"),
    data: Optional[Path] = typer.Option(None, help="data folder, if the runs' own data path moved"),
    split: str = typer.Option("val", help="val | test: the split the per-group tables and figures use"),
    max_images: int = typer.Option(500, min=1, help="images per run re-predicted for the figures"),
    age_groups: Optional[str] = typer.Option(None, help="add age-group accuracy, 1-off and confusion matrices: " + AGE_GROUPS_HELP),
) -> None:
    """Compare trained runs: architecture, training, performance and per-group tables plus figures."""
    from agegender.evaluation.compare import compare_runs

    scheme = _age_group_scheme(age_groups)
    check_output_dir(out, "--out", runs)
    result = compare_runs(runs, out, data_dir=data, split=split, max_images=max_images, age_groups=scheme)
    for note in result.notes:
        console.print(note)
    console.print(f"wrote {result.markdown} and {result.html}")


@app.command("models")
def list_models_command(
    info: bool = typer.Option(False, "--info", help="describe a model file instead: its recipe, settings and numbers"),
    model: Optional[Path] = typer.Option(None, help="--info: a .safetensors checkpoint; default: the bundled model"),
) -> None:
    """List the registered model names, or (--info) what a model file says of itself."""
    if not info:
        from agegender.models import list_models

        for name in list_models():
            print(name)
        return
    from agegender.inference.runtime import int8_companion, int8_companion_path
    from agegender.models.backends import bundled_model_path
    from agegender.models.checkpoint import describe_model

    path = model or bundled_model_path()
    for key, value in describe_model(path).items():
        print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    if path.suffix != ".onnx" and int8_companion(path, threads=1) is not None:  # checked: made from this file
        print(f"int8 companion: {int8_companion_path(path).name} (static int8, what --runtime auto runs; "
              "the metrics above are float32's, the two side by side: docs/quantization.md)")


def _is_usage_error(error: Exception) -> bool:
    import click

    # typer >= 0.2x vendors its own click (typer._click) whose exceptions do not derive from click's
    bases = tuple(b for b in (click.ClickException, getattr(typer, "TyperException", None)) if b is not None)
    return isinstance(error, bases) and hasattr(error, "show") and hasattr(error, "exit_code")


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except USER_ERRORS as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")  # messages hold paths and [lists]: not markup
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
    except Exception as error:  # click usage errors arrive here in standalone_mode=False
        if _is_usage_error(error):
            error.show()
            sys.exit(error.exit_code)
        raise
    if isinstance(code, int) and code:  # typer.Exit(n) and Ctrl-C (130) come back as a return value
        sys.exit(code)


if __name__ == "__main__":
    main()
