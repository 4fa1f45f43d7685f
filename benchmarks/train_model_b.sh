#!/usr/bin/env bash
# Reproduce Model B's README numbers. DATA defaults to the UTKFace folder beside the repo.
#   benchmarks/train_model_b.sh 5k       # classic protocol: 5,000 images -> 4,000 train / 1,000 val
#   benchmarks/train_model_b.sh full     # all images, 10% test split held out
set -euo pipefail
DATA=${DATA:-../shared/data/utkface}
RUNS=${RUNS:-runs}
case "${1:-}" in
  5k)   agegender train --data "$DATA" --limit 5000 --out "$RUNS/model_b_5k" --config benchmarks/model_b.yaml ;;
  full) agegender train --data "$DATA" --out "$RUNS/model_b_full" --config benchmarks/model_b.yaml \
          --set train.finetune_epochs=10 ;;  # 4.4x the images per epoch of the 5k run
  *)    echo "usage: $0 5k|full" >&2; exit 2 ;;
esac
