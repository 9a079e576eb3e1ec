// A downloaded model with hostile node names, opened in a real JupyterLab (headless Chromium):
// runs tests/kernel/hostile_notebook.py's notebook (load the model, display it, print its node
// names, show a gallery of its first layer) and checks that no script from the names ran, no
// element from them exists, the names show as text, and no output appeared other than the
// microscope widgets and the printed text.
//   node hostile_lab.mjs BASE_URL TOKEN PAGE SCREENSHOTS_DIR
// PAGE: `lab/tree/hostile.ipynb`; the server is the one kernel/tests/notebooks.rs started.
import { launch, openNotebook, kernelIdle } from "./lab.mjs";
import path from "node:path";

const [base, token, notebook, shots] = process.argv.slice(2);
const label = "JupyterLab, hostile model";
let failed = 0;
const check = (ok, what) => { console.log((ok ? "ok   " : "FAIL ") + label + ": " + what); if (!ok) failed += 1; };

const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const dialogs = [];
page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
try {
  await openNotebook(page, base, token, notebook);
  await page.evaluate(() => window.jupyterapp.commands.execute("notebook:run-all-cells"));
  // The last cell's gallery, mounted: by then every cell ran.
  await page.locator('.microscope-root[data-component="Gallery"] .ms-cell img').first().waitFor({ timeout: 600000 });
  await kernelIdle(page, 300000);
  await page.waitForTimeout(1000);
  const seen = await page.evaluate(() => {
    const outputs = [...document.querySelectorAll(".jp-OutputArea-output")];
    const kinds = outputs.map((o) => {
      if (o.querySelector(".microscope-root")) return "widget";
      if (o.classList.contains("jp-RenderedText")) {
        return o.getAttribute("data-mime-type") === "application/vnd.jupyter.stderr" ? "stderr" : "text";
      }
      return "other:" + (o.getAttribute("data-mime-type") || o.className);
    });
    // The kernel defuses a printed evcxr marker with a zero-width space; a reader sees the text.
    const text = outputs.map((o) => o.textContent).join("\n").replace(/\u200b/g, "");
    return {
      pwned: window.__pwned === undefined ? null : String(window.__pwned),
      // Elements the names would make if they became markup (a widget's own scripts are its
      // component library and its props, which hold the names as JSON text).
      injected: [...document.querySelectorAll('img[src="x"], b.forged, script')]
        .filter((e) => e.tagName !== "SCRIPT" || /__pwned/.test(e.text) && e.type !== "application/json")
        .map((e) => e.outerHTML.slice(0, 80)),
      kinds,
      printedMarkup: text.includes('onerror="window.__pwned=1"'),
      printedMarkers: text.includes("EVCXR_BEGIN_CONTENT"),
      widgets: document.querySelectorAll(".microscope-root").length,
      errors: document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').length,
    };
  });
  check(seen.pwned === null && dialogs.length === 0, `no script from the model's names ran (window.__pwned: ${seen.pwned})`);
  check(seen.injected.length === 0, `no element from the names exists (${seen.injected.join(" | ")})`);
  check(seen.printedMarkup && seen.printedMarkers, "the printed names show as text, markup and markers included");
  check(seen.errors === 0, `no cell failed (${seen.errors} error outputs)`);
  const other = seen.kinds.filter((k) => k !== "widget" && k !== "text");
  check(seen.widgets >= 2 && other.length === 0,
    `the outputs are the widgets (${seen.widgets}) and the printed text only (${seen.kinds.join(", ")})`);
  await page.screenshot({ path: path.join(shots, "jupyterlab-hostile.png"), fullPage: true });
} catch (e) {
  check(false, "hostile notebook: " + e.message.split("\n")[0]);
  await page.screenshot({ path: path.join(shots, "jupyterlab-hostile-failure.png") }).catch(() => {});
}
await browser.close();
process.exit(failed ? 1 : 0);
