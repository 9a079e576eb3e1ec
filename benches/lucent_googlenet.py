"""The feature-visualization loop as Lucent runs it, in PyTorch, for a like-for-like timing.

Builds GoogLeNet from the same ONNX file (onnx2torch), keeps PyTorch's default of computing weight
gradients (Lucent does not turn them off), and optimizes 8 units at 128 px with Lucent's recipe:
FFT parameterization with decorrelated colour, Adam lr 0.05, transforms pad 12, jitter 8, scale
0.90-1.10, rotate ±10°, jitter 4. Prints `torch_fv_step_ms MODE MS`, and with `BATCHES="8 32 128"`
in the environment one `torch_fv_batch MODE BATCH MS` line per batch size (unit i of the batch
is channel i of the target, modulo its channels).

MODE says how much of the network runs:
- `lucent`: what Lucent does. Its `render_vis` runs the whole model forward and reads the target
  layer from a hook. The model's fixed 7×7 average pool cannot run at 128 px, so the graph is cut
  just before it: everything up to inception_5b's output runs, and the loss reads the target.
- `truncated`: only the subgraph from the input to the target tensor (what microscope runs); a
  stronger baseline than Lucent itself.

usage: python lucent_googlenet.py MODEL.onnx TARGET_TENSOR [STEPS] [DEVICE] [MODE]
       (DEVICE: cpu or cuda; MODE: lucent (default), truncated or both)
"""

import math
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnx.utils
import torch
import torch.nn.functional as F
from onnx2torch import convert

COLOR_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)


def extracted(path, outputs):
    """The ONNX graph from the image input to `outputs`, as a torch module returning them all."""
    model = onnx.load(path)
    inits = {i.name for i in model.graph.initializer}
    (data,) = [i.name for i in model.graph.input if i.name not in inits]
    out = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False).name
    onnx.utils.extract_model(path, out, [data], outputs, check_model=False)
    return convert(out)


def last_computable(path):
    """The input of the final global average pool: the deepest tensor a 128 px image reaches."""
    graph = onnx.load(path).graph
    (pool,) = [n for n in graph.node if n.op_type == "AveragePool"][-1:]
    return pool.input[0]


def fft_image(batch, size, device):
    freqs = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2)
    scale = torch.tensor(1.0 / np.maximum(freqs, 1.0 / size), dtype=torch.float32, device=device)[None, None]
    spectrum = (torch.randn(batch, 3, size, size // 2 + 1, 2, device=device) * 0.01).requires_grad_(True)
    m = torch.tensor(COLOR_SVD_SQRT / np.max(np.linalg.norm(COLOR_SVD_SQRT, axis=0)), device=device)

    def image():
        s = torch.view_as_complex(spectrum) * scale
        x = torch.fft.irfftn(s, s=(size, size), norm="ortho") / 4.0
        x = torch.einsum("nchw,dc->ndhw", x, m)
        return torch.sigmoid(x)

    return [spectrum], image


def jitter(x, d):
    dx, dy = np.random.randint(0, d + 1, 2)
    return x[:, :, dy : dy + x.shape[2] - d, dx : dx + x.shape[3] - d]


def affine(x, scale, angle):
    theta = torch.tensor(
        [[math.cos(angle) / scale, -math.sin(angle) / scale, 0], [math.sin(angle) / scale, math.cos(angle) / scale, 0]],
        dtype=torch.float32,
        device=x.device,
    )[None].repeat(x.shape[0], 1, 1)
    size = [x.shape[0], x.shape[1], round(x.shape[2] * scale), round(x.shape[3] * scale)]
    grid = F.affine_grid(theta, size, align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def transform(x):
    x = F.pad(x, (12, 12, 12, 12), value=0.5)
    x = jitter(x, 8)
    x = affine(x, 1 + (np.random.randint(11) - 5) / 50, 0.0)
    x = affine(x, 1.0, math.radians(np.random.randint(-10, 11)))
    return jitter(x, 4)


def time_steps(net, device, steps, target_index, batch=8, channels=None):
    torch.manual_seed(0)
    np.random.seed(0)
    params, image = fft_image(batch, 128, device)
    opt = torch.optim.Adam(params, lr=0.05)
    units = torch.arange(batch, device=device) % (channels or batch)

    def step():
        opt.zero_grad()
        out = net(transform(image()))
        act = out[target_index] if isinstance(out, (tuple, list)) else out
        loss = -act[torch.arange(batch, device=device), units].mean(dim=(1, 2)).sum()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) * 1e3 / steps


def main():
    path, target = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    device = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
    mode = sys.argv[5] if len(sys.argv) > 5 else "lucent"
    modes = ["lucent", "truncated"] if mode == "both" else [mode]
    for m in modes:
        if m == "lucent":
            net = extracted(path, [target, last_computable(path)]).eval().to(device)
        elif m == "truncated":
            net = extracted(path, [target]).eval().to(device)
        else:
            sys.exit(f"unknown mode {m!r}: lucent, truncated or both")
        print(f"torch_fv_step_ms {m} {time_steps(net, device, steps, 0):.1f}", flush=True)
        batches = [int(b) for b in os.environ.get("BATCHES", "").split()]
        if batches:
            with torch.no_grad():
                probe = net(torch.zeros(1, 3, 128, 128, device=device))
            channels = (probe[0] if isinstance(probe, (tuple, list)) else probe).shape[1]
        for b in batches:
            ms = time_steps(net, device, steps, 0, b, channels)
            print(f"torch_fv_batch {m} {b} {ms:.1f}", flush=True)


if __name__ == "__main__":
    main()
