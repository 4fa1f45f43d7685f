"""`agegender` command line: each verb parses its options and calls one library function."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from agegender.config import ConfigError, load_config
from agegender.data.images import ImageLoadError, list_image_files
from agegender.data.readers import DataError
from agegender.models.checkpoint import CheckpointError
from agegender.models.registry import UnknownModelError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Age and gender estimation from face images.")
console = Console(stderr=True, soft_wrap=True)
USER_ERRORS = (ConfigError, DataError, CheckpointError, UnknownModelError, ImageLoadError, ValueError, FileNotFoundError)


def _train_overrides(**options) -> list[str]:
    """CLI flags -> section.key=value overrides (flags left unset change nothing)."""
    names = {
        "data": "data.path", "image_size": "data.image_size", "limit": "data.limit", "seed": "data.seed",
        "model": "model.name", "weights": "model.weights", "epochs": "train.epochs",
        "batch_size": "train.batch_size", "lr": "train.lr", "optimizer": "train.optimizer",
        "scheduler": "train.scheduler", "threads": "train.threads",
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
    threads: Optional[int] = None,
    set_: list[str] = typer.Option([], "--set", help="override any config key: section.key=value"),
) -> None:
    """Train a model; writes checkpoints, history.csv, learning curves and metrics.json."""
    from agegender.training.fit import fit

    if (out is None) == (resume is None):
        raise typer.BadParameter("give exactly one of --out RUN_DIR (new run) or --resume RUN_DIR")
    overrides = _train_overrides(
        data=data, image_size=image_size, limit=limit, seed=seed, model=model, weights=weights, epochs=epochs,
        batch_size=batch_size, lr=lr, optimizer=optimizer, scheduler=scheduler, threads=threads,
    )  # fmt: skip
    run_config = load_config(config, [*overrides, *set_])
    if resume is None and not run_config.data.path:
        raise typer.BadParameter("--data DIR is required for a new run")
    fit(run_config, resume or out, resume=resume is not None, console=console)


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="labelled folder (UTKFace or labels.csv)"),
    model: Optional[Path] = typer.Option(None, help="checkpoint; default: the bundled model"),
    split: str = typer.Option("all", help="all | train | val | test (recomputed with the model's own split seed)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout"),
) -> None:
    """Gender accuracy, age MAE, CS@5 and per-race / gender / age-band breakdowns."""
    from agegender.evaluation.evaluate import evaluate as run_evaluation
    from agegender.evaluation.report import print_report, report_to_dict
    from agegender.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(model)
    result = run_evaluation(predictor, data, split)
    console.print(result.read.summary_line())
    if result.undecodable:
        console.print(f"{len(result.undecodable)} unreadable images skipped: " + "; ".join(
            f"{Path(s.path).name}: {s.reason}" for s in result.undecodable[:5]))
    if as_json:
        print(json.dumps({"split": split, "model": str(predictor.source), **report_to_dict(result.report)}, indent=2))
    else:
        print_report(result.report, Console(soft_wrap=True))


def _expand_inputs(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += list_image_files(path)
        else:
            files.append(path)
    return files


def _write_predictions_csv(rows: list[dict], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "age", "gender", "p_female"])
        writer.writeheader()
        writer.writerows(rows)


@app.command()
def predict(
    paths: list[Path] = typer.Argument(..., help="images or folders"),
    model: Optional[Path] = typer.Option(None, help="checkpoint; default: the bundled model"),
    no_detect: bool = typer.Option(False, "--no-detect", help="treat each image as an already-cropped face"),
    output: Optional[Path] = typer.Option(None, help="write predictions to this CSV"),
    as_json: bool = typer.Option(False, "--json", help="print predictions as JSON on stdout"),
) -> None:
    """Age and gender for face images."""
    from agegender.inference.predictor import Predictor

    if not no_detect:
        raise typer.BadParameter(
            "face detection is not available in this version; pass --no-detect for images that are face crops"
        )
    predictor = Predictor.from_checkpoint(model)
    rows, failures = [], []
    for path in _expand_inputs(paths):
        try:
            face = predictor.predict_cropped_file(path).faces[0]
        except ImageLoadError as error:
            failures.append(str(error))
            console.print(f"skipped {error}")
            continue
        rows.append({"path": str(path), "age": round(face.age, 1), "gender": face.gender, "p_female": round(face.p_female, 4)})
    if output is not None:
        _write_predictions_csv(rows, output)
    if as_json:
        print(json.dumps(rows, indent=2))
    elif output is None:
        for row in rows:
            print(f"{row['path']}: {row['gender']} (p_female {row['p_female']:.2f}), age {row['age']:.0f}")
    console.print(f"{len(rows)} predicted, {len(failures)} unreadable skipped")
    if not rows:
        raise typer.Exit(1)


@app.command("models")
def list_models_command() -> None:
    """List the registered model names."""
    from agegender.models import list_models

    for name in list_models():
        print(name)


def main() -> None:
    try:
        app(standalone_mode=False)
    except USER_ERRORS as error:
        console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
    except Exception as error:  # click usage errors arrive here in standalone_mode=False
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
