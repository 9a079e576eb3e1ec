"""Writes ONNX's own backend node tests to disk, in the layout of onnx's test data folder.

The onnx wheel ships the Python cases that define every node test (onnx/backend/test/case/node)
but, since 1.16, not the generated `.pb` files. This script asks onnx to build each case for the
op types we support and writes `model.onnx` plus `test_data_set_N/{input,output}_K.pb`, exactly as
onnx's own generator does for its repository.

usage: python onnx_node_tests.py OUT_DIR OP_TYPE...
"""

import os
import sys

import onnx.backend.test.case.node as node_cases
from onnx import TensorProto, numpy_helper


def write_tensor(path, value, name):
    if not isinstance(value, TensorProto):
        value = numpy_helper.from_array(value, name)
    with open(path, "wb") as f:
        f.write(value.SerializeToString())


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
        case_dir = os.path.join(out, case.name)
        os.makedirs(case_dir, exist_ok=True)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(ds, exist_ok=True)
            for j, value in enumerate(inputs):
                write_tensor(os.path.join(ds, f"input_{j}.pb"), value, graph.input[j].name)
            for j, value in enumerate(outputs):
                write_tensor(os.path.join(ds, f"output_{j}.pb"), value, graph.output[j].name)
        written += 1
    print(f"wrote {written} node tests to {out}")


if __name__ == "__main__":
    main()
