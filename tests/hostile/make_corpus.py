#!/usr/bin/env python3
"""Writes a corpus of hostile ONNX models and .npy inputs for the `microscope` CLI.

Usage: make_corpus.py OUT_DIR

Why: `microscope` opens model files and arrays that come from anywhere (a download, a zoo, a
colleague). A hostile or broken file must never abort the process (exit 134), panic with a
backtrace, hang, or exhaust memory; it must be refused with exit code 2 and ONE clear line on
stderr naming the problem (file, node, op, size). Legal but adversarial files (huge declared
input sizes, tens of thousands of nodes, markup in names) must still load, quickly.

What: every model here is tiny on disk. The hostile sizes live in shapes, attributes and
constant values (2**40 pads, 1000x resize scales, dims whose product overflows 64 bits), or in
headers that lie about how much data follows. Nothing in the corpus needs gigabytes to store;
a tool that believes it will try to allocate gigabytes to terabytes.

Output: OUT_DIR/cases.json, a list of cases, each
    {"name", "model", "command": "info"|"eval"|"render", "args": [...], "expect", "note"}
with `model` and every path in `args` relative to OUT_DIR. `expect` is one of
    "error"            exit 2, exactly one non-empty stderr line, no panic text;
    "load_fast"        exit 0 within 2 s of CPU time;
    "distinct_outputs" exit 2 with one line, or exit 0 with two different .npy files;
    "no_crash"         exit 0, or exit 2 with one line (the tool may describe a hostile size
                       without allocating it, or refuse it; it may not abort, hang or OOM).
tests/hostile/run_corpus.sh runs the cases against a built binary.

Needs the `onnx` and `numpy` packages (written against onnx 1.23). The script builds the
hostile protos field by field: onnx.helper.make_tensor refuses a tensor whose data disagrees
with its dims, which is exactly what some cases need.
"""

import json
import os
import random
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 13
IR_VERSION = 8  # the IR version that goes with opset 13..15; any positive value loads
BIG = 2**40


# ---------------------------------------------------------------------------- building blocks


def x_input(shape=(1, 3, 8, 8), name="x"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def output(name, rank=4):
    # Symbolic dims (the ONNX checker wants a shape): the tool must work the sizes out itself.
    dims = ["%s_d%d" % (name, i) for i in range(rank)]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def raw_tensor(name, data_type, dims, raw=b""):
    """A TensorProto built field by field: dims need not agree with the bytes present."""
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(int(d) for d in dims)
    if raw:
        t.raw_data = raw
    return t


def int64s(name, values):
    return raw_tensor(name, TensorProto.INT64, [len(values)], np.asarray(values, "<i8").tobytes())


def floats(name, array):
    a = np.asarray(array, "<f4")
    return raw_tensor(name, TensorProto.FLOAT, a.shape, a.tobytes())


def model(nodes, inputs, outputs, initializers=(), opset=OPSET, name="hostile"):
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(initializers))
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="microscope-hostile-corpus",
    )
    m.ir_version = IR_VERSION
    return m


def npy_bytes(shape_text, body, descr="<f4", version=(1, 0), header_len=None):
    """An .npy file written by hand, so the header can say whatever the case needs.

    The header dict is padded with spaces and ends with '\\n' so that magic + version + length
    field + header is a multiple of 64 bytes (the npy spec). `header_len`, when given, replaces
    the honest length field (a lie about how long the header is).
    """
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_text)
    field = 2 if version[0] == 1 else 4
    prefix = 6 + 2 + field
    total = prefix + len(header) + 1
    header += " " * ((64 - total % 64) % 64) + "\n"
    length = len(header) if header_len is None else header_len
    packed = struct.pack("<H", length) if field == 2 else struct.pack("<I", length)
    return b"\x93NUMPY" + bytes(version) + packed + header.encode("latin1") + body


# ------------------------------------------------------------------------------------ corpus


class Corpus:
    def __init__(self, out):
        self.out = out
        self.cases = []
        os.makedirs(out, exist_ok=True)

    def write(self, name, data):
        path = os.path.join(self.out, name)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, (bytes, bytearray)) else data.SerializeToString())
        return name

    def case(self, name, model, command, expect, args=(), note=""):
        assert command in ("info", "eval", "render"), command
        assert expect in ("error", "load_fast", "distinct_outputs", "no_crash"), expect
        assert all(c["name"] != name for c in self.cases), name
        self.cases.append(
            {
                "name": name,
                "model": model,
                "command": command,
                "args": list(args),
                "expect": expect,
                "note": note,
            }
        )

    def finish(self):
        for c in self.cases:
            for p in [c["model"]] + [a for a in c["args"] if a.endswith((".npy", ".onnx"))]:
                assert os.path.exists(os.path.join(self.out, p)), (c["name"], p)
        with open(os.path.join(self.out, "cases.json"), "w") as f:
            json.dump(self.cases, f, indent=1, ensure_ascii=True)
            f.write("\n")


