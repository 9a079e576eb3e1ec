#!/usr/bin/env bash
# Memory of a microscope kernel with rust-analyzer shown the trimmed crate graph, against the
# whole graph in the same run (see kernel_memory.py and kernel/src/crate_graph.rs). Installs the
# kernel into target/kernel-memory (quick when the user install's template can be reused: the
# first time, the prebuild takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/kernel-memory
mkdir -p "$OUT"
[ -x .venv/bin/python ] || { echo "run tests/run.sh first (it makes .venv with jupyter_client)" >&2; exit 2; }
cargo build --quiet -p microscope-kernel
target/debug/microscope-kernel install --prefix "$OUT/prefix" >/dev/null
export JUPYTER_PATH="$PWD/$OUT/prefix/share/jupyter"
.venv/bin/python benches/kernel_memory.py microscope
