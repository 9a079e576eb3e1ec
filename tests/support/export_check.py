"""What tests/support/torchvision_exports.py and keras_exports.py share: evaluating an exported
model with `microscope eval`, comparing with the framework's output, and the run over the
architectures. Imports no framework, so that each script runs in its own environment.
"""

import os
import subprocess
import sys

import numpy as np


def relative_error(got, want):
    return np.abs(got - want).max() / max(np.abs(want).max(), 1e-6)


def onnxruntime_error(d, want):
    """onnxruntime's relative error against `want` on the same file, where onnxruntime is
    installed: how far a second runtime lands tells a network whose random weights amplify
    rounding from a wrong op."""
    try:
        import onnxruntime
    except ImportError:
        return ""
    try:
        session = onnxruntime.InferenceSession(os.path.join(d, "model.onnx"))
        name = session.get_inputs()[0].name
        got = session.run(None, {name: np.load(os.path.join(d, "x.npy"))})[0]
        return " (onnxruntime %.1e)" % relative_error(got, want)
    except Exception as e:
        return " (onnxruntime failed: %s)" % str(e).splitlines()[0][:100]


def compare(microscope, d, want):
    """Runs `microscope eval` on d/model.onnx with d/x.npy; one line: the relative error against
    `want` (and onnxruntime's) and the first and last layer names, or why it failed."""
    out = os.path.join(d, "out")
    run = subprocess.run(
        [microscope, "eval", os.path.join(d, "model.onnx"), "--input", os.path.join(d, "x.npy"),
         "--out", out],
        capture_output=True, text=True,
    )
    if run.returncode != 0:
        return "FAILED: " + run.stderr.strip()
    got = np.load(os.path.join(out, sorted(os.listdir(out))[0]))
    error = relative_error(got, want)
    info = subprocess.run([microscope, "info", os.path.join(d, "model.onnx")],
                          capture_output=True, text=True).stdout.splitlines()
    table = next(i for i, line in enumerate(info) if line.startswith("node ")) + 1
    layers = [line.split()[0] for line in info[table:-1]]
    return "relative error %.1e%s; layers %s ... %s" % (
        error, onnxruntime_error(d, want), layers[:3], layers[-3:])


def torch_export(model, side, path, input_name, classic=False, classic_opset=17):
    """Exports a PyTorch model as a user would: the default exporter (dynamic batch, opset 18)
    and, where that fails or `classic` asks, the classic one (`dynamo=False`, opset
    `classic_opset`: 17, the default before PyTorch 2.9, unless the model needs a newer op).
    Which one it took."""
    import torch

    x = (torch.rand(1, 3, side[0], side[1]),)
    names = dict(input_names=[input_name], output_names=["logits"])
    if not classic:
        try:
            torch.onnx.export(model, x, path, dynamic_shapes=({0: "batch"},), opset_version=18,
                              **names)
            return "dynamo"
        except Exception:
            pass
    torch.onnx.export(model, x, path, dynamo=False, opset_version=classic_opset,
                      dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}}, **names)
    return "classic"


def randomize_zeros(model):
    """Gives parameters that start at zero (ViT's heads, layer scales) small random values:
    outputs of zeros would agree with anything."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)


def export_and_compare(microscope, d, model, side, input_name, classic, classic_opset=17):
    """The scripts' check of one PyTorch model: `torch_export` into d/model.onnx, a seeded batch
    of 2 at `side`×`side` through PyTorch and through `microscope eval`; one line: which exporter,
    then `compare`'s."""
    import torch

    os.makedirs(d, exist_ok=True)
    how = torch_export(model, (side, side), os.path.join(d, "model.onnx"), input_name, classic,
                       classic_opset)
    x = np.random.default_rng(0).random((2, 3, side, side)).astype("float32")
    np.save(os.path.join(d, "x.npy"), x)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    if not torch.is_tensor(out):
        out = out.logits if hasattr(out, "logits") else out[0]
    return "%s, %s" % (how, compare(microscope, d, out.numpy()))


def run_all(script, archs, check, flags=()):
    """The scripts' main: `script [FLAGS] MICROSCOPE_BIN OUT_DIR [ARCH...]`, one line per
    architecture from `check(microscope, out, name)`."""
    args = [a for a in sys.argv[1:] if a not in flags]
    if len(args) < 2:
        shown = "".join(" [%s]" % f for f in flags)
        sys.exit("usage: %s%s MICROSCOPE_BIN OUT_DIR [ARCH...]" % (script, shown))
    microscope, out = os.path.abspath(args[0]), args[1]
    for name in args[2:] or archs:
        try:
            result = check(microscope, out, name)
        except Exception as e:  # an export that fails is a result too
            result = "EXPORT FAILED: %s: %s" % (type(e).__name__, str(e)[:300])
        print("%s: %s" % (name, result), flush=True)
