#!/usr/bin/env bash
# Runs every test of microscope. Installs what the tests need first, by itself:
#   - Debian packages: dataset-fashion-mnist (Fashion-MNIST IDX files), chromium and nodejs/npm
#     (widget behaviour in a real headless browser), g++ (libzmq), slurm-wlm and munge (a
#     one-node Slurm cluster for the atlas);
#   - npm's playwright-core in tests/browser (drives that Chromium);
#   - a Python venv (.venv) with the pinned onnx wheel, onnxruntime and numpy (reference data), and
#     jupyter_client, nbclient, nbconvert, JupyterLab and Notebook 7 (the kernel tests drive the kernel through
#     them, and live widgets through JupyterLab in Chromium);
#   - ONNX's backend node tests, generated from the onnx wheel's own case definitions;
#   - the nine ONNX light models from that wheel, plus seeded random-weight copies and
#     onnxruntime's intermediate outputs for them.
# Then: cargo fmt --check; then, side by side, the README's main command in a clean environment
# (tests/user_path.sh) followed by the kernel's notebook test, which re-installs over the kernel
# that command installed (one cold template build, not two: 8 minutes on 2 cores) and drives that
# install; and the rest of cargo test followed by clippy -D warnings.
set -euo pipefail
cd "$(dirname "$0")/.."

ONNX_VERSION=1.23.2
FIX=tests/fixtures/onnx
VENV=.venv

# Each step says when it starts, in minutes since the run began: CI must stay under an hour.
started=$(date +%s)
step() { printf '\n== [%s min] %s\n' "$((($(date +%s) - started) / 60))" "$*"; }

# A first run writes about NEED_GB GB here (build, venv, fixtures, the kernels' work directories);
# a full disk shows up as a linker's bus error or a dead kernel, so say up front how much is free,
# and on the way out, what the run left.
NEED_GB=8
free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
step "disk: ${free_gb} GB free here; a first run needs about ${NEED_GB} GB"
if [ "$free_gb" -lt "$NEED_GB" ]; then
  echo "warning: less than ${NEED_GB} GB free: the build or the kernel tests may run out of space" >&2
fi
disk_report() {
  step "disk: $(df -Ph . | awk 'NR == 2 {print $4}') free after the run; it uses:"
  du -sh target .venv tests/fixtures tests/browser/node_modules 2>/dev/null || true
}
trap disk_report EXIT

step "Debian packages: dataset-fashion-mnist, chromium, nodejs, npm, g++, slurm-wlm, munge"
missing=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v g++ >/dev/null || missing+=(g++)  # the kernel builds libzmq from source
# tests/atlas.rs runs the README's Slurm array script on a one-node cluster it starts.
command -v slurmctld >/dev/null || missing+=(slurm-wlm)
command -v munged >/dev/null || missing+=(munge)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

step "npm: playwright-core (tests/browser)"
(cd tests/browser && npm ci --no-audit --no-fund --silent)

step "python venv with onnx==$ONNX_VERSION, onnxruntime, numpy, sympy, jupyter_client, nbclient, nbconvert, jupyterlab, notebook"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "onnx==$ONNX_VERSION" onnxruntime numpy sympy jupyter_client nbclient nbconvert nbformat jupyterlab notebook

# Everything cargo test will run, built once up front with the features cargo test resolves for
# the whole workspace. Building only the CLI first (`cargo run --bin microscope`) resolved shared
# dependencies with fewer features, and cargo test then rebuilt burn and 45 other crates: 5 of
# its 7 build minutes on 2 cores. tour.sh's `cargo build -p microscope-kernel` reuses this build
# too (kernel/Cargo.toml asks for the workspace's features).
step "cargo test --workspace --no-run"
cargo test --workspace --no-run --quiet

# The node tests are generated for the ops the runtime implements, as its op table lists them
# (`microscope info --ops`), and regenerated when that list, the onnx version or the scripts
# that write them change.
step "the op table: microscope info --ops"
mapfile -t ops < <(target/debug/microscope info --ops | awk '{print $1}')
[ "${#ops[@]}" -gt 0 ] || { echo "microscope info --ops listed no ops" >&2; exit 1; }
echo "${#ops[@]} ops: ${ops[*]}"
stamp="$FIX/.stamp-$ONNX_VERSION-$( (printf '%s\n' "${ops[@]}"; cat tests/support/onnx_node_tests.py tests/support/light_reference.py) | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  step "ONNX fixtures"
  rm -rf "$FIX" && mkdir -p "$FIX"
  site=$("$VENV/bin/python" -c 'import onnx, os; print(os.path.dirname(onnx.__file__))')
  cp -r "$site/backend/test/data/light" "$FIX/light"
  "$VENV/bin/python" -W ignore tests/support/onnx_node_tests.py "$FIX/node" "${ops[@]}"
  "$VENV/bin/python" tests/support/light_reference.py "$FIX/light" "$FIX/light-ref"
  touch "$stamp"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

