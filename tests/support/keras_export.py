"""A small Keras network exported by tf2onnx, as a TensorFlow user exports theirs.

Not run in CI (it needs TensorFlow). Its output is checked in under tests/reference/keras_export/
and tests/exporters.rs reads it: tf2onnx keeps the model's input as TensorFlow has it,
channels-last `[N, H, W, C]`, scales it there (the Rescaling layer), and turns it channels-first
with a Transpose before the first convolution, since ONNX's Conv is channels-first.

Setup (a scratch virtual environment, CPU is enough):

    python3 -m venv /tmp/tf-venv
    /tmp/tf-venv/bin/pip install tensorflow-cpu tf2onnx

usage: python keras_export.py OUT_DIR

The network: Rescaling(1/255), Conv2D(8, 3, relu) `conv1`, MaxPooling2D `pool1`, Conv2D(16, 3,
relu) `conv2`, GlobalAveragePooling2D `gap`, Dense(10) `logits`; seeded weights, 32 x 32 RGB.

Writes to OUT_DIR: keras.onnx (tf2onnx's file, opset 13, dynamic batch, with the metadata
notebooks/04-your-own-model.ipynb has a user add: pixels in [0, 255]), x.npy [2, 3, 32, 32]
float32 in [0, 255] (seeded, channels-first as microscope takes images), logits.npy [2, 10]
(Keras's output on x, fed channels-last), and versions.txt (TensorFlow and tf2onnx versions).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: keras_export.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    image = tf.keras.Input((32, 32, 3), name="image")
    x = layers.Rescaling(1 / 255.0, name="rescale")(image)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = tf.keras.Model(image, layers.Dense(10, name="logits")(x))
    spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_function(
        tf.function(lambda x: model(x)), input_signature=spec, opset=13
    )
    # As notebooks/04-your-own-model.ipynb tells a user: the model takes pixels in [0, 255],
    # microscope's are in [0, 1], so (p - 0) / (1 / 255).
    onnx.helper.set_model_props(
        proto, {"input_mean": "0,0,0", "input_std": ",".join([repr(1 / 255)] * 3)}
    )
    onnx.save(proto, os.path.join(out, "keras.onnx"))
    x = (np.random.default_rng(1).random((2, 32, 32, 3)) * 255).astype("float32")
    np.save(os.path.join(out, "x.npy"), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.save(os.path.join(out, "logits.npy"), model(x).numpy())
    with open(os.path.join(out, "versions.txt"), "w") as f:
        f.write("tensorflow %s\ntf2onnx %s\n" % (tf.__version__, tf2onnx.__version__))
    print("wrote", sorted(os.listdir(out)))


if __name__ == "__main__":
    main()
