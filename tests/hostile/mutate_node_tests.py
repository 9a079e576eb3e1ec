#!/usr/bin/env python3
"""Writes a corpus of mutated ONNX node tests for `tests/hostile/run_corpus.sh`.

Usage: mutate_node_tests.py NODE_TESTS_DIR COUNT SEED OUT_DIR

Why: the hand-written corpus (make_corpus.py) covers the hostile sizes someone thought of. Each
op also reads attributes and constant inputs that a file can set to anything: a group of 2**62,
a kernel_shape of -1, a num_outputs of 2**40, more Slice starts than axes, an empty weight. A
model that does any of that must be refused with one line naming the node, never abort,
panic or trip over a check inside the tensor library.

What: the ONNX backend node tests (one op each, with valid inputs, as tests/run.sh installs them
for the ops the runtime implements) are the seeds. Each case takes one seed with a float first
input, turns its other inputs into initializers (the CLI feeds one array), and changes one or
two things: an attribute set to a hostile value, an attribute added, a value or the shape of a
constant input, or the shape of the fed array. The same NODE_TESTS_DIR, COUNT and SEED give the
same corpus. Every case expects "no_crash": the model may evaluate or be refused, cleanly.
"""

import os
import random
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_corpus import Corpus  # noqa: E402

# Sizes that are hostile through overflow or memory. A legal size that is only slow (a pooling
# window 2**20 wide over padding: 6·10^9 additions from a 200-byte file) is left out: this corpus
# is about refusing, and speed on legal models is the benchmarks' business.
INTS = [-(2**62), -(2**31), -7, -2, -1, 0, 1, 2, 3, 5, 9, 2**12, 2**31, 2**40, 2**62]
FLOATS = [0.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e30, 1e-30, 2.0**40]
LIST_ATTRS = ["axes", "pads", "strides", "dilations", "kernel_shape", "split", "perm",
              "output_padding", "output_shape"]
INT_ATTRS = ["axis", "group", "num_outputs", "keepdims", "blocksize", "size", "ceil_mode",
             "count_include_pad", "batch_dims", "hidden_size", "layout", "input_forget",
             "exclusive", "reverse", "num_groups", "k", "largest", "select_last_index",
             "align_corners", "p", "block_size", "output_dtype"]


def load_seeds(root):
    """(name, model, inputs) for every single-node test whose first input is float32."""
    seeds = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "model.onnx")
        if not os.path.exists(path):
            continue
        model = onnx.load(path)
        if len(model.graph.node) != 1:
            continue
        data = os.path.join(root, name, "test_data_set_0")
        inputs = []
        while os.path.exists(os.path.join(data, "input_%d.pb" % len(inputs))):
            t = TensorProto()
            with open(os.path.join(data, "input_%d.pb" % len(inputs)), "rb") as f:
                t.ParseFromString(f.read())
            inputs.append(numpy_helper.to_array(t))
        if inputs and inputs[0].dtype == np.float32 and len(inputs) == len(model.graph.input):
            seeds.append((name, model, inputs))
    return seeds


