"""A small ResNet-style network exported by PyTorch's own ONNX exporter, as a user exports theirs.

Not run in CI (it needs torch). Its output is checked in under tests/reference/pytorch_export/ and
tests/exporters.rs reads it: since PyTorch 2.9, `torch.onnx.export` uses the `dynamo=True`
exporter by default, which names nodes after counters (`node_Conv_292`), notes each node's
module path in its metadata, and saves the weights in a second file beside the model (ONNX
external data). Run this again only to follow a newer exporter.

Setup (a scratch virtual environment, CPU is enough):

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch onnxscript "onnx==1.23.2" numpy

usage: python pytorch_export.py OUT_DIR

Two networks, seeded weights, exported by the notebook's recipe
(notebooks/04-your-own-model.ipynb) with the exporter's defaults: named input and output, a
dynamic batch axis.
- tiny: torchvision ResNet's module layout (conv1, bn1, relu, maxpool, layer1 of two basic
  blocks with a residual add, avgpool, fc), 8 channels, seeded batch-norm statistics.
- vit: a vision transformer in torchvision ViT's layout (conv_proj into 16 patches of 16
  channels, a class token, one nn.TransformerEncoderLayer of 2 heads, heads). Its export fixes
  the batch at 1 although the batch axis was asked to be dynamic: nn.MultiheadAttention views
  its input as [tokens, batch * heads, width], and the file keeps batch * heads as 2.
  onnxruntime refuses a batch of 2.

- vit again at opset 23 (vit_opset23.onnx), where the exporter writes ONNX's Attention op.
- modern_vit: a block as recent ViTs build it (RMSNorm, grouped-query attention by
  `F.scaled_dot_product_attention`), at opset 23: ONNX's RMSNormalization and Attention.
- segnet and dcn, module_exports.py's SegNetStep and DeformableConv: MaxPool's indices, which
  the exporter makes per-plane with a second MaxPool and a Sub, and MaxUnpool as a ScatterND of
  them; torchvision's deform_conv2d as ONNX's DeformConv, in a model that says opset 18 although
  DeformConv came with 19 (onnxruntime refuses it).
- gfnet, module_exports.py's GlobalFilter at 32 px: `rfft2` and `irfft2` as four DFT nodes.

Writes to OUT_DIR: tiny.onnx and tiny.onnx.data, vit.onnx and vit.onnx.data, vit_opset23.onnx
and modern_vit.onnx with their .data files (the exporter's files, as written), tiny_classic.onnx (tiny by the classic exporter, `dynamo=False`, which
writes each node's module path into its name: `/layer1/layer1.0/conv1/Conv`), x.npy [2, 3, 32, 32] float32 in [0, 1] (seeded), logits.npy and
vit_logits.npy and modern_vit_logits.npy [2, 10] (PyTorch's outputs on x), and versions.txt (torch and onnxscript
versions).
"""

import os
import sys

import numpy as np
import onnxscript
import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Tiny(nn.Module):
    def __init__(self, c=8, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(c), BasicBlock(c))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TinyViT(nn.Module):
    def __init__(self, width=16, heads=2, classes=10):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, width, 8, stride=8)
        self.class_token = nn.Parameter(torch.randn(1, 1, width) * 0.1)
        self.pos_embedding = nn.Parameter(torch.randn(1, 17, width) * 0.1)
        self.encoder = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, batch_first=True
        )
        self.heads = nn.Linear(width, classes)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        token = self.class_token.expand(x.shape[0], -1, -1)
        x = self.encoder(torch.cat([token, x], 1) + self.pos_embedding)
        return self.heads(x[:, 0])


class ModernViT(nn.Module):
    """A ViT block as recent ones are built: RMSNorm in front of the attention and the MLP, and
    grouped-query attention (4 query heads share 2 key/value heads) by
    `F.scaled_dot_product_attention`."""

    def __init__(self, width=16, heads=4, kv_heads=2, classes=10):
        super().__init__()
        self.shape = (heads, kv_heads, width // heads)
        self.conv_proj = nn.Conv2d(3, width, 8, stride=8)
        self.class_token = nn.Parameter(torch.randn(1, 1, width) * 0.1)
        self.pos_embedding = nn.Parameter(torch.randn(1, 17, width) * 0.1)
        self.norm1 = nn.RMSNorm(width, eps=1e-6)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, kv_heads * width // heads)
        self.value = nn.Linear(width, kv_heads * width // heads)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.RMSNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.heads = nn.Linear(width, classes)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embedding
        heads, kv_heads, d = self.shape
        b, t, _ = x.shape
        h = self.norm1(x)
        q = self.query(h).view(b, t, heads, d).transpose(1, 2)
        k = self.key(h).view(b, t, kv_heads, d).transpose(1, 2)
        v = self.value(h).view(b, t, kv_heads, d).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, -1))
        x = x + self.mlp(self.norm2(x))
        return self.heads(x[:, 0])


def export(model, x, path, opset=18):
    torch.onnx.export(
        model,
        (x[:1],),
        path,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: "batch"},),
        opset_version=opset,
    )


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: pytorch_export.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    export(model, x, os.path.join(out, "tiny.onnx"))
    # The classic exporter, as notebook 04 gives it for PyTorch before 2.9.
    torch.onnx.export(
        model,
        (x[:1],),
        os.path.join(out, "tiny_classic.onnx"),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
    )
    with torch.no_grad():
        logits = model(x)
    torch.manual_seed(2)
    vit = TinyViT().eval()
    export(vit, x, os.path.join(out, "vit.onnx"))
    # From opset 23 the exporter writes ONNX's Attention for the attention itself.
    export(vit, x, os.path.join(out, "vit_opset23.onnx"), opset=23)
    with torch.no_grad():
        np.save(os.path.join(out, "vit_logits.npy"), vit(x).numpy())
    torch.manual_seed(3)
    modern = ModernViT().eval()
    export(modern, x, os.path.join(out, "modern_vit.onnx"), opset=23)
    with torch.no_grad():
        np.save(os.path.join(out, "modern_vit_logits.npy"), modern(x).numpy())
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from module_exports import DeformableConv, GlobalFilter, SegNetStep

    nets = [("segnet", SegNetStep), ("dcn", DeformableConv), ("gfnet", lambda: GlobalFilter(32))]
    for seed, (name, net) in enumerate(nets, 4):
        torch.manual_seed(seed)
        model = net().eval()
        export(model, x, os.path.join(out, name + ".onnx"))
        with torch.no_grad():
            np.save(os.path.join(out, name + "_logits.npy"), model(x).numpy())
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "logits.npy"), logits.numpy())
    with open(os.path.join(out, "versions.txt"), "w") as f:
        f.write("torch %s\nonnxscript %s\n" % (torch.__version__, onnxscript.__version__))
    print("wrote", sorted(os.listdir(out)))


if __name__ == "__main__":
    main()
