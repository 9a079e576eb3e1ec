"""Exports small PyTorch networks that users write themselves (a spatial transformer,
deformable sampling and convolution, GroupNorm, cosine heads, SegNet's unpooling, GFNet's global
filter and LaMa's Fourier unit, power-average pooling, causal attention over patches) and checks
each in `microscope`.

Not run in CI (it needs torch). The ops these reach (GridSample in every mode and padding,
`affine_grid` as each exporter writes it, GroupNorm, `F.normalize`, `topk`, DeformConv,
MaxPool's indices, DFT, Trilu) are checked in CI against the ONNX node tests and onnxruntime
(tests/onnx_node_conformance.rs, tests/transformers.rs), and two networks' exports are in
tests/reference/pytorch_export (tests/exporters.rs); this checks what PyTorch's exporters make
of them. For each network:
seeded random weights, exported with the default exporter (dynamic batch, opset 18) or, with
--classic, the classic one (opset 17); a batch of 2 through `microscope eval`, compared with
PyTorch's output. One line per network: the relative error (and onnxruntime's), or why it failed.

Setup: the virtual environment of tests/support/torchvision_exports.py.

usage: python module_exports.py [--classic] MICROSCOPE_BIN OUT_DIR [NAME...]

Measured on 2026-12-08 (torch 2.15, torchvision 0.29): all 12 load and agree with PyTorch at a
batch of 2 with the default exporter (relative error at most 2.7e-7). It writes `rfft2` and
`irfft2` as DFT nodes (one-sided along the width, full along the height), `nn.LPPool2d` as
AveragePool and Pow, and folds the causal mask into a constant. deformable_conv's file says
opset 18 although its DeformConv came with 19: onnxruntime refuses it, microscope runs it; and
onnxruntime fails on causal_tokens at a batch of 2, as the exporter wrote the batch of 1 into a
Reshape (microscope runs such a file one image at a time). With --classic, 8 others agree (at
most 2.5e-7; the spatial transformers at opset 20, which the classic exporter asks for to write
affine_grid; causal_tokens with its mask as a Trilu of the token count); the classic exporter
itself fails on four (no symbolic for torchvision's deform_conv2d or for the FFTs; max_unpool2d's
size check).
Before GridSample left the point unclamped for bicubic taps with border padding, as PyTorch and
onnxruntime do (the ONNX reference clamps it), the bicubic networks were off by up to 2.9e-4.
"""

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import export_and_compare, run_all  # noqa: E402

SIDE = 64


def classifier(channels):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


class SpatialTransformer(nn.Module):
    """PyTorch's spatial transformer tutorial, for colour images: a localization network
    regresses θ (started near the identity), `affine_grid` and `grid_sample` warp the input."""

    def __init__(self, mode="bilinear", padding="zeros", align=False):
        super().__init__()
        self.mode, self.padding, self.align = mode, padding, align
        self.localization = nn.Sequential(
            nn.Conv2d(3, 8, 7), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(8, 10, 5), nn.MaxPool2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(3),
        )
        self.fc_loc = nn.Sequential(nn.Linear(90, 32), nn.ReLU(), nn.Linear(32, 6))
        with torch.no_grad():
            self.fc_loc[2].weight.mul_(0.1)
            self.fc_loc[2].bias.copy_(torch.tensor([0.9, 0.1, 0.05, -0.1, 0.9, 0.0]))
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.head = classifier(16)

    def forward(self, x):
        theta = self.fc_loc(self.localization(x).flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=self.align)
        x = F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding,
                          align_corners=self.align)
        return self.head(self.features(x))


class Deformable(nn.Module):
    """Sampling at learned offsets from a regular grid (deformable attention's shape): a
    convolution predicts a bounded offset per output point, bicubic with border padding."""

    def __init__(self):
        super().__init__()
        self.offsets = nn.Conv2d(3, 2, 3, padding=1, stride=2)
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.head = classifier(16)

    def forward(self, x):
        n = x.shape[0]
        side = SIDE // 2
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side),
                                indexing="ij")
        base = torch.stack([xs, ys], -1).expand(n, side, side, 2)
        grid = base + 0.2 * torch.tanh(self.offsets(x)).permute(0, 2, 3, 1)
        x = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=True)
        return self.head(self.features(x))


class GroupNormNet(nn.Module):
    """A ResNet-GN style block: convolutions with GroupNorm (BiT's and detectors' norm)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GroupNorm(8, 32),
                                  nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32),
                                   nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                                   nn.GroupNorm(8, 32))
        self.head = classifier(32)

    def forward(self, x):
        x = self.stem(x)
        return self.head(F.relu(x + self.block(x)))


class CosineTopK(nn.Module):
    """A cosine classifier (L2-normalized features and class weights, as metric-learning and
    few-shot heads are) whose output is its five greatest scores."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classes = nn.Parameter(torch.randn(10, 16))

    def forward(self, x):
        f = F.normalize(self.features(x), dim=1)
        scores = 16.0 * f @ F.normalize(self.classes, dim=1).t()
        return torch.topk(scores, 5, dim=1).values


