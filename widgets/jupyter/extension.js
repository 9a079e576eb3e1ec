// microscope's front-end extension for JupyterLab 4 and Notebook 7: it lets a microscope widget
// in a notebook output open a comm (target "microscope") to the kernel of the notebook it sits
// in, so that the widget can compute what it does not show yet.
//
// It hands page scripts that one capability and nothing else: never the kernel, its session or
// the app. Any script in a notebook's outputs can call it (a trusted notebook's HTML runs in the
// page), and a kernel object in its hands could execute arbitrary code; a comm to "microscope"
// can only ask the kernel for what the microscope widgets it displayed compute.
//
// `microscope-kernel install` writes this file, with a package.json naming it, into Jupyter's
// labextensions folder. It is a module container in the shape JupyterLab loads prebuilt
// extensions in (a global `_JUPYTERLAB[name]` with `init` and `get`), written by hand: it
// shares no modules and needs no build step.
(function () {
  const name = "microscope-jupyter";
  const TARGET = "microscope";
  // The kernel of the notebook (or console) whose page holds `node`, or null. Stays in here.
  const kernelFor = (app, node) => {
    for (const widget of app.shell.widgets("main")) {
      if (!widget.node || !widget.node.contains(node)) continue;
      const session = widget.sessionContext && widget.sessionContext.session;
      return session && session.kernel ? session.kernel : null;
    }
    return null;
  };
  const plugin = {
    id: name + ":comms",
    description: "Lets microscope widgets open a comm to the kernel of their notebook (live widgets).",
    autoStart: true,
    activate: (app) => {
      const host = {
        version: 2,
        // Opens a comm to target "microscope" on the kernel of the notebook holding `node`,
        // sending `data` with the open; null when there is no kernel there. The handle has only
        // send(data), close(), and the callbacks onMsg(data) and onClose() to set.
        openComm(node, data) {
          const kernel = kernelFor(app, node);
          if (!kernel) return null;
          const comm = kernel.createComm(TARGET);
          const handle = { onMsg: null, onClose: null };
          comm.onMsg = (msg) => { if (handle.onMsg) handle.onMsg(msg.content.data || {}); };
          comm.onClose = () => { if (handle.onClose) handle.onClose(); };
          handle.send = (d) => { comm.send(d); };
          handle.close = () => { comm.close(); };
          Object.seal(handle);
          comm.open(data);
          return handle;
        },
      };
      Object.defineProperty(window, "microscopeJupyter", {
        value: Object.freeze(host),
        writable: false,
        configurable: false,
      });
    },
  };
  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB[name] = {
    init: () => Promise.resolve(),
    get: (module) =>
      module === "./extension"
        ? Promise.resolve(() => ({ __esModule: true, default: [plugin] }))
        : Promise.reject(new Error(name + " has no module " + module)),
  };
})();
