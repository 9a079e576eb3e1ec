#!/usr/bin/env bash
# The GPU checks (CUDA tests and benchmarks) as one command on a GPU machine lent by the device
# tool, which has CUDA, PyTorch and onnx but no Rust toolchain and no network. Everything is
# built here, packed into .gpu/ (which git ignores), and carried:
#
#   benches/gpu.sh pack       # here: release builds of the features cuda and cuda-fusion
#                             # (about 14 min each on 2 cores)
#   device run: command "benches/gpu.sh run", carry [".gpu"], timeout_s 540
#   device run: command "benches/gpu.sh gallery", carry [".gpu"] (optional, after `run`;
#                             # BIN=bin-fusion times the cuda-fusion build)
#
# `run` prints, in order: the ONNX node conformance tests on cuda:0, then for each build (plain
# `cuda`, then `cuda-fusion`, with burn-cuda's kernel fusion and autotuning) the CUDA tests of
# tests/technique.rs (CPU/CUDA agreement; the CUDA render backend against Dispatch) and
# benches/feature_vis.sh on the GPU: ms per step against PyTorch CUDA and through Dispatch, and
# units·steps per second at batches 8, 32 and 128; then, for the plain build, the top kernels
# per step of both loops (benches/cubecl_profile.py). `gallery` times the whole 512-unit
# gallery of inception_4a (512 steps, 128 px, batches of 128). CUDA_VERSION (default 13000, the
# toolkit on the lent machines: 13.0) is what cudarc binds at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=.gpu
case "${1:-}" in
pack)
  # The fixtures the pack carries (node tests, the light GoogLeNet) come from tests/run.sh: say
  # so now rather than after the builds.
  for f in tests/fixtures/onnx/node tests/fixtures/onnx/light/light_inception_v1.onnx; do
    [ -e "$f" ] || { echo "no $f: run tests/run.sh first (it builds the ONNX fixtures)" >&2; exit 2; }
  done
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
  export CUDARC_CUDA_VERSION=${CUDA_VERSION:-13000}
  rm -rf "$PACK" && mkdir -p "$PACK/bin" "$PACK/light" "$PACK/whl"
  # The executables cargo reports, by target name.
  built() { grep -o '"executable":"[^"]*"' | cut -d'"' -f4; }
  # Each variant's executables in a folder of its own: bin/ (the `cuda` feature) and
  # bin-fusion/ (`cuda-fusion`: burn-cuda's kernel fusion and autotuning too).
  # Only the executables `run` uses (cargo also reports the CLI, which the tests build), and the
  # conformance tests only from the plain build: the pack must stay within the device tool's
  # 64 MiB (both builds in full packed to 74 MB, these to 43; 54 since the CUDA render backend
  # of its own, FastCuda, instantiates the runtime once more: 55 MB with the rest, 2026-12-04).
  for variant in cuda cuda-fusion; do
    dir="$PACK/bin${variant#cuda}"
    keep="feature_vis_step technique"
    [ "$variant" = cuda ] && keep="$keep onnx_node_conformance"
    mkdir -p "$dir"
    {
      cargo bench --no-run --features "$variant" --bench feature_vis_step --message-format=json
      cargo test --release --no-run --features "$variant" --test technique \
        --test onnx_node_conformance --message-format=json
    } | built | while read -r exe; do
      name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
      case " $keep " in *" $name "*) cp "$exe" "$dir/$name" && strip "$dir/$name" ;; esac
    done
  done
  tar -C "$PACK" -cJf "$PACK/bin.tar.xz" bin bin-fusion && rm -rf "$PACK/bin" "$PACK/bin-fusion"
  tar -C tests/fixtures/onnx -cJf "$PACK/node.tar.xz" node
  cp tests/fixtures/onnx/light/light_inception_v1.onnx "$PACK/light/"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d "$PACK/whl" onnx2torch
  du -sh "$PACK" && ls -la "$PACK"
  ;;
run | gallery)
  [ -f "$PACK/bin.tar.xz" ] || { echo "no $PACK/bin.tar.xz: run benches/gpu.sh pack here first" >&2; exit 2; }
  # burn-cuda compiles its kernels at run time against the toolkit's headers.
  if [ -z "${CUDA_PATH:-}" ]; then
    nvcc=$(command -v nvcc || true)
    [ -n "$nvcc" ] || nvcc=$(ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1 || true)
    [ -n "$nvcc" ] || { echo "no CUDA toolkit (nvcc) found: set CUDA_PATH" >&2; exit 2; }
    CUDA_PATH=$(dirname "$(dirname "$nvcc")")
    export CUDA_PATH
  fi
  work=/tmp/microscope-gpu
  mkdir -p "$work"
  tar -C "$work" -xJf "$PACK/bin.tar.xz"
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$PACK"/whl/*.whl
  export PYTHONPATH="$work/site"
  model=tests/fixtures/onnx/light-ref/light_inception_v1_random.onnx
  [ -f "$model" ] || python3 tests/support/light_reference.py "$PACK/light" tests/fixtures/onnx/light-ref
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  # A lent GPU is rare (a session's 15 minutes, some tasks only): a failing part is reported and
  # the run goes on to the next, so that one failure does not cost the other figures.
  failed=()
  part() {
    local title=$1
    shift
    echo "== $title"
    "$@" || { echo "!! FAILED (exit $?): $title"; failed+=("$title"); }
  }
  if [ "$1" = run ]; then
    tar -C "$work" -xJf "$PACK/node.tar.xz"
    part "ONNX node conformance on cuda:0" env MICROSCOPE_TEST_DEVICE=cuda \
      MICROSCOPE_ONNX_NODE_TESTS="$work/node" "$work/bin/onnx_node_conformance" --test-threads 1
    # The plain build first, then the one with fusion and autotuning: whether they help.
    for bin in bin bin-fusion; do
      part "[$bin] CPU and CUDA agree; so do the CUDA render backend and Dispatch" \
        "$work/$bin/technique" cuda --nocapture
      part "[$bin] feature visualization step against PyTorch CUDA" env DEVICE=cuda \
        PYTHON=python3 BENCH="$work/$bin/feature_vis_step" BATCHES="8 32 128" benches/feature_vis.sh
    done
    # Where a step's GPU time goes, on each loop of the plain build: cubecl's profiler times
    # every kernel (8 steps after the bench's 2 warm-up steps: 10 in the log).
    profile() {
      local log="$work/profile-$1.log"
      RENDER=$1 CUBECL_DEBUG_LOG="$log" CUBECL_DEBUG_OPTION=profile \
        "$work/bin/feature_vis_step" "$model" inception_4a/output 8 cuda &&
        python3 benches/cubecl_profile.py "$log" 10 15
    }
    for loop in ours dispatch; do
      part "[bin] profile of the feature vis step ($loop): top kernels per step" profile "$loop"
    done
  else
    bin=${BIN:-bin}
    echo "== [$bin] a 512-unit gallery of inception_4a (512 steps, 128 px, batches of 128)"
    GALLERY=128 "$work/$bin/feature_vis_step" "$model" inception_4a/output 512 cuda
  fi
  if [ ${#failed[@]} -gt 0 ]; then
    printf '!! %d part(s) failed:\n' "${#failed[@]}"
    printf '   %s\n' "${failed[@]}"
    exit 1
  fi
  ;;
*)
  echo "usage: benches/gpu.sh pack | run | gallery" >&2
  exit 2
  ;;
esac
