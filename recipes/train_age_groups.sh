#!/usr/bin/env bash
# Issue 17's numbers: age groups as the only age labels, and the Levi-Hassner baseline. DATA defaults to
# the UTKFace folder beside the repo; every run uses the classic 5k protocol (--limit 5000: 4,000 train /
# 1,000 val) and the test split held out before it (10% of all images, the same for every run).
#   recipes/train_age_groups.sh exact    # Model A (5k recipe of train_model_a.sh) on exact ages
#   recipes/train_age_groups.sh groups   # the same with train/val ages hidden: Adience groups only
#                                           # (data.hide_ages=adience: same split, labels replaced after it)
#   recipes/train_age_groups.sh score    # both scored on the test split's Adience groups: exact and 1-off
#   recipes/train_age_groups.sh levi     # Levi-Hassner, 5k protocol: val gender, MAE and ms/step
#   recipes/train_age_groups.sh compare  # comparison report: Levi-Hassner beside Model A and Model B runs
#   recipes/train_age_groups.sh smoke    # every step at LIMIT=200, EPOCHS=1, THREADS=1: checks the script
# LIMIT, EPOCHS and THREADS override the protocol (for smoke runs only); RUNS is where runs go.
set -euo pipefail
DATA=${DATA:-${AGEGENDER_DATA:-../shared/data}/utkface}
RUNS=${RUNS:-runs}
LIMIT=${LIMIT:-5000}
THREADS=${THREADS:-1}
A_EPOCHS=${EPOCHS:-60}
LH_EPOCHS=${EPOCHS:-30}
SCHEME=adience

model_a() {  # $1: run name, then extra options
  local out="$RUNS/$1"; shift
  agegender train --data "$DATA" --limit "$LIMIT" --out "$out" --config recipes/model_a.yaml --threads "$THREADS" \
    --epochs "$A_EPOCHS" --set train.mixup_alpha=0.2 "$@"
}

score() {  # group accuracy of both Model A runs on the same test images and the same groups
  for run in groups_a_exact groups_a_hidden; do
    agegender evaluate --data "$DATA" --model "$RUNS/$run/best.safetensors" --split test --age-groups "$SCHEME" --json \
      > "$RUNS/$run/test_$SCHEME.json"
    python - "$RUNS/$run/test_$SCHEME.json" "$run" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
groups = report["age_groups"]["overall"]
print(f"{sys.argv[2]}: test n={groups['n']} {report['age_groups']['scheme']} group accuracy "
      f"{100 * groups['accuracy']:.1f}%, 1-off {100 * groups['one_off']:.1f}%; gender {100 * report['gender_accuracy']:.1f}%")
PY
  done
}

levi() {
  agegender train --data "$DATA" --limit "$LIMIT" --out "$RUNS/levi_hassner_5k" --config recipes/levi_hassner.yaml \
    --threads "$THREADS" --epochs "$LH_EPOCHS"
  python - "$RUNS/levi_hassner_5k/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"levi_hassner: val gender {100 * m['val']['gender_accuracy']:.1f}%, val MAE {m['val']['age_mae']:.2f}, "
      f"{m['timing']['ms_per_step']:.0f} ms/step, best epoch {m['best_epoch']}")
PY
}

compare() {  # Model A and B 5k runs (train_model_a.sh, train_model_b.sh, train_face_models.sh dlib-5k-lr), where they exist
  local runs=("$RUNS/levi_hassner_5k")
  for run in model_a_5k_mix60 model_b_5k_192 dlib_5k_lr2e-5 groups_a_exact; do
    [[ -f "$RUNS/$run/metrics.json" ]] && runs+=("$RUNS/$run")
  done
  agegender compare "${runs[@]}" --out "$RUNS/compare_levi_hassner" --data "$DATA" --age-groups "$SCHEME"
}

case "${1:-}" in
  exact)   model_a groups_a_exact ;;
  groups)  model_a groups_a_hidden --set data.hide_ages="$SCHEME" ;;
  score)   score ;;
  levi)    levi ;;
  compare) compare ;;
  smoke)   export LIMIT=200 EPOCHS=1 THREADS=1 RUNS="${RUNS}/smoke_age_groups"
           rm -rf "$RUNS"
           "$0" exact && "$0" groups && "$0" score && "$0" levi && "$0" compare ;;
  *)       echo "usage: $0 exact|groups|score|levi|compare|smoke" >&2; exit 2 ;;
esac
