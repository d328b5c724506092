#!/usr/bin/env bash
# Full ViT-B/16 recipe of paper method 1 on one GPU (H200), from the repo root:
#   1. `synthleak pretrain --arch vit --vit-size base` on chest-ct-4class (CT pre-training),
#   2. the ViT autoencoder (encoder from step 1) on bench-iqoth's generated images,
#   3. seed-vit-ae (classifier) and seed-vit-ae-recon, plus nearest / nearest-calibrated in the
#      vit-ae feature space, all with CV metrics on the labelled reals and test metrics.
# Data: .device/data/{bench-iqoth,chest-ct-4class}. Results (log, run files, JSON summaries) go to $OUT.
# Budget: about 4 minutes of GPU wall time in total; epochs via PRETRAIN_EPOCHS / AE_EPOCHS.
set -uo pipefail

OUT=${OUT:-$PWD/vit-full-out}
mkdir -p "$OUT"
DATA=${DATA:-.device/data}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-30}   # recipe default is 100; 30 fits the shared slot
AE_EPOCHS=${AE_EPOCHS:-10}               # recipe default
PRETRAIN_LIMIT_S=${PRETRAIN_LIMIT_S:-150}
AUDIT_LIMIT_S=${AUDIT_LIMIT_S:-300}
DEVICE=${DEVICE:-cuda}                   # DEVICE=cpu VIT_SIZE=tiny EXTRA_ARGS=... only to dry-run the script
VIT_SIZE=${VIT_SIZE:-base}
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"   # extra options for both commands, e.g. --image-size 32
# Checkpoints and per-epoch resume files (model + Adam state, ~1 GB each for ViT-B) in RAM, not on
# disk: writing them every epoch to disk would cost more than the epochs themselves.
WORK=${WORK:-/dev/shm/synthleak-vit}
mkdir -p "$WORK"
export SYNTHLEAK_CACHE="$WORK/cache"
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/vit_full.log") 2>&1

START=$(date +%s)
stamp() { echo "=== [$(( $(date +%s) - START ))s] $*"; }

stamp "install"
if [ -z "${SKIP_INSTALL:-}" ]; then
  pip install -q -e . --no-deps --no-build-isolation || { echo "pip install -e . failed"; exit 1; }
fi
python -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
if [ "$DEVICE" = cuda ]; then
  python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || { echo "no CUDA: abort"; exit 1; }
fi
python -c 'import monai, einops, sklearn, safetensors, cv2, skimage' \
  || { echo "missing runtime packages (monai einops scikit-learn safetensors opencv scikit-image)"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for d in "$DATA/chest-ct-4class" "$DATA/bench-iqoth"; do
  [ -d "$d" ] || { echo "missing $d"; exit 1; }
done

stamp "pretrain ViT-$VIT_SIZE/16 on chest-ct-4class, $PRETRAIN_EPOCHS epochs"
ENCODER="$WORK/vit_${VIT_SIZE}_ct.safetensors"
T0=$(date +%s)
timeout "$PRETRAIN_LIMIT_S" synthleak pretrain --data "$DATA/chest-ct-4class" --arch vit --vit-size "$VIT_SIZE" \
  --epochs "$PRETRAIN_EPOCHS" --out "$ENCODER" --device "$DEVICE" --force "${EXTRA[@]}"
RC=$?
echo "pretrain wall: $(( $(date +%s) - T0 ))s (rc $RC)"
ENCODER_ARGS=(--encoder "$ENCODER")
if [ $RC -ne 0 ] || [ ! -f "$ENCODER" ]; then
  echo "pretraining did not finish: the autoencoder starts from a random ViT instead"
  ENCODER_ARGS=()
else
  python - "$ENCODER" <<'PY'
import json, sys
from synthleak.models.checkpoint import load_checkpoint
_, meta = load_checkpoint(sys.argv[1])
print("pretrain: best valid accuracy", meta.get("best_valid_accuracy"), "at epoch", meta.get("best_epoch"),
      "| test accuracy", meta.get("test_accuracy"), "| classes", meta.get("classes"))
PY
fi

stamp "autoencoder ($AE_EPOCHS epochs) + seed-vit-ae, seed-vit-ae-recon, nearest(-calibrated) in vit-ae space"
T0=$(date +%s)
timeout "$AUDIT_LIMIT_S" synthleak audit "$DATA/bench-iqoth" \
  --method seed-vit-ae,seed-vit-ae-recon,nearest,nearest-calibrated --feature-space vit-ae \
  --vit-size "$VIT_SIZE" "${ENCODER_ARGS[@]}" --epochs "$AE_EPOCHS" "${EXTRA[@]}" \
  --labels "$DATA/bench-iqoth/test_labels.csv" --out "$OUT/vit" --device "$DEVICE" --force
RC=$?
echo "audit wall: $(( $(date +%s) - T0 ))s (rc $RC)"
stamp "done"
