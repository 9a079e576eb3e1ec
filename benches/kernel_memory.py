"""Memory of a microscope kernel as a user starts it, with rust-analyzer shown the trimmed crate
graph (kernel/src/crate_graph.rs) and, in the same run, the whole graph
(MICROSCOPE_RUST_ANALYZER_ALL_CRATES=1). Spares are off, so the kernel Jupyter starts preloads
itself. Per kernel: peak and current resident memory of the kernel process (rust-analyzer lives
there) and of its evaluation process, after a cell that shows a model and three cells that keep
typed variables (rust-analyzer infers their types). A ratio above 1: the trimmed kernel is the
smaller.
usage: python kernel_memory.py KERNEL_NAME
"""

import json
import os
import sys
import time

import jupyter_client

CELLS = [
    "let model = zoo::fashion()?;\nmodel",
    "let layer = model.layer(\"conv3\")?;",
    "let again = layer.clone();\nstd::any::type_name_of_val(&again)",
]


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # The parent's pid is the second field after the parenthesized name.
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def measure(name, label, all_crates):
    os.environ["MICROSCOPE_SPARE_IDLE_S"] = "0"
    os.environ.pop("MICROSCOPE_RUST_ANALYZER_ALL_CRATES", None)
    if all_crates:
        os.environ["MICROSCOPE_RUST_ANALYZER_ALL_CRATES"] = "1"
    t0 = time.perf_counter()
    km = jupyter_client.KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=1800)
    first = None
    for code in CELLS:
        reply = kc.execute(code, reply=True, timeout=3600)
        assert reply["content"]["status"] == "ok", reply["content"]
        first = first or time.perf_counter() - t0
    pid = km.provisioner.process.pid
    evals = children(pid)
    row = {
        "kernel": label,
        "first_cell_s": round(first, 1),
        "kernel_peak_mb": round(status(pid, "VmHWM") / 1e6),
        "kernel_now_mb": round(status(pid, "VmRSS") / 1e6),
        "evaluation_now_mb": round(sum(status(c, "VmRSS") for c in evals) / 1e6),
    }
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return row


def main():
    name = sys.argv[1]
    trimmed = measure(name, "trimmed crate graph (the default)", False)
    whole = measure(name, "whole crate graph (MICROSCOPE_RUST_ANALYZER_ALL_CRATES=1)", True)
    for row in (trimmed, whole):
        print(json.dumps(row), flush=True)
    print(json.dumps({
        "kernel_peak_ratio_whole_over_trimmed": round(whole["kernel_peak_mb"] / trimmed["kernel_peak_mb"], 2),
        "kernel_now_ratio_whole_over_trimmed": round(whole["kernel_now_mb"] / trimmed["kernel_now_mb"], 2),
    }), flush=True)


if __name__ == "__main__":
    main()
