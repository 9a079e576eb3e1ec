"""The microscope kernel through real Jupyter machinery (jupyter_client, nbclient).

usage: python check_kernel.py NOTEBOOKS_DIR OUT_DIR

Expects the kernelspec `microscope` on JUPYTER_PATH (kernel/tests/notebooks.rs installs it).
Checks:
  - every notebook but the tour (see ELSEWHERE) runs through nbclient without errors, and each
    shows widgets (display_data or execute_result with text/html holding a microscope root, and
    text/plain);
  - a failing cell reports a readable error (a `?` that fails is an error, its message shown
    once), and so does a hostile model that asks for terabytes; the next cell still sees earlier
    variables;
  - the protocol: wrong signatures, replays, unknown control requests, oversized frames;
  - a gallery's progress bar arrives as display_data and then update_display_data (same id);
  - an interrupt during a long feature visualization returns control within seconds and keeps
    the variables;
  - live widgets over comms (target `microscope`): a gallery with 8 computed units answers a
    request for an uncomputed unit with its image; a long request keeps running while other
    cells execute, and stops within a second when cancelled, or when its comm closes; after a
    restart the kernel tells an old widget to run its cell again;
  - `install` leaves a spare kernel; the next kernel is that spare, with the started process's
    environment and working directory, and ends with it.
Executed notebooks go to OUT_DIR.
"""

import datetime
import json
import os
import queue
import re
import socket
import sys
import tempfile
import textwrap
import time
import uuid

import jupyter_client
import nbformat
from nbclient import NotebookClient

from spares import wait_for_spare

KERNEL = "microscope"
failed = 0


def check(ok, what):
    global failed
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failed += 1


# The tour runs elsewhere: live in JupyterLab and Notebook 7 (kernel/tests/notebooks.rs, after
# these checks), and exported by `nbconvert --execute` as a user runs it (tests/user_path.sh,
# which tests/run.sh runs first; nbconvert fails on any error, and the exported page is checked
# in Chromium). A third and fourth run here took 3 minutes of CI and checked nothing new.
ELSEWHERE = {"01-tour.ipynb"}


