"""Kernel latencies as a user feels them, for one kernelspec, in one run:
  ready        start → kernel_info reply
  first widget ready → the first cell that shows a widget (the model's layer graph) is done
  warm cell    a trivial cell after that (median of 5)
usage: python kernel_latency.py KERNEL_NAME [PRELOAD_CELL]
PRELOAD_CELL is executed first (and counted in "first widget") for kernels that do not
preload microscope themselves, e.g. stock evcxr_jupyter. Prints one line of JSON.
"""

import json
import statistics
import sys
import time

import jupyter_client


def main():
    name = sys.argv[1]
    preload = sys.argv[2] if len(sys.argv) > 2 else None
    t0 = time.perf_counter()
    km = jupyter_client.KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.kernel_info(reply=True, timeout=1800)
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
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    print(json.dumps({"kernel": name, "ready_s": round(ready, 2), "first_widget_s": round(first, 2),
                      "warm_cell_s": round(warm, 3)}))


if __name__ == "__main__":
    main()