def build(out):
    c = Corpus(out)
    rng = np.random.default_rng(0)

    # Inputs. x.npy is a valid [1,3,8,8] float32 array (mixed signs, so Relu and Sigmoid of it
    # differ); x224.npy is a valid [1,3,224,224] one for the Resize model (2.4 MB, zeros).
    x = rng.standard_normal((1, 3, 8, 8)).astype("<f4")
    np.save(os.path.join(out, "x.npy"), x)
    np.save(os.path.join(out, "x224.npy"), np.zeros((1, 3, 224, 224), "<f4"))
    EVAL_X = ["--input", "x.npy"]

    # Baseline: a valid model the tool must handle. If these fail, the harness (ulimit, paths)
    # is wrong, not the hostile cases.
    relu = c.write(
        "relu.onnx",
        model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [x_input()], [output("y")]),
    )
    c.case("baseline_info", relu, "info", "load_fast", note="valid Relu model")
    c.case("baseline_eval", relu, "eval", "load_fast", EVAL_X, note="valid Relu model and input")

    # ConstantOfShape whose shape is the constant [2**40]: a 4 TiB tensor, feeding a graph output.
    m = c.write(
        "constant_of_shape_2p40.onnx",
        model(
            [
                helper.make_node("Relu", ["x"], ["y"], name="relu"),
                helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="huge_fill"),
            ],
            [x_input()],
            [output("y"), output("big", 1)],
            [int64s("big_shape", [BIG])],
        ),
    )
    note = "ConstantOfShape([2**40]) is a 4 TiB constant"
    c.case("constant_of_shape_2p40_info", m, "info", "no_crash", note=note)
    c.case("constant_of_shape_2p40_eval", m, "eval", "error", EVAL_X, note=note)
    c.case("constant_of_shape_2p40_render", m, "render", "no_crash", note=note + " (graph page)")

    # Pad by 2**40 on each side of H and W (pads is a constant input, opset 13).
    m = c.write(
        "pad_2p40.onnx",
        model(
            [helper.make_node("Pad", ["x", "pads"], ["y"], name="huge_pad", mode="constant")],
            [x_input()],
            [output("y")],
            [int64s("pads", [0, 0, BIG, BIG, 0, 0, BIG, BIG])],
        ),
    )
    note = "Pad with pads 2**40 on H and W"
    c.case("pad_2p40_info", m, "info", "no_crash", note=note)
    c.case("pad_2p40_eval", m, "eval", "error", EVAL_X, note=note)
    c.case(
        "pad_2p40_render_layer",
        m,
        "render",
        "error",
        ["--layer", "huge_pad"],
        note=note + " (feature vis of the padded layer)",
    )

    # Resize [1,3,224,224] by scales [1,1,1000,1000] (nearest): 224000 x 224000 x 3 floats.
    m = c.write(
        "resize_1000x.onnx",
        model(
            [
                helper.make_node(
                    "Resize", ["x", "", "scales"], ["y"], name="huge_resize", mode="nearest"
                )
            ],
            [x_input((1, 3, 224, 224))],
            [output("y")],
            [floats("scales", [1.0, 1.0, 1000.0, 1000.0])],
        ),
    )
    note = "Resize 224x224 by 1000x (about 600 GB of output)"
    c.case("resize_1000x_info", m, "info", "no_crash", note=note)
    c.case("resize_1000x_eval", m, "eval", "error", ["--input", "x224.npy"], note=note)
    c.case(
        "resize_1000x_render_layer",
        m,
        "render",
        "error",
        ["--layer", "huge_resize"],
        note=note + " (feature vis of the resized layer)",
    )

    # Slice of an initializer whose declared dims [1, 2**40] disagree with the bytes present:
    # 16 bytes of raw_data, and (second model) no data at all.
    def lying_slice(raw):
        return model(
            [
                helper.make_node("Relu", ["x"], ["y"], name="relu"),
                helper.make_node(
                    "Slice", ["liar", "starts", "ends", "axes"], ["s"], name="slice_liar"
                ),
            ],
            [x_input()],
            [output("y"), output("s", 2)],
            [
                raw_tensor("liar", TensorProto.FLOAT, [1, BIG], raw),
                int64s("starts", [0, 0]),
                int64s("ends", [1, 4]),
                int64s("axes", [0, 1]),
            ],
        )

    m = c.write("lying_initializer_16_bytes.onnx", lying_slice(np.ones(4, "<f4").tobytes()))
    note = "initializer declared [1, 2**40] float, 16 bytes of raw_data present"
    c.case("lying_initializer_16_bytes_info", m, "info", "error", note=note)
    c.case("lying_initializer_16_bytes_eval", m, "eval", "error", EVAL_X, note=note)
    m = c.write("lying_initializer_no_data.onnx", lying_slice(b""))
    note = "initializer declared [1, 2**40] float, no data at all"
    c.case("lying_initializer_no_data_info", m, "info", "error", note=note)
    c.case("lying_initializer_no_data_eval", m, "eval", "error", EVAL_X, note=note)

    # Conv with pads 2**40 on every side and a small valid [4,3,3,3] weight.
    m = c.write(
        "conv_pads_2p40.onnx",
        model(
            [
                helper.make_node(
                    "Conv",
                    ["x", "conv_w"],
                    ["y"],
                    name="huge_conv",
                    kernel_shape=[3, 3],
                    pads=[BIG] * 4,
                )
            ],
            [x_input()],
            [output("y")],
            [floats("conv_w", rng.standard_normal((4, 3, 3, 3)) * 0.1)],
        ),
    )
    note = "Conv with pads [2**40]*4"
    c.case("conv_pads_2p40_info", m, "info", "no_crash", note=note)
    c.case("conv_pads_2p40_eval", m, "eval", "error", EVAL_X, note=note)

    # A graph input declared [1, 3, 100000, 100000] (120 GB as float32) followed by a Relu.
    # Legal: describing the model must not allocate an input of that size.
    m = c.write(
        "huge_declared_input.onnx",
        model(
            [helper.make_node("Relu", ["x"], ["y"], name="relu")],
            [x_input((1, 3, 100000, 100000))],
            [output("y")],
        ),
    )
    note = "graph input declared [1,3,100000,100000]; info must not allocate it"
    # Showing the table or the graph, or refusing the declared size in one line: both are
    # fine, as long as nothing allocates 112 GiB (which `info` once did in shapes()).
    c.case("huge_declared_input_info", m, "info", "no_crash", note=note)
    c.case("huge_declared_input_render", m, "render", "no_crash", note=note + " (graph page)")
    c.case(
        "huge_declared_input_eval_small",
        m,
        "eval",
        "no_crash",
        EVAL_X,
        note=note + "; fed an [1,3,8,8] array (may run it or refuse the shape)",
    )

    # An initializer whose dims product overflows 64 bits: 2**40 * 2**40 * 16 = 2**84, which
    # wraps to exactly 0, so an unchecked product agrees with the (empty) data. Used by an Add.
    m = c.write(
        "overflow_dims_initializer.onnx",
        model(
            [helper.make_node("Add", ["x", "wrap"], ["y"], name="add_overflow")],
            [x_input()],
            [output("y")],
            [raw_tensor("wrap", TensorProto.FLOAT, [BIG, BIG, 16])],
        ),
    )
    note = "initializer dims [2**40, 2**40, 16]: product 2**84 wraps to 0 in u64"
    c.case("overflow_dims_initializer_info", m, "info", "error", note=note)
    c.case("overflow_dims_initializer_eval", m, "eval", "error", EVAL_X, note=note)

    # Same, with a negative dimension.
    m = c.write(
        "negative_dim_initializer.onnx",
        model(
            [helper.make_node("Add", ["x", "neg"], ["y"], name="add_negative")],
            [x_input()],
            [output("y")],
            [raw_tensor("neg", TensorProto.FLOAT, [-1, 8], np.ones(8, "<f4").tobytes())],
        ),
    )
    c.case("negative_dim_initializer_info", m, "info", "error", note="initializer dims [-1, 8]")

    # .npy inputs that lie, fed to the valid Relu model.
    # Shape (2**58+1, 3, 8, 8): the product is 3 * 2**64 + 192, which wraps to exactly 192 in
    # u64, matching the 192 float32 values present.
    c.write("npy_shape_overflow.npy", npy_bytes("(%d, 3, 8, 8)" % (2**58 + 1), x.tobytes()))
    c.case(
        "npy_shape_overflow_eval",
        relu,
        "eval",
        "error",
        ["--input", "npy_shape_overflow.npy"],
        note=".npy shape (2**58+1,3,8,8), product wraps to 192 = the values present",
    )
    c.write("npy_shape_2p32_squared.npy", npy_bytes("(%d, %d)" % (2**32, 2**32), b""))
    c.case(
        "npy_shape_2p32_squared_eval",
        relu,
        "eval",
        "error",
        ["--input", "npy_shape_2p32_squared.npy"],
        note=".npy shape (2**32, 2**32) with no data: product wraps to 0",
    )
    # Header length field far beyond the end of the file (v1.0: u16 65535; v2.0: u32 ~4 GiB).
    c.write("npy_header_len_v1.npy", npy_bytes("(1, 3, 8, 8)", x.tobytes()[:64], header_len=0xFFFF))
    c.case(
        "npy_header_len_v1_eval",
        relu,
        "eval",
        "error",
        ["--input", "npy_header_len_v1.npy"],
        note=".npy v1.0 header length 65535 in a ~200-byte file",
    )
    c.write(
        "npy_header_len_v2.npy",
        npy_bytes("(1, 3, 8, 8)", x.tobytes()[:64], version=(2, 0), header_len=0xFFFFFFFF),
    )
    c.case(
        "npy_header_len_v2_eval",
        relu,
        "eval",
        "error",
        ["--input", "npy_header_len_v2.npy"],
        note=".npy v2.0 header length 2**32-1 in a ~200-byte file",
    )
    # A shape that fits but whose data is missing (the honest-but-short case).
    c.write("npy_truncated_data.npy", npy_bytes("(1, 3, 8, 8)", x.tobytes()[:100]))
    c.case(
        "npy_truncated_data_eval",
        relu,
        "eval",
        "error",
        ["--input", "npy_truncated_data.npy"],
        note=".npy shape (1,3,8,8) with 100 of 768 data bytes",
    )

    # Files that are not ONNX models at all.
    c.write("garbage.onnx", random.Random(0).randbytes(4096))
    c.case("garbage_info", "garbage.onnx", "info", "error", note="4 KiB of random bytes")
    c.case("garbage_eval", "garbage.onnx", "eval", "error", EVAL_X, note="4 KiB of random bytes")
    c.write("empty.onnx", b"")
    c.case("empty_info", "empty.onnx", "info", "error", note="empty file")
    c.case("empty_eval", "empty.onnx", "eval", "error", EVAL_X, note="empty file")
    c.case("empty_render", "empty.onnx", "render", "error", note="empty file")
    conv_bytes = open(os.path.join(out, "conv_pads_2p40.onnx"), "rb").read()
    c.write("truncated.onnx", conv_bytes[: len(conv_bytes) // 2])
    c.case("truncated_info", "truncated.onnx", "info", "error", note="a valid model cut in half")
    # ModelProto field 7 (graph, length-delimited) claiming 2**62 bytes, followed by 8 bytes.
    varint = bytearray()
    n = 2**62
    while n >= 0x80:
        varint.append((n & 0x7F) | 0x80)
        n >>= 7
    varint.append(n)
    c.write("huge_length_prefix.onnx", b"\x08\x08" + b"\x3a" + bytes(varint) + b"\x00" * 8)
    c.case(
        "huge_length_prefix_info",
        "huge_length_prefix.onnx",
        "info",
        "error",
        note="protobuf graph field whose length prefix says 2**62 bytes",
    )

    # Legal, but names carry markup, notebook output markers and terminal escapes. Must load;
    # these check that the names are escaped wherever they are shown.
    hostile_names = [
        "<img src=x onerror=alert(1)>",
        "a\nEVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT text/html\n<script>alert(1)</script>",
        "\x1b]0;pwned\x07\x1b[31mred",
    ]
    m = c.write(
        "markup_names.onnx",
        model(
            [
                helper.make_node("Relu", ["x"], ["t0"], name=hostile_names[0]),
                helper.make_node("Sigmoid", ["t0"], ["t1"], name=hostile_names[1]),
                helper.make_node("Relu", ["t1"], ["y"], name=hostile_names[2]),
            ],
            [x_input()],
            [output("y")],
        ),
    )
    note = "node names with HTML, EVCXR content markers and terminal escapes"
    c.case("markup_names_info", m, "info", "load_fast", note=note)
    c.case("markup_names_render", m, "render", "load_fast", note=note + " (graph page)")

    # Two graph outputs whose names map to the same file name: `a/b` and `a_b`.
    m = c.write(
        "colliding_output_names.onnx",
        model(
            [
                helper.make_node("Relu", ["x"], ["a/b"], name="relu"),
                helper.make_node("Sigmoid", ["x"], ["a_b"], name="sigmoid"),
            ],
            [x_input()],
            [output("a/b"), output("a_b")],
        ),
    )
    c.case(
        "colliding_output_names_eval",
        m,
        "eval",
        "distinct_outputs",
        EVAL_X,
        note="outputs `a/b` and `a_b` must not both be written to a_b.npy",
    )

    # 20,000 Relu nodes in a chain, all with the same node name (dedup must be linear).
    n = 20000
    chain = [
        helper.make_node("Relu", ["x" if i == 0 else "t%d" % (i - 1)], ["t%d" % i], name="same")
        for i in range(n)
    ]
    m = c.write(
        "same_name_20000.onnx",
        model(chain, [x_input()], [output("t%d" % (n - 1))]),
    )
    c.case("same_name_20000_info", m, "info", "load_fast", note="20,000 Relus all named `same`")

    # Loaded in part: each Relu of the chain read by a NonZero left out, so that 20,000 tensors
    # become outputs (what the left-out nodes read must be gathered in linear time), and a
    # left-out node named with markup, notebook output markers and terminal escapes, which
    # `info` and the graph page show as text.
    left = [helper.make_node("NonZero", ["t%d" % i], ["z%d" % i]) for i in range(n)]
    m = c.write(
        "partial_20000.onnx",
        model(chain + left, [x_input()], [output("z%d" % (n - 1))]),
    )
    c.case("partial_20000_info", m, "info", "load_fast", ["--partial"],
           note="20,000 NonZeros left out, each reading another Relu of a chain")
    m = c.write(
        "partial_markup.onnx",
        model(
            [
                helper.make_node("Relu", ["x"], ["t0"]),
                helper.make_node("NonZero", ["t0"], ["y"], name=hostile_names[1]),
            ],
            [x_input()],
            [output("y")],
        ),
    )
    note = "a left-out node named with EVCXR content markers"
    c.case("partial_markup_info", m, "info", "load_fast", ["--partial"], note=note)
    c.case("partial_markup_render", m, "render", "load_fast", ["--partial"],
           note=note + " (graph page)")

    # 20,000 unnamed Relus after a named Conv: names derived as `conv/relu/relu/...` would grow
    # quadratically (about 1 GB of name text); they must not.
    chain = [
        helper.make_node(
            "Conv", ["x", "features.weight"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        )
    ] + [
        helper.make_node("Relu", ["c" if i == 0 else "t%d" % (i - 1)], ["t%d" % i])
        for i in range(n)
    ]
    m = c.write(
        "unnamed_relu_chain_20000.onnx",
        model(
            chain,
            [x_input()],
            [output("t%d" % (n - 1))],
            [floats("features.weight", rng.standard_normal((4, 3, 3, 3)) * 0.1)],
        ),
    )
    c.case(
        "unnamed_relu_chain_20000_info",
        m,
        "info",
        "load_fast",
        note="named Conv then 20,000 unnamed Relus (derived names must not nest without bound)",
    )

    # A file that fixes its batch at 1 (a Reshape to [4]) and whose output's size follows the
    # values (a Slice up to the largest): a batch runs one image at a time, and two images whose
    # outputs differ in size cannot be joined. One error, not a panic in the join.
    np.save(
        os.path.join(out, "two_sizes.npy"),
        np.array([[[[1, 2, 0, 0]]], [[[3, 0, 0, 0]]]], "<f4"),
    )
    m = c.write(
        "batch_fixed_ragged.onnx",
        model(
            [
                helper.make_node("Reshape", ["x", "flat"], ["r"], name="flatten_one"),
                helper.make_node("ReduceMax", ["r"], ["m"], keepdims=1, name="largest"),
                helper.make_node("Cast", ["m"], ["end"], to=TensorProto.INT64, name="end"),
                helper.make_node("Slice", ["x", "zero", "end", "three"], ["y"], name="up_to"),
            ],
            [x_input((1, 1, 1, 4))],
            [output("y")],
            [int64s("flat", [4]), int64s("zero", [0]), int64s("three", [3])],
        ),
    )
    c.case(
        "batch_fixed_ragged_eval",
        m,
        "eval",
        "error",
        ["--input", "two_sizes.npy"],
        note="batch fixed at 1, outputs of two sizes for the two images",
    )

    # Names in the classic PyTorch exporter's form (`/a/a/.../Relu`), each 16,000 scopes deep:
    # which modules hold others must not cost the square of the depth (100 nodes, 3.2 MB).
    depth, deep = 16000, 100
    scopes = "/a" * depth
    chain = [
        helper.make_node(
            "Relu", ["x" if i == 0 else "d%d" % (i - 1)], ["d%d" % i], name=scopes + "/Relu_%d" % i
        )
        for i in range(deep)
    ]
    m = c.write(
        "deep_scopes.onnx", model(chain, [x_input()], [output("d%d" % (deep - 1))])
    )
    c.case(
        "deep_scopes_info",
        m,
        "info",
        "load_fast",
        note="100 nodes named in the classic exporter's form, 16,000 scopes deep",
    )

    # One scope of a name and 100,000 numbers (`/a.0.0.0.../Relu`, 200 KB), read as module
    # paths are: it must still load at once.
    m = c.write(
        "numbered_scope.onnx",
        model(
            [helper.make_node("Relu", ["x"], ["y"], name="/a" + ".0" * 100000 + "/Relu")],
            [x_input()],
            [output("y")],
        ),
    )
    c.case(
        "numbered_scope_info",
        m,
        "info",
        "load_fast",
        note="a node named in the classic exporter's form, one scope of 100,000 numbers",
    )

    # A Concat of two constants of shape [200000, 1] (made by ConstantOfShape, so the file is
    # tiny): big-ish constants must not make describing the model slow.
    value = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.5])
    m = c.write(
        "concat_200000.onnx",
        model(
            [
                helper.make_node("Relu", ["x"], ["y"], name="relu"),
                helper.make_node("ConstantOfShape", ["shape"], ["c0"], name="const_a", value=value),
                helper.make_node("ConstantOfShape", ["shape"], ["c1"], name="const_b", value=value),
                helper.make_node("Concat", ["c0", "c1"], ["cat"], name="concat", axis=0),
            ],
            [x_input()],
            [output("y"), output("cat", 2)],
            [int64s("shape", [200000, 1])],
        ),
    )
    c.case(
        "concat_200000_info",
        m,
        "info",
        "load_fast",
        note="Concat of two [200000, 1] constants",
    )

    # Split sizes whose sum wraps around 2**64 to exactly the axis size (3): a sum without
    # checked arithmetic accepts them and then narrows by 2**63 - 1.
    wrap = 2**63 - 1
    m = c.write(
        "split_wrapping_sizes.onnx",
        model(
            [helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], name="wrapping_split", axis=1)],
            [x_input()],
            [output("a"), output("b"), output("c")],
            [int64s("sizes", [wrap, wrap, 5])],
        ),
    )
    note = "Split of axis 1 (size 3) into [2**63-1, 2**63-1, 5], which wraps to 3"
    c.case("split_wrapping_sizes_info", m, "info", "no_crash", note=note)
    c.case("split_wrapping_sizes_eval", m, "eval", "error", EVAL_X, note=note)

    # A Gather whose output is 16 GiB from a tiny file: 2**20 indices (a ConstantOfShape of
    # zeros) into the rows of a [4096, 4096] constant.
    zero = helper.make_tensor("value", TensorProto.INT64, [1], [0])
    m = c.write(
        "gather_16gib.onnx",
        model(
            [
                helper.make_node("Relu", ["x"], ["y"], name="relu"),
                helper.make_node("ConstantOfShape", ["rows"], ["table"], name="table"),
                helper.make_node("ConstantOfShape", ["count"], ["picks"], name="picks", value=zero),
                helper.make_node("Gather", ["table", "picks"], ["g"], name="huge_gather", axis=0),
            ],
            [x_input()],
            [output("y"), output("g", 2)],
            [int64s("rows", [4096, 4096]), int64s("count", [2**20])],
        ),
    )
    note = "Gather of 2**20 rows of a [4096, 4096] constant: a 16 GiB output"
    c.case("gather_16gib_info", m, "info", "no_crash", note=note)
    c.case("gather_16gib_eval", m, "eval", "error", EVAL_X, note=note)

    # A MatMul of a [2**20, 1] column by a [1, 2**20] row (4 MiB each, made by ConstantOfShape):
    # a 4 TiB product.
    m = c.write(
        "matmul_outer_4tib.onnx",
        model(
            [
                helper.make_node("Relu", ["x"], ["y"], name="relu"),
                helper.make_node("ConstantOfShape", ["col_shape"], ["col"], name="column"),
                helper.make_node("ConstantOfShape", ["row_shape"], ["row"], name="row"),
                helper.make_node("MatMul", ["col", "row"], ["outer"], name="huge_matmul"),
            ],
            [x_input()],
            [output("y"), output("outer", 2)],
            [int64s("col_shape", [2**20, 1]), int64s("row_shape", [1, 2**20])],
        ),
    )
    note = "MatMul of [2**20, 1] by [1, 2**20]: a 4 TiB output"
    c.case("matmul_outer_4tib_info", m, "info", "no_crash", note=note)
    c.case("matmul_outer_4tib_eval", m, "eval", "error", EVAL_X, note=note)

    # Counts from attributes that sized an allocation before anything checked them (each
    # aborted the process: "memory allocation of 17179869184 bytes failed").
    m = c.write(
        "split_num_outputs_2p31.onnx",
        model(
            [helper.make_node("Split", ["x"], ["a", "b"], name="split", axis=1,
                              num_outputs=2**31)],
            [x_input()],
            [output("a"), output("b")],
            opset=18,
        ),
    )
    note = "Split with num_outputs 2**31 but two outputs"
    c.case("split_num_outputs_2p31_eval", m, "eval", "error", EVAL_X, note=note)
    w = floats("w", np.ones((3, 2, 3, 3)))
    m = c.write(
        "conv_transpose_group_2p40.onnx",
        model(
            [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", group=2**40)],
            [x_input()],
            [output("y")],
            [w],
        ),
    )
    note = "ConvTranspose with group 2**40 over 3 channels"
    c.case("conv_transpose_group_2p40_eval", m, "eval", "error", EVAL_X, note=note)
    m = c.write(
        "conv_transpose_strides_2p40.onnx",
        model(
            [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up",
                              strides=[2**40, 2**40])],
            [x_input()],
            [output("y")],
            [w],
        ),
    )
    note = "ConvTranspose with strides 2**40: an output of 2**86 pixels"
    c.case("conv_transpose_strides_2p40_eval", m, "eval", "error", EVAL_X, note=note)

    # Lists and names as long as a file likes. The refusal must still be one line a person can
    # read (run_corpus.sh bounds its length): a split of 100,000 sizes once gave a 55 KB line.
    m = c.write(
        "split_100k_sizes.onnx",
        model(
            [helper.make_node("Split", ["x", "sizes"], ["a", "b"], name="split", axis=1)],
            [x_input()],
            [output("a"), output("b")],
            [int64s("sizes", [0] * 100_000)],
        ),
    )
    c.case("split_100k_sizes_eval", m, "eval", "error", EVAL_X, note="Split with 100,000 sizes")
    m = c.write(
        "initializer_rank_100k.onnx",
        model(
            [helper.make_node("Add", ["x", "deep"], ["y"], name="add")],
            [x_input()],
            [output("y")],
            [raw_tensor("deep", TensorProto.FLOAT, [1] * 100_000, b"\0" * 4)],
        ),
    )
    note = "Add of an initializer of rank 100,000 (one value)"
    c.case("initializer_rank_100k_eval", m, "eval", "error", EVAL_X, note=note)
    m = c.write(
        "name_1mb.onnx",
        model(
            [helper.make_node("Conv", ["x", "w"], ["y"], name="n" * 2**20)],
            [x_input()],
            [output("y")],
            [floats("w", np.ones((4, 2, 3, 3)))],
        ),
    )
    note = "a node named with a megabyte of text, whose weight does not fit its input"
    c.case("name_1mb_eval", m, "eval", "error", EVAL_X, note=note)

    # Gather's output has the input's rank plus the indices' minus one: 4 + 4 - 1 = 7 axes,
    # over the runtime's 6 (it reached burn, which panicked).
    m = c.write(
        "gather_rank_7.onnx",
        model(
            [helper.make_node("Gather", ["x", "idx"], ["y"], name="gather", axis=1)],
            [x_input()],
            [output("y", 7)],
            [raw_tensor("idx", TensorProto.INT64, [1, 1, 1, 1], np.zeros(1, "<i8").tobytes())],
        ),
    )
    c.case("gather_rank_7_eval", m, "eval", "error", EVAL_X, note="Gather to a rank-7 output")

    # Tensors with no elements whose other axes multiply past 64 bits: an initializer of shape
    # [0, 2**40, 2**40] and a ConstantOfShape of it, read by a Transpose and a ReduceSum (the
    # ops' own size arithmetic overflowed: a caught panic, or none caught).
    follow = [
        helper.make_node("Transpose", ["e"], ["t"], name="transpose", perm=[2, 1, 0]),
        helper.make_node("ReduceSum", ["t"], ["g"], name="sum", keepdims=1),
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
    ]
    empty_huge = [0, BIG, BIG]
    m = c.write(
        "empty_huge_initializer.onnx",
        model(follow, [x_input()], [output("y"), output("g", 3)],
              [raw_tensor("e", TensorProto.FLOAT, empty_huge)]),
    )
    note = "an initializer of shape [0, 2**40, 2**40]"
    c.case("empty_huge_initializer_eval", m, "eval", "error", EVAL_X, note=note)
    c.case("empty_huge_initializer_info", m, "info", "error", note=note)
    m = c.write(
        "empty_huge_fill.onnx",
        model([helper.make_node("ConstantOfShape", ["s"], ["e"], name="fill")] + follow,
              [x_input()], [output("y"), output("g", 3)], [int64s("s", empty_huge)]),
    )
    note = "ConstantOfShape([0, 2**40, 2**40])"
    c.case("empty_huge_fill_eval", m, "eval", "error", EVAL_X + ["--node", "g"], note=note)

    quantized(c, EVAL_X)
    unpooling(c, EVAL_X)
    external_data(c, EVAL_X)

    c.finish()
    return c.cases


