"""`agegender` command line: each verb parses its options and calls one library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from agegender.config import ConfigError, load_config
from agegender.data.images import ImageLoadError
from agegender.data.readers import DataError
from agegender.inference.detect import DetectorUnavailableError
from agegender.models.checkpoint import CheckpointError
from agegender.models.registry import UnknownModelError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Age and gender estimation from face images.")
console = Console(stderr=True, soft_wrap=True)
USER_ERRORS = (ConfigError, DataError, CheckpointError, UnknownModelError, ImageLoadError, ValueError, FileNotFoundError,
               DetectorUnavailableError)  # fmt: skip


def _train_overrides(**options) -> list[str]:
    """CLI flags -> section.key=value overrides (flags left unset change nothing)."""
    names = {
        "data": "data.path", "image_size": "data.image_size", "limit": "data.limit", "seed": "data.seed",
        "model": "model.name", "weights": "model.weights", "epochs": "train.epochs",
        "batch_size": "train.batch_size", "lr": "train.lr", "optimizer": "train.optimizer",
        "scheduler": "train.scheduler", "threads": "train.threads", "device": "train.device",
        "init": "train.init_from",
    }  # fmt: skip
    return [f"{names[k]}={v}" for k, v in options.items() if v is not None]


@app.command()
def train(
    data: Optional[Path] = typer.Option(None, help="UTKFace folder or folder with labels.csv"),
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
    if not run_config.data.path:
        raise typer.BadParameter("--data DIR is required for a new run")
    fit(run_config, out, console=console)


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="labelled folder (UTKFace or labels.csv)"),
    model: Optional[Path] = typer.Option(None, help="checkpoint; default: the bundled model"),
    split: str = typer.Option("all", help="all | train | val | test (recomputed with the model's own split seed)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout"),
    runtime: str = typer.Option("torch", help="torch | onnx (--model then names an exported .onnx file)"),
    tta: bool = typer.Option(False, "--tta", help="average each face with its mirror image"),
) -> None:
    """Gender accuracy, age MAE, CS@5 and per-race / gender / age-band breakdowns."""
    from agegender.evaluation.evaluate import evaluate as run_evaluation
    from agegender.evaluation.report import print_report, report_to_dict
    from agegender.inference.predictor import load_predictor

    predictor = load_predictor(model, runtime=runtime, tta=tta)
    result = run_evaluation(predictor, data, split)
    console.print(result.read.summary_line())
    if result.undecodable:
        console.print(f"{len(result.undecodable)} unreadable images skipped: " + "; ".join(
            f"{Path(s.path).name}: {s.reason}" for s in result.undecodable[:5]))
    if as_json:
        print(json.dumps({"split": split, "model": str(predictor.source), **report_to_dict(result.report)}, indent=2))
    else:
        print_report(result.report, Console(soft_wrap=True))


@app.command()
def predict(
    paths: list[Path] = typer.Argument(None, help="images, folders (searched recursively) or one video file"),
    model: Optional[Path] = typer.Option(None, help="checkpoint (.onnx with --runtime onnx); default: the bundled model"),
    no_detect: bool = typer.Option(False, "--no-detect", help="treat each image as an already-cropped face"),
    detector: str = typer.Option("auto", help="auto (mediapipe if installed, else haar) | haar | mediapipe"),
    margin: Optional[float] = typer.Option(None, help="crop margin per side, fraction of the face box; default: detector's"),
    save_dir: Optional[Path] = typer.Option(None, help="write annotated copies of the images here"),
    output: Optional[Path] = typer.Option(None, help="images: predictions .csv/.json; video/webcam: annotated .mp4/.avi"),
    as_json: bool = typer.Option(False, "--json", help="print predictions as JSON on stdout"),
    tta: bool = typer.Option(False, "--tta", help="average each face with its mirror image"),
    runtime: str = typer.Option("torch", help="torch | onnx"),
    webcam: Optional[int] = typer.Option(None, help="read frames from this camera index instead of files"),
    max_frames: Optional[int] = typer.Option(None, help="video/webcam: stop after this many frames"),
) -> None:
    """Age and gender of every face in images, a video file, or a webcam stream."""
    from agegender.inference.predictor import load_predictor
    from agegender.inference.sources import is_video_path

    paths = paths or []
    if webcam is None and not paths:
        raise ValueError("give images, folders or a video file, or --webcam INDEX")
    video = webcam is not None or any(is_video_path(p) for p in paths)
    if video and (len(paths) > (0 if webcam is not None else 1) or no_detect):
        raise ValueError("a video or --webcam is predicted on its own (one input, with face detection)")
    predictor = load_predictor(model, runtime=runtime, detector=detector, margin=margin, tta=tta)
    if video:
        _predict_video_command(predictor, paths[0] if paths else None, webcam, output, as_json, max_frames)
    else:
        _predict_images_command(predictor, paths, no_detect, save_dir, output, as_json)


def _predict_images_command(predictor, paths, no_detect, save_dir, output, as_json) -> None:
    from rich.progress import Progress

    from agegender.inference.runs import predict_images, write_rows
    from agegender.inference.sources import expand_image_paths

    total = len(expand_image_paths(paths))
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("predicting", total=total)
        run = predict_images(
            predictor, paths, detect=not no_detect, save_dir=save_dir, progress=lambda n: bar.advance(task, n)
        )
    for message in run.skipped:
        console.print(f"skipped {message}")
    if output is not None:
        write_rows(run.rows, output)
    if as_json:
        print(json.dumps(list(run.rows), indent=2))
    elif output is None:
        for row in run.rows:
            where = ""
            if row["x1"] is not None:
                where = f" face {row['face_index']} at ({row['x1']},{row['y1']},{row['x2']},{row['y2']})"
            print(f"{row['path']}{where}: {row['gender']} (p_female {row['p_female']:.2f}), age {row['age']:.0f}")
    console.print(f"{run.images} images predicted, {len(run.rows)} faces, {len(run.skipped)} unreadable skipped")
    if not run.images:
        raise typer.Exit(1)


def _predict_video_command(predictor, video, webcam, output, as_json, max_frames) -> None:
    from agegender.inference.runs import has_display, predict_video
    from agegender.inference.sources import VideoSource, WebcamSource

    show = output is None and has_display()
    if output is None and not show:
        raise ValueError("no display for a live window here: pass --output out.mp4")
    source = WebcamSource(webcam) if webcam is not None else VideoSource(video)
    run = predict_video(predictor, source, output=output, show=show, max_frames=max_frames, collect_rows=as_json)
    if as_json:
        print(json.dumps(list(run.rows), indent=2))
    wrote = f"; wrote {output}" if output else ""
    console.print(f"{run.frames} frames, {run.faces} faces, {run.fps:.1f} fps{wrote}")


@app.command()
def export(
    out: Path = typer.Option(..., help="file to write, e.g. model.onnx"),
    model: Optional[Path] = typer.Option(None, help="checkpoint; default: the bundled model"),
    format_: str = typer.Option("onnx", "--format", help="onnx | safetensors-fp16 (a checkpoint with half-size weights)"),
    quantize: Optional[str] = typer.Option(None, help="int8: dynamic quantisation of the weights (onnx)"),
) -> None:
    """Export a checkpoint to ONNX (checked against PyTorch) or to a float16 checkpoint."""
    from agegender.export.onnx import export_onnx
    from agegender.inference.predictor import bundled_model_path
    from agegender.models.checkpoint import save_half_checkpoint

    if format_ == "safetensors-fp16":
        source = model or bundled_model_path()
        written = save_half_checkpoint(source, out)
        print(f"{written}: float16 weights, {written.stat().st_size / 2**20:.1f} MB (from {source.stat().st_size / 2**20:.1f} MB)")
        return
    if format_ != "onnx":
        raise ValueError(f"unknown format '{format_}'; choose onnx or safetensors-fp16")
    print(export_onnx(model, out, quantize=quantize).summary())


@app.command()
def ensemble(
    checkpoints: list[Path] = typer.Argument(..., help="two or more checkpoints trained on the same data split"),
    out: Path = typer.Option(..., help="checkpoint to write, e.g. ensemble.safetensors"),
) -> None:
    """Join checkpoints into one that averages their predictions (usable wherever a checkpoint is)."""
    from agegender.models.checkpoint import save_ensemble_checkpoint

    written = save_ensemble_checkpoint(checkpoints, out)
    print(f"{written}: ensemble of {len(checkpoints)} models, {written.stat().st_size / 2**20:.1f} MB")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000),
    model: Optional[Path] = typer.Option(None, help="checkpoint (.onnx with --runtime onnx); default: the bundled model"),
    runtime: str = typer.Option("torch", help="torch | onnx"),
    detector: str = typer.Option("auto", help="face detector: auto | haar | mediapipe"),
    max_concurrent: int = typer.Option(2, min=1, help="requests decoding or predicting at once (memory bound)"),
) -> None:
    """Serve the web page and the JSON API (POST /predict, GET /health, /docs)."""
    from agegender.inference.predictor import load_predictor
    from agegender.serving.app import run_server

    predictor = load_predictor(model, runtime=runtime, detector=detector)
    run_server(predictor, host=host, port=port, max_concurrent=max_concurrent)


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="run directories written by `agegender train`"),
    out: Path = typer.Option(..., help="folder for report.md, report.html and figures/"),
    data: Optional[Path] = typer.Option(None, help="data folder, if the runs' own data path moved"),
    split: str = typer.Option("val", help="val | test: the split the per-group tables and figures use"),
    max_images: int = typer.Option(500, help="images per run re-predicted for the figures"),
) -> None:
    """Compare trained runs: architecture, training, performance and per-group tables plus figures."""
    from agegender.evaluation.compare import compare_runs

    result = compare_runs(runs, out, data_dir=data, split=split, max_images=max_images)
    for note in result.notes:
        console.print(note)
    console.print(f"wrote {result.markdown} and {result.html}")


@app.command("models")
def list_models_command() -> None:
    """List the registered model names."""
    from agegender.models import list_models

    for name in list_models():
        print(name)


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
