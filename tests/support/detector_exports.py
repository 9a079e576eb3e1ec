"""Exports torchvision's detectors as a user would and checks the part microscope loads.

Not run in CI (it needs torch, torchvision and onnxruntime, and takes minutes). A detector's
post-processing (NonZero, RoiAlign, If, NonMaxSuppression) is outside what microscope runs;
`microscope --partial` loads the rest. For each architecture: build it with seeded random
weights (no download) at a small image size, export it with the classic exporter (`dynamo=True`
cannot export torchvision's detectors: torch.export stops at their data-dependent shapes), load
it with `microscope info --partial`, and evaluate every convolution it kept with `microscope
eval --partial` against onnxruntime's values of the same tensors on the same image. Prints one
line per architecture: what was left out, how many convolutions were compared and the worst
relative error, or why it failed.

Setup (a scratch virtual environment, CPU is enough):

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch torchvision onnxscript "onnx==1.23.2" numpy onnxruntime

usage: python detector_exports.py MICROSCOPE_BIN OUT_DIR [ARCH...]

An ARCH named `yolo...` (`yolov8n`, `yolo11n-seg`) is an Ultralytics YOLO exported by
Ultralytics with NMS at its end (see `export_ultralytics`); it is not in the default list.
Exported without NMS (`nms=False`), yolov8n, yolo11n, yolov8n-seg and yolov8n-pose load whole
and agree with onnxruntime to 8e-8.

Measured on 2026-12-05 (torch 2.15, torchvision 0.29, onnxruntime 1.32, 160 px; SSD at its own
300 and 320): all 11 below load in part, every one stopping at the NonZero that drops boxes
(the two-stage ones also leave out RoiAlign; SSD filters each of its 91 classes with two
NonZeros, 181 unsupported nodes in all), and the convolutions kept (35 to 116 a network) agree with onnxruntime to
at most 5.9e-6 relative error. With Ultralytics 8.4 and NMS: yolov8n, yolo11n, yolov8n-seg and
yolov8n-pose stop at the NonZero that drops boxes too, and their convolutions agree to 1.5e-6.
"""

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import relative_error, run_all  # noqa: E402

ARCHS = [
    "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn",
    "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
]

SIDE = 160


def supported_ops(microscope):
    listing = subprocess.run([microscope, "info", "--ops"], capture_output=True, text=True,
                             check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def kept_convolutions(path, supported):
    """The output tensors of the Conv nodes that do not depend on an unsupported node, as
    `Extent::Supported` keeps them (src/import/mod.rs)."""
    graph = onnx.load(path).graph
    dropped, convs = set(), []
    for n in graph.node:
        standard = n.domain in ("", "ai.onnx")
        if not standard or n.op_type not in supported or any(i in dropped for i in n.input):
            dropped.update(n.output)
        elif n.op_type == "Conv":
            convs.append(n.output[0])
    return convs


def export_ultralytics(name, path):
    """An Ultralytics YOLO (`yolov8n`, `yolo11n-seg`, ...; seeded random weights from its yaml,
    nothing downloaded) exported by Ultralytics' own `export(format="onnx", nms=True)`, which
    ends in NMS. Needs `pip install ultralytics onnxslim`; set YOLO_OFFLINE=1."""
    import shutil

    from ultralytics import YOLO

    written = YOLO(name + ".yaml").export(format="onnx", imgsz=SIDE, nms=True, opset=17,
                                          simplify=False, dynamic=False)
    shutil.move(written, path)


def check(microscope, out, name):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    path = os.path.join(d, "model.onnx")
    side = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320}.get(name, SIDE)
    if name.startswith("yolo"):
        export_ultralytics(name, path)
    else:
        size = dict(min_size=SIDE, max_size=SIDE) if not name.startswith("ssd") else {}
        model = getattr(torchvision.models.detection, name)(
            weights=None, weights_backbone=None, **size).eval()
        torch.onnx.export(model, (torch.rand(1, 3, side, side),), path, dynamo=False,
                          opset_version=17, input_names=["image"])
    x = np.random.default_rng(0).random((1, 3, side, side)).astype("float32")
    np.save(os.path.join(d, "x.npy"), x)

    info = subprocess.run([microscope, "info", "--partial", path], capture_output=True, text=True)
    if info.returncode != 0:
        return "FAILED: " + info.stderr.strip()
    partial = next((line for line in info.stdout.splitlines() if line.startswith("partial ")),
                   "partial  (none: loaded whole)")
    convs = kept_convolutions(path, supported_ops(microscope))

    # onnxruntime's values of those tensors: the same file with them as outputs.
    m = onnx.load(path)
    known = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in convs if t not in known)
    quiet = onnxruntime.SessionOptions()
    quiet.log_severity_level = 3  # the masks' shapes differ from the traced ones, as they may
    session = onnxruntime.InferenceSession(m.SerializeToString(), quiet)
    names = [o.name for o in session.get_outputs()]
    image = session.get_inputs()[0].name
    want = dict(zip(names, session.run(None, {image: x})))

    ev = os.path.join(d, "out")
    args = [microscope, "eval", "--partial", path, "--input", os.path.join(d, "x.npy"), "--out",
            ev]
    for t in convs:
        args += ["--node", t]
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        return "%s; eval FAILED: %s" % (partial, run.stderr.strip())
    # eval prints `NAME [dims] -> FILE` per tensor, in the order asked.
    files = [line.rsplit(" -> ", 1)[1] for line in run.stdout.splitlines()]
    errors = [relative_error(np.load(f), want[t]) for t, f in zip(convs, files)]
    return "%s; %d convolutions, worst relative error %.1e against onnxruntime" % (
        partial[len("partial  "):], len(convs), max(errors))


def main():
    run_all("detector_exports.py", ARCHS, check)


if __name__ == "__main__":
    main()
