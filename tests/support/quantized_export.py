"""The built-in Fashion-MNIST CNN quantized to 8 bits as users quantize theirs, in each format.

Not run in CI. Its output is checked in under tests/reference/quantized/ and tests/exporters.rs
reads it. onnxruntime's quantizer writes three kinds of quantized model:
- `qdq.onnx` (`quantize_static`, QDQ format, the one PyTorch's and TensorRT's tools write too):
  each weight stored as 8-bit integers with a DequantizeLinear, each activation through a
  QuantizeLinear and a DequantizeLinear;
- `qoperator.onnx` (`quantize_static`, QOperator format, as in the ONNX Model Zoo's `-int8`
  models): QLinearConv, and onnxruntime's own QGemm (domain com.microsoft), on 8-bit tensors;
- `dynamic.onnx` (`quantize_dynamic`): DynamicQuantizeLinear before ConvInteger and
  MatMulInteger, whose INT32 products are scaled back to floats;
- `float8.onnx` (`quantize_static`, QDQ format, QFLOAT8E4M3FN): weights and activations as
  8-bit floats (FLOAT8E4M3FN: 3 mantissa bits, at most 448), the form NVIDIA's TensorRT Model
  Optimizer writes too. onnxruntime's quantizer calibrates float8 only by each tensor's
  distribution (CalibrationMethod.Distribution). ActivationSymmetric keeps the ReLUs: without
  it the quantizer drops each one into the QuantizeLinear after it, as it does for UINT8, whose
  range stops at zero; float8 is signed, so the negative values went on (31% accuracy).
Run this again only to follow a newer onnxruntime.

Setup: the test venv that tests/run.sh makes (.venv: onnx, onnxruntime, numpy) is enough.

usage: python quantized_export.py FASHION_ONNX FASHION_MNIST_DIR OUT_DIR [KIND...]

KIND: qdq, qoperator, dynamic, float8 (all four when none is named).

Calibration reads the first 512 training images. Weights are INT8 per output channel
(symmetric), activations UINT8 per tensor: onnxruntime's defaults for a CNN on the CPU, with
per_channel on.

Writes to OUT_DIR the three models; x.npy [16, 1, 28, 28] float32 in [0, 1], the first 16 test
images; FORMAT_logits.npy [16, 10], onnxruntime's output of each on x with graph optimizations
off, so that it runs the nodes as the file states them (with them on, it fuses QDQ pairs into
integer kernels whose rounding differs); versions.txt (onnxruntime's version).
"""

import gzip
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    quantize_dynamic,
    QuantFormat,
    QuantType,
    quantize_static,
)


def images(path, count):
    with gzip.open(path, "rb") as f:
        data = f.read()
    # idx3: magic, count, rows, cols (big-endian u32), then the pixels.
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16)
    return (pixels.reshape(-1, 1, 28, 28)[:count].astype(np.float32)) / 255.0


class Calibration(CalibrationDataReader):
    def __init__(self, name, batch):
        self.batches = iter([{name: batch[i : i + 32]} for i in range(0, len(batch), 32)])

    def get_next(self):
        return next(self.batches, None)


def main():
    fashion, data, out = sys.argv[1:4]
    kinds = sys.argv[4:] or ["qdq", "qoperator", "dynamic", "float8"]
    os.makedirs(out, exist_ok=True)
    name = onnx.load(fashion).graph.input[0].name
    calibration = images(os.path.join(data, "train-images-idx3-ubyte.gz"), 512)
    x = images(os.path.join(data, "t10k-images-idx3-ubyte.gz"), 16)
    np.save(os.path.join(out, "x.npy"), x)
    for kind in kinds:
        model = os.path.join(out, f"{kind}.onnx")
        if kind == "dynamic":
            quantize_dynamic(fashion, model, weight_type=QuantType.QInt8, per_channel=True)
        elif kind == "float8":
            quantize_static(
                fashion,
                model,
                Calibration(name, calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QFLOAT8E4M3FN,
                weight_type=QuantType.QFLOAT8E4M3FN,
                calibrate_method=CalibrationMethod.Distribution,
                per_channel=True,
                extra_options={"ActivationSymmetric": True},
            )
        else:
            quantize_static(
                fashion,
                model,
                Calibration(name, calibration),
                quant_format=QuantFormat.QDQ if kind == "qdq" else QuantFormat.QOperator,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {name: x})
        np.save(os.path.join(out, f"{kind}_logits.npy"), logits)
        print(f"wrote {model}: {os.path.getsize(model)} bytes")
    with open(os.path.join(out, "versions.txt"), "w") as f:
        f.write(f"onnxruntime {ort.__version__}\n")


if __name__ == "__main__":
    main()
