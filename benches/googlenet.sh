#!/usr/bin/env bash
# GoogLeNet (ONNX light model, seeded random weights) at 224 px, batch 1 and 8:
# microscope's forward + backward-to-input step on the CPU next to onnxruntime's forward pass on
# the same input, measured in one run, printed with their ratio.
# Needs the fixtures from tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=tests/fixtures/onnx/light-ref/light_inception_v1_random.onnx
ITERS=${ITERS:-10}
[ -f "$MODEL" ] || { echo "run tests/run.sh first (it builds $MODEL)" >&2; exit 2; }
ours=$(cargo bench --quiet --bench googlenet_step -- "$MODEL" "$ITERS")
ort=$(.venv/bin/python benches/ort_googlenet.py "$MODEL" --batch 1 --batch 8 --iters "$ITERS")
echo "$ours"
echo "$ort"
for b in 1 8; do
  m=$(echo "$ours" | awk -v b="batch=$b" '$2 == b {print $3}')
  o=$(echo "$ort" | awk -v b="batch=$b" '$2 == b {print $3}')
  awk -v b="$b" -v m="$m" -v o="$o" \
    'BEGIN {printf "batch %s: microscope fwd+bwd %.1f ms, onnxruntime fwd %.1f ms, ratio %.2f\n", b, m, o, m / o}'
done
