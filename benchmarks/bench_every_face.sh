#!/usr/bin/env bash
# One model measured where users meet it (issue "Every face"): UTKFace and All-Age-Faces chips per split,
# with FairFace's 9 age groups and children 0-12 as their own band, and LFW photos end to end. Each
# measurement is a JSON report under OUT (default runs/every_face/NAME), read by choose_every_face.py.
#   benchmarks/bench_every_face.sh MODEL NAME val    # what the bundled model is chosen on: UTKFace val, AAF val, lfw_select
#   benchmarks/bench_every_face.sh MODEL NAME test   # what is reported: UTKFace test, AAF's held-out part, lfw_report
# Every model is measured with mirror averaging (--tta), as the bundled model ships. MODEL "bundled" is the
# model shipped in the package. AAF comes from tools/split_aaf.py (runs/aaf), the
# LFW halves from tools/split_photos_by_identity.py (runs/lfw_select, runs/lfw_report).
set -euo pipefail
MODEL=$1; NAME=$2; PART=$3
RUNS=${RUNS:-runs}
UTK=${DATA:-${AGEGENDER_DATA:-../shared/data}/utkface}
OUT=${OUT:-$RUNS/every_face/$NAME}
mkdir -p "$OUT"
[ -f "$RUNS/aaf/labels.csv" ] || python tools/split_aaf.py "${AAF_SOURCE:-${AGEGENDER_DATA:-../shared/data}/aaf}" "$RUNS/aaf"
[ -f "$RUNS/lfw_select/labels.csv" ] || \
  python tools/split_photos_by_identity.py "${LFW:-${AGEGENDER_DATA:-../shared/data}/lfw_dev}" "$RUNS/lfw_select" "$RUNS/lfw_report"
model=(); [ "$MODEL" = bundled ] || model=(--model "$MODEL")
photos=lfw_select; [ "$PART" = test ] && photos=lfw_report
for data in "$UTK" "$RUNS/aaf"; do
  agegender evaluate --data "$data" --split "$PART" "${model[@]}" --age-groups fairface --tta \
    --report "$OUT/$(basename "$data")_$PART.json" | grep -E "Overall|Age groups" || true
done
agegender evaluate --detect --data "$RUNS/$photos" "${model[@]}" --tta --report "$OUT/$photos.json" | grep "End to end" || true