# The user's install stays until the end of the run: the kernel test re-installs over it.
MICROSCOPE_USER_PATH_DIR=$(mktemp -d "$HOME/.microscope-user-path.XXXXXX")
export MICROSCOPE_USER_PATH_DIR
trap 'rm -rf "$MICROSCOPE_USER_PATH_DIR"; disk_report' EXIT

# One test is left to run by hand: the class visualizations of the ImageNet model at Lucid's 512
# steps (`cargo test --test imagenet class_vis -- --nocapture`) take 12 minutes on 2 cores, which
# would take this run past CI's limit. Measured: 9 of 10 classes top-1 (session 13, with 16
# redirected steps and Adam's restart after them; 8 of 10 without redirection, the same day).
#
# Two sides run at once, as neither keeps both cores busy on its own:
#   - [user path] the README's main command in a clean environment (tests/user_path.sh: the
#     kernel's cold template build, then the tour executed to HTML and opened in Chromium), then
#     [notebooks] the kernel's notebook test, which re-installs over that install and drives it
#     (Jupyter, the notebooks, JupyterLab: much of it one rustc per cell, or waiting on a browser);
#   - the crate's tests (burn on both cores), then clippy.
# Run one after the other (2026-12-07, 2 cores), the main command took 13 minutes, then the two
# test sides side by side 29 (the notebook side 24 of them), and clippy 4 before them all.
# cargo holds its lock only while it builds, and the test build above is already done: the
# user path's `cargo build` and `cargo test`'s only check that. Clippy, which holds the lock
# while it lints, comes after the crate's tests, by when the notebook test has started.
#
# Each test side has a time limit, so that a test that hangs fails here, with its name in the
# output (libtest's "has been running for over 60 seconds"), instead of running into CI's limit
# with nothing said, as a hang in a shared CPU thread pool once did. Alone on 2 cores the crate
# tests take 10 minutes and the notebook test 15 to 30; `timeout` ends the whole process group,
# test binaries included, and exits 124.
LIMIT=40m
step "the README's main command as a user runs it, then the kernel's notebook test; beside them, cargo test, then clippy (each test side stops after $LIMIT)"
(
  tests/user_path.sh 2>&1 | sed -u 's/^/[user path] /'
  MICROSCOPE_KERNEL_TEST_DATA_DIR="$MICROSCOPE_USER_PATH_DIR/jupyter" \
    timeout -k 30 "$LIMIT" cargo test --workspace --test notebooks -- --nocapture 2>&1 |
    sed -u 's/^/[notebooks] /'
) &
kernel_side=$!
crate=0
timeout -k 30 "$LIMIT" cargo test --workspace --no-fail-fast -- --nocapture \
  --skip class_visualizations_are_classified_as_their_class \
  --skip notebooks_run_through_jupyter_with_the_kernel || crate=$?
step "cargo test (the crate's side) finished: exit $crate (124: past $LIMIT)"

# Clippy lints the CPU build. The `cuda` feature's code is compiled and linted where a GPU is
# (`cargo clippy --features cuda` in the device script, see the README): with it here, clippy also
# built the CUDA crates, minutes of CI's limited hour for code no CI machine can run.
step "cargo clippy --all-targets -D warnings"
lint=0
cargo clippy --workspace --all-targets --quiet -- -D warnings || lint=$?

kernel=0
wait "$kernel_side" || kernel=$?
step "finished: crate tests exit $crate, clippy exit $lint, main command and notebook test exit $kernel (124: the notebook test past $LIMIT)"
# An `if`, not `[ ... ] && [ ... ]`: set -e lets a failing command before `&&` pass, and a crate
# test failure was reported as "all tests passed".
if [ "$crate" -ne 0 ] || [ "$lint" -ne 0 ] || [ "$kernel" -ne 0 ]; then
  exit 1
fi
step "all tests passed"
