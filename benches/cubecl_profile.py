"""Top GPU kernels per step from cubecl's profiling log.

usage: python3 benches/cubecl_profile.py LOG STEPS [TOP]

LOG is what cubecl writes with CUBECL_DEBUG_LOG=LOG CUBECL_DEBUG_OPTION=profile: one line
`| DURATION | NAME` per kernel it ran (DURATION as Rust's Debug prints a Duration: 12.3µs,
1.2ms), among compilation logs and summary tables, which are skipped. Kernels are grouped by
name without generic arguments; each group's time and launches are divided by STEPS (every
render step the log covers, warm-up included). Prints the launches and kernel time per step,
then the TOP (default 15) groups by time. cubecl times each kernel on its own, so the sum is
kernel time, not the step's wall time (launch gaps and host work are not in it).
"""

import re
import sys
from collections import defaultdict

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
LINE = re.compile(r"^\| ([0-9.]+)(ns|µs|us|ms|s)\s*\| (.+)$")


def group(name):
    """The kernel's name without generic arguments (nested <...> removed)."""
    out, depth = [], 0
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    return "".join(out).strip()[:100]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().splitlines()[2])
    path, steps = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    ms, calls = defaultdict(float), defaultdict(int)
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line.rstrip("\n"))
            if m:
                key = group(m.group(3))
                ms[key] += float(m.group(1)) * UNITS[m.group(2)]
                calls[key] += 1
    if not ms:
        sys.exit(f"{path}: no kernel timings (was CUBECL_DEBUG_OPTION=profile set?)")
    total = sum(ms.values())
    print(
        f"kernels per step: {sum(calls.values()) / steps:.0f} launches, "
        f"{total / steps:.2f} ms of kernel time"
    )
    print(f"{'ms/step':>8} {'calls/step':>10} {'share':>6}  kernel")
    for key in sorted(ms, key=ms.get, reverse=True)[:top]:
        print(
            f"{ms[key] / steps:8.3f} {calls[key] / steps:10.1f} "
            f"{100 * ms[key] / total:5.1f}%  {key}"
        )


if __name__ == "__main__":
    main()
