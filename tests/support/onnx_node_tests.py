"""Writes ONNX's own backend node tests to disk, in the layout of onnx's test data folder.

The onnx wheel ships the Python cases that define every node test (onnx/backend/test/case/node)
but, since 1.16, not the generated `.pb` files. This script asks onnx to build each case for the
op types we support and writes `model.onnx` plus `test_data_set_N/{input,output}_K.pb`, exactly as
onnx's own generator does for its repository.

Ops of the table that onnx has no node test of (GlobalLpPool) get cases of their own, named
`test_microscope_*`, whose expected outputs onnxruntime computes (onnx's reference evaluator has no
implementation of them either).

usage: python onnx_node_tests.py OUT_DIR OP_TYPE...
"""

import os
import sys

import numpy as np
import onnx
import onnx.backend.test.case.node as node_cases
import onnxruntime
from onnx import TensorProto, helper, numpy_helper


def write_tensor(path, value, name):
    if not isinstance(value, TensorProto):
        value = numpy_helper.from_array(value, name)
    with open(path, "wb") as f:
        f.write(value.SerializeToString())


def global_lp_pool_cases():
    """GlobalLpPool of p 1, 2 (the default) and 3 over 2-D images, and of p 2 over 1-D ones."""
    rng = np.random.default_rng(0)
    for name, shape, p in [
        ("p1", [2, 3, 4, 5], 1),
        ("default", [1, 2, 3, 3], None),
        ("p3", [1, 2, 5, 4], 3),
        ("1d", [2, 3, 7], 2),
    ]:
        attrs = {} if p is None else {"p": p}
        node = helper.make_node("GlobalLpPool", ["x"], ["y"], **attrs)
        out_shape = shape[:2] + [1] * (len(shape) - 2)
        graph = helper.make_graph(
            [node],
            f"test_microscope_globallppool_{name}",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        )
        yield graph.name, graph, [rng.standard_normal(shape).astype(np.float32)]


# Ops without node tests in onnx, and the cases written for them.
EXTRA = {"GlobalLpPool": global_lp_pool_cases}


def write_case(out, name, model, data_sets):
    """Writes one case: its model and each (inputs, outputs) data set."""
    graph = model.graph
    case_dir = os.path.join(out, name)
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    for i, (inputs, outputs) in enumerate(data_sets):
        ds = os.path.join(case_dir, f"test_data_set_{i}")
        os.makedirs(ds, exist_ok=True)
        for j, value in enumerate(inputs):
            write_tensor(os.path.join(ds, f"input_{j}.pb"), value, graph.input[j].name)
        for j, value in enumerate(outputs):
            write_tensor(os.path.join(ds, f"output_{j}.pb"), value, graph.output[j].name)


def main():
    out, ops = sys.argv[1], set(sys.argv[2:])
    written = 0
    for case in node_cases.collect_testcases(None):
        graph = case.model.graph
        # A node test is one node of the op under test (function-expanded variants are skipped).
        if len(graph.node) != 1 or graph.node[0].op_type not in ops:
            continue
        # Skip cases whose inputs or outputs are sequences, maps or optionals.
        if not all(v.type.HasField("tensor_type") for v in list(graph.input) + list(graph.output)):
            continue
        write_case(out, case.name, case.model, case.data_sets)
        written += 1
    for op in sorted(ops & EXTRA.keys()):
        for name, graph, inputs in EXTRA[op]():
            # Opset 21: onnxruntime (1.23) implements GlobalLpPool up to version 2 only, which
            # version 22 changed in its types alone.
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
            onnx.checker.check_model(model, full_check=True)
            session = onnxruntime.InferenceSession(
                model.SerializeToString(), providers=["CPUExecutionProvider"]
            )
            feed = {i.name: x for i, x in zip(graph.input, inputs)}
            write_case(out, name, model, [(inputs, session.run(None, feed))])
            written += 1
    print(f"wrote {written} node tests to {out}")


if __name__ == "__main__":
    main()
