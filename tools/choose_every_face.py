"""The bundled model's criterion, fixed before the candidates were trained (docs/every_face.md): the mean of
four gender accuracies on data nothing is reported on, UTKFace val, AAF val, AAF val children 0-12 and
lfw_select end to end; val MAE (UTKFace and AAF) is shown beside it and breaks ties.

Beside it, the children 0-12 of both val splits pooled (UTKFace val's 281 are not in the criterion): a guard
added at stop 37, after a candidate ranked first by trading 18 of UTKFace's children for 4 of AAF's. A
candidate below the bundled model on it is not adopted (docs/every_face.md).

    python tools/choose_every_face.py runs/every_face/bundled runs/every_face/dlib_aaf ...

Each folder holds the val reports benchmarks/bench_every_face.sh MODEL NAME val wrote.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def pooled_children(*reports: dict) -> float:
    """Gender accuracy over the children 0-12 of several reports together."""
    bands = [report["per_age_band"]["0-12"] for report in reports]
    return sum(band["gender_accuracy"] * band["n"] for band in bands) / sum(band["n"] for band in bands)


def criterion(folder: Path) -> dict[str, float]:
    utk = json.loads((folder / "utkface_val.json").read_text())
    aaf = json.loads((folder / "aaf_val.json").read_text())
    lfw = json.loads((folder / "lfw_select.json").read_text())
    parts = {
        "utkface val": utk["gender_accuracy"],
        "aaf val": aaf["gender_accuracy"],
        "aaf val 0-12": aaf["per_age_band"]["0-12"]["gender_accuracy"],
        "lfw_select": lfw["detection"]["end_to_end_gender_accuracy"],
    }
    parts["criterion"] = sum(parts.values()) / len(parts)
    parts["val 0-12 both"] = pooled_children(utk, aaf)
    parts["val MAE utk / aaf"] = (utk["age_mae"], aaf["age_mae"])
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    rows = sorted(((criterion(f), f.name) for f in args.folders), key=lambda r: (-r[0]["criterion"], sum(r[0]["val MAE utk / aaf"])))
    for parts, name in rows:
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in parts.items() if k != "val MAE utk / aaf")
        print(f"{name}: {shown}, val MAE {parts['val MAE utk / aaf'][0]:.2f} / {parts['val MAE utk / aaf'][1]:.2f}")
    print(f"highest on the criterion: {rows[0][1]} (the speed condition is checked apart: docs/every_face.md)")
    guard = max(rows, key=lambda r: r[0]["val 0-12 both"])
    print(f"highest on val 0-12 both: {guard[1]}")


if __name__ == "__main__":
    main()
