#!/usr/bin/env bash
# Feature visualization, GoogLeNet (light model, seeded random weights), inception_4a/output,
# 8 units, 128 px: microscope's render loop next to the same loop in PyTorch (Lucent's recipe),
# both on this machine's CPU in one run, with the ratios. PyTorch runs twice: as Lucent does (the
# whole network forward, weight gradients on) and cut at the target layer (a stronger baseline).
# Installs torch and onnx2torch into .venv-bench (PyPI) the first time; PYTHON=python3 uses a
# Python that has them (the GPU machine's). Needs the fixtures from tests/run.sh.
# BATCHES="8 32 128" also times those batch sizes on both sides and prints units·steps per second
# and the ratio at each, and the best of each side. BENCH=path runs a prebuilt bench binary
# (benches/gpu.sh carries one) instead of `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=tests/fixtures/onnx/light-ref/light_inception_v1_random.onnx
STEPS=${STEPS:-20}
DEVICE=${DEVICE:-cpu}   # DEVICE=cuda with a build of `--features cuda` and a CUDA torch
[ -f "$MODEL" ] || { echo "run tests/run.sh first (it builds $MODEL)" >&2; exit 2; }
PYTHON=${PYTHON:-.venv-bench/bin/python}
if [ "$PYTHON" = .venv-bench/bin/python ] && [ ! -x "$PYTHON" ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet torch onnx2torch "onnx==1.23.2" numpy
fi
# The tensor microscope names inception_4a/output: the file's third Concat (3a, 3b, 4a).
tensor=$("$PYTHON" -c "
import onnx, sys
g = onnx.load(sys.argv[1]).graph
concats = [n for n in g.node if n.op_type == 'Concat']
print(concats[2].output[0])
" "$MODEL")
features=""
[ "$DEVICE" = cpu ] || features="--features cuda"
# microscope also runs its loop through burn's Dispatch backend (DISPATCH=1), as it did before
# the device had a named backend of its own (the CPU: Fast; CUDA: FastCuda): what our own ops
# there gain.
if [ -n "${BENCH:-}" ]; then
  ours=$(DISPATCH=1 "$BENCH" "$MODEL" inception_4a/output "$STEPS" "$DEVICE")
else
  # shellcheck disable=SC2086
  ours=$(DISPATCH=1 cargo bench --quiet $features --bench feature_vis_step -- "$MODEL" inception_4a/output "$STEPS" "$DEVICE")
fi
theirs=$("$PYTHON" benches/lucent_googlenet.py "$MODEL" "$tensor" "$STEPS" "$DEVICE" both)
echo "$ours"
echo "$theirs"
m=$(echo "$ours" | awk '$1 == "microscope_fv_step_ms" {print $2}')
d=$(echo "$ours" | awk '$1 == "microscope_fv_dispatch_step_ms" {print $2}')
if [ -n "$d" ]; then
  awk -v m="$m" -v d="$d" \
    'BEGIN {printf "feature vis step: microscope %.1f ms, through Dispatch %.1f ms, dispatch/microscope = %.2f\n", m, d, d / m}'
fi
for mode in lucent truncated; do
  t=$(echo "$theirs" | awk -v m="$mode" '$1 == "torch_fv_step_ms" && $2 == m {print $3}')
  awk -v m="$m" -v t="$t" -v mode="$mode" \
    'BEGIN {printf "feature vis step: microscope %.1f ms, pytorch (%s) %.1f ms, pytorch/microscope = %.2f\n", m, mode, t, t / m}'
done
# Throughput: units·steps per second at each batch size, the truncated PyTorch loop beside.
for b in ${BATCHES:-}; do
  m=$(echo "$ours" | awk -v b="$b" '$1 == "microscope_fv_batch" && $2 == b {print $3}')
  t=$(echo "$theirs" | awk -v b="$b" '$1 == "torch_fv_batch" && $2 == "truncated" && $3 == b {print $4}')
  awk -v b="$b" -v m="$m" -v t="$t" 'BEGIN {printf "batch %d: microscope %.1f ms/step (%.0f units·steps/s), pytorch (truncated) %.1f ms/step (%.0f), pytorch/microscope = %.2f\n", b, m, b * 1e3 / m, t, b * 1e3 / t, t / m}'
done
if [ -n "${BATCHES:-}" ]; then
  best() { echo "$1" | awk -v k="$2" -v f="$3" '$1 == k && (k != "torch_fv_batch" || $2 == "truncated") {u = $(f - 1) * 1e3 / $f; if (u > m) {m = u; b = $(f - 1)}} END {printf "%.0f %d", m, b}'; }
  read -r mu mb <<<"$(best "$ours" microscope_fv_batch 3)"
  read -r tu tb <<<"$(best "$theirs" torch_fv_batch 4)"
  awk -v mu="$mu" -v mb="$mb" -v tu="$tu" -v tb="$tb" 'BEGIN {printf "best throughput: microscope %.0f units·steps/s (batch %d), pytorch (truncated) %.0f (batch %d), microscope/pytorch = %.2f\n", mu, mb, tu, tb, mu / tu}'
fi
