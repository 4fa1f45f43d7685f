#!/usr/bin/env bash
# The README's per-backbone table: each model end to end on the lfw_report photos (half of lfw_dev's
# people, used by no run or choice; tools/split_photos_by_identity.py), then `agegender compare`.
#   recipes/backbone_table.sh RUN_OR_MODEL_DIR ...   # folders holding best.safetensors (runs, or a
#                                                        # model with evaluations/ only: an ensemble)
# A folder without metrics.json (no training run) is also scored on UTKFace's test split, which the
# table's "full: test" column then reads. Writes RUN/evaluations/*.json and $RUNS/backbones/report.md.
set -euo pipefail
DATA=${DATA:-${AGEGENDER_DATA:-../shared/data}/utkface}
RUNS=${RUNS:-runs}
REPORT=${REPORT:-$RUNS/lfw_report}
for run in "$@"; do
  mkdir -p "$run/evaluations"
  [ -f "$run/evaluations/lfw_report.json" ] || agegender evaluate --detect --data "$REPORT" \
      --model "$run/best.safetensors" --report "$run/evaluations/lfw_report.json" > /dev/null
  if [ ! -f "$run/metrics.json" ] && [ ! -f "$run/evaluations/utkface_test.json" ]; then
    agegender evaluate --data "$DATA" --split test --model "$run/best.safetensors" \
      --report "$run/evaluations/utkface_test.json" > /dev/null
  fi
done
agegender compare "$@" --out "$RUNS/backbones" --split test --data "$DATA"
