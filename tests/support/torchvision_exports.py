"""Exports torchvision's architectures as a user would and checks each in `microscope`.

Not run in CI (it needs torch and torchvision, and takes minutes). For each architecture: build
it with seeded random weights (no download), export it with PyTorch's default exporter as
notebooks/04-your-own-model.ipynb does (dynamic batch, opset 18), evaluate a batch of 2 with
`microscope eval`, and compare with PyTorch's logits. Prints one line per architecture: the
relative error, or why it failed, and the first and last layer names.

Setup (a scratch virtual environment, CPU is enough):

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch torchvision onnxscript "onnx==1.23.2" numpy

usage: python torchvision_exports.py [--classic] MICROSCOPE_BIN OUT_DIR [ARCH...]

With --classic, the classic exporter (`dynamo=False`, the default before PyTorch 2.9) with
`dynamic_axes`, opset 17, as the notebook gives it for an older PyTorch.

Measured on 2026-12-05 (torch 2.15, torchvision's defaults, weights that start at zero given
small random values): all 19 below load and agree with PyTorch at a batch of 2 (relative error
at most 1.6e-6). vit_b_16's export fixes its batch at 1 in a Reshape (onnxruntime refuses a
batch of 2); microscope runs a batch one image at a time on it. With --classic, all 19 agree
too (at most 1.6e-6), and every layer has a module name (none is left a scope like
`/features/features.0/Conv`).
"""

import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import compare, run_all  # noqa: E402

ARCHS = [
    "resnet50", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t",
    "regnet_y_400mf", "densenet121", "googlenet", "inception_v3", "squeezenet1_0",
    "shufflenet_v2_x1_0", "mnasnet0_5", "vgg11", "alexnet", "maxvit_t", "efficientnet_v2_s",
    "mobilenet_v2", "resnext50_32x4d",
]


def check(microscope, out, name):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        # torchvision starts some heads at zero (ViT's): logits of zeros would agree with anything.
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    size = 299 if name == "inception_v3" else 224
    if CLASSIC:
        how = dict(dynamo=False, dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                   opset_version=17)
    else:
        how = dict(dynamic_shapes=({0: "batch"},), opset_version=18)
    torch.onnx.export(
        model,
        (torch.rand(1, 3, size, size),),
        os.path.join(d, "model.onnx"),
        input_names=["image"],
        output_names=["logits"],
        **how,
    )
    x = np.random.default_rng(0).random((2, 3, size, size)).astype("float32")
    np.save(os.path.join(d, "x.npy"), x)
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    want = (want if torch.is_tensor(want) else want[0]).numpy()
    return compare(microscope, d, want)


CLASSIC = "--classic" in sys.argv


def main():
    run_all("torchvision_exports.py", ARCHS, check, ("--classic",))


if __name__ == "__main__":
    main()