class Mutator:
    def __init__(self, seed):
        self.rng = random.Random(seed)

    def ints(self, values):
        rng, values = self.rng, list(values)
        r = rng.random()
        if r < 0.5 and values:
            values[rng.randrange(len(values))] = rng.choice(INTS)
        elif r < 0.65:
            values.append(rng.choice(INTS))
        elif r < 0.8 and values:
            values.pop(rng.randrange(len(values)))
        elif r < 0.9:
            values = []
        else:
            values = [rng.choice(INTS) for _ in values]
        return values

    def attribute(self, node):
        a = self.rng.choice(list(node.attribute))
        A = onnx.AttributeProto
        if a.type == A.INT:
            a.i = self.rng.choice(INTS)
        elif a.type == A.INTS:
            values = self.ints(a.ints)
            del a.ints[:]
            a.ints.extend(values)
        elif a.type == A.FLOAT:
            a.f = self.rng.choice(FLOATS)
        elif a.type == A.FLOATS and len(a.floats):
            a.floats[self.rng.randrange(len(a.floats))] = self.rng.choice(FLOATS)
        elif a.type == A.STRING:
            a.s = self.rng.choice([b"", b"bogus", b"SAME_UPPER", b"VALID", b"<b>x</b>"])
        return "attribute " + a.name

    def new_attribute(self, node):
        name = self.rng.choice(LIST_ATTRS + INT_ATTRS)
        if any(a.name == name for a in node.attribute):
            return self.attribute(node)
        if name in LIST_ATTRS:
            value = [self.rng.choice(INTS) for _ in range(self.rng.randint(1, 4))]
        else:
            value = self.rng.choice(INTS)
        node.attribute.append(helper.make_attribute(name, value))
        return "new attribute " + name

    def constant(self, inputs):
        k = self.rng.randrange(1, len(inputs))
        a = inputs[k]
        if a.dtype.kind in "iu":
            info = np.iinfo(a.dtype)
            values = [min(max(v, info.min), info.max) for v in self.ints(a.reshape(-1).tolist())]
            inputs[k] = np.array(values, a.dtype)
        elif a.dtype.kind == "f":
            r = self.rng.random()
            if r < 0.4 and a.size:
                a = a.copy()
                a.flat[self.rng.randrange(a.size)] = self.rng.choice(FLOATS)
                inputs[k] = a
            elif r < 0.7:
                shape = list(a.shape) or [1]
                i = self.rng.randrange(len(shape))
                shape[i] = self.rng.choice([0, 1, 2, shape[i] + 1])
                inputs[k] = np.ones(shape, a.dtype)
            else:
                inputs[k] = np.ones(a.shape[1:] if a.ndim else (2,), a.dtype)
        return "input %d" % k

    def fed(self, inputs):
        shape = list(inputs[0].shape)
        r = self.rng.random()
        if r < 0.4 and shape:
            i = self.rng.randrange(len(shape))
            shape[i] = self.rng.choice([1, 2, shape[i] + 1, shape[i] + 3])
        elif r < 0.7:
            shape = shape[1:]
        else:
            shape = [1] + shape
        inputs[0] = np.random.default_rng(self.rng.randrange(2**32)).standard_normal(shape)
        inputs[0] = inputs[0].astype(np.float32)
        return "fed shape %s" % shape

    def mutate(self, node, inputs):
        r = self.rng.random()
        if r < 0.45 and len(node.attribute):
            return self.attribute(node)
        if r < 0.55:
            return self.new_attribute(node)
        if r < 0.85 and len(inputs) > 1:
            return self.constant(inputs)
        return self.fed(inputs)


def as_model(seed_model, inputs):
    """The seed's node with input 0 fed and the others as initializers."""
    g = seed_model.graph
    initializers = list(g.initializer) + [
        numpy_helper.from_array(a, i.name) for i, a in zip(g.input[1:], inputs[1:])
    ]
    fed = helper.make_tensor_value_info(g.input[0].name, TensorProto.FLOAT, list(inputs[0].shape))
    outputs = [helper.make_tensor_value_info(o.name, TensorProto.FLOAT, None) for o in g.output]
    graph = helper.make_graph(list(g.node), "mutated", [fed], outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=list(seed_model.opset_import))
    model.ir_version = seed_model.ir_version
    return model


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: mutate_node_tests.py NODE_TESTS_DIR COUNT SEED OUT_DIR")
    root, count, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    seeds = load_seeds(root)
    if len(seeds) < 100:
        sys.exit("%s: %d usable node tests; run tests/run.sh to install them" % (root, len(seeds)))
    corpus = Corpus(out)
    mutator = Mutator(seed)
    for i in range(count):
        name, model, inputs = mutator.rng.choice(seeds)
        model = onnx.ModelProto.FromString(model.SerializeToString())
        inputs = [np.array(a) for a in inputs]
        what = [mutator.mutate(model.graph.node[0], inputs)]
        if mutator.rng.random() < 0.3:
            what.append(mutator.mutate(model.graph.node[0], inputs))
        case = "%05d_%s" % (i, name)
        model_file = corpus.write(case + ".onnx", as_model(model, inputs))
        np.save(os.path.join(out, case + ".npy"), inputs[0])
        corpus.case(case, model_file, "eval", "no_crash", ["--input", case + ".npy"],
                    note="; ".join(what))
    corpus.finish()
    print("wrote %d mutated node tests (of %d seeds) to %s" % (count, len(seeds), out))


if __name__ == "__main__":
    main()
