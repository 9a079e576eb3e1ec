"""Builds randomized versions of ONNX's "light" model tests and records every node's output.

The light models (onnx/backend/test/data/light) replace each real weight with a ConstantOfShape
node filling it with 0.02, which makes most activations uninformative. For each light_*.onnx this
script swaps those nodes for seeded random initializers (BatchNormalization variances calibrated
on the input), runs onnxruntime on it with every node's first output exposed, and writes:

    OUT_DIR/<model>_random.onnx      the randomized model (same nodes, names and opset)
    OUT_DIR/<model>_input.npy        the data input, arange(n).reshape(shape) / n, float32
    OUT_DIR/<model>/<file>.npy       each node's first output; file = `sanitize(tensor name)`
    OUT_DIR/<model>/index.tsv        tensor name, file (no .npy), op_type; a line per node, in order

usage: python light_reference.py LIGHT_DIR OUT_DIR [--seed 0]
"""

import argparse
import re
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def sanitize(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def weight_kinds(graph):
    """Names of rank-1 tensors that must be positive: BatchNormalization variances (input 4) and
    scales (input 1), plus the Caffe "Scale" layers that follow BN in densenet121/inception_v2,
    exported as Mul(x, Unsqueeze(w))."""
    unsqueezed = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Unsqueeze"}
    variances, scales = set(), set()
    for n in graph.node:
        if n.op_type == "BatchNormalization":
            scales.add(n.input[1])
            variances.add(n.input[4])
        elif n.op_type == "Mul":
            scales.update(unsqueezed[i] for i in n.input if i in unsqueezed)
    return variances, scales


def random_weight(rng, name, shape, variances, scales):
    if len(shape) >= 2:
        # He init keeps activations O(1) through ReLU nets; Conv is [out, in/groups, kh, kw] and
        # Gemm weights are [out, in] (transB=1), so the fan-in is the product of dims[1:].
        return rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    if name in variances or name in scales:
        return rng.uniform(0.5, 1.5, shape)
    return rng.normal(0.0, 0.1, shape)  # biases and BN means


def randomize(model, name, seed):
    """Replaces each weight's ConstantOfShape node by a random initializer of the same name;
    returns the names of these weights."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    variances, scales = weight_kinds(graph)
    # crc32, unlike hash(), is stable across runs.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    nodes, weights = [], []
    for n in graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = [int(d) for d in numpy_helper.to_array(inits[n.input[0]])]
            value = random_weight(rng, n.output[0], shape, variances, scales)
            weights.append(numpy_helper.from_array(value.astype(np.float32), n.output[0]))
        else:
            nodes.append(n)
    # The shape tensors that only fed the replaced nodes go away.
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    unused = {t for t in inits if t.endswith("__SHAPE") and t not in used}
    kept_inits = [t for t in graph.initializer if t.name not in unused] + weights
    # IR version 3 (all light models) requires every initializer to be a graph input as well.
    kept_inputs = [i for i in graph.input if i.name not in unused] + [
        helper.make_tensor_value_info(w.name, onnx.TensorProto.FLOAT, list(w.dims)) for w in weights
    ]
    for field, items in (
        (graph.node, nodes), (graph.initializer, kept_inits), (graph.input, kept_inputs)
    ):
        del field[:]
        field.extend(items)
    return {w.name for w in weights}


def calibrate_batchnorm(model, feeds, generated):
    """Multiplies the variance of each randomized BatchNormalization by the mean square of its
    input on `feeds`, so that BN brings each layer to O(1): random weights alone let activations
    grow through residual sums (and the few real BN parameters the light models kept) to 1e5 in
    resnet50 and 1e7 in shufflenet. One factor per layer, not per channel: on the smooth input
    ramp, a channel's values are nearly constant and a weak channel is mostly rounding error,
    which normalizing each channel to O(1) would amplify until deep layers of shufflenet differ
    from a float64 evaluation by 3% of their RMS (1e-5 with one factor per layer).

    One run suffices: in a probe copy, nodes computing each of these variances feed its BN."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    nodes, scaled = [], {}
    for n in probe.graph.node:
        if n.op_type == "BatchNormalization" and n.input[4] in generated:
            x, var = n.input[0], n.input[4]
            p = f"{var}/calibration/"  # names of the probe's extra tensors
            nodes += [
                helper.make_node("Mul", [x, x], [p + "square"]),
                helper.make_node("ReduceMean", [p + "square"], [p + "mean_square"], keepdims=0),
                helper.make_node("Mul", [var, p + "mean_square"], [p + "var"]),
            ]
            n.input[4] = scaled[var] = p + "var"
        nodes.append(n)
    del probe.graph.node[:]
    probe.graph.node.extend(nodes)
    inits = {t.name: t for t in model.graph.initializer}
    for var, value in zip(scaled, run(probe, feeds, list(scaled.values()))):
        inits[var].CopyFrom(numpy_helper.from_array(value, var))


def data_input(graph):
    inits = {t.name for t in graph.initializer}
    (inp,) = [i for i in graph.input if i.name not in inits]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    n = int(np.prod(shape))
    return inp.name, (np.arange(n, dtype=np.float32).reshape(shape) / n).astype(np.float32)


def run(model, feeds, names):
    """Runs the model, unoptimized, fetching the tensors `names` (added as graph outputs)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared = {o.name for o in probe.graph.output}
    extra = [t for t in dict.fromkeys(names) if t not in declared]
    # A name alone suffices: onnxruntime infers the type and shape.
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in extra)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(names, feeds)


def process(path, out_dir, seed):
    model_name = path.stem
    model = onnx.load(path)
    generated = randomize(model, model_name, seed)
    input_name, x = data_input(model.graph)
    feeds = {input_name: x}
    calibrate_batchnorm(model, feeds, generated)
    onnx.save(model, out_dir / f"{model_name}_random.onnx")
    np.save(out_dir / f"{model_name}_input.npy", x)
    names = [n.output[0] for n in model.graph.node]
    files = [sanitize(t) for t in names]
    assert len(set(files)) == len(files), "sanitized tensor names collide"
    values = run(model, feeds, names)
    tensor_dir = out_dir / model_name
    tensor_dir.mkdir(parents=True, exist_ok=True)
    with open(tensor_dir / "index.tsv", "w") as index:
        for n, file, value in zip(model.graph.node, files, values):
            np.save(tensor_dir / f"{file}.npy", value.astype(np.float32, copy=False))
            index.write(f"{n.output[0]}\t{file}\t{n.op_type}\n")
    return len(files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("light_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    for path in sorted(args.light_dir.glob("light_*.onnx")):
        start = time.perf_counter()
        try:
            count = process(path, args.out_dir, args.seed)
        except Exception as e:  # report and go on with the next model
            print(f"{path.stem} FAILED: {e}", flush=True)
            failed = True
            continue
        print(f"{path.stem} {count} tensors {time.perf_counter() - start:.1f}s", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