def quantized(c, eval_x):
    """Quantized models' ops with types, shapes and arities they cannot have: each an error
    naming the node, never a panic."""
    scale = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])]
    uint8 = [helper.make_tensor("z", TensorProto.UINT8, [], [128])]
    cases = [
        # A 2-bit output (opset 25's output_dtype 26, INT2): not supported.
        ("quantize_int2", [helper.make_node(
            "QuantizeLinear", ["x", "s"], ["y"], name="to_int2", output_dtype=26)], scale, 25),
        # Blocks of 2**40 along H with a scale shaped for blocks of 2.
        ("dequantize_blocked_2p40", [helper.make_node(
            "DequantizeLinear", ["x", "bs"], ["y"], name="blocked", axis=2, block_size=2**40)],
         [floats("bs", np.ones((1, 3, 4, 8)))], 21),
        # A zero point that a node computes: its type, the output's, is declared nowhere.
        ("quantize_computed_zero_point", [
            helper.make_node("ReduceMax", ["x"], ["zf"], name="computed", keepdims=0),
            helper.make_node("QuantizeLinear", ["x", "s", "zf"], ["y"], name="untyped"),
        ], scale, 13),
        # onnxruntime's QLinearConcat with a triple cut short.
        ("qlinear_concat_short", [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
            helper.make_node("QLinearConcat", ["s", "z", "q", "s"], ["y"], name="short",
                             domain="com.microsoft", axis=1),
        ], scale + uint8, 13),
        # A per-channel scale of the wrong length (3 channels, 5 scales) for a QLinearConv's
        # weight.
        ("qlinear_conv_scales", [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
            helper.make_node("QLinearConv", ["q", "s", "z", "w", "ws", "wz", "s", "z"], ["y"],
                             name="bad_scales"),
        ], scale + uint8 + [
            helper.make_tensor("w", TensorProto.INT8, [3, 3, 1, 1], [1] * 9),
            floats("ws", np.ones(5)),
            helper.make_tensor("wz", TensorProto.INT8, [5], [0] * 5),
        ], 13),
    ]
    for name, nodes, inits, opset in cases:
        m = c.write(f"{name}.onnx", model(nodes, [x_input()], [output("y")], inits, opset=opset))
        c.case(f"{name}_eval", m, "eval", "error", eval_x, note=name.replace("_", " "))


