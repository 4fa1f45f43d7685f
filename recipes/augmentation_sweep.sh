#!/usr/bin/env bash
# Each robustness augmentation measured alone (and all four together) on photos and on crops: the Cydral
# ResNet-10 fine-tuned on the 5k protocol (the cheapest Model B: minutes per run), then scored on the
# UTKFace test split and end to end on the lfw_dev photos (BlazeFace, aligned crops, largest face).
#   DATA=${AGEGENDER_DATA:-../shared/data}/utkface PHOTOS=${AGEGENDER_DATA:-../shared/data}/lfw_dev recipes/augmentation_sweep.sh
# Augmented views are 4 of the 6 cached views per training image (the other two: original and mirror).
set -euo pipefail
DATA=${DATA:-${AGEGENDER_DATA:-../shared/data}/utkface}
PHOTOS=${PHOTOS:-${AGEGENDER_DATA:-../shared/data}/lfw_dev}
RUNS=${RUNS:-runs}/augmentation_sweep
THREADS=${THREADS:-1}
declare -A VARIANTS=(
  [none]=""
  [grayscale]="--set augment.grayscale=0.5"
  [lowres]="--set augment.lowres=0.5"
  [jpeg]="--set augment.jpeg=0.5"
  [box_jitter]="--set augment.box_jitter=0.5"
  [all]="--set augment.grayscale=0.5 --set augment.lowres=0.5 --set augment.jpeg=0.5 --set augment.box_jitter=0.5"
)
for name in none grayscale lowres jpeg box_jitter all; do
  run="$RUNS/$name"
  if [ ! -f "$run/best.safetensors" ]; then
    # shellcheck disable=SC2086
    agegender train --data "$DATA" --limit 5000 --out "$run" --config recipes/model_b.yaml \
      --set model.name=cydral_resnet10 --set data.image_size=64 --set model.unfreeze_blocks=5 \
      --set train.feature_views=6 --set train.epochs=20 --set train.finetune_epochs=8 \
      ${VARIANTS[$name]} --threads "$THREADS" > "$run.log" 2>&1
  fi
  crops=$(agegender evaluate --data "$DATA" --split test --model "$run/best.safetensors" --json)
  photos=$(agegender evaluate --data "$PHOTOS" --detect --model "$run/best.safetensors" --json)
  python - "$name" "$crops" "$photos" <<'PY'
import json, sys
name, crops, photos = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
e2e = photos["detection"]
per = e2e["end_to_end_per_gender"]
print(f"{name:11s} UTKFace test gender {100 * crops['gender_accuracy']:.1f}%, MAE {crops['age_mae']:.2f} | "
      f"lfw_dev gender {100 * e2e['end_to_end_gender_accuracy']:.1f}% "
      f"(women {100 * per['female']:.1f}%, men {100 * per['male']:.1f}%)")
PY
done
