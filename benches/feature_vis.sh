#!/usr/bin/env bash
# Feature visualization, GoogLeNet (light model, seeded random weights), inception_4a/output,
# 8 units, 128 px: microscope's render loop next to the same loop in PyTorch (Lucent's recipe),
# both on this machine's CPU in one run, with the ratios. PyTorch runs twice: as Lucent does (the
# whole network forward, weight gradients on) and cut at the target layer (a stronger baseline).
# Installs torch and onnx2torch into .venv-bench (PyPI) the first time. Needs the fixtures from
# tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=tests/fixtures/onnx/light-ref/light_inception_v1_random.onnx
STEPS=${STEPS:-20}
DEVICE=${DEVICE:-cpu}   # DEVICE=cuda with a build of `--features cuda` and a CUDA torch
[ -f "$MODEL" ] || { echo "run tests/run.sh first (it builds $MODEL)" >&2; exit 2; }
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet torch onnx2torch "onnx==1.23.2" numpy
fi
# The tensor microscope names inception_4a/output: the file's third Concat (3a, 3b, 4a).
tensor=$(.venv-bench/bin/python -c "
import onnx, sys
g = onnx.load(sys.argv[1]).graph
concats = [n for n in g.node if n.op_type == 'Concat']
print(concats[2].output[0])
" "$MODEL")
features=""
[ "$DEVICE" = cpu ] || features="--features cuda"
# shellcheck disable=SC2086
ours=$(cargo bench --quiet $features --bench feature_vis_step -- "$MODEL" inception_4a/output "$STEPS" "$DEVICE")
theirs=$(.venv-bench/bin/python benches/lucent_googlenet.py "$MODEL" "$tensor" "$STEPS" "$DEVICE" both)
echo "$ours"
echo "$theirs"
m=$(echo "$ours" | awk '{print $2}')
for mode in lucent truncated; do
  t=$(echo "$theirs" | awk -v m="$mode" '$2 == m {print $3}')
  awk -v m="$m" -v t="$t" -v mode="$mode" \
    'BEGIN {printf "feature vis step: microscope %.1f ms, pytorch (%s) %.1f ms, pytorch/microscope = %.2f\n", m, mode, t, t / m}'
done
