"""onnxruntime's own quantized ops (domain com.microsoft) in one small model, with its values.

ONNX's node tests cover QuantizeLinear, QLinearConv and the other quantized ops of ONNX's
domain. onnxruntime's QLinear ops, which its quantizer writes in the QOperator format beside
them, have no such tests: this writes a model that chains every one microscope runs, and what
onnxruntime computes for each of them (graph optimizations off, so each node runs as written).
tests/exporters.rs runs it with the test venv's python.

usage: python quantized_ops.py OUT_DIR

Writes OUT_DIR/model.onnx, OUT_DIR/x.npy (the float input, [1, 4, 6, 6], seeded) and, for each
graph output (one per op), OUT_DIR/<output>.npy of its 8-bit values as float32.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

MS = "com.microsoft"


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    inits = []

    def param(name, scale, zero):
        inits.append(helper.make_tensor(f"{name}_s", TensorProto.FLOAT, [], [scale]))
        inits.append(helper.make_tensor(f"{name}_z", TensorProto.UINT8, [], [zero]))
        return [f"{name}_s", f"{name}_z"]

    def op(kind, inputs, output, **attrs):
        return helper.make_node(kind, inputs, [output], name=output, domain=MS, **attrs)

    x, q = param("x", 0.01, 128), param("q", 1 / 256, 0)
    lrelu, add = param("lrelu", 0.008, 100), param("add", 0.01, 60)
    mul, cat = param("mul", 0.004, 128), param("cat", 0.01, 100)
    pool, gap, soft = param("pool", 0.01, 100), param("gap", 0.005, 100), param("soft", 1 / 256, 0)
    nodes = [
        helper.make_node("QuantizeLinear", ["x"] + x, ["quantized"], name="quantized"),
        op("QLinearSigmoid", ["quantized"] + x + q, "sigmoid"),
        op("QLinearLeakyRelu", ["quantized"] + x + lrelu, "leaky_relu", alpha=0.1),
        op("QLinearAdd", ["sigmoid"] + q + ["leaky_relu"] + lrelu + add, "added"),
        op("QLinearMul", ["sigmoid"] + q + ["leaky_relu"] + lrelu + mul, "product"),
        op("QLinearConcat", cat + ["added"] + add + ["product"] + mul, "concat", axis=1),
        op(
            "QLinearAveragePool",
            ["concat"] + cat + pool,
            "average_pool",
            kernel_shape=[2, 2],
            strides=[2, 2],
        ),
        op("QLinearGlobalAveragePool", ["average_pool"] + pool + gap, "global_average_pool"),
        op("QLinearSoftmax", ["global_average_pool"] + gap + soft, "softmax", axis=1, opset=13),
    ]
    outputs = [n.output[0] for n in nodes[1:]]
    x = np.random.default_rng(0).uniform(-1.2, 1.2, (1, 4, 6, 6)).astype(np.float32)
    write_with_values(out, "quantized_ops", nodes, inits, x, outputs, TensorProto.UINT8, 13)


def write_with_values(out, name, nodes, inits, x, outputs, output_type, opset):
    """Saves the graph of `nodes` on input "x" as OUT/model.onnx (ONNX's domain at `opset`,
    onnxruntime's at 1), `x` as OUT/x.npy, and what onnxruntime computes for each of `outputs`
    (graph optimizations off, so each node runs as written) as OUT/<output>.npy, in float32."""
    shape = ["batch"] + list(x.shape[1:])
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(o, output_type, None) for o in outputs],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)]
    )
    path = os.path.join(out, "model.onnx")
    onnx.save(model, path)
    np.save(os.path.join(out, "x.npy"), x)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for output, value in zip(outputs, session.run(outputs, {"x": x})):
        np.save(os.path.join(out, f"{output}.npy"), value.astype(np.float32))
    print(f"{path}: {len(nodes)} nodes, {len(outputs)} outputs")

if __name__ == "__main__":
    main()
