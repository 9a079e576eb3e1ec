#!/usr/bin/env bash
# Peak memory of loading models, microscope against onnxruntime in the same run (see
# load_memory.py): the light models' random-weight copies that tests/run.sh writes, and VGG-19
# quantized by onnxruntime's dynamic quantizer (int8 weights), made here the first time.
# A ratio above 1 means microscope's peak is the smaller.
set -euo pipefail
cd "$(dirname "$0")/.."
REF=tests/fixtures/onnx/light-ref
[ -x .venv/bin/python ] && [ -d "$REF" ] || { echo "run tests/run.sh first (it makes .venv and $REF)" >&2; exit 2; }
OUT=target/load-memory
mkdir -p "$OUT"
# The dev profile is optimized here; a release build would only take longer to make.
cargo build --quiet --bin microscope
if [ ! -f "$OUT/vgg19_int8.onnx" ]; then
  .venv/bin/python - "$REF/light_vgg19_random.onnx" "$OUT/vgg19_int8.onnx" <<'PY'
import logging, sys
logging.disable(logging.WARNING)
from onnxruntime.quantization import QuantType, quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2], per_channel=True, weight_type=QuantType.QInt8)
PY
fi
.venv/bin/python benches/load_memory.py target/debug/microscope "$REF"/light_*_random.onnx "$OUT/vgg19_int8.onnx"
