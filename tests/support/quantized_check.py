"""Quantizes the nine light models as users quantize theirs and compares microscope with onnxruntime.

Not run in CI (minutes, and several hundred MB of models); a check by hand of the quantized
models' ops on real networks. For each light model (tests/run.sh writes them, with seeded random
weights, to tests/fixtures/onnx/light-ref) and each of onnxruntime's formats (QDQ, QOperator,
dynamic, and QDQ with FLOAT8E4M3FN), per tensor and per channel, it quantizes the model with onnxruntime's quantizer
(calibrated on four random images), runs it on one more with onnxruntime (graph optimizations
off, so the nodes run as written) and with `microscope eval`, and prints how far apart the
outputs are.

Setup: the test venv that tests/run.sh makes (.venv) and a release build of the CLI.

usage: python quantized_check.py LIGHT_REF_DIR MICROSCOPE_BIN OUT_DIR [NAME_PART...]

KINDS="qdq float8" checks only those formats (all four by default).
"""

import collections
import logging
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

logging.disable(logging.WARNING)


class Calibration(CalibrationDataReader):
    def __init__(self, name, shape, rng):
        self.batches = iter([{name: rng.random(shape, dtype=np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


def quantize(kind, per_channel, src, dst, name, shape, rng):
    if kind == "dynamic":
        weight = QuantType.QInt8 if per_channel else QuantType.QUInt8
        quantize_dynamic(src, dst, per_channel=per_channel, weight_type=weight)
        return
    if kind == "float8":
        # As tests/support/quantized_export.py says: float8 calibrates by distribution only, and
        # ActivationSymmetric keeps the ReLUs.
        quantize_static(
            src,
            dst,
            Calibration(name, shape, rng),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QFLOAT8E4M3FN,
            weight_type=QuantType.QFLOAT8E4M3FN,
            calibrate_method=CalibrationMethod.Distribution,
            extra_options={"ActivationSymmetric": True},
        )
        return
    quantize_static(
        src,
        dst,
        Calibration(name, shape, rng),
        quant_format=QuantFormat.QDQ if kind == "qdq" else QuantFormat.QOperator,
        per_channel=per_channel,
        activation_type=QuantType.QInt8 if per_channel else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def main():
    light, microscope, out = sys.argv[1:4]
    only = sys.argv[4:]
    os.makedirs(out, exist_ok=True)
    for file in sorted(os.listdir(light)):
        if not file.endswith("_random.onnx") or (only and not any(p in file for p in only)):
            continue
        stem = file[: -len("_random.onnx")]
        src = os.path.join(light, file)
        model = onnx.load(src)
        if model.opset_import[0].version < 13:
            # onnxruntime's quantizer writes per-channel scales (axis) from opset 13 on.
            model = version_converter.convert_version(model, 13)
            src = os.path.join(out, f"{stem}_13.onnx")
            onnx.save(model, src)
        weights = {t.name for t in model.graph.initializer}
        (image,) = [i for i in model.graph.input if i.name not in weights]
        shape = [d.dim_value or 1 for d in image.type.tensor_type.shape.dim]
        rng = np.random.default_rng(0)
        x = rng.random(shape, dtype=np.float32)
        x_path = os.path.join(out, "x.npy")
        np.save(x_path, x)
        for kind in os.environ.get("KINDS", "qdq qoperator dynamic float8").split():
            for per_channel in [False, True]:
                how = "per channel" if per_channel else "per tensor"
                dst = os.path.join(out, f"{stem}_{kind}_{how.replace(' ', '_')}.onnx")
                label = f"{stem:20} {kind:9} {how:11}"
                try:
                    quantize(kind, per_channel, src, dst, image.name, shape, rng)
                except Exception as e:  # onnxruntime's quantizer gives up on some (float8)
                    print(f"{label} onnxruntime's quantizer failed: {type(e).__name__}: {e}"[:200])
                    continue
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                session = ort.InferenceSession(dst, options, providers=["CPUExecutionProvider"])
                want = session.run(None, {image.name: x})[0]
                result = subprocess.run(
                    [microscope, "eval", dst, "--input", x_path, "--out", os.path.join(out, "eval")],
                    capture_output=True,
                    text=True,
                )
                if result.returncode:
                    print(f"{label} FAILED: {result.stderr.strip()}")
                    continue
                output = session.get_outputs()[0].name
                file_name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in output)
                got = np.load(os.path.join(out, "eval", f"{file_name}.npy"))
                ops = collections.Counter(
                    n.op_type
                    for n in onnx.load(dst).graph.node
                    if "Quant" in n.op_type or "Integer" in n.op_type or n.op_type.startswith("Q")
                )
                diff = np.abs(got - want)
                print(
                    f"{label} {sum(ops.values()):4} quantized ops: {np.count_nonzero(diff > 1e-6)} "
                    f"of {diff.size} outputs differ, by at most {diff.max():.3g} "
                    f"(largest output {np.abs(want).max():.3g})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
