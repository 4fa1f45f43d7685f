"""Split a labels.csv photo folder (lfw_dev) into two folders by identity, so that no person is in both.

    python tools/split_photos_by_identity.py $AGEGENDER_DATA/lfw_dev runs/lfw_select runs/lfw_report

Choices made while building a model (which members an ensemble takes, their weights) are measured on the
first folder; the numbers reported are on the second, which nothing was chosen on. Each output folder holds
symbolic links to the photos and its own labels.csv; the split is seeded and alternates identities sorted by
a hash of their name, so it does not depend on file order.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path


def identity_half(identity: str, seed: int) -> int:
    return hashlib.sha1(f"{seed}:{identity}".encode()).digest()[0] % 2


def write_half(rows: list[dict], columns: list[str], source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        link = out / row["filename"]
        if not link.is_symlink():
            link.symlink_to((source / row["filename"]).resolve())
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with (args.source / "labels.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows, columns = list(reader), list(reader.fieldnames or ())
    halves = ([], [])
    for row in rows:
        halves[identity_half(row["identity"], args.seed)].append(row)
    for rows_of_half, out in zip(halves, (args.first, args.second)):
        write_half(rows_of_half, columns, args.source, out)
        women = sum(r["gender"] == "female" for r in rows_of_half)
        people = len({r["identity"] for r in rows_of_half})
        print(f"{out}: {len(rows_of_half)} photos of {people} people, {women} of women")


if __name__ == "__main__":
    main()