def slowest_cells(nb, count=3):
    """The notebook's slowest cells, as nbclient timed them (its `metadata.execution`): where a
    CI run's notebook minutes went, read from the log."""
    def seconds(cell):
        e = cell.get("metadata", {}).get("execution", {})
        busy, idle = e.get("iopub.status.busy"), e.get("iopub.status.idle")
        if not (busy and idle):
            return None
        parse = lambda t: datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
        return (parse(idle) - parse(busy)).total_seconds()
    timed = [(seconds(c), i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    timed = sorted(((s, i, c) for s, i, c in timed if s is not None), key=lambda t: -t[0])
    lines = [f"       cell {i}: {s:.1f} s  {c.source.strip().splitlines()[0][:80]}"
             for s, i, c in timed[:count] if c.source.strip()]
    return "     slowest cells:\n" + "\n".join(lines)


def run_notebooks(src, out):
    for name in sorted(os.listdir(src)):
        if not name.endswith(".ipynb") or name in ELSEWHERE:
            continue
        nb = nbformat.read(os.path.join(src, name), as_version=4)
        start = time.time()
        client = NotebookClient(nb, kernel_name=KERNEL, timeout=900, allow_errors=False,
                                resources={"metadata": {"path": src}})
        try:
            client.execute()
        except Exception as e:  # report and keep going with the other notebooks
            check(False, f"{name}: runs without errors ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
            # nbclient's message names no cell: show the failed cell's code and its error.
            for i, cell in enumerate(nb.cells):
                failed = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                if failed:
                    print(f"  cell {i}:\n" + textwrap.indent(cell.source, "    | "))
                    for o in failed:
                        print(textwrap.indent(f"{o.get('ename')}: {o.get('evalue')}", "    ! "))
            nbformat.write(nb, os.path.join(out, name))
            continue
        nbformat.write(nb, os.path.join(out, name))
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        widgets = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")
                   and "microscope-root" in o.get("data", {}).get("text/html", "")]
        check(len(widgets) > 0, f"{name}: runs in {time.time() - start:.0f} s and shows {len(widgets)} widgets")
        print(slowest_cells(nb), flush=True)
        check(all("text/plain" in o["data"] for o in widgets), f"{name}: every widget has a text/plain fallback")
        errors = [o for o in outputs if o.get("output_type") == "error"]
        check(not errors, f"{name}: no error outputs")


class Session:
    """One kernel, driven message by message."""

    def __init__(self, kernel=KERNEL, **start):
        self.km, self.kc = jupyter_client.manager.start_new_kernel(kernel_name=kernel, startup_timeout=600, **start)
        self.stash = []  # iopub messages read while waiting for something else

    def iopub(self, timeout):
        if self.stash:
            return self.stash.pop(0)
        return self.kc.get_iopub_msg(timeout=timeout)

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
                if m["msg_type"] in ("comm_msg", "comm_close"):
                    self.stash.append(m)
                continue
            got.append(m)
            if on_iopub:
                on_iopub(m)
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
        # The reply to this request: a kernel_info reply to an earlier ready-check (the client
        # asks again while a kernel starts slowly) may still be waiting on the shell channel.
        while True:
            reply = self.kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"], got

    def comm(self, msg_type, content):
        self.kc.shell_channel.send(self.kc.session.msg(msg_type, content))

    def comm_wait(self, comm_id, pred, timeout=300):
        """The first comm message on `comm_id` whose data satisfies `pred` (others are dropped)."""
        deadline = time.time() + timeout
        while True:
            try:
                m = self.iopub(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                return None
            if m["msg_type"] in ("comm_msg", "comm_close") and m["content"].get("comm_id") == comm_id:
                if m["msg_type"] == "comm_close" or pred(m["content"]["data"]):
                    return m

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


def kernel_info_within(kc, limit):
    """Sends kernel_info and waits up to `limit` seconds for its reply: the seconds it took, or
    None (replies to other requests are skipped)."""
    t0 = time.time()
    msg_id = kc.kernel_info()
    while time.time() < t0 + limit:
        try:
            m = kc.get_shell_msg(timeout=0.2)
        except queue.Empty:
            continue
        if m["parent_header"].get("msg_id") == msg_id:
            return time.time() - t0
    return None


def check_spare(out):
    """`install` leaves a spare kernel; the next kernel Jupyter starts is that spare, with the
    started process's environment and working directory, and it ends with that process."""
    start = time.time()
    ready = wait_for_spare(KERNEL)
    check(ready, f"install leaves a spare kernel that preloads ({time.time() - start:.0f} s until it is ready)")
    if not ready:
        return
    cwd = os.path.realpath(os.path.join(out, "spare-cwd"))
    os.makedirs(cwd, exist_ok=True)
    env = dict(os.environ, MICROSCOPE_SPARE_CHECK="handed over")
    start = time.time()
    s = Session(env=env, cwd=cwd)
    server = None
    try:
        reply, msgs = s.execute("(std::os::unix::process::parent_id(), "
                                "std::env::var(\"MICROSCOPE_SPARE_CHECK\").unwrap_or_default(), "
                                "std::env::current_dir()?.display().to_string())")
        text = text_of(msgs)
        check(reply["status"] == "ok" and "handed over" in text and cwd in text,
              f"the kernel started from the spare sees the started process's environment and working directory "
              f"({time.time() - start:.1f} s from start to this cell's result: {text.strip()!r})")
        m = re.search(r"\((\d+),", text)
        server = int(m.group(1)) if m else None
        started = s.km.provisioner.pid
        check(server is not None and server != started,
              f"... and is the spare (cells run under process {server}, not under the started process {started})")
        t0 = time.time()
        reply, msgs = s.execute("zoo::fashion()?")
        check(reply["status"] == "ok" and any("microscope-root" in m["content"].get("data", {}).get("text/html", "")
                                              for m in msgs if m["msg_type"] == "execute_result"),
              f"... and shows a widget at once ({time.time() - t0:.1f} s)")
        # The spare made a widget in its warm-up cell, before anything listened on the bridge;
        # the widgets it makes as a kernel are live all the same.
        check(live_props(msgs) is not None,
              f"... and its widgets are live (they carry a handle to the kernel: {live_props(msgs)})")
        # rust-analyzer, in the kernel process, is shown only the crates the build uses
        # (kernel/src/crate_graph.rs); the whole graph `cargo metadata` lists held 2.4 GB.
        # Cells still see the user's cargo home (this test's: none).
        reply, msgs = s.execute("let home = std::env::var_os(\"CARGO_HOME\");\nformat!(\"{home:?}\")")
        rss = kernel_rss(server) if server else None
        held = "gone" if rss is None else f"{rss / 1e9:.2f} GB"
        check(reply["status"] == "ok" and "None" in text_of(msgs) and rss is not None and rss < 2.0e9,
              f"... holds under 2 GB ({held}), and its cells see the user's CARGO_HOME "
              f"({text_of(msgs).strip()!r})")
        # Once quiet, this kernel leaves a spare; a kill-restart (Jupyter's "restart" of a stuck
        # kernel) starts from it, and the client's first request must reach the new kernel, not
        # the old one on its way out.
        if wait_for_spare(KERNEL):
            s.km.restart_kernel(now=True)
            answered = kernel_info_within(s.kc, 5)
            check(answered is not None, f"after a kill-restart onto the spare it left, the first kernel_info is answered "
                                        f"({answered if answered is None else f'{answered:.2f} s'}, limit 5 s)")
            s.kc.wait_for_ready(timeout=60)
            reply, msgs = s.execute("std::os::unix::process::parent_id()")
            now_serving = text_of(msgs).strip()
            restarted = s.km.provisioner.pid
            check(reply["status"] == "ok" and now_serving not in ("", str(server), str(restarted)),
                  f"... and the restarted kernel is that spare (cells run under process {now_serving}, "
                  f"not the old kernel {server} nor the started process {restarted})")
        else:
            check(False, "the kernel from the spare leaves a spare of its own once quiet")
    finally:
        s.close()
    if server:
        deadline = time.time() + 10
        while os.path.exists(f"/proc/{server}") and time.time() < deadline:
            time.sleep(0.2)
        check(not os.path.exists(f"/proc/{server}"), "shutting that kernel down ends the spare that served it")


def kernel_rss(pid):
    """Resident memory of a process, in bytes; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_user_environment(out):
    """The kernel as a user's Jupyter starts it: no variable from cargo (the test scrubbed them,
    LD_LIBRARY_PATH above all), from folders at different depths; each shows the graph."""
    cargo_vars = sorted(k for k in os.environ if k.startswith(("CARGO", "RUSTUP", "RUSTC")) or k == "LD_LIBRARY_PATH")
    check(not cargo_vars, f"the kernels start without cargo's environment (found: {cargo_vars})")
    deep = os.path.realpath(os.path.join(out, *["deeper"] * 9))
    os.makedirs(deep, exist_ok=True)
    for cwd in ["/", deep]:
        start = time.time()
        s = Session(cwd=cwd)
        try:
            reply, msgs = s.execute("let model = zoo::fashion()?;\nmodel")
            shown = [m for m in msgs if m["msg_type"] == "execute_result"
                     and "microscope-root" in m["content"]["data"].get("text/html", "")
                     and "conv3" in m["content"]["data"].get("text/html", "")]
            check(reply["status"] == "ok" and len(shown) == 1,
                  f"a kernel started in {cwd} runs zoo::fashion()? and shows its graph "
                  f"({time.time() - start:.0f} s from start; {text_of(msgs)[-300:]!r})")
        finally:
            s.close()


def check_changed_toolchain(out):
    """A kernel whose pinned toolchain changed since install (`rustup update`) answers every cell
    with one line naming what to run again, instead of failing on a mismatched libstd."""
    spec_dir = os.path.join(os.environ["JUPYTER_PATH"].split(os.pathsep)[0], "kernels", KERNEL)
    with open(os.path.join(spec_dir, "kernel.json")) as f:
        spec = json.load(f)
    check(bool(spec.get("env", {}).get("MICROSCOPE_RUST_SYSROOT")),
          f"install pins the toolchain in kernel.json ({spec.get('env')})")
    changed = os.path.join(out, "changed-toolchain")
    os.makedirs(os.path.join(changed, "kernels", "microscope-changed"), exist_ok=True)
    spec["env"]["MICROSCOPE_RUSTC_VERSION"] = "rustc 1.0.0 (a59807616 2015-05-15)"
    with open(os.path.join(changed, "kernels", "microscope-changed", "kernel.json"), "w") as f:
        json.dump(spec, f)
    saved = os.environ["JUPYTER_PATH"]
    os.environ["JUPYTER_PATH"] = changed + os.pathsep + saved
    try:
        s = Session(kernel="microscope-changed")
        try:
            reply, msgs = s.execute("1 + 1", timeout=120)
            errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
            evalue = errors[0]["evalue"] if errors else ""
            check(reply["status"] == "error" and "changed from rustc 1.0.0" in evalue
                  and "tour.sh" in evalue and "\n" not in evalue,
                  f"a kernel whose toolchain changed since install says what to run again: {evalue!r}")
        finally:
            s.close()
    finally:
        os.environ["JUPYTER_PATH"] = saved


def oversized_frame(size):
    """What a peer that reaches a kernel port can send without its key: a ZMTP 3.0 greeting
    (rfc.zeromq.org/spec/23, NULL mechanism), READY as a DEALER, then the header of a frame of
    `size` bytes (flags: long size; the size as 8 big-endian bytes)."""
    greeting = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + bytes(32)
    body = b"\x05READY" + b"\x0bSocket-Type" + (6).to_bytes(4, "big") + b"DEALER"
    return greeting + bytes([0x04, len(body)]) + body + bytes([0x02]) + size.to_bytes(8, "big")


def dropped_after(host, port, data, timeout=5):
    """Sends `data` on a raw connection; whether the kernel then closes it."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.sendall(data)
        try:
            while raw.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            return False
    return True


def check_protocol(s):
    """Messages the kernel must not act on: a wrong signature, a replay, a frame too large to be
    anything but an attack; and a control request it does not handle is an error reply, not a
    claim of success."""
    info = s.km.get_connection_info()
    # 32 TiB, and one byte over the kernel's limit (transport::MAX_MESSAGE_SIZE): a size an
    # allocator grants, which libzmq without the limit would wait to fill.
    for size, what in [(1 << 45, "32 TiB frame"), ((64 << 20) + 1, "frame just over 64 MiB")]:
        dropped = dropped_after(info["ip"], info["shell_port"], oversized_frame(size))
        check(dropped, f"a peer announcing a {what} on the shell port is disconnected")
    answered = kernel_info_within(s.kc, 5)
    check(answered is not None, "... and the kernel still answers kernel_info "
                                f"({answered if answered is None else f'{answered:.2f} s'}, limit 5 s)")
    marker = os.path.join(tempfile.mkdtemp(), "ran")
    code = f"std::fs::write({marker!r}, \"x\")?;"
    wrong = jupyter_client.session.Session(key=b"not-the-key", username=s.kc.session.username)
    msg = wrong.msg("execute_request", {"code": code, "silent": False, "store_history": False,
                                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    wrong.send(s.kc.shell_channel.socket, msg)
    time.sleep(3)
    check(not os.path.exists(marker), "a request signed with another key runs nothing")
    msg = s.kc.session.msg("kernel_info_request")
    s.kc.shell_channel.send(msg)
    s.kc.shell_channel.send(msg)  # the very same frames again: a replay
    replies = []
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            m = s.kc.get_shell_msg(timeout=0.5)
        except queue.Empty:
            continue
        if m["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            replies.append(m)
    check(len(replies) == 1, f"a replayed request is refused ({len(replies)} replies to two copies)")
    s.kc.control_channel.send(s.kc.session.msg("frobnicate_request", {}))
    try:
        m = s.kc.control_channel.get_msg(timeout=10)
        status = m["content"].get("status")
    except queue.Empty:
        status = None
    check(status == "error", f"an unknown control request is answered with an error ({status})")


def check_session():
    # Spares off: this kernel starts cold and preloads itself.
    s = Session(env=dict(os.environ, MICROSCOPE_SPARE_IDLE_S="0"))
    try:
        start = time.time()
        reply, msgs = s.execute("let kept = 41;")
        check(reply["status"] == "ok", f"first cell ok ({time.time() - start:.1f} s after start)")

        reply, msgs = s.execute("let broken: u32 = \"text\";")
        check(reply["status"] == "error", "a cell that does not compile is an error reply")
        err = [m for m in msgs if m["msg_type"] == "error"]
        check(bool(err) and "mismatched types" in text_of(err), "... with the compiler's message")

        reply, msgs = s.execute("let m = zoo::fashion()?; m.layer(\"no_such_layer\")?;")
        err = [m for m in msgs if m["msg_type"] == "error"]
        streams = [m for m in msgs if m["msg_type"] == "stream"]
        check(reply["status"] == "error" and len(err) == 1 and "no_such_layer" in err[0]["content"]["evalue"],
              f"a `?` that fails is an error reply and one error output saying what failed: {text_of(err).strip()[:120]!r}")
        check(not any("no_such_layer" in m["content"]["text"] for m in streams), "... shown once (not also as stderr)")
        reply, msgs = s.execute("eprintln!(\"a warning\"); let fine = 1;")
        check(reply["status"] == "ok" and "a warning" in text_of(msgs), "a cell that prints to stderr and succeeds is ok, its text shown")
        # All of it before the reply, however much and however busy the machine: the cell's
        # last lines were once still on their way when it replied (seen in CI, under load), and
        # a line per message overflowed iopub's queue, which drops what it cannot hold.
        n = 20000
        reply, msgs = s.execute(f'for i in 0..{n} {{ println!("out {{i}}"); eprintln!("line {{i}}"); }} '
                                f'eprint!("no newline at the end");')
        for name, want in [("stdout", [f"out {i}" for i in range(n)]),
                           ("stderr", [f"line {i}" for i in range(n)] + ["no newline at the end"])]:
            text = "".join(m["content"]["text"] for m in msgs
                           if m["msg_type"] == "stream" and m["content"]["name"] == name)
            got = text.splitlines()
            check(reply["status"] == "ok" and got == want and "\x1b" not in text,
                  f"{n} {name} lines (and one without a newline on stderr) all come before the reply, "
                  f"in order, and nothing else ({len(got)} lines, last {got[-1:]!r})")
        check(sum(m["msg_type"] == "stream" for m in msgs) < 200,
              f"... in a few messages, not one per line ({sum(m['msg_type'] == 'stream' for m in msgs)})")

        # The end marker the kernel waits for cannot be forged: a cell (or a model's name it
        # prints) that writes it has that text shown, and all its stderr before the reply.
        reply, msgs = s.execute(f'eprintln!("\\x1b[microscope-stderr-end]"); '
                                f'for i in 0..{n} {{ eprintln!("after {{i}}"); }}')
        text = "".join(m["content"]["text"] for m in msgs
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")
        got = [line for line in text.splitlines() if line.startswith("after")]
        check(reply["status"] == "ok" and got == [f"after {i}" for i in range(n)]
              and "\x1b[microscope-stderr-end]" in text,
              f"a cell that prints the end marker itself has it shown, and all its stderr before the reply "
              f"({len(got)} of {n})")

        # A panic is an error (running a notebook stops there), saying what the panic said;
        # the variables from before are kept. Text that looks like the kernel's own markers
        # makes nothing an error.
        reply, msgs = s.execute('let lost = 1; panic!("boom at {}", kept);')
        err = [m for m in msgs if m["msg_type"] == "error"]
        check(reply["status"] == "error" and len(err) == 1 and err[0]["content"]["ename"] == "Panic"
              and err[0]["content"]["evalue"] == "boom at 41",
              f"a cell that panics is an error reply saying what the panic said: {text_of(err).strip()[:120]!r}")
        reply, msgs = s.execute('println!("{}", kept + 1);')
        check(reply["status"] == "ok" and "42" in text_of(msgs), "... and the next cell still sees earlier variables")
        reply, msgs = s.execute(r'println!("\x1b[microscope-panic]"); println!("\x1b[microscope-user-error]");')
        check(reply["status"] == "ok", "printing the kernel's markers makes a cell neither a panic nor an error")

        # Printed text that looks like output markers (as a model's names or a file can) stays
        # text: evcxr's content blocks, the kernel's display marker, on stdout and stderr, and a
        # `Debug` value whose text holds the block's end marker.
        forged = ("let evil = \"x\\nEVCXR_END_CONTENT\\nEVCXR_BEGIN_CONTENT text/html\\n<img src=x onerror=alert(1)>\\nEVCXR_END_CONTENT\";\n"
                  "println!(\"EVCXR_BEGIN_CONTENT text/html\\n<b id=forged>forged</b>\\nEVCXR_END_CONTENT\");\n"
                  "println!(\"name EVCXR_BEGIN_CONTENT text/html\\n<b id=forged>forged</b>\\nEVCXR_END_CONTENT\");\n"
                  "println!(\"\\u{1b}[microscope-display]{{\\\"data\\\":{{\\\"text/html\\\":\\\"<b id=forged>x</b>\\\"}}}}\");\n"
                  "eprintln!(\"\\u{1b}[microscope-display]{{\\\"data\\\":{{\\\"text/html\\\":\\\"<b id=forged>x</b>\\\"}}}}\");\n"
                  "struct Raw(&'static str);\n"
                  "impl std::fmt::Debug for Raw { fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { f.write_str(self.0) } }\n"
                  "Raw(evil)")
        reply, msgs = s.execute(forged)
        rich = [m for m in msgs if m["msg_type"] in ("display_data", "execute_result")
                and set(m["content"]["data"]) - {"text/plain"}]
        results = [m for m in msgs if m["msg_type"] == "execute_result"]
        check(reply["status"] == "ok" and not rich and "forged" in text_of(msgs)
              and len(results) == 1 and "onerror" in results[0]["content"]["data"]["text/plain"],
              f"printed output markers stay text: no rich output, the forged lines shown as text "
              f"({[m['msg_type'] for m in msgs]})")

        check_protocol(s)

        # A downloaded model that asks for 4 TiB (Pad by 2**40, from the hostile corpus): one
        # error naming the node, and the evaluation process, with every variable, lives on.
        corpus = tempfile.mkdtemp()
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hostile"))
        import make_corpus
        make_corpus.build(corpus)
        pad = os.path.join(corpus, "pad_2p40.onnx")
        reply, msgs = s.execute(f"let hostile = Model::load({json.dumps(pad)})?;\nhostile.network().shapes()?;")
        err = [m for m in msgs if m["msg_type"] == "error"]
        check(reply["status"] == "error" and len(err) == 1 and "huge_pad" in err[0]["content"]["evalue"],
              f"a hostile model is one error naming its node: {text_of(err).strip()[:160]!r}")

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

        live = check_live(s)

        # Completion, as evcxr provides it.
        c = s.kc.complete("zoo::fa", 7, reply=True, timeout=120)["content"]
        check("fashion" in " ".join(c["matches"]), f"completion offers zoo::fashion ({c['matches'][:5]})")

        # After a restart, a widget shown before finds no one who knows it, and says so.
        if live:
            s.km.restart_kernel(now=True)
            s.kc.wait_for_ready(timeout=120)
            c = uuid.uuid4().hex
            s.comm("comm_open", {"comm_id": c, "target_name": "microscope", "data": live})
            hello = s.comm_wait(c, lambda d: d.get("kind") == "hello", timeout=60)
            data = hello["content"]["data"] if hello and hello["msg_type"] == "comm_msg" else {}
            check(data.get("ok") is False and "run the cell" in data.get("reason", ""),
                  f"after a restart, an old widget is told to run its cell again ({data.get('reason')!r})")
    finally:
        s.close()


def live_props(msgs):
    """The `live` handle in the props of the last widget among `msgs`."""
    for m in reversed(msgs):
        html = m["content"].get("data", {}).get("text/html", "")
        found = re.search(r'<script type="application/json" id="[^"]+-props">(.*?)</script>', html, re.S)
        if found:
            return json.loads(found.group(1)).get("live")
    return None


def check_live(s):
    kind = lambda k: (lambda d: d.get("kind") == k)
    reply, msgs = s.execute('let live_layer = zoo::fashion()?.layer("conv3")?;\n'
                            'live_layer.gallery_of(0..8, &FeatureVis::default().steps(32).cache(None))?')
    live = live_props(msgs)
    check(reply["status"] == "ok" and bool(live), f"a gallery shown by the kernel carries a live handle ({live})")
    if not live:
        return None
    a = uuid.uuid4().hex
    s.comm("comm_open", {"comm_id": a, "target_name": "microscope", "data": live})
    hello = s.comm_wait(a, kind("hello"), timeout=60)
    check(bool(hello) and hello["content"]["data"].get("ok") is True, "its comm opens and the kernel knows the widget")
    s.comm("comm_msg", {"comm_id": a, "data": {"request": 1, "op": "units", "units": [12]}})
    got = s.comm_wait(a, kind("units"), timeout=300)
    cell = got["content"]["data"]["units"][0] if got and got["msg_type"] == "comm_msg" else {}
    check(cell.get("index") == 12 and str(cell.get("image", "")).startswith("data:image/png;base64,")
          and cell.get("activation") is not None,
          "an uncomputed unit requested over the comm comes back with its image and activation")
    done = s.comm_wait(a, kind("done"), timeout=60)
    check(bool(done) and done["content"]["data"].get("request") == 1, "... and the request ends with done")

    reply, msgs = s.execute('live_layer.gallery_of([], &FeatureVis::default().steps(1_000_000).cache(None))?')
    slow = live_props(msgs)
    b = uuid.uuid4().hex
    s.comm("comm_open", {"comm_id": b, "target_name": "microscope", "data": slow})
    s.comm_wait(b, kind("hello"), timeout=60)
    s.comm("comm_msg", {"comm_id": b, "data": {"request": 1, "op": "units", "units": [0]}})
    progress = s.comm_wait(b, kind("progress"), timeout=60)
    check(bool(progress), "a long request reports progress")
    reply, msgs = s.execute("kept + 1")
    results = [m for m in msgs if m["msg_type"] == "execute_result"]
    ended = [m for m in s.stash if m["content"].get("comm_id") == b and m["content"]["data"].get("kind") in ("done", "cancelled", "error")]
    check(bool(results) and results[0]["content"]["data"]["text/plain"].strip() == "42" and not ended,
          "a cell runs while the request runs")
    t0 = time.time()
    s.comm("comm_msg", {"comm_id": b, "data": {"op": "cancel"}})
    stopped = s.comm_wait(b, kind("cancelled"), timeout=30)
    waited = time.time() - t0
    check(bool(stopped) and waited < 1.0, f"cancelling stops it in {waited:.2f} s")

    s.comm("comm_msg", {"comm_id": b, "data": {"request": 2, "op": "units", "units": [1]}})
    s.comm_wait(b, kind("progress"), timeout=60)
    s.comm("comm_close", {"comm_id": b, "data": {}})
    # Requests run one at a time: this one finishes only if closing the comm stopped the other.
    t0 = time.time()
    s.comm("comm_msg", {"comm_id": a, "data": {"request": 2, "op": "units", "units": [13]}})
    done = s.comm_wait(a, kind("done"), timeout=120)
    check(bool(done), f"closing a comm cancels its request (the next one finished in {time.time() - t0:.1f} s)")

    info = s.kc.comm_info(target_name="microscope", reply=True, timeout=30)["content"]
    check(a in info.get("comms", {}) and b not in info.get("comms", {}), "comm_info lists the open comms")
    other = uuid.uuid4().hex
    s.comm("comm_open", {"comm_id": other, "target_name": "not-microscope", "data": {}})
    closed = s.comm_wait(other, lambda d: False, timeout=30)
    check(bool(closed) and closed["msg_type"] == "comm_close", "a comm to an unknown target is closed")
    return live


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    # Each part says how long it took: CI must stay under an hour, and this test is its longest.
    for part, args in [(check_spare, (out,)), (check_user_environment, (out,)),
                       (check_changed_toolchain, (out,)), (check_session, ()),
                       (run_notebooks, (src, out))]:
        start = time.time()
        part(*args)
        print(f"-- {part.__name__}: {time.time() - start:.0f} s", flush=True)
    print(f"{failed} kernel checks failed" if failed else "all kernel checks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
