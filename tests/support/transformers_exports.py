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

usage: python transformers_exports.py [--classic] [--dense] MICROSCOPE_BIN OUT_DIR [ARCH...]

With --classic, the classic exporter only. With --dense, the dense-prediction models of DENSE
instead (segmentation, depth, detection; small configurations), compared on their first output
(logits, predicted depth or class logits); Mask2Former's loss needs scipy installed.

Measured on 2026-12-05 (torch 2.15, transformers 5.25): all 33 below load and agree with
PyTorch at a batch of 2 (relative error at most 5.7e-6, BiT's; onnxruntime's is 1.2e-5 there).
The default exporter fails on Swin (the classic one exports it); four exports (SegFormer, PVTv2,
CvT, Hiera) fix their batch at 1 in a Reshape, which onnxruntime refuses at a batch of 2 and
microscope runs one image at a time.

With --dense, same day: SegFormer, UperNet, DPT, Depth Anything, DETR, Conditional DETR and
Mask2Former (its deformable attention through GridSample; the classic exporter) agree to 2.6e-6.
RT-DETR loads and runs but picks its queries by TopK among scores that random weights make
equal to 1e-7, so rounding picks other queries (3.9e-3; at a batch of 1, which onnxruntime
runs, onnxruntime and microscope differ by 2.3e-3 for that reason, every node before the
TopK within 1e-4).
Deformable DETR's configuration fails in transformers before export.
"""

import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import export_and_compare, randomize_zeros, run_all  # noqa: E402

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
    torch.manual_seed(0)
    cfg = config(model_type)
    cls = getattr(transformers, ARCHS[model_type] + "ForImageClassification")
    model = cls(cfg).eval()
    randomize_zeros(model)
    return export_and_compare(microscope, os.path.join(out, model_type), model, size(cfg),
                              "pixel_values", CLASSIC)


CLASSIC = "--classic" in sys.argv


def small(model_type, **kw):
    return transformers.AutoConfig.for_model(model_type, **kw)


def detector(model_type, **kw):
    return small(model_type, use_pretrained_backbone=False, encoder_layers=1, decoder_layers=1,
                 num_queries=10, **kw)


# Dense-prediction models: (class, configuration, input side).
DENSE = {
    "segformer": ("SegformerForSemanticSegmentation", lambda: small("segformer", num_labels=5),
                  128),
    "upernet": ("UperNetForSemanticSegmentation", lambda: small("upernet", num_labels=5), 128),
    "dpt": ("DPTForDepthEstimation", lambda: small(
        "dpt", num_hidden_layers=4, backbone_out_indices=[0, 1, 2, 3], hidden_size=192,
        num_attention_heads=3, intermediate_size=384, neck_hidden_sizes=[48, 96, 192, 384],
        fusion_hidden_size=64), 224),
    "depth_anything": ("DepthAnythingForDepthEstimation", lambda: small("depth_anything"), 126),
    "detr": ("DetrForObjectDetection", lambda: detector("detr"), 128),
    "conditional_detr": ("ConditionalDetrForObjectDetection",
                         lambda: detector("conditional_detr"), 128),
    "rt_detr": ("RTDetrForObjectDetection", lambda: detector("rt_detr"), 128),
    "deformable_detr": ("DeformableDetrForObjectDetection", lambda: detector("deformable_detr"),
                        128),
    "mask2former": ("Mask2FormerForUniversalSegmentation",
                    lambda: small("mask2former", encoder_layers=1, decoder_layers=2,
                                  num_queries=10), 128),
}


class FirstOutput(torch.nn.Module):
    """A dense model's first output as one tensor, which the exporters and the comparison take."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        for key in ("logits", "predicted_depth", "class_queries_logits"):
            if out.get(key) is not None:
                return out[key]
        return out[0]


def dense_check(microscope, out, name):
    torch.manual_seed(0)
    cls, cfg, side = DENSE[name]
    model = FirstOutput(getattr(transformers, cls)(cfg())).eval()
    randomize_zeros(model)
    return export_and_compare(microscope, os.path.join(out, name), model, side, "pixel_values",
                              CLASSIC)


def main():
    if "--dense" in sys.argv:
        run_all("transformers_exports.py", list(DENSE), dense_check, ("--classic", "--dense"))
    else:
        run_all("transformers_exports.py", list(ARCHS), check, ("--classic", "--dense"))


if __name__ == "__main__":
    main()
