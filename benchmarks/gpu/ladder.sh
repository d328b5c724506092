#!/usr/bin/env bash
# The GPU-preset leak ladder (256 px DDPM, ~36M-parameter UNet, bf16 autocast) from iqoth-256 on one
# CUDA GPU, audited rung by rung with the quick methods. Run from the repo root.
# Prepare here:  python benchmarks/gpu/pack_data.py --sets iqoth-256   (20 MB into .device/data)
#                pip download --no-deps monai -d .device/wheels        (if the device image lacks MONAI)
# Device call:   bash benchmarks/gpu/ladder.sh   (carry .device)
# Results in $OUT: ladder-iqoth-gpu.md (the same table as benchmarks/results/ladder-iqoth.md), ladder.json
# (the meter per rung), quick_audits.json and the log; the rung benchmarks themselves stay in $WORK.
# Not yet run on a GPU: the training speed of this preset is unmeasured, so the default rungs are a
# guess sized for a few minutes; the log's "steps/s" line after the first rung says what fits. An
# interrupted build resumes from $WORK/ladder.partial when re-run on the same machine.
set -uo pipefail
OUT=${OUT:-$PWD/ladder-gpu-out}
WORK=${WORK:-/tmp/synthleak-ladder}
DATA=${DATA:-.device/data/iqoth-256}
RUNGS=${RUNGS:-1000,3000,6000}
MEMBERS=${MEMBERS:-100}
N_GENERATED=${N_GENERATED:-1500}
IMAGE_SIZE=${IMAGE_SIZE:-256}
LIMIT_S=${LIMIT_S:-570}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
exec > >(tee "$OUT/ladder.log") 2>&1
T0=$(date +%s)
if ls .device/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-deps --no-index .device/wheels/*.whl 2>&1 | tail -2
fi
python3 -c 'import torch, monai; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "monai", monai.__version__)'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout "$LIMIT_S" python3 benchmarks/build_ladder.py "$WORK/ladder" --data "$DATA" --preset gpu \
    --image-size "$IMAGE_SIZE" --rungs "$RUNGS" --members "$MEMBERS" --n-generated "$N_GENERATED" \
    --device cuda --bootstrap 500 --results "$OUT/ladder-iqoth-gpu.md" --force
echo "build_ladder rc $? after $(( $(date +%s) - T0 ))s"
cp "$WORK/ladder/ladder.json" "$WORK/ladder/quick_audits.json" "$OUT/" 2>/dev/null
for f in "$WORK"/ladder.partial/rung-*/SOURCE.json; do   # rungs finished before a timeout
  [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")").SOURCE.json"
done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
echo "total wall time: $(( $(date +%s) - T0 ))s"