class DeformableConv(nn.Module):
    """DCNv2, as detection and segmentation backbones use it: torchvision's DeformConv2d, its
    offsets (a row and a column per tap, in two offset groups) and a sigmoid mask predicted by
    convolutions of its input."""

    def __init__(self):
        super().__init__()
        from torchvision.ops import DeformConv2d

        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())
        self.offsets = nn.Conv2d(16, 2 * 9 * 2, 3, padding=1)
        self.mask = nn.Conv2d(16, 2 * 9, 3, padding=1)
        with torch.no_grad():
            # Offsets of a few pixels, as trained ones are.
            self.offsets.weight.mul_(5.0)
        self.deform = DeformConv2d(16, 24, 3, padding=1, groups=2)
        self.head = classifier(24)

    def forward(self, x):
        x = self.stem(x)
        x = self.deform(x, self.offsets(x), torch.sigmoid(self.mask(x)))
        return self.head(F.relu(x))


class SegNetStep(nn.Module):
    """SegNet's encoder and decoder: max pooling that keeps where each maximum was, unpooling
    that puts values back there."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.middle = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.unpool = nn.MaxUnpool2d(2)
        self.decoder = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = classifier(16)

    def forward(self, x):
        x = self.encoder(x)
        p, where = self.pool(x)
        x = self.unpool(self.middle(p), where, output_size=x.shape)
        return self.head(self.decoder(x))


class GlobalFilter(nn.Module):
    """GFNet's global filter layer: the feature map's 2-D spectrum (`rfft2`) times a learned
    complex filter per channel and frequency, and back (`irfft2`)."""

    def __init__(self, side=SIDE):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.GELU())
        side //= 4
        self.filter = nn.Parameter(torch.randn(16, side, side // 2 + 1, 2) * 0.5)
        self.head = classifier(16)

    def forward(self, x):
        x = self.stem(x)
        spectrum = torch.fft.rfft2(x, dim=(2, 3), norm="ortho")
        spectrum = spectrum * torch.view_as_complex(self.filter)
        x = x + torch.fft.irfft2(spectrum, s=x.shape[2:], dim=(2, 3), norm="ortho")
        return self.head(x)


class FourierUnit(nn.Module):
    """LaMa's fast Fourier convolution's spectral branch: the spectrum's real and imaginary
    parts as channels, a 1×1 convolution with BatchNorm and ReLU over them, and back."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16),
                                 nn.ReLU())
        self.head = classifier(8)

    def forward(self, x):
        x = self.stem(x)
        n, c, h, w = x.shape
        f = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        f = torch.stack((f.real, f.imag), dim=2).reshape(n, 2 * c, h, w // 2 + 1)
        f = self.mix(f).reshape(n, c, 2, h, w // 2 + 1)
        f = torch.complex(f[:, :, 0], f[:, :, 1])
        return self.head(x + torch.fft.irfftn(f, s=(h, w), dim=(-2, -1), norm="ortho"))


class LpPoolNet(nn.Module):
    """Power-average pooling (`nn.LPPool2d`, p = 2): each window's L2 norm."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                      nn.LPPool2d(2, 3, stride=2))
        self.head = classifier(16)

    def forward(self, x):
        return self.head(self.features(x))


class CausalTokens(nn.Module):
    """Patch tokens attending only to earlier ones (a causal mask of `torch.triu`), as
    autoregressive image models do."""

    def __init__(self):
        super().__init__()
        self.patches = nn.Conv2d(3, 32, 8, stride=8)
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        t = self.patches(x).flatten(2).transpose(1, 2)
        count = t.shape[1]
        mask = torch.triu(torch.full((count, count), float("-inf")), diagonal=1)
        t = t + self.attention(t, t, t, attn_mask=mask, need_weights=False)[0]
        return self.head(t.mean(1))


NETS = {
    "stn": lambda: SpatialTransformer(),
    "stn_nearest_reflection": lambda: SpatialTransformer("nearest", "reflection"),
    "stn_bicubic_border_aligned": lambda: SpatialTransformer("bicubic", "border", True),
    "deformable": Deformable,
    "groupnorm": GroupNormNet,
    "cosine_topk": CosineTopK,
    "deformable_conv": DeformableConv,
    "segnet_step": SegNetStep,
    "global_filter": GlobalFilter,
    "fourier_unit": FourierUnit,
    "lp_pool": LpPoolNet,
    "causal_tokens": CausalTokens,
}

CLASSIC = "--classic" in sys.argv


def check(microscope, out, name):
    torch.manual_seed(0)
    model = NETS[name]().eval()
    # The classic exporter writes affine_grid as AffineGrid, which came with opset 20 (it says
    # so and stops at 17): a user takes its advice.
    # DeformConv came with opset 19.
    opset = {SpatialTransformer: 20, DeformableConv: 19}.get(type(model), 17)
    return export_and_compare(microscope, os.path.join(out, name), model, SIDE, "image", CLASSIC,
                              opset)


def main():
    run_all("module_exports.py", list(NETS), check, flags=("--classic",))


if __name__ == "__main__":
    main()
