// microscope's front-end extension for JupyterLab 4 and Notebook 7: it lets a microscope widget
// in a notebook output find the kernel of the notebook it sits in, so that the widget can open
// a comm to that kernel (target "microscope") and compute what it does not show yet.
//
// `microscope-kernel install` writes this file, with a package.json naming it, into Jupyter's
// labextensions folder. It is a module container in the shape JupyterLab loads prebuilt
// extensions in (a global `_JUPYTERLAB[name]` with `init` and `get`), written by hand: it
// shares no modules and needs no build step.
(function () {
  const name = "microscope-jupyter";
  const plugin = {
    id: name + ":kernel-finder",
    description: "Lets microscope widgets reach the kernel of their notebook (live widgets).",
    autoStart: true,
    activate: (app) => {
      window.microscopeJupyter = {
        version: 1,
        // The kernel of the notebook (or console) whose page holds `node`, or null.
        kernelFor(node) {
          for (const widget of app.shell.widgets("main")) {
            if (!widget.node || !widget.node.contains(node)) continue;
            const session = widget.sessionContext && widget.sessionContext.session;
            return session && session.kernel ? session.kernel : null;
          }
          return null;
        },
      };
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
