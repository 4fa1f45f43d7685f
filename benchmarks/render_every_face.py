"""The README's table of the bundled model against the 37bb9df one, rendered from the JSON reports that
benchmarks/every_face.sh MODEL NAME test wrote (runs/every_face/NAME/).

    python benchmarks/render_every_face.py runs/every_face/bundled runs/every_face/sampled
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def row(folder: Path) -> str:
    utk = json.loads((folder / "utkface_test.json").read_text())
    aaf = json.loads((folder / "aaf_test.json").read_text())
    lfw = json.loads((folder / "lfw_report.json").read_text())["detection"]
    worst = min(utk["per_race"].items(), key=lambda item: item[1]["gender_accuracy"])
    cells = [
        folder.name,
        f"{percent(utk['gender_accuracy'])} / {utk['age_mae']:.2f}",
        percent(utk["per_age_band"]["0-12"]["gender_accuracy"]),
        f"{worst[0]} {percent(worst[1]['gender_accuracy'])}",
        f"{percent(aaf['gender_accuracy'])} / {aaf['age_mae']:.2f}",
        percent(aaf["per_age_band"]["0-12"]["gender_accuracy"]),
        " / ".join(f"{percent(r['age_groups']['overall']['accuracy'])}, {percent(r['age_groups']['overall']['one_off'])}"
                   for r in (utk, aaf)),  # fmt: skip
        " / ".join(percent(r["age_interval_coverage"]) for r in (utk, aaf)),
        f"{percent(lfw['end_to_end_gender_accuracy'])} ({percent(lfw['end_to_end_per_gender']['female'])} / "
        f"{percent(lfw['end_to_end_per_gender']['male'])})",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    print("| model | UTKFace test gender / MAE | UTKFace 0-12 | worst race | AAF test gender / MAE | AAF 0-12 "
          "| FairFace 9 groups exact, 1-off (UTKFace / AAF) | 80% interval coverage (UTKFace / AAF) "
          "| lfw_report end to end (women / men) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        print(row(folder))


if __name__ == "__main__":
    main()
