"""Builds randomized versions of ONNX's "light" model tests and records every node's output.

The light models (onnx/backend/test/data/light) replace each real weight with a ConstantOfShape
node filling it with 0.02, which makes most activations uninformative. For each light_*.onnx this
script swaps those nodes for seeded random initializers, runs onnxruntime on it with every node's
first output exposed, and writes:

    OUT_DIR/<model>_random.onnx      the randomized model (same nodes, names and opset)
    OUT_DIR/<model>_input.npy        the data input, arange(n).reshape(shape) / n, float32
    OUT_DIR/<model>/<tensor>.npy     each node's first output (name sanitized, see `sanitize`)
    OUT_DIR/<model>/index.tsv        tensor_name, file name, op_type; one line per node, graph order

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
    """Replaces each weight's ConstantOfShape node by a random initializer of the same name."""
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


def data_input(graph):
    inits = {t.name for t in graph.initializer}
    (inp,) = [i for i in graph.input if i.name not in inits]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    n = int(np.prod(shape))
    return inp.name, (np.arange(n, dtype=np.float32).reshape(shape) / n).astype(np.float32)


def run_all_outputs(model, feeds):
    """Runs the model with the first output of every node added to the graph outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared = {o.name for o in probe.graph.output}
    names = [n.output[0] for n in probe.graph.node]
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names if t not in declared)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(
        probe.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return dict(zip(names, sess.run(names, feeds)))


def process(path, out_dir, seed):
    model_name = path.stem
    model = onnx.load(path)
    randomize(model, model_name, seed)
    onnx.save(model, out_dir / f"{model_name}_random.onnx")
    input_name, x = data_input(model.graph)
    np.save(out_dir / f"{model_name}_input.npy", x)
    values = run_all_outputs(model, {input_name: x})
    tensor_dir = out_dir / model_name
    tensor_dir.mkdir(parents=True, exist_ok=True)
    files = [sanitize(n.output[0]) for n in model.graph.node]
    assert len(set(files)) == len(files), "sanitized tensor names collide"
    with open(tensor_dir / "index.tsv", "w") as index:
        for n, file in zip(model.graph.node, files):
            np.save(tensor_dir / f"{file}.npy", values[n.output[0]].astype(np.float32, copy=False))
            index.write(f"{n.output[0]}\t{file}.npy\t{n.op_type}\n")
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
