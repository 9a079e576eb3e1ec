"""Runs one ONNX model on onnxruntime and records every node's first output.

Tests that build a model in Rust (tests/transformers.rs) write it and its input, call this, and
compare each node with onnxruntime's value. Writes, as light_reference.py does for each model:

    OUT_DIR/<file>.npy     each node's first output; file = `sanitize(tensor name)`
    OUT_DIR/index.tsv      tensor name, file (no .npy), op_type, and the element kind
                           onnxruntime gave (numpy's: f float, i integer, b bool); a line per
                           node, in order

usage: python ort_nodes.py MODEL INPUT.npy OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import onnx

from light_reference import run, sanitize


def check(model):
    """Fails unless the model is valid ONNX whose shapes onnx infers strictly. The builder
    leaves the graph outputs' types to readers: they are taken from the inference first."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for out in model.graph.output:
        if not out.HasField("type") and out.name in known:
            out.type.CopyFrom(known[out.name].type)
    onnx.checker.check_model(model, full_check=True)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    model_path, input_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    model = onnx.load(model_path)
    check(model)
    inits = {t.name for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    names = [n.output[0] for n in model.graph.node]
    files = [sanitize(t) for t in names]
    assert len(set(files)) == len(files), "sanitized tensor names collide"
    values = run(model, {inp.name: np.load(input_path)}, names)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "index.tsv", "w") as index:
        for n, file, value in zip(model.graph.node, files, values):
            value = np.asarray(value)
            np.save(out_dir / f"{file}.npy", value.astype(np.float32))
            index.write(f"{n.output[0]}\t{file}\t{n.op_type}\t{value.dtype.kind}\n")
    print(f"{model_path.name}: {len(files)} nodes", flush=True)


if __name__ == "__main__":
    main()
