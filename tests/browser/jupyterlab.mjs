// Live widgets in JupyterLab: a real JupyterLab server (from the test venv, with the microscope
// kernel and its front-end extension installed into a temporary prefix) opened in headless
// Chromium. Runs the tour notebook, then clicks a unit of its live gallery that was not
// computed and waits for the kernel to fill in its feature visualization; opens a tab of that
// unit's view that was not computed either and waits for it; selects a layer in the graph and
// asks for its gallery. Also checks that every microscope widget of the tour mounted in
// JupyterLab.
// The same in Notebook 7 (`notebooks/…` pages of the same server).
//   node jupyterlab.mjs BASE_URL TOKEN PAGE LABEL SCREENSHOTS_DIR
// PAGE: `lab/tree/01-tour.ipynb` (JupyterLab) or `notebooks/01-tour.ipynb` (Notebook 7).
import { launch, openNotebook, kernelIdle } from "./lab.mjs";
import path from "node:path";

const [base, token, notebook, label, shots] = process.argv.slice(2);
const shot = label.toLowerCase().replace(/[^a-z0-9]+/g, "-");
let failed = 0;
const check = (ok, what) => { console.log((ok ? "ok   " : "FAIL ") + label + ": " + what); if (!ok) failed += 1; };
const t0 = Date.now();
const since = () => ((Date.now() - t0) / 1000).toFixed(0) + " s";

// The server is starting: wait until it answers.
for (let i = 0; ; i++) {
  try {
    const r = await fetch(`${base}/api/status?token=${token}`);
    if (r.ok) break;
  } catch (e) { /* not up yet */ }
  if (i > 120) { console.log("FAIL JupyterLab did not start"); process.exit(1); }
  await new Promise((r) => setTimeout(r, 500));
}

const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const problems = [];
// Errors thrown inside the front end's own bundles are its own (Notebook 7.6 throws one on
// every page load, with or without microscope): reported, not counted.
const own = /\/static\/(notebook|lab)\//;
page.on("pageerror", (e) => {
  const frame = (e.stack || "").split("\n").find((l) => l.includes(" at ")) || "";
  if (own.test(frame)) console.log(`note ${label}: the front end's own error: ${e.message}`);
  else problems.push("page error: " + e.message);
});
page.on("console", (m) => {
  if (m.type() === "error" && /microscope/i.test(m.text())) problems.push("console: " + m.text());
});
// JupyterLab 4 and Notebook 7 render only the cells near the viewport (windowing): the widget
// of a cell far above the one just used may not be in the page at all. Scroll the notebook up
// until it is, then to it.
async function reveal(page, locator) {
  for (let k = 0; k < 60 && (await locator.count()) === 0; k++) {
    await page.evaluate(() => {
      const outer = document.querySelector(".jp-WindowedPanel-outer") || document.querySelector(".jp-Notebook");
      if (outer) outer.scrollBy(0, -outer.clientHeight / 2);
    });
    await page.waitForTimeout(250);
  }
  await locator.scrollIntoViewIfNeeded();
}

try {
  await openNotebook(page, base, token, notebook);
  check(await page.evaluate(() => !!window.microscopeJupyter), "the microscope front-end extension is loaded");
  // A script in the page (any notebook output's HTML) reaches only a comm to "microscope"
  // through it: no kernel, session or app in what it hands out, and nothing to replace.
  const exposed = await page.evaluate(() => {
    const host = window.microscopeJupyter;
    const handle = host.openComm(document.querySelector(".jp-Notebook, .jp-NotebookPanel") || document.body, {});
    const seen = (o) => (o ? Object.getOwnPropertyNames(o).sort().join(",") : "null");
    const out = { host: seen(host), handle: seen(handle) };
    try { window.microscopeJupyter = { openComm: () => "forged" }; } catch (e) { /* strict mode */ }
    out.replaced = window.microscopeJupyter !== host;
    if (handle) handle.close();
    return out;
  });
  check(exposed.host === "openComm,version" && exposed.handle === "close,onClose,onMsg,send" && !exposed.replaced,
    `the extension hands page scripts only a comm to "microscope" (host: ${exposed.host}; handle: ${exposed.handle})`);
  await page.evaluate(() => window.jupyterapp.commands.execute("notebook:run-all-cells"));
  // The tour's partly computed gallery (its full gallery is connected too, with nothing to do).
  const gallery = page.locator('.microscope-root[data-component="Gallery"][data-live="connected"]')
    .filter({ has: page.locator(".ms-empty") });
  await gallery.first().waitFor({ timeout: 900000 });
  check(true, `after running the tour (${since()}), its live gallery is connected to the kernel`);
  // Wait for the last cell to finish, then look at every widget.
  await kernelIdle(page, 600000);
  const roots = await page.locator(".microscope-root").count();
  const waiting = await page.locator(".microscope-root .ms-loading, .microscope-root .ms-error").count();
  check(roots >= 5 && waiting === 0, `all ${roots} microscope widgets of the tour mounted`);

  const live = gallery.first();
  const empty = live.locator(".ms-cell:has(.ms-empty)");
  const before = await empty.count();
  const cell = empty.first();
  const unit = await cell.getAttribute("data-unit");
  await cell.scrollIntoViewIfNeeded();
  await cell.click();
  const unitCell = live.locator(`.ms-cell[data-unit="${unit}"]`);
  await unitCell.locator("img").waitFor({ timeout: 300000 });
  const after = await empty.count();
  check(after === before - 1, `clicking uncomputed unit ${unit} computes its feature visualization (${since()})`);
  const shown = live.locator('.ms-gallery-detail .ms-panel[data-tab="feature-vis"] img');
  await shown.first().waitFor({ timeout: 60000 });
  check(true, "... and its inline view shows the image");
  await live.locator('.ms-gallery-detail .ms-tab[data-tab="weights"]').click();
  await live.locator('.ms-gallery-detail .ms-panel[data-tab="weights"] .ms-weight').first().waitFor({ timeout: 300000 });
  check(true, `opening its Weights tab computes the expanded weights in the kernel (${since()})`);
  await live.scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(shots, `${shot}-live.png`) });

  // The layer graph: select a layer, ask for its gallery, see its first units computed.
  const graph = page.locator('.microscope-root[data-component="LayerGraph"][data-live="connected"]').first();
  await reveal(page, graph);
  await graph.locator('.ms-node[data-name="conv1"]').click();
  await graph.locator(".ms-graph-gallery-button").click();
  await page.waitForFunction(() => {
    const g = document.querySelector('.microscope-root[data-component="LayerGraph"] .ms-graph-gallery');
    return g && g.querySelectorAll(".ms-cell img").length >= 8;
  }, null, { timeout: 300000 });
  const shownCells = await graph.locator(".ms-graph-gallery .ms-cell").count();
  check(shownCells === 32, `a layer selected in the graph shows its gallery of ${shownCells} units, the first 8 computed in the kernel (${since()})`);
  await graph.locator(".ms-graph-gallery").scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(shots, `${shot}-graph-gallery.png`) });
} catch (e) {
  check(false, "live widgets: " + e.message.split("\n")[0]);
  await page.screenshot({ path: path.join(shots, `${shot}-failure.png`) }).catch(() => {});
}
check(problems.length === 0, `no page errors ${problems.join("; ")}`);
await browser.close();
process.exit(failed ? 1 : 0);
