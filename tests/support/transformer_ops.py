"""onnxruntime's fused transformer ops (domain com.microsoft) in one small model, with its values.

onnxruntime's transformer optimizer (and Hugging Face Optimum's `--optimize`) rewrites a
transformer's attention, residual layer norms and GELUs into these ops, which have no ONNX node
tests. This writes a two-block transformer over tokens made of them, seeded, and what
onnxruntime computes for each node (graph optimizations off, so each node runs as written).
tests/transformers.rs runs it with the test venv's python.

It also runs the optimizer itself (its Python fusions; onnxruntime's graph optimizer would
need torch) on VIT, a ViT as PyTorch exports it (tests/reference/pytorch_export/vit.onnx),
which fuses its residual layer norms.

usage: python transformer_ops.py OUT_DIR VIT

Writes OUT_DIR/model.onnx, OUT_DIR/x.npy (the tokens, [2, 5, 8]) and, for each graph output
(every node's), OUT_DIR/<output>.npy; OUT_DIR/mha_by_head.onnx; and OUT_DIR/vit_optimized.onnx, OUT_DIR/vit_x.npy (an
image) and OUT_DIR/vit_logits.npy.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quantized_ops import MS, write_with_values  # noqa: E402

D, HIDDEN = 8, 16


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    inits = []

    def param(name, *shape, scale=0.4):
        inits.append(numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name))
        return name

    def op(kind, inputs, outputs, **attrs):
        outputs = [outputs] if isinstance(outputs, str) else outputs
        return helper.make_node(kind, inputs, outputs, name=outputs[0], domain=MS, **attrs)

    nodes = [
        # Queries, keys and values of 8 each in 2 heads, the default scale.
        op("Attention", ["x", param("qkv", D, 3 * D), param("qkv_b", 3 * D)], "attention",
           num_heads=2),
        # The residual, its bias, and the sum, which the next norm reads.
        op("SkipLayerNormalization",
           ["attention", "x", param("g1", D), param("b1", D), param("bias1", D)],
           ["norm1", "", "", "sum1"], epsilon=1e-5),
        helper.make_node("MatMul", ["norm1", param("w1", D, HIDDEN)], ["up"], name="up"),
        op("BiasGelu", ["up", param("up_b", HIDDEN)], "bias_gelu"),
        op("FastGelu", ["bias_gelu", param("fast_b", HIDDEN)], "fast_gelu"),
        op("FastGelu", ["fast_gelu"], "fast_gelu_unbiased"),
        op("QuickGelu", ["fast_gelu_unbiased"], "quick_gelu", alpha=1.5),
        op("Gelu", ["quick_gelu"], "gelu"),
        helper.make_node("MatMul", ["gelu", param("w2", HIDDEN, D)], ["down"], name="down"),
        # No beta, no bias, onnxruntime's default epsilon; the mean and deviation too.
        op("SkipLayerNormalization", ["down", "sum1", param("g2", D)],
           ["norm2", "norm2_mean", "norm2_inv_std"]),
        # Values wider than queries and keys, 4 heads, a scale of its own, no bias, a bias on
        # the scores (as relative positions are).
        op("Attention",
           ["norm2", param("qkv2", D, 8 + 8 + 12), "", "", "", param("scores_b", 1, 4, 5, 5)],
           "attention2", num_heads=4, qkv_hidden_sizes=[8, 8, 12], scale=0.3),
    ]
    nodes += multi_head_attention(op, param)
    outputs = [o for n in nodes for o in n.output if o]
    x = rng.normal(0, 1, (2, 5, D)).astype(np.float32)
    write_with_values(out, "transformer_ops", nodes, inits, x, outputs, TensorProto.FLOAT, 17)
    by_head_model(out)
    optimize_vit(sys.argv[2], out)


def multi_head_attention(op, param):
    """MultiHeadAttention, which the optimizer writes with `--use_multi_head_attention` (and for
    SAM's and diffusion models' attention): queries, keys and values projected outside it, in
    layouts onnxruntime's CPU kernel takes (not packed ones), on the tokens of `attention2`."""
    def matmul(name, width):
        return helper.make_node("MatMul", ["attention2", param(f"{name}_w", 12, width)], [name],
                                name=name)

    return [
        matmul("mha_q", 8), matmul("mha_k", 8), matmul("mha_v", 12),
        # Separate [B, S, D] inputs, values wider than queries and keys, a bias of all three.
        op("MultiHeadAttention", ["mha_q", "mha_k", "mha_v", param("mha_b", 8 + 8 + 12)], "mha",
           num_heads=2),
        # No bias; a bias on the scores and a scale of its own.
        matmul("mha_v8", 8),
        op("MultiHeadAttention", ["mha_q", "mha_k", "mha_v8", "", "", param("mha_scores_b", 1, 2, 5, 5)],
           "mha_biased", num_heads=2, scale=0.4),
    ]


def by_head_model(out):
    """MultiHeadAttention on keys and values already split by head, `[B, heads, L, head]`, which
    onnxruntime runs and microscope refuses: OUT/mha_by_head.onnx on x `[2, 5, 8]`."""
    shape = numpy_helper.from_array(np.array([0, 0, 2, 4], np.int64), "by_head_shape")
    nodes = [
        helper.make_node("Reshape", ["x", "by_head_shape"], ["split"], name="split"),
        helper.make_node("Transpose", ["split"], ["by_head"], name="by_head", perm=[0, 2, 1, 3]),
        helper.make_node("MultiHeadAttention", ["x", "by_head", "by_head"], ["mha_by_head"],
                         name="mha_by_head", domain=MS, num_heads=2),
    ]
    graph = helper.make_graph(
        nodes, "mha_by_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, D])],
        [helper.make_tensor_value_info("mha_by_head", TensorProto.FLOAT, None)], [shape])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    path = os.path.join(out, "mha_by_head.onnx")
    onnx.save(model, path)
    x = np.random.default_rng(2).normal(0, 1, (2, 5, D)).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": x})[0].shape == (2, 5, D)


def optimize_vit(vit, out):
    from onnxruntime.transformers.optimizer import optimize_model

    # num_heads and hidden_size 0: read from the graph.
    optimized = optimize_model(vit, model_type="vit", num_heads=0, hidden_size=0, opt_level=0)
    ops = {(n.domain, n.op_type) for n in optimized.model.graph.node}
    assert (MS, "SkipLayerNormalization") in ops, ops
    path = os.path.join(out, "vit_optimized.onnx")
    optimized.save_model_to_file(path)
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    np.save(os.path.join(out, "vit_x.npy"), x)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.save(os.path.join(out, "vit_logits.npy"), logits.astype(np.float32))
    print(f"{path}: ops {sorted(ops)}")


if __name__ == "__main__":
    main()
