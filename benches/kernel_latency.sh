#!/usr/bin/env bash
# Kernel latencies (ready, first widget cell, warm cell) of the microscope kernel next to stock
# evcxr_jupyter with the same preload, measured in the same run. Installs both into
# target/latency (evcxr_jupyter with `cargo install`, the first time: several minutes), runs
# each kernel from its installed state, prints a line of JSON per kernel start: microscope's
# first kernel after install and a restart (both from warm spares), microscope cold, stock.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/latency
mkdir -p "$OUT"
[ -x .venv/bin/python ] || { echo "run tests/run.sh first (it makes .venv with jupyter_client)" >&2; exit 2; }
cargo build --quiet -p microscope-kernel
target/debug/microscope-kernel install --prefix "$OUT/prefix" >/dev/null
if [ ! -x "$OUT/evcxr/bin/evcxr_jupyter" ]; then
  cargo install --quiet --locked --root "$OUT/evcxr" evcxr_jupyter@0.22.0
fi
# Stock evcxr's kernelspec, in the same prefix (its installer only writes the user directory).
mkdir -p "$OUT/prefix/share/jupyter/kernels/evcxr"
cat > "$OUT/prefix/share/jupyter/kernels/evcxr/kernel.json" <<JSON
{"argv": ["$PWD/$OUT/evcxr/bin/evcxr_jupyter", "--control_file", "{connection_file}"],
 "display_name": "Rust (stock evcxr)", "language": "rust", "interrupt_mode": "message"}
JSON
export JUPYTER_PATH="$PWD/$OUT/prefix/share/jupyter"
preload=":linker system
:opt 2
:offline 1
:dep microscope = { path = \"$PWD\" }
use microscope::prelude::*;"
# Stock evcxr builds its dependencies in its own directory, a fresh one per kernel unless
# EVCXR_TMPDIR names one; give it a persistent one and prebuild it once (as our install does),
# so both kernels are measured from a prebuilt state (stock evcxr's best case).
export EVCXR_TMPDIR="$PWD/$OUT/evcxr-tmp"
.venv/bin/python benches/kernel_latency.py evcxr "stock evcxr_jupyter (prebuilding)" --preload "$preload" >/dev/null
# The kernel a user meets after install (the spare install left, preloaded by now), then a
# restart after a quiet minute (the spare that kernel left).
.venv/bin/python benches/kernel_latency.py microscope "microscope, first kernel after install" --wait-spare --restart-after 60
# Without spares: the kernel preloads itself.
MICROSCOPE_SPARE_IDLE_S=0 .venv/bin/python benches/kernel_latency.py microscope "microscope, cold (spares off)"
.venv/bin/python benches/kernel_latency.py evcxr "stock evcxr_jupyter" --preload "$preload"
