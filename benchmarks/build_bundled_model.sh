#!/usr/bin/env bash
# The bundled model, chosen among the previous one's members (Model A and Model B, both trained on all data;
# the file as of commit df49bda) and Model B on dlib's face recogniser and on Cydral's age network
# (benchmarks/train_face_models.sh dlib-full, cydral-full), with one weight per member and task chosen on
# data the README does not report on: the UTKFace val split and the lfw_select half of lfw_dev
# (benchmarks/split_photos_by_identity.py; lfw_report, the other half, and UTKFace test are reported).
#   benchmarks/build_bundled_model.sh choose   # prints each member alone and the best weight combinations
#   benchmarks/build_bundled_model.sh build    # writes the chosen ensemble, float16, into the package
# `choose` ranked gender weights 0,1,1,0 first (val 95.3%, lfw_select 98.1%) and age weights 0,1,2,0
# (val MAE 4.44): Model B and dlib's, the other two weighted 0 and so left out of the bundled file.
set -euo pipefail
DATA=${DATA:-../shared/data/utkface}
PHOTOS=${PHOTOS:-../shared/data/lfw_dev}
RUNS=${RUNS:-runs}
OLD="$RUNS/model_ab.safetensors"
git show df49bda:src/agegender/assets/model_ab.safetensors > "$OLD"  # Model A + Model B, the previous bundled model
MEMBERS=("$OLD" "$RUNS/dlib_full/best.safetensors" "$RUNS/cydral_full/best.safetensors")
case "${1:-}" in
  choose)
    python benchmarks/split_photos_by_identity.py "$PHOTOS" "$RUNS/lfw_select" "$RUNS/lfw_report"
    agegender ensemble "${MEMBERS[@]}" --out "$RUNS/bundle_equal.safetensors"
    python benchmarks/choose_ensemble_weights.py "$RUNS/bundle_equal.safetensors" --crops "$DATA" --split val \
      --photos "$RUNS/lfw_select" ;;
  build)
    agegender ensemble "${MEMBERS[@]}" --out "$RUNS/bundle.safetensors" \
      --gender-weights "${GENDER_WEIGHTS:-0,1,1,0}" --age-weights "${AGE_WEIGHTS:-0,1,2,0}"
    agegender export --format safetensors-fp16 --model "$RUNS/bundle.safetensors" --out "${OUT:-src/agegender/assets/bundled_model.safetensors}" ;;
  *) echo "usage: $0 choose|build" >&2; exit 2 ;;
esac
