"""Times onnxruntime's forward pass of GoogLeNet (light_inception_v1_random.onnx, written by
tests/support/light_reference.py) on CPU, as a baseline for our own implementation.

usage: python ort_googlenet.py MODEL.onnx [--batch 1 --batch 8 ...] [--iters N]

Prints one line per batch size on stdout, `ort_forward_ms batch=<B> <median_ms>`; logs go to stderr.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def make_batch_symbolic(model):
    """The model declares a batch of 1: makes the data input's and the outputs' first dim 'N',
    and turns a leading 1 into 0 (copy the input's dim) in the constant shapes of the Reshapes
    that act on activations (those reshaping weights are left alone)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    (data,) = [i for i in graph.input if i.name not in inits]
    for value in [data, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    # Tensors that depend on the data input; nodes are in topological order.
    activations = {data.name}
    for n in graph.node:
        if activations.intersection(n.input):
            activations.update(n.output)
            if n.op_type == "Reshape" and n.input[1] in inits:
                shape = numpy_helper.to_array(inits[n.input[1]]).copy()
                if shape[0] == 1:
                    shape[0] = 0
                    inits[n.input[1]].CopyFrom(numpy_helper.from_array(shape, n.input[1]))
                    print(f"Reshape {n.name}: shape now {shape.tolist()}", file=sys.stderr)
    return data.name, [d.dim_value for d in data.type.tensor_type.shape.dim[1:]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, action="append", help="repeatable; default 1")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()

    model = onnx.load(args.model)
    input_name, sample_shape = make_batch_symbolic(model)
    opts = ort.SessionOptions()  # default graph optimizations
    opts.intra_op_num_threads = os.cpu_count()
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} threads", file=sys.stderr)

    for batch in args.batch or [1]:
        shape = [batch, *sample_shape]
        n = int(np.prod(shape))
        x = {input_name: (np.arange(n, dtype=np.float32).reshape(shape) / n).astype(np.float32)}
        (y,) = sess.run(None, x)
        assert y.shape == (batch, 1000), f"batch {batch}: output shape {y.shape}"
        for _ in range(2):  # 3 warmup runs, counting the checked one above
            sess.run(None, x)
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            sess.run(None, x)
            times.append((time.perf_counter() - start) * 1e3)
        print(f"ort_forward_ms batch={batch} {statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
