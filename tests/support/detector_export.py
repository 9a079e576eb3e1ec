"""A small torchvision Faster R-CNN exported as a user exports theirs, for partial loading.

Not run in CI (it needs torch). Its output is checked in under tests/reference/detector_export/
and tests/exporters.rs reads it. A detector's post-processing (NonZero to drop boxes, If,
NonMaxSuppression) is outside what microscope runs; `Model::load_partial` loads the rest, and
that rest must compute what PyTorch computes. Run this again only to follow a newer exporter.

Setup (a scratch virtual environment, CPU is enough):

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch torchvision onnxscript "onnx==1.23.2" numpy

usage: python detector_export.py OUT_DIR

The network keeps torchvision's module layout with small, seeded widths: a body of two strided
convolutions (`backbone.body.layer1`, `layer2`), torchvision's FeaturePyramidNetwork on both
(8 channels, plus its max-pooled level `pool`), the region proposal network and the box head.
The `dynamo=True` exporter (PyTorch's default since 2.9) cannot export torchvision's detectors:
torch.export stops at their data-dependent shapes. So this is the classic exporter
(`dynamo=False`, opset 17), which torchvision's own tests use.

Writes to OUT_DIR: detector.onnx; x.npy [1, 3, 64, 64] float32 in [0, 1] (seeded); fpn_0.npy
[1, 8, 32, 32] and fpn_pool.npy [1, 8, 8, 8] (the FPN's finest and pooled levels on x, after
the detector's own normalization and resize), objectness_0.npy [1, 1, 32, 32] (the RPN head's
objectness logits on level 0: one anchor per place); versions.txt (torch and torchvision versions).
"""

import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x):
        return self.layer2(self.layer1(x))


def detector():
    backbone = BackboneWithFPN(
        Body(),
        return_layers={"layer1": "0", "layer2": "1"},
        in_channels_list=[8, 16],
        out_channels=8,
    )
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,)), aspect_ratios=((1.0,),) * 3)
    roi = torchvision.ops.MultiScaleRoIAlign(
        featmap_names=["0", "1"], output_size=4, sampling_ratio=2
    )
    return FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi,
        box_head=TwoMLPHead(8 * 4 * 4, 16),
        box_predictor=FastRCNNPredictor(16, 3),
        min_size=64,
        max_size=64,
    ).eval()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: detector_export.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = detector()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    seen = {}
    hooks = [
        model.backbone.register_forward_hook(lambda m, i, o: seen.update(fpn=o)),
        model.rpn.head.register_forward_hook(lambda m, i, o: seen.update(head=o)),
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    torch.onnx.export(
        model,
        (x,),
        os.path.join(out, "detector.onnx"),
        dynamo=False,
        input_names=["image"],
        opset_version=17,
    )
    fpn = seen["fpn"]
    assert isinstance(fpn, OrderedDict) and list(fpn) == ["0", "1", "pool"], list(fpn)
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "fpn_0.npy"), fpn["0"].numpy())
    np.save(os.path.join(out, "fpn_pool.npy"), fpn["pool"].numpy())
    np.save(os.path.join(out, "objectness_0.npy"), seen["head"][0][0].numpy())
    with open(os.path.join(out, "versions.txt"), "w") as f:
        f.write("torch %s\ntorchvision %s\n" % (torch.__version__, torchvision.__version__))
    print("wrote", sorted(os.listdir(out)))


if __name__ == "__main__":
    main()
