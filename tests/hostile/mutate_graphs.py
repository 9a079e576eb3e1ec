#!/usr/bin/env python3
"""Writes a corpus of mutated multi-node models for `tests/hostile/run_corpus.sh`.

Usage: mutate_graphs.py MODEL COUNT SEED OUT_DIR

Why: mutate_node_tests.py changes what one node reads. A downloaded model can also be wrong as a
graph: a node reading a tensor that comes later or never, two nodes writing one tensor, an op
type swapped for another that reads the same inputs differently (a Conv's weight read as a
Split's sizes) or for one outside the table (which `--partial` leaves out with everything that
depends on it), an initializer whose dims, type or bytes disagree, a graph input or output that
names the wrong thing, names that are empty, huge or full of markup and escapes. Each such model
must be evaluated, described or rendered, or refused with one short line, never crash.

What: the seeds are MODEL (an .onnx file: the tests pass the zoo's fashion model) and a small
branching convolutional net built here (a Concat of two branches, BatchNormalization, LRN, a
residual Add, pooling, Gemm and Softmax). Each case changes one graph-level thing, sometimes more,
and runs `eval`, `info` or `render` (of a convolutional layer's gallery or one unit's view),
two cases in five with `--partial`.
The same MODEL, COUNT and SEED give the same corpus. Every case expects "no_crash".
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_corpus import Corpus  # noqa: E402
from mutate_node_tests import INTS, Mutator  # noqa: E402

# What a swapped op becomes: ops of one input, and ops of two or more.
UNARY = ["Relu", "Sigmoid", "Tanh", "Softmax", "Flatten", "MaxPool", "AveragePool",
         "GlobalAveragePool", "GlobalMaxPool", "LRN", "Identity", "Dropout", "Transpose", "Neg",
         "Exp", "Log", "Sqrt", "Abs", "LeakyRelu", "Elu", "Clip", "Squeeze", "Shape",
         "ReduceMean", "ReduceMax", "Softplus", "Erf", "HardSigmoid", "InstanceNormalization",
         "Mish", "Softsign", "Sin", "Floor", "Sign", "IsNaN", "ReduceL2", "ReduceLogSumExp",
         "ArgMax", "Hardmax", "LpNormalization", "Size"]
NARY = ["Add", "Mul", "Sub", "Div", "MatMul", "Conv", "Concat", "Reshape", "Gemm", "PRelu", "Max",
        "Min", "Sum", "Pow", "Expand", "Gather", "Unsqueeze", "Tile", "Pad", "Slice", "Equal",
        "Where", "ConvTranspose", "BatchNormalization", "Split", "Resize", "GatherND",
        "GatherElements", "ScatterElements", "ScatterND", "CumSum", "Col2Im", "LSTM", "Less",
        "And", "TopK", "GridSample", "AffineGrid", "GroupNormalization"]
# Ops outside the table, which `--partial` leaves out with all that depends on them.
UNSUPPORTED = ["NonZero", "NonMaxSuppression", "If", "Loop", "RoiAlign"]
# Names a file can give a node or tensor.
NAMES = ["", "x", "<script>alert(1)</script>", "a\x1b[31mred", "\u202eevil", "n" * 5000,
         "../../etc/passwd", "a\nb", '"quoted"', "&amp;", "\x00nul"]
# Layers whose gallery is cheap enough to render in a test (not a 3,136-unit Flatten).
RENDERED = ("Conv", "Relu", "MaxPool", "Concat", "BatchNormalization", "LRN", "Add",
            "AveragePool")


def branching_net(rng):
    """A small branching convolutional net with seeded random weights."""
    c, h = rng.choice([1, 3]), rng.choice([8, 16])
    weights = np.random.default_rng(rng.randrange(2**32))
    inits = []

    def init(name, *shape):
        a = (weights.standard_normal(shape) * 0.3).astype(np.float32)
        inits.append(numpy_helper.from_array(np.abs(a) + 0.5 if name == "var" else a, name))
        return name

    node = helper.make_node
    nodes = [
        node("Conv", ["x", init("w1", 8, c, 3, 3), init("b1", 8)], ["c1"], name="conv1",
             pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], ["r1"], name="relu1"),
        node("Conv", ["r1", init("w2", 4, 8, 1, 1)], ["c2"], name="branch_a"),
        node("MaxPool", ["r1"], ["p2"], name="branch_b", kernel_shape=[3, 3],
             pads=[1, 1, 1, 1]),
        node("Concat", ["c2", "p2"], ["cat"], name="concat", axis=1),
        node("BatchNormalization", ["cat", init("scale", 12), init("shift", 12),
                                    init("mean", 12), init("var", 12)], ["bn"], name="bn"),
        node("LRN", ["bn"], ["lrn"], name="lrn", size=3),
        node("Add", ["lrn", "cat"], ["res"], name="residual"),
        node("AveragePool", ["res"], ["ap"], name="avgpool", kernel_shape=[2, 2],
             strides=[2, 2]),
        node("GlobalAveragePool", ["ap"], ["gap"], name="gap"),
        node("Flatten", ["gap"], ["flat"], name="flatten"),
        node("Gemm", ["flat", init("fw", 5, 12), init("fb", 5)], ["logits"], name="fc",
             transB=1),
        node("Softmax", ["logits"], ["prob"], name="softmax"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, h, h])
    y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "branching", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


class GraphMutator(Mutator):
    def values(self, g):
        """Every tensor name the graph has."""
        names = [i.name for i in g.input] + [t.name for t in g.initializer]
        return names + [o for n in g.node for o in n.output]

    def rewire(self, g):
        n = self.rng.choice(list(g.node))
        if len(n.input):
            n.input[self.rng.randrange(len(n.input))] = self.rng.choice(
                self.values(g) + ["missing", ""])
        return "rewire " + n.name

    def cycle(self, g):
        i = self.rng.randrange(len(g.node))
        j = self.rng.randrange(i, len(g.node))
        n = g.node[i]
        if len(n.input):
            n.input[self.rng.randrange(len(n.input))] = self.rng.choice(list(g.node[j].output))
        return "node %d reads node %d's output" % (i, j)

    def shared_output(self, g):
        a, b = self.rng.sample(list(g.node), 2)
        a.output[0] = b.output[0]
        return "%s writes %s's output" % (a.name, b.name)

    def drop(self, g):
        k = self.rng.randrange(len(g.node))
        del g.node[k]
        return "node %d dropped" % k

    def swap_op(self, g):
        n = self.rng.choice(list(g.node))
        n.op_type = self.rng.choice(UNARY if len(n.input) < 2 else NARY + UNARY)
        if self.rng.random() < 0.5:
            del n.attribute[:]
        return "op " + n.op_type

    def unsupported(self, g):
        n = self.rng.choice(list(g.node))
        if self.rng.random() < 0.25:
            n.domain = self.rng.choice(["com.microsoft", "ai.onnx.ml", "x" * 300])
        else:
            n.op_type = self.rng.choice(UNSUPPORTED)
        return "op %s (domain %r), outside the table" % (n.op_type, n.domain[:20])

    def initializer(self, g):
        rng = self.rng
        t = rng.choice(list(g.initializer))
        r, dims = rng.random(), list(t.dims)
        if r < 0.3 and dims:
            dims[rng.randrange(len(dims))] = rng.choice(INTS)
        elif r < 0.45:
            dims = dims[1:]
        elif r < 0.6:
            dims = dims + [1]
        elif r < 0.7:
            t.data_type = rng.choice([TensorProto.INT64, TensorProto.DOUBLE, TensorProto.FLOAT16,
                                      TensorProto.STRING, TensorProto.BOOL, 0, 99])
        elif r < 0.8:
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data) + 1)]
        elif r < 0.9:
            twin = g.initializer.add()
            twin.CopyFrom(numpy_helper.from_array(np.zeros(1, np.float32), t.name))
        else:
            t.name = rng.choice(self.values(g))
        del t.dims[:]
        t.dims.extend(dims)
        return "initializer " + t.name

    def graph_input(self, g):
        rng, i = self.rng, g.input[0]
        dims, r = i.type.tensor_type.shape.dim, rng.random()
        if r < 0.5 and len(dims):
            d, v = dims[rng.randrange(len(dims))], rng.choice(INTS)
            if v >= 0:
                d.dim_value = v
            else:
                d.dim_param = "q"
        elif r < 0.7:
            i.type.tensor_type.elem_type = rng.choice([TensorProto.INT64, TensorProto.UINT8, 0])
        elif r < 0.85:
            i.type.tensor_type.ClearField("shape")
        else:
            i.name = rng.choice(NAMES)
        return "graph input"

    def graph_output(self, g):
        r = self.rng.random()
        if r < 0.3 or not len(g.output):
            del g.output[:]
        else:
            o = g.output.add() if r < 0.6 else g.output[0]
            o.name = self.rng.choice(self.values(g) + ["missing"])
        return "graph output"

    def rename(self, g):
        n = self.rng.choice(list(g.node))
        n.name = self.rng.choice(NAMES + [g.node[0].name])
        if self.rng.random() < 0.5:
            old, new = n.output[0], self.rng.choice(NAMES)
            for m in g.node:
                m.input[:] = [new if v == old else v for v in m.input]
            for o in g.output:
                if o.name == old:
                    o.name = new
            n.output[0] = new
        return "names of " + repr(n.name[:20])

    def attribute_of_some_node(self, g):
        with_attributes = [n for n in g.node if len(n.attribute)]
        if with_attributes and self.rng.random() < 0.8:
            return self.attribute(self.rng.choice(with_attributes))
        return self.new_attribute(self.rng.choice(list(g.node)))

    def mutate_graph(self, g):
        if len(g.node) < 2:
            return self.graph_output(g)
        what = self.rng.choices(
            [self.rewire, self.cycle, self.shared_output, self.drop, self.swap_op,
             self.initializer, self.graph_input, self.graph_output, self.rename,
             self.attribute_of_some_node, self.unsupported],
            weights=[12, 8, 7, 6, 10, 12, 8, 7, 10, 20, 8])[0]
        if what == self.initializer and not len(g.initializer):
            what = self.rewire
        return what(g)


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: mutate_graphs.py MODEL COUNT SEED OUT_DIR")
    path, count, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    given = onnx.load(path)
    corpus = Corpus(out)
    mutator = GraphMutator(seed)
    rng = mutator.rng
    for i in range(count):
        model = branching_net(rng) if rng.random() < 0.5 else onnx.ModelProto.FromString(
            given.SerializeToString())
        g = model.graph
        fed = [max(d.dim_value, 1) for d in g.input[0].type.tensor_type.shape.dim]
        layers = [n.output[0] for n in g.node if n.op_type in RENDERED]
        what = [mutator.mutate_graph(g)]
        while rng.random() < 0.3:
            what.append(mutator.mutate_graph(g))
        case = "%05d" % i
        model_file = corpus.write(case + ".onnx", model)
        x = np.random.default_rng(i).standard_normal(fed).astype(np.float32)
        np.save(os.path.join(out, case + ".npy"), x)
        note = "; ".join(what)
        # Loading the part that runs (`--partial`) reads the same file by another path.
        partial = ["--partial"] if rng.random() < 0.4 else []
        r = rng.random()
        if r < 0.5:
            corpus.case(case, model_file, "eval", "no_crash",
                        ["--input", case + ".npy"] + partial, note=note)
        elif r < 0.65:
            corpus.case(case, model_file, "info", "no_crash", partial, note=note)
        else:
            args = ["--layer", rng.choice(layers)] + partial
            if rng.random() < 0.5:
                args += ["--unit", str(rng.choice([0, 1, 3]))]
            corpus.case(case, model_file, "render", "no_crash", args, note=note)
    corpus.finish()
    print("wrote %d mutated graphs to %s" % (count, out))


if __name__ == "__main__":
    main()
