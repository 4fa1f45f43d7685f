"""compare_runs(): a Markdown + HTML report comparing trained runs side by side.

Everything per epoch comes from each run's history.csv, everything final from its metrics.json;
only the figures that need per-image predictions re-run the run's best checkpoint, on at most
`max_images` images of its own val (or test) split, recomputed with the seed it was trained with.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agegender.config import RunConfig, load_config
from agegender.data.age_groups import AgeGroupScheme, group_probabilities
from agegender.data.dataset import LabelledArrays, decode_split
from agegender.data.readers import read_folders
from agegender.errors import UserInputError
from agegender.evaluation import compare_figures as figures
from agegender.evaluation.compare_backbones import (
    EVALUATIONS_DIR,
    backbone_table,
    load_evaluations,
    timed_predictions,
)
from agegender.evaluation.group_metrics import AgeGroupReport, score_age_groups
from agegender.evaluation.metrics import AGE_BAND_NAMES, age_band
from agegender.evaluation.plots import read_history
from agegender.models.checkpoint import load_checkpoint

OVERFIT_EPOCHS = 3  # val loss rising while train loss falls for this many epochs in a row -> overfitting
MEMORISING_GAP = 0.15  # train loss this far below val loss at the best epoch -> overfitting, even if val still falls
BREAKDOWNS = (("per_race", "race"), ("per_gender", "gender"), ("per_age_band", "age band"))


class CompareError(UserInputError):
    """A run directory cannot be compared (missing files)."""


@dataclass(frozen=True)
class Predictions:
    arrays: LabelledArrays
    age: np.ndarray  # (N,) years
    p_female: np.ndarray  # (N,)
    age_probs: np.ndarray | None = None  # (N, K) age distribution; None without a bins head


@dataclass(frozen=True)
class Run:
    label: str  # unique display name: model name + run directory name
    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    checkpoint_bytes: int
    predictions: Predictions | None = None
    predictions_note: str = ""
    evaluations: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # evaluations/*.json
    faces_per_second: float | None = None  # the model alone on its re-predicted crops (compare_backbones)
    model_name: str = ""  # the registry name, or "ensemble" for an ensemble checkpoint
    trained: bool = True  # False: a checkpoint with evaluations only (load_evaluated_checkpoint)


@dataclass(frozen=True)
class Comparison:
    markdown: Path
    html: Path
    figures: dict[str, Path]
    notes: list[str]


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    needed = ("config.yaml", "history.csv", "metrics.json", "best.safetensors")
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing and (run_dir / "best.safetensors").is_file() and (run_dir / EVALUATIONS_DIR).is_dir():
        return load_evaluated_checkpoint(run_dir)
    if missing:
        raise CompareError(
            f"{run_dir}: not a finished run (missing {', '.join(missing)}), nor a best.safetensors with an "
            f"{EVALUATIONS_DIR}/ folder"
        )
    config = load_config(run_dir / "config.yaml")
    return Run(
        label=f"{config.model.name} ({run_dir.name})",
        run_dir=run_dir,
        config=config,
        metrics=json.loads((run_dir / "metrics.json").read_text()),
        history=read_history(run_dir / "history.csv"),
        checkpoint_bytes=(run_dir / "best.safetensors").stat().st_size,
        evaluations=load_evaluations(run_dir),
        model_name=config.model.name,
    )


def load_evaluated_checkpoint(run_dir: Path) -> Run:
    """A folder with best.safetensors (an ensemble, say, which no training run wrote) and its
    `evaluate --report` files: its val and test numbers come from the crop evaluations (no --detect)
    of those splits, its config from the checkpoint. Only the per-backbone table shows it."""
    checkpoint = load_checkpoint(run_dir / "best.safetensors")
    evaluations = load_evaluations(run_dir)
    on_crops = [e for e in evaluations.values() if "detection" not in e]
    metrics: dict[str, Any] = {"model": {"parameters": sum(p.numel() for p in checkpoint.model.parameters())}}
    for split in ("val", "test"):
        metrics[split] = next((e for e in on_crops if e.get("split") == split), None)
    name = "ensemble" if "ensemble" in checkpoint.meta else checkpoint.config.model.name
    return Run(
        label=f"{name} ({run_dir.name})", run_dir=run_dir, config=checkpoint.config, metrics=metrics, history=[],
        checkpoint_bytes=(run_dir / "best.safetensors").stat().st_size, evaluations=evaluations,
        model_name=name, trained=False,
    )  # fmt: skip


def predict_split(run: Run, split: str, data_dir: Path | None, max_images: int) -> Run:
    """The run with its best checkpoint's predictions on (part of) its own `split`."""
    from agegender.evaluation.evaluate import select_split

    folders = [Path(data_dir)] if data_dir else [Path(f) for f in run.config.data.folders()]
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing or not folders:
        return dataclasses.replace(run, predictions_note=f"data folder {', '.join(missing)} not found (pass --data)")
    checkpoint = load_checkpoint(run.run_dir / "best.safetensors")
    samples = select_split(read_folders(folders), split, run.config.data)[:max_images]
    data_config = dataclasses.replace(run.config.data, image_size=checkpoint.image_size)
    arrays, _ = decode_split(samples, data_config)
    if len(arrays) == 0:
        return dataclasses.replace(run, predictions_note=f"no readable {split} images in {data_dir}")
    predicted, speed = timed_predictions(checkpoint.model, arrays.images)
    predictions = Predictions(arrays, predicted.age, predicted.p_female, predicted.age_probs)
    return dataclasses.replace(run, predictions=predictions, faces_per_second=speed)


