"""Exports keras.applications' architectures as a user would and checks each in `microscope`.

Not run in CI (it needs TensorFlow and tf2onnx, and takes minutes). For each architecture:
build it with seeded random weights (no download) and no softmax, export it with tf2onnx's
`from_keras` (opset 13, dynamic batch), evaluate a batch of 2 with `microscope eval` (fed channels-first, as microscope takes
images), and compare with Keras's logits. Prints one line per architecture: the relative error,
or why it failed, and the first and last layer names.

Setup (a scratch virtual environment, CPU is enough):

    python3 -m venv /tmp/tf-venv
    /tmp/tf-venv/bin/pip install tensorflow-cpu tf2onnx

usage: python keras_exports.py MICROSCOPE_BIN OUT_DIR [ARCH...]

Measured on 2026-12-05 (TensorFlow 2.21 with Keras 3, tf2onnx 1.17): 9 of the 10 below load and
agree with Keras (relative error at most 1.1e-6), their channels-last input declared
channels-first, their layers named as Keras names them (`conv1_bn`, `conv2_block1_out`). ConvNeXtTiny's export keeps TensorFlow calls tf2onnx did not convert
(`StatefulPartitionedCall`), which microscope refuses in one line saying so. (VGG16's export
was killed for memory on a 24 GB machine, so it is not in the list.)
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import compare, run_all  # noqa: E402

ARCHS = [
    "ResNet50", "MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "EfficientNetV2B0",
    "InceptionV3", "DenseNet121", "Xception", "ConvNeXtTiny", "NASNetMobile",
]


def check(microscope, out, name):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    size = 299 if name in ("InceptionV3", "Xception") else 224
    # Logits, not the softmax of random weights (nearly uniform: it would agree with anything).
    model = getattr(tf.keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(
        model, input_signature=spec, opset=13, output_path=os.path.join(d, "model.onnx")
    )
    x = (np.random.default_rng(0).random((2, size, size, 3)) * 255).astype("float32")
    np.save(os.path.join(d, "x.npy"), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    want = model(x).numpy()
    return compare(microscope, d, want)


def main():
    run_all("keras_exports.py", ARCHS, check)


if __name__ == "__main__":
    main()
