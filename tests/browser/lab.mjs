// What the JupyterLab checks share (jupyterlab.mjs, hostile_lab.mjs): the browser, and a notebook
// page opened until its kernel is there. The server runs with --LabApp.expose_app_in_browser and
// --JupyterNotebookApp.expose_app_in_browser, so `window.jupyterapp` is the app.
import { chromium } from "playwright-core";

export const launch = () => chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

// Opens `notebook` (a page path under the server) and waits until its kernel is connected.
export async function openNotebook(page, base, token, notebook) {
  await page.goto(`${base}/${notebook}?token=${token}`, { waitUntil: "load" });
  await page.waitForFunction(() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  }, null, { timeout: 120000 });
}

// Resolves once the current notebook's kernel is idle.
export const kernelIdle = (page, timeout) => page.waitForFunction(
  () => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === "idle",
  null, { timeout });
