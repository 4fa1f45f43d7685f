#!/usr/bin/env bash
# Model B on the face-pretrained backbones (dlib's face recogniser, Cydral's age network), and the
# bundled model built from them. DATA defaults to the UTKFace folder beside the repo.
#   recipes/train_face_models.sh dlib-5k       # 5k protocol, phase 2 at Model B's 2e-4 (too high: see README)
#   recipes/train_face_models.sh dlib-5k-lr    # 5k protocol, phase 2 at 2e-5
#   recipes/train_face_models.sh cydral-5k     # 5k protocol, Cydral ResNet-10 at 64 px
#   recipes/train_face_models.sh dlib-full     # all data, grayscale augmentation, phase 2 at 1e-5
#   recipes/train_face_models.sh dlib-full2    # all data, 7 blocks at 2e-5, grayscale and box jitter
#   recipes/train_face_models.sh cydral-full   # all data, Cydral ResNet-10 at 64 px
#   recipes/train_face_models.sh dlib-distill  # dlib-full's run, targets blended 50/50 with TEACHER (build_bundled_model.sh train: the 77dbc71 bundled model)
#   recipes/train_face_models.sh dlib-full-lfw # dlib-full2's recipe on UTKFace + the lfw_select half's chips
#   recipes/train_face_models.sh dlib-distill-lfw  # dlib-distill on UTKFace + the lfw_select half's chips
#   recipes/train_face_models.sh dlib-e2e      # dlib-full's best weights, then every block end to end on images, 1e-5
#   recipes/train_face_models.sh dlib-e2e-fast # the same at 3e-5, with box jitter and photo degradations
#   recipes/train_face_models.sh dlib-e2e-gentle  # the same at 3e-6, flips and colour only (no warps)
#   recipes/train_face_models.sh dlib-full-150 # dlib-full on UTKFace re-aligned to dlib's template (same split)
#   recipes/train_face_models.sh dlib-aaf      # dlib-full's recipe on UTKFace + All-Age-Faces (tools/split_aaf.py)
#   recipes/train_face_models.sh dlib-aaf-sampled  # the same, AAF and children 0-12 each drawn twice as often
#   recipes/train_face_models.sh dlib-aaf-kids     # the same, children drawn four times as often
#   recipes/train_face_models.sh dlib-aaf-e2e   # the stop-33 bundled model (dlib-aaf-sampled, built by OUT=$RUNS/
#                                               # sampled_bundled.safetensors build_bundled_model.sh every-face), then every block end to end
#                                               # on UTKFace + AAF images, sampled as it was, dlib-e2e-gentle's settings
#   recipes/train_face_models.sh dlib-aaf-e2e-long # dlib-aaf-e2e on a 16-epoch cosine instead of 10
#   recipes/train_face_models.sh dlib-aaf-e2e-kids # dlib-aaf-e2e with children drawn four times as often
#   recipes/train_face_models.sh dlib-aaf-e2e-again # dlib-aaf-e2e's best weights, then the same 10 epochs again
#   recipes/train_face_models.sh dlib-aaf-e2e-age # the same with a gender head that also reads the age distribution
#   recipes/train_face_models.sh cydral-gender-aaf # Cydral's 32 px gender network, all blocks, sampled as above,
#                                                 # gender loss only (an ensemble member for gender; its ages are unused)
#   recipes/train_face_models.sh cydral-gender-aaf-kids # the same with children drawn four times as often (a third member)
#   recipes/train_face_models.sh dlib-aaf-distill  # dlib-aaf-sampled, targets blended 50/50 with TEACHER (default: the
#                                                 # bundled model + cydral-gender-aaf, gender weights 4,1, age 1,0)
# dlib-full-lfw adds gender-only training photos: lfw_dev split by identity (split_photos_by_identity.py, the
# lfw_select half; lfw_report stays untouched for reporting), each photo's largest face aligned to dlib's
# 150x150 template by `agegender crop` (resumable: a second call only checks). The LFW chips have no age, so
# they count for gender only; each folder is split on its own, so UTKFace's val/test images are the other runs'.
# dlib's weights are small (mean |w| about 3e-3 in the last blocks), so Adam's steps of Model B's 2e-4
# wipe out its features in phase 2's first epoch (val gender 93.6% -> 47.9%); 1e-5 to 2e-5 keeps them.
set -euo pipefail
DATA=${DATA:-${AGEGENDER_DATA:-../shared/data}/utkface}
RUNS=${RUNS:-runs}
THREADS=${THREADS:-1}
DLIB=(--config recipes/model_b.yaml --set model.name=dlib_resnet --set data.image_size=150 --set model.unfreeze_blocks=6)
CYDRAL=(--config recipes/model_b.yaml --set model.name=cydral_resnet10 --set data.image_size=64 --set model.unfreeze_blocks=5)
# phase 3 alone, from dlib-full's best weights (its phases 1 and 2): no caching, every block on fresh views
END_TO_END=(--init "$RUNS/dlib_full/best.safetensors" --set train.epochs=0 --set model.unfreeze_blocks=0
            --set train.end_to_end_epochs=10)
