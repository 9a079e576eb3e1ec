"""Exports Hugging Face transformers' image classifiers as a user would and checks each in
`microscope`.

Not run in CI (it needs torch and transformers, and takes minutes). For each
`<Name>ForImageClassification`: build it from its default configuration with seeded random
weights (no download; transformer stacks cut to 2 blocks to keep it quick), export it with
PyTorch's default exporter (dynamic batch, opset 18) and, where that fails, with the classic one
(`dynamo=False`, opset 17), evaluate a batch of 2 with `microscope eval`, and compare with
PyTorch's logits. One line per architecture: which exporter, the relative error or why it
failed, and the first and last layer names.

Setup (a scratch virtual environment, CPU is enough):

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch transformers onnxscript "onnx==1.23.2" numpy

usage: python transformers_exports.py MICROSCOPE_BIN OUT_DIR [ARCH...]
"""

import os
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import compare, run_all  # noqa: E402

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
    if getattr(cfg, "num_hidden_layers", 0) > 2:
        cfg.num_hidden_layers = 2
    cfg.num_labels = 10
    return cfg


def size(cfg):
    side = getattr(cfg, "image_size", 224)
    side = side[0] if isinstance(side, (list, tuple)) else side
    return side if side >= 32 else 224


def export(model, side, path, classic):
    if classic:
        how = dict(dynamo=False, opset_version=17,
                   dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})
    else:
        how = dict(dynamic_shapes=({0: "batch"},), opset_version=18)
    torch.onnx.export(model, (torch.rand(1, 3, side, side),), path,
                      input_names=["pixel_values"], output_names=["logits"], **how)


def check(microscope, out, model_type):
    d = os.path.join(out, model_type)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    cfg = config(model_type)
    cls = getattr(transformers, ARCHS[model_type] + "ForImageClassification")
    model = cls(cfg).eval()
    side = size(cfg)
    path = os.path.join(d, "model.onnx")
    exporter = "dynamo"
    try:
        export(model, side, path, classic=False)
    except Exception:
        exporter = "classic"
        export(model, side, path, classic=True)
    x = np.random.default_rng(0).random((2, 3, side, side)).astype("float32")
    np.save(os.path.join(d, "x.npy"), x)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).logits.numpy()
    return "%s, %s" % (exporter, compare(microscope, d, want))


def main():
    run_all("transformers_exports.py", list(ARCHS), check)


if __name__ == "__main__":
    main()
