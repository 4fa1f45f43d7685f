"""All-Age-Faces with a fixed split: the dataset's own train part for training, its val part halved (seeded,
stratified by gender and age band) into val, for choices, and test, the held-out part that no run or choice
sees. Writes OUT/labels.csv with a split column (read by agegender's labels.csv reader) and symbolic links
to the chips, so the source folder stays untouched.

    python tools/split_aaf.py $AGEGENDER_DATA/aaf runs/aaf
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from agegender.data.readers import read_folder
from agegender.data.splits import split_samples


def held_out_names(source: Path, val_names: set[str], seed: int) -> set[str]:
    """File names of the seeded, stratified half of the val rows that becomes the held-out test part."""
    val_samples = [s for s in read_folder(source).samples if s.path.name in val_names]
    halves = split_samples(val_samples, val_fraction=0.0, test_fraction=0.5, seed=seed)
    return {sample.path.name for sample in halves.test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with (args.source / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    test = held_out_names(args.source, {r["filename"] for r in rows if r["aaf_split"] == "val"}, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        row["split"] = "test" if row["filename"] in test else ("train" if row["aaf_split"] == "train" else "val")
        link = args.out / row["filename"]
        if not link.is_symlink():
            link.symlink_to((args.source / row["filename"]).resolve())
    with (args.out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["filename", "age", "gender", "split"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    for name in ("train", "val", "test"):
        part = [r for r in rows if r["split"] == name]
        children = sum(float(r["age"]) <= 12 for r in part)
        print(f"{args.out} {name}: {len(part)} chips, {children} aged 0-12")


if __name__ == "__main__":
    main()
