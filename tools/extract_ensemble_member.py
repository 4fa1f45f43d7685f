"""Write one member of an ensemble checkpoint as a checkpoint of its own (its own metadata, its weights),
so that `agegender evaluate` and `agegender compare` can score it alone.

    python tools/extract_ensemble_member.py src/agegender/assets/bundled_model.safetensors 0 runs/lite0_member/best.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agegender.models.checkpoint import expand_members, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ensemble", type=Path)
    parser.add_argument("index", type=int, help="member index, in the ensemble's order")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    members = expand_members(args.ensemble)
    meta, model = members[args.index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, model.float(), {key: value for key, value in meta.items() if key != "source"})
    print(f"{args.out}: member {args.index} of {len(members)} ({meta['config']['model']['name']})")


if __name__ == "__main__":
    main()