def score_run_groups(run: Run, scheme: AgeGroupScheme) -> AgeGroupReport | None:
    """Group metrics of a run's re-predicted images (None when they could not be predicted)."""
    if run.predictions is None:
        return None
    p = run.predictions
    probs = group_probabilities(scheme, p.age, p.age_probs)
    return score_age_groups(p.arrays.samples, probs, scheme, from_distribution=p.age_probs is not None)


def age_group_table(runs: list[Run], reports: list[AgeGroupReport | None]) -> tuple[list[str], list[list[str]]]:
    """One row per run: scored images, exact and 1-off group accuracy, overall and per gender."""
    header = ["run", "n", "exact %", "1-off %", "male exact / 1-off %", "female exact / 1-off %", "groups from"]
    rows = []
    for run, report in zip(runs, reports):
        if report is None:
            rows.append([run.label, "-", "-", "-", "-", "-", run.predictions_note])
            continue
        genders = [report.per_gender.get(g) for g in ("male", "female")]
        by_gender = [f"{_pct(g.accuracy)} / {_pct(g.one_off)}" if g else "-" for g in genders]
        source = "age distribution" if report.from_distribution else "predicted age"
        rows.append([run.label, str(report.overall.n), _pct(report.overall.accuracy), _pct(report.overall.one_off), *by_gender, source])
    return header, rows


def confusion_table(report: AgeGroupReport) -> tuple[list[str], list[list[str]]]:
    """Rows: true group; columns: predicted group; cells: image counts."""
    header = ["true \u2193 / predicted \u2192", *report.groups]
    return header, [[name, *(str(c) for c in row)] for name, row in zip(report.groups, report.confusion)]


# ----------------------------------------------------------------------------- derived numbers


def convergence_verdict(history: list[dict[str, Any]], patience: int = OVERFIT_EPOCHS) -> str:
    """Over/under-fitting read off the loss curves."""
    train = [float(r["train_loss"]) for r in history]
    val = [float(r["val_loss"]) for r in history]
    if len(val) < 2:
        return "too short to judge (1 epoch)"
    streak, longest, longest_end = 0, 0, 0
    for i in range(1, len(val)):
        streak = streak + 1 if val[i] > val[i - 1] and train[i] < train[i - 1] else 0
        if streak > longest:
            longest, longest_end = streak, i
    best = int(np.nanargmin(val))
    if longest >= patience:
        start = int(history[longest_end - longest + 1]["epoch"])
        return f"overfitting: val loss rose while train loss fell for {longest} epochs (from epoch {start})"
    gap = 1 - train[best] / val[best]  # train loss runs with dropout and augmentation, so it is not below val unless memorising
    if gap > MEMORISING_GAP:
        return (f"overfitting: at the best epoch ({int(history[best]['epoch'])}) train loss is {100 * gap:.0f}% below "
                "val loss although val loss still fell")  # fmt: skip
    if best == len(val) - 1:
        return "still improving at the last epoch: under-trained, more epochs would help"
    if val[-1] > val[best] * 1.05 and train[-1] < train[best]:
        return f"mild overfitting after epoch {int(history[best]['epoch'])} (val loss up {100 * (val[-1] / val[best] - 1):.0f}%)"
    return f"converged: val loss flat after epoch {int(history[best]['epoch'])}"


def learning_rates(run: Run) -> str:
    phases = run.metrics.get("phases")
    if phases:
        return " / ".join(f"{p['name']} {p['lr']:.0e}" for p in phases)
    return f"{run.config.train.lr:.0e} ({run.config.train.scheduler})"


