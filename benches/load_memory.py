"""Peak memory of loading a model: `microscope info` next to onnxruntime opening the same file.

Each side runs in a process of its own, measured by the kernel's peak resident set size
(os.wait4), so the two numbers come from the same run on the same machine. onnxruntime's
includes the Python interpreter it runs in (about 60 MB), microscope's the CLI's shape pass.

usage: python load_memory.py MICROSCOPE_BIN MODEL.onnx...
"""

import os
import subprocess
import sys


def peak_mb(argv):
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    err = child.stderr.read().decode(errors="replace")
    if status != 0:
        sys.exit(f"{argv[-1]}: {argv[0]} failed:\n{err}")
    return usage.ru_maxrss / 1024


def main():
    binary, models = sys.argv[1], sys.argv[2:]
    ort = (
        "import sys, onnxruntime as ort; "
        "ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"
    )
    print(f"{'model':<34} {'file MB':>8} {'microscope MB':>14} {'onnxruntime MB':>15} {'ratio':>6}")
    for path in models:
        size = os.path.getsize(path) / 2**20
        ours = peak_mb([binary, "info", path])
        theirs = peak_mb([sys.executable, "-c", ort, path])
        name = os.path.basename(path)
        print(f"{name:<34} {size:8.0f} {ours:14.0f} {theirs:15.0f} {theirs / ours:6.2f}", flush=True)


if __name__ == "__main__":
    main()
