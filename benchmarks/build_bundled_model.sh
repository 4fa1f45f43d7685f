#!/usr/bin/env bash
# The bundled model: the previous one (Model A + Model B, both trained on all data) joined by Model B on
# dlib's face recogniser and on Cydral's age network (benchmarks/train_face_models.sh dlib-full, cydral-full),
# with one weight per member and task chosen on data the README does not report on: the UTKFace val split
# and the lfw_select half of lfw_dev (benchmarks/split_photos_by_identity.py; lfw_report is the other half).
#   benchmarks/build_bundled_model.sh choose   # prints each member alone and the best weight combinations
#   benchmarks/build_bundled_model.sh build    # writes the chosen ensemble, float16, into the package
set -euo pipefail
DATA=${DATA:-../shared/data/utkface}
PHOTOS=${PHOTOS:-../shared/data/lfw_dev}
RUNS=${RUNS:-runs}
OLD=${OLD:-src/agegender/assets/model_ab.safetensors}
MEMBERS=("$OLD" "$RUNS/dlib_full/best.safetensors" "$RUNS/cydral_full/best.safetensors")
case "${1:-}" in
  choose)
    python benchmarks/split_photos_by_identity.py "$PHOTOS" "$RUNS/lfw_select" "$RUNS/lfw_report"
    agegender ensemble "${MEMBERS[@]}" --out "$RUNS/bundle_equal.safetensors"
    python benchmarks/choose_ensemble_weights.py "$RUNS/bundle_equal.safetensors" --crops "$DATA" --split val \
      --photos "$RUNS/lfw_select" ;;
  build)
    agegender ensemble "${MEMBERS[@]}" --out "$RUNS/bundle.safetensors" \
      --gender-weights "${GENDER_WEIGHTS:?set GENDER_WEIGHTS, e.g. 1,1,2,0}" --age-weights "${AGE_WEIGHTS:?set AGE_WEIGHTS}"
    agegender export --format safetensors-fp16 --model "$RUNS/bundle.safetensors" --out "${OUT:-src/agegender/assets/model_bundled.safetensors}" ;;
  *) echo "usage: $0 choose|build" >&2; exit 2 ;;
esac
