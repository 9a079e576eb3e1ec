#!/usr/bin/env bash
# The main job: builds and installs the microscope Jupyter kernel (for this user), then opens
# the tour in JupyterLab. JupyterLab comes from the system if `jupyter lab` works, else it is
# installed into .venv (PyPI) the first time.
#   notebooks/tour.sh              open JupyterLab on notebooks/01-tour.ipynb
#   notebooks/tour.sh --headless   execute the tour into notebooks/01-tour.html instead
#   MICROSCOPE_CUDA=1 notebooks/tour.sh   preload the crate with its CUDA backend
set -euo pipefail
cd "$(dirname "$0")/.."
headless=0
[ "${1:-}" = "--headless" ] && headless=1
cuda=()
[ "${MICROSCOPE_CUDA:-0}" = 1 ] && cuda=(--cuda)

echo "== building the kernel"
cargo build -p microscope-kernel
echo "== installing the kernelspec (the first time, this prebuilds the crate: several minutes)"
target/debug/microscope-kernel install --user "${cuda[@]}"

if jupyter lab --version >/dev/null 2>&1 && jupyter nbconvert --version >/dev/null 2>&1; then
  jupyter=(jupyter)
else
  echo "== no JupyterLab found: installing it into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check jupyterlab nbconvert nbclient
  jupyter=(.venv/bin/jupyter)
fi

if [ "$headless" = 1 ]; then
  "${jupyter[@]}" nbconvert --to html --execute --ExecutePreprocessor.kernel_name=microscope \
    --ExecutePreprocessor.timeout=1800 --output-dir notebooks notebooks/01-tour.ipynb
  echo "wrote notebooks/01-tour.html"
else
  root=()
  [ "$(id -u)" = 0 ] && root=(--allow-root)   # JupyterLab refuses root without it
  exec "${jupyter[@]}" lab "${root[@]}" notebooks/01-tour.ipynb
fi