DISTILL=(--set train.teacher="${TEACHER:-$RUNS/teacher_bundled.safetensors}" --set train.teacher_weight=0.5)
LFW_CHIPS="$RUNS/lfw_select_crops_dlib150"
lfw_select_chips() {  # the lfw_select half of lfw_dev, each photo's face aligned to dlib's template
  [ -f "$RUNS/lfw_select/labels.csv" ] || \
    python tools/split_photos_by_identity.py "${LFW:-${AGEGENDER_DATA:-../shared/data}/lfw_dev}" "$RUNS/lfw_select" "$RUNS/lfw_report"
  agegender crop "$RUNS/lfw_select" --out "$LFW_CHIPS" --template dlib_150
}
UTK150="$RUNS/utkface_dlib150_full"
utkface_on_dlib_template() {  # each UTKFace image re-aligned to dlib's 150 template under its own name (the
  # original where BlazeFace finds no face), so the folder splits exactly as UTKFace does
  agegender crop "$DATA" --out "$RUNS/utkface_dlib150" --template dlib_150
  mkdir -p "$UTK150"
  for f in "$DATA"/*; do
    chip="$RUNS/utkface_dlib150/$(basename "$f")"
    if [ -f "$chip" ]; then ln -sfn "$(realpath "$chip")" "$UTK150/"; else ln -sfn "$(realpath "$f")" "$UTK150/"; fi
  done
}
AAF="$RUNS/aaf"
aaf_split() {  # All-Age-Faces with its held-out part fixed (a seeded half of its val part)
  [ -f "$AAF/labels.csv" ] || python tools/split_aaf.py "${AAF_SOURCE:-${AGEGENDER_DATA:-../shared/data}/aaf}" "$AAF"
}
DLIB_FULL=("${DLIB[@]}" --set train.feature_views=4 --set train.finetune_lr=0.00001 --set train.finetune_epochs=10
           --set augment.grayscale=0.25)
# every block end to end from --init's weights at dlib-e2e-gentle's settings (the AAF recipes; a later --set wins)
AAF_E2E=("${DLIB[@]}" --set train.epochs=0 --set model.unfreeze_blocks=0 --set train.end_to_end_epochs=10
         --set train.end_to_end_lr=0.000003 --set augment.grayscale=0.25 --set augment.rotation=0 --set augment.zoom=0
         --set augment.shift=0)
case "${1:-}" in
  dlib-5k)     agegender train --data "$DATA" --limit 5000 --out "$RUNS/dlib_5k" "${DLIB[@]}" \
                 --set train.feature_views=6 --threads "$THREADS" ;;
  dlib-5k-lr)  agegender train --data "$DATA" --limit 5000 --out "$RUNS/dlib_5k_lr2e-5" "${DLIB[@]}" \
                 --set train.feature_views=6 --set train.finetune_lr=0.00002 --threads "$THREADS" ;;
  cydral-5k)   agegender train --data "$DATA" --limit 5000 --out "$RUNS/cydral_5k" "${CYDRAL[@]}" \
                 --set train.feature_views=6 --set train.finetune_epochs=10 --threads "$THREADS" ;;
  dlib-full)   agegender train --data "$DATA" --out "$RUNS/dlib_full" "${DLIB[@]}" --set train.feature_views=4 \
                 --set train.finetune_lr=0.00001 --set train.finetune_epochs=10 --set augment.grayscale=0.25 --threads "$THREADS" ;;
  dlib-full2)  agegender train --data "$DATA" --out "$RUNS/dlib_full2" "${DLIB[@]}" --set model.unfreeze_blocks=7 \
                 --set train.feature_views=4 --set train.finetune_lr=0.00002 --set train.finetune_epochs=10 \
                 --set augment.grayscale=0.25 --set augment.box_jitter=0.5 --threads "$THREADS" ;;
  dlib-full-lfw)
               lfw_select_chips
               agegender train --data "$DATA" --data "$LFW_CHIPS" --out "$RUNS/dlib_full_lfw" "${DLIB[@]}" \
                 --set model.unfreeze_blocks=7 --set train.feature_views=4 --set train.finetune_lr=0.00002 \
                 --set train.finetune_epochs=10 --set augment.grayscale=0.25 --set augment.box_jitter=0.5 \
                 --threads "$THREADS" ;;
  dlib-distill-lfw)
               lfw_select_chips
               agegender train --data "$DATA" --data "$LFW_CHIPS" --out "$RUNS/dlib_distill_lfw" "${DLIB[@]}" \
                 --set train.feature_views=4 --set train.finetune_lr=0.00001 --set train.finetune_epochs=10 \
                 --set augment.grayscale=0.25 "${DISTILL[@]}" --threads "$THREADS" ;;
  cydral-full) agegender train --data "$DATA" --out "$RUNS/cydral_full" "${CYDRAL[@]}" \
                 --set train.feature_views=4 --set train.finetune_epochs=10 --threads "$THREADS" ;;
  dlib-distill) agegender train --data "$DATA" --out "$RUNS/dlib_distill" "${DLIB[@]}" --set train.feature_views=4 \
                 --set train.finetune_lr=0.00001 --set train.finetune_epochs=10 --set augment.grayscale=0.25 \
                 "${DISTILL[@]}" --threads "$THREADS" ;;
  dlib-e2e)    agegender train --data "$DATA" --out "$RUNS/dlib_e2e" "${DLIB[@]}" "${END_TO_END[@]}" \
                 --set train.end_to_end_lr=0.00001 --set augment.grayscale=0.25 --threads "$THREADS" ;;
  dlib-e2e-fast) agegender train --data "$DATA" --out "$RUNS/dlib_e2e_fast" "${DLIB[@]}" "${END_TO_END[@]}" \
                 --set train.end_to_end_lr=0.00003 --set augment.grayscale=0.25 --set augment.box_jitter=0.5 \
                 --set augment.lowres=0.2 --set augment.jpeg=0.2 --threads "$THREADS" ;;
  dlib-e2e-gentle) agegender train --data "$DATA" --out "$RUNS/dlib_e2e_gentle" "${DLIB[@]}" "${END_TO_END[@]}" \
                 --set train.end_to_end_lr=0.000003 --set augment.grayscale=0.25 --set augment.rotation=0 \
                 --set augment.zoom=0 --set augment.shift=0 --threads "$THREADS" ;;
  dlib-full-150) utkface_on_dlib_template
               agegender train --data "$UTK150" --out "$RUNS/dlib_full_150" "${DLIB[@]}" --set train.feature_views=4 \
                 --set train.finetune_lr=0.00001 --set train.finetune_epochs=10 --set augment.grayscale=0.25 --threads "$THREADS" ;;
  dlib-aaf)    aaf_split
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/dlib_aaf" "${DLIB_FULL[@]}" --threads "$THREADS" ;;
  dlib-aaf-sampled) aaf_split
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/dlib_aaf_sampled" "${DLIB_FULL[@]}" \
                 --set 'data.sampling=[aaf=2, age:0-12=2]' --threads "$THREADS" ;;
  dlib-aaf-e2e) aaf_split
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/dlib_aaf_e2e" "${AAF_E2E[@]}" \
                 --init "${INIT:-$RUNS/sampled_bundled.safetensors}" --set 'data.sampling=[aaf=2, age:0-12=2]' --threads "$THREADS" ;;
  dlib-aaf-e2e-long) aaf_split  # dlib-aaf-e2e on a longer cosine: its val loss still fell at epoch 10 (a second
               # cycle at the same peak rate overfit instead), so 16 epochs from the same start, the same peak rate
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/dlib_aaf_e2e_long" "${AAF_E2E[@]}" \
                 --set train.end_to_end_epochs=16 \
                 --init "${INIT:-$RUNS/sampled_bundled.safetensors}" --set 'data.sampling=[aaf=2, age:0-12=2]' --threads "$THREADS" ;;
  dlib-aaf-e2e-kids) aaf_split  # dlib-aaf-e2e with children drawn four times as often (twice there)
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/dlib_aaf_e2e_kids" "${AAF_E2E[@]}" \
                 --init "${INIT:-$RUNS/sampled_bundled.safetensors}" --set 'data.sampling=[aaf=2, age:0-12=4]' --threads "$THREADS" ;;
  dlib-aaf-e2e-again) aaf_split  # a warm restart: dlib-aaf-e2e's best weights, 10 more epochs on a fresh cosine
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/dlib_aaf_e2e_again" "${AAF_E2E[@]}" \
                 --init "${INIT:-$RUNS/dlib_aaf_e2e/best.safetensors}" --set 'data.sampling=[aaf=2, age:0-12=2]' --threads "$THREADS" ;;
  dlib-aaf-e2e-age) aaf_split  # dlib-aaf-e2e-again with a gender head that reads the age distribution too: it
               # starts as dlib-aaf-e2e's head (the age inputs at weight zero), 3 epochs of heads on cached features
               # learn what the ages add, then the same 10 end-to-end epochs
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/dlib_aaf_e2e_age" "${AAF_E2E[@]}" \
                 --init "${INIT:-$RUNS/dlib_aaf_e2e/best.safetensors}" --set model.gender_sees_age=true \
                 --set train.epochs=3 --set train.lr=0.001 --set train.feature_views=2 \
                 --set 'data.sampling=[aaf=2, age:0-12=2]' --threads "$THREADS" ;;
  dlib-aaf-kids) aaf_split
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/dlib_aaf_kids" "${DLIB_FULL[@]}" \
                 --set 'data.sampling=[aaf=2, age:0-12=4]' --threads "$THREADS" ;;
  dlib-aaf-distill) aaf_split
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/dlib_aaf_distill" "${DLIB_FULL[@]}" \
                 --set 'data.sampling=[aaf=2, age:0-12=2]' \
                 --set train.teacher="${TEACHER:-$RUNS/teacher_every_face.safetensors}" --set train.teacher_weight=0.5 \
                 --threads "$THREADS" ;;
  cydral-gender-aaf) aaf_split
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/cydral_gender_aaf" --config recipes/model_b.yaml \
                 --set model.name=cydral_gender --set data.image_size=32 --set model.unfreeze_blocks=7 \
                 --set train.feature_views=4 --set train.finetune_lr=0.0001 \
                 --set train.finetune_epochs=8 --set train.age_weight=0 --set train.age_distribution_weight=0 \
                 --set augment.grayscale=0.25 --set 'data.sampling=[aaf=2, age:0-12=2]' --threads "$THREADS" ;;
  cydral-gender-aaf-kids) aaf_split
               agegender train --data "$DATA" --data "$AAF" --out "$RUNS/cydral_gender_aaf_kids" --config recipes/model_b.yaml \
                 --set model.name=cydral_gender --set data.image_size=32 --set model.unfreeze_blocks=7 \
                 --set train.feature_views=4 --set train.finetune_lr=0.0001 \
                 --set train.finetune_epochs=8 --set train.age_weight=0 --set train.age_distribution_weight=0 \
                 --set augment.grayscale=0.25 --set 'data.sampling=[aaf=2, age:0-12=4]' --threads "$THREADS" ;;
  *)           echo "usage: $0 dlib-5k|dlib-5k-lr|cydral-5k|dlib-full|dlib-full2|cydral-full|dlib-full-lfw|dlib-distill|dlib-distill-lfw|dlib-e2e|dlib-e2e-fast|dlib-e2e-gentle|dlib-full-150|dlib-aaf|dlib-aaf-sampled|dlib-aaf-e2e|dlib-aaf-e2e-long|dlib-aaf-e2e-kids|dlib-aaf-e2e-again|dlib-aaf-e2e-age|dlib-aaf-kids|dlib-aaf-distill|cydral-gender-aaf|cydral-gender-aaf-kids" >&2
               exit 2 ;;
esac
