#!/usr/bin/env bash
# The README's main command as a user runs it, from this checkout: in a clean environment (only
# HOME, a user's PATH, a fresh Jupyter data directory under $HOME, beside the Rust toolchain, and
# a fresh cache directory; no CARGO_*, no LD_LIBRARY_PATH), `notebooks/tour.sh --headless`
# builds the kernel, installs it cold and executes the tour; an install that cannot fetch its
# crates fails in one line and leaves that install working; the exported tour opens in headless
# Chromium with every widget mounted and no page errors.
# tests/run.sh calls it before cargo test, with MICROSCOPE_USER_PATH_DIR: the install is left
# there, and the kernel test re-installs over it (the README's command run a second time) and
# drives the result. Without that variable the script works in a folder of its own and removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${MICROSCOPE_USER_PATH_DIR:-}" ]; then
  scratch=$MICROSCOPE_USER_PATH_DIR
else
  scratch=$(mktemp -d "$HOME/.microscope-user-path.XXXXXX")
  # Spares this run left preload from this folder's template; they exit on their own once idle.
  trap 'rm -rf "$scratch"' EXIT
fi

# A user's PATH: where their cargo, python3 and node are, then the system's.
path=""
for tool in cargo python3 node; do
  dir=$(dirname "$(command -v "$tool")")
  case ":$path:" in *":$dir:"*) ;; *) path="$path:$dir" ;; esac
done
path="${path#:}:/usr/local/bin:/usr/bin:/bin"

# CI, when set, is passed on: rust-analyzer's ra_ap_stdx reads it at compile time
# (option_env!("CI")), so without it tour.sh's build of the kernel would differ from the test
# build in CI and rebuild evcxr's dependency graph (8 minutes on 2 cores). It changes nothing else.
user() {
  env -i HOME="$HOME" PATH="$path" LANG=C.UTF-8 ${CI:+CI="$CI"} \
    JUPYTER_DATA_DIR="$scratch/jupyter" XDG_CACHE_HOME="$scratch/cache" \
    MICROSCOPE_SPARE_IDLE_S=120 "$@"
}

rm -f notebooks/01-tour.html
printf '\n== the main command, clean environment: notebooks/tour.sh --headless\n'
start=$(date +%s)
user notebooks/tour.sh --headless
echo "tour.sh --headless took $(($(date +%s) - start)) s"
test -s notebooks/01-tour.html

# What the user now has: a kernelspec that pins its toolchain, and a template without its staging
# copies.
spec="$scratch/jupyter/kernels/microscope"
grep -q MICROSCOPE_RUST_SYSROOT "$spec/kernel.json"
test -d "$spec/template" && test ! -e "$spec/template.new" && test ! -e "$spec/template.old"

# An install that fails (here: crates missing and no network) says so in one line, exits
# non-zero, and leaves the working install as it was.
before=$(sha256sum "$spec/kernel.json" "$spec/microscope-kernel")
mkdir -p "$scratch/empty-cargo-home"
if user env CARGO_HOME="$scratch/empty-cargo-home" CARGO_NET_OFFLINE=true \
  "$spec/microscope-kernel" install --user >"$scratch/failed.out" 2>"$scratch/failed.err"; then
  echo "FAIL an install that cannot fetch its crates succeeded" >&2
  exit 1
fi
tail -n 1 "$scratch/failed.err"
tail -n 1 "$scratch/failed.err" | grep -q "could not download the crates"
test "$before" = "$(sha256sum "$spec/kernel.json" "$spec/microscope-kernel")"
test -d "$spec/template" && test ! -e "$spec/template.new"
echo "ok   a failed install leaves the previous one in place"

mkdir -p target/screenshots/user-path
node tests/browser/exported.mjs notebooks/01-tour.html target/screenshots/user-path
echo "user path: ok"