def unpooling(c, eval_x):
    """MaxUnpool whose indices or output_shape, read from the file, do not fit: an error naming
    the node."""
    window = dict(kernel_shape=[2, 2], strides=[2, 2])
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], name="pool", **window)
    indices = np.arange(48, dtype="<i8").reshape(1, 3, 4, 4)
    indices[0, 1, 2, 3] = 2**40
    cases = [
        # An index far past the output, in place of the pooling's own.
        ("unpool_index_2p40", [
            helper.make_node("MaxPool", ["x"], ["p"], name="pool", **window),
            helper.make_node("MaxUnpool", ["p", "far"], ["y"], name="unpool", **window),
        ], [raw_tensor("far", TensorProto.INT64, [1, 3, 4, 4], indices.tobytes())]),
        # An output of [1, 3, 2**40, 2**40].
        ("unpool_output_2p40", [
            pool,
            helper.make_node("MaxUnpool", ["p", "i", "s"], ["y"], name="unpool", **window),
        ], [int64s("s", [1, 3, 2**40, 2**40])]),
    ]
    for name, nodes, inits in cases:
        m = c.write(f"{name}.onnx", model(nodes, [x_input()], [output("y")], inits, opset=13))
        c.case(f"{name}_eval", m, "eval", "error", eval_x, note=name.replace("_", " "))


