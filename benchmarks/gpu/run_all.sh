#!/usr/bin/env bash
# One prepared device run (H200): the full ViT-B/16 recipe (issue 5) and the 256x256 DCLGAN (issue 6).
# Prepare here first:  python benchmarks/gpu/pack_data.py  and  pip download --no-deps monai -d .device/wheels
# Device call:  bash benchmarks/gpu/run_all.sh   (carry .device; results come back as $OUT/results.tar.gz)
# The device image has CUDA torch, einops, sklearn, skimage, cv2, safetensors but no network, so the
# package runs from src/ (PYTHONPATH) and MONAI comes from the carried wheel.
set -u
OUT=${OUT:-$PWD/gpu-out}
WORKDIR=${WORKDIR:-/tmp/gpuwork}
mkdir -p "$OUT" "$WORKDIR/vit" "$WORKDIR/dclgan" "$WORKDIR/bin"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 SKIP_INSTALL=1
printf '#!/bin/sh\nexec python3 -m synthleak.cli "$@"\n' > "$WORKDIR/bin/synthleak"
chmod +x "$WORKDIR/bin/synthleak"
export PATH="$WORKDIR/bin:$PATH"
T0=$(date +%s)
python3 -m pip install -q --no-deps --no-index .device/wheels/*.whl 2>&1 | tail -2
python3 -c 'import torch, monai; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "monai", monai.__version__)'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

echo "=== ViT-B/16 recipe (limit ${VIT_LIMIT_S:-380}s)"
OUT="$WORKDIR/vit" PRETRAIN_LIMIT_S=${PRETRAIN_LIMIT_S:-130} AUDIT_LIMIT_S=${AUDIT_LIMIT_S:-230} \
  timeout "${VIT_LIMIT_S:-380}" bash benchmarks/gpu/vit_full.sh
echo "vit rc $? after $(( $(date +%s) - T0 ))s"

echo "=== DCLGAN 256x256 (limit ${DCLGAN_LIMIT_S:-170}s)"
OUT="$WORKDIR/dclgan" TRAIN_MINUTES=${TRAIN_MINUTES:-1.2} timeout "${DCLGAN_LIMIT_S:-170}" bash benchmarks/gpu/dclgan_256.sh
echo "dclgan rc $? after $(( $(date +%s) - T0 ))s"

cp "$WORKDIR/vit/vit_full.log" "$OUT/" 2>/dev/null
cp "$WORKDIR/dclgan/dclgan_256.log" "$WORKDIR/dclgan/dclgan_metrics.json" "$OUT/" 2>/dev/null
tar -czf "$OUT/results.tar.gz" -C "$WORKDIR" --exclude='*.safetensors' --exclude='*.partial*' vit dclgan
echo "total $(( $(date +%s) - T0 ))s"
