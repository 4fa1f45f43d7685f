"""Write the bundled model's card into its own metadata: the recipe that made it and its measured numbers.

    python tools/write_model_card.py [--model src/agegender/assets/bundled_model.safetensors] \
        [--card dlib_aaf_e2e] [--reports docs/results/every_face/dlib_aaf_e2e_utkface]

The weights are copied unchanged; the metadata gains `card` (models/metadata.py leaves unknown keys
alone): a name, the commands of recipes/ that trained and built it, the data, and per evaluation set
the numbers of the JSON reports that benchmarks/bench_every_face.sh wrote. `agegender models --info`
prints it, and the server's /health gives its name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agegender.models.backends import bundled_model_path
from agegender.models.checkpoint import METADATA_KEY, read_meta, read_weights, write_safetensors

ROOT = Path(__file__).resolve().parents[1]
E2E_RECIPE = [
    "recipes/train_face_models.sh dlib-aaf-sampled",
    "OUT=runs/sampled_bundled.safetensors recipes/build_bundled_model.sh every-face",
    "recipes/train_face_models.sh dlib-aaf-e2e",
    "recipes/build_bundled_model.sh every-face-e2e",
]
E2E_DATA = (
    "UTKFace and All-Age-Faces (AAF drawn x2, children 0-12 x2), cached phases then every block end to end; "
    "val splits and lfw_select for every choice"
)
CARDS = {  # --card -> (name, recipe, data, its test reports)
    "dlib_aaf_sampled": ("agegender bundled model of stop 33 (dlib_aaf_sampled)", E2E_RECIPE[:2],
                         "UTKFace and All-Age-Faces (AAF drawn x2, children 0-12 x2), cached phases",
                         "docs/results/every_face/dlib_aaf_sampled"),
    "dlib_aaf_e2e": ("agegender bundled model (dlib_aaf_e2e, utkface crop)", E2E_RECIPE, E2E_DATA,
                     "docs/results/every_face/dlib_aaf_e2e_utkface"),
}  # fmt: skip
BUNDLED_CARD = "dlib_aaf_e2e"
SETS = {  # report file -> what the set is
    "utkface_test.json": "UTKFace test split",
    "aaf_test.json": "All-Age-Faces held-out test part (tools/split_aaf.py)",
    "lfw_report.json": "lfw_report photos, end to end (tools/split_photos_by_identity.py)",
}


def percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def metrics(report: dict) -> dict:
    """The headline numbers of one report of `agegender evaluate --report` (crops, or photos with --detect)."""
    detection = report.get("detection")
    if detection is not None:
        per_gender = detection["end_to_end_per_gender"]
        return {"gender_accuracy_%": percent(detection["end_to_end_gender_accuracy"]),
                "women_%": percent(per_gender.get("female")), "men_%": percent(per_gender.get("male"))}  # fmt: skip
    children = report["per_age_band"].get("0-12", {})
    return {
        "gender_accuracy_%": percent(report["gender_accuracy"]), "age_mae": round(report["age_mae"], 2),
        "children_0_12_gender_%": percent(children.get("gender_accuracy")),
        "age_interval_coverage_%": percent(report.get("age_interval_coverage")), "n": report["n"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=bundled_model_path())
    parser.add_argument("--card", choices=CARDS, default=BUNDLED_CARD, help="which model the file is")
    parser.add_argument("--reports", type=Path, help="its test reports (default: the card's)")
    args = parser.parse_args()
    name, recipe, data, reports = CARDS[args.card]
    reports = args.reports or ROOT / reports
    card = {
        "name": name,
        "recipe": recipe,
        "data": data,
        "metrics": {label: metrics(json.loads((reports / file).read_text())) for file, label in SETS.items()},
        "reports": str(reports.relative_to(ROOT)) if reports.is_relative_to(ROOT) else str(reports),
    }
    meta = {**read_meta(args.model), "card": card}
    write_safetensors(args.model, read_weights(args.model), {METADATA_KEY: json.dumps(meta)})
    print(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