def external_data(c, eval_x):
    """Tensors whose bytes are in a file beside the model (ONNX external data), where the file
    names a place outside the model's folder, something that is not a file, or bytes the file
    does not have. One honest model first: it must load and evaluate."""
    w = np.linspace(-1, 1, 4 * 3 * 3 * 3).astype("<f4")
    c.write("weights.bin", b"\0" * 16 + w.tobytes())
    os.makedirs(os.path.join(c.out, "folder.bin"), exist_ok=True)
    for name, target in [("outside.bin", "/etc/passwd"), ("loop.bin", "loop.bin")]:
        path = os.path.join(c.out, name)
        if not os.path.lexists(path):
            os.symlink(target, path)
    if not os.path.exists(os.path.join(c.out, "pipe.bin")):
        os.mkfifo(os.path.join(c.out, "pipe.bin"))

    def conv_with(name, fields):
        t = raw_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3])
        t.data_location = TensorProto.EXTERNAL
        for key, value in fields:
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return c.write(
            name + ".onnx",
            model(
                [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                [x_input()],
                [output("y")],
                [t],
            ),
        )

    honest = [("location", "weights.bin"), ("offset", "16"), ("length", str(w.nbytes))]
    m = conv_with("external_honest", honest)
    c.case("external_honest_eval", m, "eval", "load_fast", eval_x, note="external data, honest")
    c.case("external_honest_render", m, "render", "no_crash", ["--layer", "conv"],
           note="external data, honest")
    for name, fields, note in [
        ("parent", [("location", "../weights.bin")], "a location in the parent folder"),
        ("absolute", [("location", "/etc/passwd")], "an absolute location"),
        ("symlink_out", [("location", "outside.bin")], "a link out of the model's folder"),
        ("symlink_loop", [("location", "loop.bin")], "a link to itself"),
        ("fifo", [("location", "pipe.bin")], "a named pipe (opening it would wait)"),
        ("folder", [("location", "folder.bin")], "a folder"),
        ("dot", [("location", ".")], "the model's folder itself"),
        ("missing", [("location", "no_such.bin")], "a file that is not there"),
        ("empty_location", [("location", "")], "an empty location"),
        ("nul", [("location", "weights\0.bin")], "a location with a NUL byte"),
        ("no_location", [("offset", "0")], "no location"),
        ("offset_past_end", [("location", "weights.bin"), ("offset", "1000000")],
         "an offset past the file's end"),
        ("length_2p62", [("location", "weights.bin"), ("length", str(2**62))],
         "a length of 2**62 bytes"),
        ("end_overflows", [("location", "weights.bin"), ("offset", str(2**64 - 8)),
                           ("length", "16")], "offset + length past 2**64"),
        ("length_short", [("location", "weights.bin"), ("offset", "16"), ("length", "4")],
         "fewer bytes than the shape needs"),
        ("offset_negative", [("location", "weights.bin"), ("offset", "-16")],
         "a negative offset"),
        ("offset_text", [("location", "weights.bin"), ("offset", "<b>16</b>")],
         "an offset that is markup"),
    ]:
        m = conv_with("external_" + name, fields)
        c.case("external_%s_eval" % name, m, "eval", "error", eval_x, note=note)
    c.case("external_symlink_out_info", "external_symlink_out.onnx", "info", "error",
           note="a link out of the model's folder")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py OUT_DIR")
    cases = build(sys.argv[1])
    print("wrote %d cases to %s" % (len(cases), os.path.join(sys.argv[1], "cases.json")))


if __name__ == "__main__":
    main()
