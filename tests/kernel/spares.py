"""Waiting for a spare kernel (kernel/src/spare.rs): each one logs, in the spares' directory, the
template it preloads for and when it is ready."""

import glob
import os
import tempfile
import time


def wait_for_spare(kernel="microscope", timeout=600):
    """Whether the spare of kernelspec `kernel` (the first JUPYTER_PATH entry's) says it is ready
    within `timeout` s."""
    template = os.path.join(os.environ["JUPYTER_PATH"].split(os.pathsep)[0], "kernels", kernel, "template")
    # kernel/src/spare.rs `dir()`: ~/.cache/microscope-spares, or the temporary folder's
    # microscope-spares-UID without a home.
    home = os.environ.get("HOME")
    folder = (os.path.join(home, ".cache", "microscope-spares") if home
              else os.path.join(tempfile.gettempdir(), f"microscope-spares-{os.geteuid()}"))
    logs = os.path.join(folder, "*.log")
    deadline = time.time() + timeout
    while time.time() < deadline:
        for log in glob.glob(logs):
            with open(log) as f:
                text = f.read()
            if f"template {template})" in text and "; ready" in text:
                return True
        time.sleep(0.5)
    return False
