"""Exports Hugging Face transformers' image classifiers as a user would and checks each in
`microscope`.

Not run in CI (it needs torch and transformers, and takes minutes). For each
`<Name>ForImageClassification`: build it from its default configuration with seeded random
weights (no download; weights that start at zero given small random values; plain transformer
stacks cut to 2 blocks to keep it quick), export it with
PyTorch's default exporter (dynamic batch, opset 18) and, where that fails, with the classic one
(`dynamo=False`, opset 17), evaluate a batch of 2 with `microscope eval`, and compare with
PyTorch's logits. One line per architecture: which exporter, the relative error or why it
failed, and the first and last layer names.

Setup (a scratch virtual environment, CPU is enough):

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch transformers onnxscript "onnx==1.23.2" numpy

usage: python transformers_exports.py [--classic] MICROSCOPE_BIN OUT_DIR [ARCH...]

With --classic, the classic exporter only.

Measured on 2026-12-05 (torch 2.15, transformers 5.25): all 33 below load and agree with
PyTorch at a batch of 2 (relative error at most 5.7e-6, BiT's; onnxruntime's is 1.2e-5 there).
The default exporter fails on Swin (the classic one exports it); four exports (SegFormer, PVTv2,
CvT, Hiera) fix their batch at 1 in a Reshape, which onnxruntime refuses at a batch of 2 and
microscope runs one image at a time.
"""

import os
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import compare, run_all, torch_export  # noqa: E402

# Model types whose `<Class>ForImageClassification` takes `pixel_values` alone. Left out: Dinat
# (needs the natten extension), ImageGPT (takes token ids), the CLIP/SigLIP/Gemma families'
# text-and-image classifiers, and TimmWrapper (timm_exports.py covers timm).
ARCHS = {
    "vit": "ViT", "deit": "DeiT", "beit": "Beit", "data2vec-vision": "Data2VecVision",
    "dinov2": "Dinov2", "dinov2_with_registers": "Dinov2WithRegisters", "ijepa": "IJepa",
    "vit_msn": "ViTMSN", "convnext": "ConvNext", "convnextv2": "ConvNextV2", "swin": "Swin",
    "swinv2": "Swinv2", "donut-swin": "DonutSwin", "resnet": "ResNet", "regnet": "RegNet",
    "bit": "Bit", "efficientnet": "EfficientNet", "mobilenet_v1": "MobileNetV1",
    "mobilenet_v2": "MobileNetV2", "mobilevit": "MobileViT", "mobilevitv2": "MobileViTV2",
    "levit": "Levit", "poolformer": "PoolFormer", "segformer": "Segformer", "pvt": "Pvt",
    "pvt_v2": "PvtV2", "cvt": "Cvt", "focalnet": "FocalNet", "hiera": "Hiera",
    "swiftformer": "SwiftFormer", "hgnet_v2": "HGNetV2", "textnet": "TextNet",
    "pp_lcnet": "PPLCNet",
}


def config(model_type):
    cfg = transformers.AutoConfig.for_model(model_type)
    # Plain transformer stacks only: staged networks (ConvNeXt, Swin) size their heads by stage.
    staged = any(hasattr(cfg, a) for a in ("depths", "hidden_sizes", "num_stages"))
    if getattr(cfg, "num_hidden_layers", 0) > 2 and not staged:
        cfg.num_hidden_layers = 2
    cfg.num_labels = 10
    return cfg


def size(cfg):
    side = getattr(cfg, "image_size", 224)
    side = side[0] if isinstance(side, (list, tuple)) else side
    return side if side >= 32 else 224


def check(microscope, out, model_type):
    d = os.path.join(out, model_type)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    cfg = config(model_type)
    cls = getattr(transformers, ARCHS[model_type] + "ForImageClassification")
    model = cls(cfg).eval()
    with torch.no_grad():
        # Some layers start at zero: logits of zeros would agree with anything.
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    side = size(cfg)
    path = os.path.join(d, "model.onnx")
    exporter = torch_export(model, (side, side), path, "pixel_values", CLASSIC)
    x = np.random.default_rng(0).random((2, 3, side, side)).astype("float32")
    np.save(os.path.join(d, "x.npy"), x)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        want = (out.logits if hasattr(out, "logits") else out[0]).numpy()
    return "%s, %s" % (exporter, compare(microscope, d, want))


CLASSIC = "--classic" in sys.argv


def main():
    run_all("transformers_exports.py", list(ARCHS), check, ("--classic",))


if __name__ == "__main__":
    main()
