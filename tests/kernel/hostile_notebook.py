"""Writes a hostile model and a notebook that opens it, for the JupyterLab check
(tests/browser/hostile_lab.mjs, run by kernel/tests/notebooks.rs).

  python hostile_notebook.py DIR     writes DIR/hostile.onnx and DIR/hostile.ipynb

The model is legal, but its node names carry what a downloaded file could: HTML whose script
would set `window.__pwned`, evcxr's content markers followed by markup, the kernel's display
marker followed by a forged display, and terminal escapes. The notebook does what a user does with
a model: loads it, displays it (the layer graph), prints its node names, and shows a gallery of
its first layer. In the page, no script from the names may run and no output other than the
widgets and the printed text may appear.
"""

import json
import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

# The markup name is also the layer the notebook shows a gallery of (it must survive being a Rust
# string literal in a raw string, r#"…"#).
MARKUP = '<img src=x onerror="window.__pwned=1"><b class="forged">forged</b>'
NAMES = [
    MARKUP,
    "m\nEVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT text/html\n<script>window.__pwned=2</script>"
    '<b class="forged">forged</b>\nEVCXR_END_CONTENT',
    '\x1b[microscope-display]{"data":{"text/html":"<b class=\\"forged\\">forged</b>"}}',
    "\x1b]0;pwned\x07\x1b[31mred",
]


def model():
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["t0"], name=NAMES[0], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["t0"], ["t1"], name=NAMES[1]),
        helper.make_node("Sigmoid", ["t1"], ["t2"], name=NAMES[2]),
        helper.make_node("Relu", ["t2"], ["y"], name=NAMES[3]),
    ]
    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])],
        [weight, bias],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def notebook():
    cells = [
        'let model = Model::load("hostile.onnx")?;',
        "model",
        'for node in model.network().nodes() {\n    println!("{}", node.name);\n}',
        'model.layer(r#"' + MARKUP + '"#)?.gallery_of(0..2, &FeatureVis::default().steps(4))?',
    ]
    return {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": "c%d" % i, "metadata": {}, "outputs": [], "source": src}
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"display_name": "Rust · microscope", "language": "rust", "name": "microscope"},
            "language_info": {"name": "rust"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: hostile_notebook.py DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "hostile.onnx"), "wb") as f:
        f.write(model().SerializeToString())
    with open(os.path.join(out, "hostile.ipynb"), "w") as f:
        json.dump(notebook(), f, indent=1)


if __name__ == "__main__":
    main()
