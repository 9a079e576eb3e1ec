"""Kernel latencies as a user feels them, for one kernelspec, in one run:
  ready        start → kernel_info reply
  first widget ready → the first cell that shows a widget (the model's layer graph) is done
  warm cell    a trivial cell after that (median of 5)
usage: python kernel_latency.py KERNEL_NAME LABEL [--preload CELL] [--wait-spare] [--restart-after S]
  --preload CELL     executed first (and counted in "first widget"), for kernels that do not
                     preload microscope themselves, e.g. stock evcxr_jupyter
  --wait-spare       first wait until a microscope spare kernel says it is ready (see
                     kernel/src/spare.rs), as it is a little while after `install`
  --restart-after S  then stay quiet S seconds, restart the kernel and measure it again
Prints one line of JSON per kernel start.
"""

import argparse
import json
import os
import statistics
import sys
import time

import jupyter_client

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "kernel"))
from spares import wait_for_spare  # noqa: E402


def measure(km, kc, t0, label, preload):
    # As Jupyter's clients do: ask again each second until the kernel answers (a request sent
    # into a restart may be lost with the old kernel).
    kc.wait_for_ready(timeout=1800)
    ready = time.perf_counter() - t0

    def run(code):
        start = time.perf_counter()
        reply = kc.execute(code, reply=True, timeout=3600)
        assert reply["content"]["status"] == "ok", reply["content"]
        return time.perf_counter() - start

    first = 0.0
    if preload:
        first += run(preload)
    first += run("let model = zoo::fashion()?;\nmodel")
    warm = statistics.median(run(f"let x{i} = {i} + 1;\nx{i}") for i in range(5))
    print(json.dumps({"kernel": label, "ready_s": round(ready, 2), "first_widget_s": round(first, 2),
                      "warm_cell_s": round(warm, 3)}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("label")
    p.add_argument("--preload")
    p.add_argument("--wait-spare", action="store_true")
    p.add_argument("--restart-after", type=float)
    a = p.parse_args()
    if a.wait_spare and not wait_for_spare():
        raise SystemExit("no spare kernel became ready")
    t0 = time.perf_counter()
    km = jupyter_client.KernelManager(kernel_name=a.name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    measure(km, kc, t0, a.label, a.preload)
    if a.restart_after is not None:
        time.sleep(a.restart_after)
        t0 = time.perf_counter()
        km.restart_kernel(now=True)
        measure(km, kc, t0, f"{a.label}, restarted after {a.restart_after:.0f} s", a.preload)
    kc.stop_channels()
    km.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
