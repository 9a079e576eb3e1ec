"""The microscope kernel through real Jupyter machinery (jupyter_client, nbclient, nbconvert).

usage: python check_kernel.py NOTEBOOKS_DIR OUT_DIR

Expects the kernelspec `microscope` on JUPYTER_PATH (tests install it into a temporary prefix).
Checks:
  - every notebook runs through nbclient without errors, and each shows widgets (display_data or
    execute_result with text/html holding a microscope root, and text/plain);
  - a failing cell reports a readable error, and the next cell still sees earlier variables;
  - a gallery's progress bar arrives as display_data and then update_display_data (same id);
  - an interrupt during a long feature visualization returns control within seconds and keeps
    the variables;
  - nbconvert --execute of the tour writes an HTML page (checked in Chromium by the caller).
Executed notebooks and the HTML go to OUT_DIR.
"""

import os
import queue
import subprocess
import sys
import time

import jupyter_client
import nbformat
from nbclient import NotebookClient

KERNEL = "microscope"
failed = 0


def check(ok, what):
    global failed
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failed += 1


def run_notebooks(src, out):
    for name in sorted(os.listdir(src)):
        if not name.endswith(".ipynb"):
            continue
        nb = nbformat.read(os.path.join(src, name), as_version=4)
        start = time.time()
        client = NotebookClient(nb, kernel_name=KERNEL, timeout=900, allow_errors=False,
                                resources={"metadata": {"path": src}})
        try:
            client.execute()
        except Exception as e:  # report and keep going with the other notebooks
            check(False, f"{name}: runs without errors ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
            nbformat.write(nb, os.path.join(out, name))
            continue
        nbformat.write(nb, os.path.join(out, name))
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        widgets = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")
                   and "microscope-root" in o.get("data", {}).get("text/html", "")]
        check(len(widgets) > 0, f"{name}: runs in {time.time() - start:.0f} s and shows {len(widgets)} widgets")
        check(all("text/plain" in o["data"] for o in widgets), f"{name}: every widget has a text/plain fallback")
        errors = [o for o in outputs if o.get("output_type") == "error"]
        check(not errors, f"{name}: no error outputs")


class Session:
    """One kernel, driven message by message."""

    def __init__(self):
        self.km, self.kc = jupyter_client.manager.start_new_kernel(kernel_name=KERNEL, startup_timeout=600)

    def execute(self, code, timeout=600, on_iopub=None):
        msg_id = self.kc.execute(code)
        got = []
        deadline = time.time() + timeout
        while True:
            try:
                m = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                raise TimeoutError(f"no idle status for {code!r}")
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            got.append(m)
            if on_iopub:
                on_iopub(m)
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=60)
        return reply["content"], got

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def text_of(msgs):
    parts = []
    for m in msgs:
        c = m["content"]
        if m["msg_type"] == "stream":
            parts.append(c["text"])
        elif m["msg_type"] in ("execute_result", "display_data"):
            parts.append(c["data"].get("text/plain", ""))
        elif m["msg_type"] == "error":
            parts.append(c["ename"] + ": " + c["evalue"] + "\n" + "\n".join(c["traceback"]))
    return "".join(parts)


def check_session():
    s = Session()
    try:
        start = time.time()
        reply, msgs = s.execute("let kept = 41;")
        check(reply["status"] == "ok", f"first cell ok ({time.time() - start:.1f} s after start)")

        reply, msgs = s.execute("let broken: u32 = \"text\";")
        check(reply["status"] == "error", "a cell that does not compile is an error reply")
        err = [m for m in msgs if m["msg_type"] == "error"]
        check(bool(err) and "mismatched types" in text_of(err), "... with the compiler's message")

        reply, msgs = s.execute("let m = zoo::fashion()?; m.layer(\"no_such_layer\")?;")
        check("no_such_layer" in text_of(msgs), f"a failing `?` says what failed: {text_of(msgs).strip()[:120]!r}")

        reply, msgs = s.execute("kept + 1")
        results = [m for m in msgs if m["msg_type"] == "execute_result"]
        check(bool(results) and results[0]["content"]["data"]["text/plain"].strip() == "42",
              "the next cell still sees earlier variables")

        code = ("let g = zoo::fashion()?.layer(\"conv1\")?"
                ".gallery_using(&FeatureVis::default().steps(300).cache(None))?;\ndisplay(&g);")
        reply, msgs = s.execute(code)
        shown = [m for m in msgs if m["msg_type"] == "display_data" and "display_id" in m["content"].get("transient", {})]
        ids = {m["content"]["transient"]["display_id"] for m in shown}
        updates = [m for m in msgs if m["msg_type"] == "update_display_data"
                   and m["content"]["transient"].get("display_id") in ids]
        check(reply["status"] == "ok" and bool(shown) and len(updates) >= 2,
              f"a gallery's progress bar is displayed and updated in place ({len(updates)} updates)")
        galleries = [m for m in msgs if m["msg_type"] == "display_data"
                     and "data-component=\"Gallery\"" in m["content"]["data"].get("text/html", "")]
        check(bool(galleries), "display() shows the gallery in the middle of the cell")

        # Interrupt a long feature visualization; control must come back with variables intact.
        msg_id = s.kc.execute("let long = FeatureVis::default().steps(1_000_000).cache(None)"
                              ".run(&zoo::fashion()?.unit(\"conv3\", 0)?)?;")
        time.sleep(8)
        t0 = time.time()
        s.km.interrupt_kernel()
        reply = None
        while time.time() - t0 < 60:
            m = s.kc.get_shell_msg(timeout=60)
            if m["parent_header"].get("msg_id") == msg_id:
                reply = m
                break
        waited = time.time() - t0
        check(reply is not None and waited < 5, f"an interrupt returns control in {waited:.1f} s")
        reply, msgs = s.execute("kept * 2 - 40")
        results = [m for m in msgs if m["msg_type"] == "execute_result"]
        check(bool(results) and results[0]["content"]["data"]["text/plain"].strip() == "42",
              "variables survive the interrupt")

        # Completion, as evcxr provides it.
        c = s.kc.complete("zoo::fa", 7, reply=True, timeout=120)["content"]
        check("fashion" in " ".join(c["matches"]), f"completion offers zoo::fashion ({c['matches'][:5]})")
    finally:
        s.close()


def export_tour(src, out):
    html = os.path.join(out, "01-tour.html")
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--execute",
           "--ExecutePreprocessor.kernel_name=" + KERNEL, "--ExecutePreprocessor.timeout=900",
           "--output-dir", out, os.path.join(src, "01-tour.ipynb")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    check(r.returncode == 0 and os.path.exists(html), f"nbconvert --execute writes {html} {r.stderr[-300:] if r.returncode else ''}")


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    check_session()
    run_notebooks(src, out)
    export_tour(src, out)
    print(f"{failed} kernel checks failed" if failed else "all kernel checks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