def wall_seconds(run: Run) -> float:
    timing = run.metrics.get("timing", {})
    caching = float(run.metrics.get("feature_cache_seconds", 0.0))  # two-phase runs: one-off feature caching
    return float(timing.get("total_seconds", math.nan)) + caching


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def architecture_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "parameters", "trainable", "conv/linear layers", "input", "feature map", "checkpoint"]
    rows = []
    for run in runs:
        m = run.metrics["model"]
        c, h, w = m["feature_map"]
        rows.append([run.label, f"{m['parameters'] / 1e6:.2f} M", f"{m['trainable_parameters'] / 1e6:.2f} M",
                     str(m["layers"]), f"{m['input_size']}x{m['input_size']}", f"{c}x{h}x{w}",
                     _size(run.checkpoint_bytes)])  # fmt: skip
    return header, rows


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KB"


def training_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "optimiser", "learning rate", "stopped at epoch", "best epoch", "ms/step", "wall time (incl. caching)"]
    rows = []
    for run in runs:
        timing = run.metrics.get("timing", {})
        stopped = f"{run.metrics['stopped_epoch']}" + (" (early stop)" if run.metrics.get("early_stopped") else "")
        rows.append([run.label, run.config.train.optimizer, learning_rates(run), stopped, str(run.metrics["best_epoch"]),
                     ms_per_step(timing), _duration(wall_seconds(run))])  # fmt: skip
    return header, rows


def ms_per_step(timing: dict) -> str:
    by_phase = timing.get("ms_per_step_by_phase")
    if by_phase:
        return " / ".join(f"{phase} {_num(ms, 0)}" for phase, ms in by_phase.items())
    return _num(timing.get("ms_per_step"), 0)


def performance_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "val gender acc", "val age MAE", "test gender acc", "test age MAE",
              "train-val gap (acc / MAE)", "verdict (from history.csv)"]  # fmt: skip
    rows = []
    for run in runs:
        val, test = run.metrics.get("val") or {}, run.metrics.get("test") or {}
        at_best = run.metrics.get("train_at_best", {})
        acc_gap = _gap(at_best.get("train_gender_acc"), val.get("gender_accuracy"), percent=True)
        mae_gap = _gap(val.get("age_mae"), at_best.get("train_age_mae"), percent=False)
        rows.append([run.label, _pct(val.get("gender_accuracy")), _num(val.get("age_mae")),
                     _pct(test.get("gender_accuracy")), _num(test.get("age_mae")),
                     f"{acc_gap} / {mae_gap}", convergence_verdict(run.history)])  # fmt: skip
    return header, rows


def _gap(high: float | None, low: float | None, percent: bool) -> str:
    if high is None or low is None:
        return "-"
    return f"{100 * (high - low):+.1f} pt" if percent else f"{high - low:+.2f} y"


def group_table(runs: list[Run], split: str) -> tuple[list[str], list[list[str]]]:
    """Gender accuracy / age MAE per group, one column per run; each run's worst group marked."""
    header = ["group", "n", *[f"{run.label}: acc / MAE" for run in runs]]
    worst = {id(run): _worst_groups(run.metrics.get(split) or {}) for run in runs}
    rows = []
    for key, kind in BREAKDOWNS:
        names = [name for run in runs for name in (run.metrics.get(split) or {}).get(key, {})]
        for name in dict.fromkeys(names):
            cells, n = [], "-"
            for run in runs:
                group = (run.metrics.get(split) or {}).get(key, {}).get(name)
                if group is None:
                    cells.append("-")
                    continue
                n = str(group["n"])
                flags = [what for what, (k, g) in worst[id(run)].items() if (k, g) == (key, name)]
                mark = " **worst " + " & ".join(flags) + "**" if flags else ""
                cells.append(f"{_pct(group['gender_accuracy'])} / {_num(group['age_mae'])}{mark}")
            rows.append([f"{kind}: {name}", n, *cells])
    return header, rows


def _worst_groups(report: dict[str, Any], min_n: int = 5) -> dict[str, tuple[str, str]]:
    """The group with the lowest gender accuracy and the one with the highest age MAE (n >= min_n)."""
    groups = [(key, name, g) for key, _ in BREAKDOWNS for name, g in report.get(key, {}).items() if g["n"] >= min_n]
    if len(groups) < 2:  # tiny evaluation sets: rank every group rather than none
        groups = [(key, name, g) for key, _ in BREAKDOWNS for name, g in report.get(key, {}).items()]
    worst = {}
    with_acc = [x for x in groups if x[2]["gender_accuracy"] is not None]
    with_mae = [x for x in groups if x[2]["age_mae"] is not None]
    if with_acc:
        key, name, _ = min(with_acc, key=lambda x: x[2]["gender_accuracy"])
        worst["acc"] = (key, name)
    if with_mae:
        key, name, _ = max(with_mae, key=lambda x: x[2]["age_mae"])
        worst["MAE"] = (key, name)
    return worst


