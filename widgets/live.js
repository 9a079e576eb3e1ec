// Live widgets: the channel from a widget to the kernel that displayed it.
//
// A widget whose props carry `live` ({session, widget}) asks the microscope front-end extension
// (installed with the kernel into JupyterLab and Notebook 7; it defines
// `window.microscopeJupyter`) to open a comm to target "microscope" on the kernel of the notebook
// holding the widget (the extension hands out that comm only, never the kernel). The kernel relays it to the process that made the widget, which
// answers requests with progress, results and a final done / cancelled / error.
//
// Without the extension (exported HTML, VS Code), without a kernel, or when the kernel no longer
// knows the widget (it restarted), there is no channel: the widget shows what it was given and
// says how to compute the rest.

// Resolves to {channel} or {reason} (why there is none).
microscope.connect = function (root, live) {
  const host = window.microscopeJupyter;
  if (!live) return Promise.resolve({ reason: null });
  if (!host || typeof host.openComm !== "function") return Promise.resolve({ reason: "no live kernel here" });
  return new Promise((resolve) => {
    let comm = null;
    try { comm = host.openComm(root, { session: live.session, widget: live.widget }); } catch (e) { comm = null; }
    if (!comm) { resolve({ reason: "no live kernel here" }); return; }
    const handlers = new Map();
    let next = 0, closed = false, settled = false;
    const settle = (v) => { if (!settled) { settled = true; resolve(v); } };
    const finish = (d) => ["done", "cancelled", "error"].includes(d.kind);
    const channel = {
      // Sends a request; `on` receives every message about it. A newer request cancels the
      // running one (the kernel side answers it `cancelled`).
      request(args, on) {
        if (closed) { on({ kind: "error", message: "the kernel connection is closed" }); return -1; }
        const id = ++next;
        handlers.set(id, on);
        comm.send(Object.assign({ request: id }, args));
        return id;
      },
      cancel() { if (!closed) comm.send({ op: "cancel" }); },
      close() { if (!closed) { closed = true; comm.close(); } },
    };
    comm.onMsg = (d) => {
      if (d.kind === "hello") { settle(d.ok ? { channel } : { reason: d.reason || "the kernel does not know this widget" }); return; }
      const on = handlers.get(d.request);
      if (!on) return;
      if (finish(d)) handlers.delete(d.request);
      on(d);
    };
    comm.onClose = () => {
      closed = true;
      settle({ reason: "the kernel closed the connection" });
      handlers.forEach((on) => on({ kind: "error", message: "the kernel connection closed" }));
      handlers.clear();
    };
    // Closing the widget (clearing or re-running its cell) closes the comm, which cancels its
    // request in the kernel.
    const watch = setInterval(() => {
      if (!root.isConnected) { clearInterval(watch); channel.close(); }
    }, 1000);
    setTimeout(() => settle({ reason: "the kernel did not answer" }), 15000);
  });
};

// A progress bar: `set(fraction | null, label)`; null is "working" without a known fraction.
microscope.progress = function () {
  const el = microscope.el;
  const fill = el("div", {});
  const bar = el("div", { class: "ms-progress", role: "progressbar" }, [fill]);
  const label = el("span", { class: "ms-muted" });
  const node = el("div", { class: "ms-live-progress" }, [label, bar]);
  node.set = (fraction, text) => {
    label.textContent = text || "";
    const unknown = fraction === null || fraction === undefined;
    bar.classList.toggle("ms-indeterminate", unknown);
    if (unknown) fill.style.width = "";
    else {
      fill.style.width = (100 * Math.max(0, Math.min(1, fraction))).toFixed(1) + "%";
      bar.setAttribute("aria-valuenow", Math.round(100 * fraction));
    }
  };
  return node;
};
