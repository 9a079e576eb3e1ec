// What the JupyterLab checks share (jupyterlab.mjs, hostile_lab.mjs): the browser, and a notebook
// page opened until its kernel is there. The server runs with --LabApp.expose_app_in_browser and
// --JupyterNotebookApp.expose_app_in_browser, so `window.jupyterapp` is the app.
import { chromium } from "playwright-core";

export const launch = () => chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

// Opens `notebook` (a page path under the server) and waits until it is the current document
// and its kernel is connected. (JupyterLab restores the documents its workspace had open, and one
// of those may come up as the current one first.)
export async function openNotebook(page, base, token, notebook) {
  await page.goto(`${base}/${notebook}?token=${token}`, { waitUntil: "load" });
  const file = notebook.split("/").pop();
  await page.waitForFunction((file) => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    return w && w.context && w.context.path.split("/").pop() === file && w.sessionContext
      && w.sessionContext.session && w.sessionContext.session.kernel;
  }, file, { timeout: 120000 });
}

// Resolves once the current notebook's kernel is idle.
export const kernelIdle = (page, timeout) => page.waitForFunction(
  () => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === "idle",
  null, { timeout });

// What a standalone widget page must never do, collected as it happens: log an error, throw, or
// ask the network for anything (pages are self-contained).
export function watchProblems(page) {
  const problems = [];
  page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith("file:") && !u.startsWith("data:")) problems.push("network request: " + u);
  });
  return problems;
}