def band_mae(predictions: Predictions) -> dict[str, float]:
    """Age MAE per age band of the true age, in AGE_BANDS order."""
    true = predictions.arrays.age
    errors: dict[str, list[float]] = {}
    for t, p in zip(true, predictions.age):
        if not math.isnan(t):
            errors.setdefault(age_band(float(t)), []).append(abs(float(p) - float(t)))
    return {band: float(np.mean(errors[band])) for band in AGE_BAND_NAMES if band in errors}


# ----------------------------------------------------------------------------- writing


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_cell(text: str) -> str:
    escaped = html.escape(text)
    if "**" in escaped:  # the worst-group marker
        start, _, rest = escaped.partition("**")
        flag, _, end = rest.partition("**")
        return f"{start}<strong class='worst'>{flag}</strong>{end}"
    return escaped


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
.worst { color: #b00020; } img { max-width: 100%; border: 1px solid #eee; } .note { color: #666; }
"""


def report_sections(every_run: list, runs: list, split: str, max_images: int, age_groups: AgeGroupScheme | None):
    """(heading, (header, rows)) for each table of the report; `runs` are the trained ones of `every_run`."""
    backbones = (
        "Backbones (photo columns: evaluate --detect --report RUN/evaluations/NAME.json; faces/s: the model "
        f"alone on up to {max_images} decoded crops, batches of 256, measured by this compare)"
    )
    sections = [(backbones, backbone_table(every_run))]
    if runs:
        sections[:0] = [("Architecture", architecture_table(runs)), ("Training", training_table(runs)),
                        ("Performance", performance_table(runs))]  # fmt: skip
        sections.append((f"Per group ({split} split; gender accuracy / age MAE in years)", group_table(runs, split)))
    if age_groups is not None and runs:  # on the re-predicted images, like the figures
        reports = [score_run_groups(run, age_groups) for run in runs]
        sections.append((f"Age groups ({age_groups.name}; {split} split, up to {max_images} images)", age_group_table(runs, reports)))
        sections += [(f"Age-group confusion: {run.label}", confusion_table(r)) for run, r in zip(runs, reports) if r]
    return sections


def compare_runs(
    run_dirs: list[Path],
    out: Path,
    *,
    data_dir: Path | None = None,
    split: str = "val",
    max_images: int = 500,
    age_groups: AgeGroupScheme | None = None,
) -> Comparison:
    """Write out/report.md (figures as PNG files beside it) and out/report.html (figures embedded)."""
    if not run_dirs:
        raise CompareError("give at least one run directory")
    if split not in ("val", "test"):
        raise CompareError(f"split must be val or test, got '{split}'")
    every_run = [predict_split(load_run(d), split, data_dir, max_images) for d in run_dirs]
    runs = [run for run in every_run if run.trained]  # evaluated-only checkpoints: the backbone table alone
    notes = [f"{run.label}: figures from predictions skipped, {run.predictions_note}" for run in every_run if run.predictions_note]
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)

    pictures = figures.draw_all(runs, split, band_mae) if runs else {}
    paths = {}
    for name, (title, png) in pictures.items():
        paths[name] = out / "figures" / f"{name}.png"
        paths[name].write_bytes(png)

    sections = report_sections(every_run, runs, split, max_images, age_groups)
    title = "Model comparison: " + " vs ".join(run.label for run in every_run)
    intro = (
        f"Runs: {', '.join(str(r.run_dir) for r in every_run)}. Tables come from each run's metrics.json and history.csv "
        f"(a checkpoint without a run: from its {EVALUATIONS_DIR}/ files, in the backbone table only); "
        f"figures that need predictions re-ran each best checkpoint on up to {max_images} images of its {split} split."
    )
    markdown = [f"# {title}", "", intro, ""] + [f"- {n}" for n in notes]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    body += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    for heading, (header, rows) in sections:
        markdown += [f"## {heading}", "", _markdown_table(header, rows), ""]
        body += [f"<h2>{html.escape(heading)}</h2>", _html_table(header, rows)]
    markdown += ["## Figures", ""]
    body.append("<h2>Figures</h2>")
    for name, (caption, png) in pictures.items():
        markdown += [f"### {caption}", "", f"![{caption}](figures/{name}.png)", ""]
        encoded = base64.b64encode(png).decode("ascii")
        body += [f"<h3>{html.escape(caption)}</h3>", f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'>"]

    (out / "report.md").write_text("\n".join(markdown))
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    (out / "report.html").write_text(page)
    return Comparison(out / "report.md", out / "report.html", paths, notes)
