#!/usr/bin/env bash
# seed-dclgan at full size (256x256, 64 base filters, 6 ResNet blocks) on one GPU, ~3 min wall.
# Run from the repo root; expects the benchmark at .device/data/bench-iqoth and torch with CUDA.
# Prints wall times and metrics of (a) critic, (b) overlap, (c) features vs `nearest`; writes
# $OUT/dclgan_metrics.json, $OUT/dclgan_256.log and saliency PNGs under $OUT/saliency/.
# Training is capped by wall clock (--set train_minutes) so the run fits its slot whatever the GPU's
# speed; the epochs actually done are printed in the notes ("N epochs").
set -euo pipefail
t0=$(date +%s)
OUT=${OUT:-./dclgan_out}
DATA=${DATA:-.device/data/bench-iqoth}
mkdir -p "$OUT"
pip install -e . --no-deps -q 2>&1 | tail -n 2 || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
echo "setup: $(( $(date +%s) - t0 ))s"
# The model cache stays outside $OUT (the checkpoint is ~85 MB); only metrics, log and PNGs return.
python benchmarks/gpu/dclgan_bench.py "$DATA" --device cuda --image-size 256 --base-filters 64 \
    --epochs "${EPOCHS:-10}" --batch-size 8 --max-train-images 2000 --out "$OUT" \
    --cache-dir "${CACHE:-/tmp/synthleak-dclgan-cache}" --set train_minutes="${TRAIN_MINUTES:-1.5}" \
    2>&1 | tee "$OUT/dclgan_256.log"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
echo "total wall time: $(( $(date +%s) - t0 ))s"
