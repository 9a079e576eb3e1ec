// A notebook exported by nbconvert (--execute, microscope kernel) opened in headless Chromium:
// every microscope widget mounts (none is left on its "needs JavaScript" placeholder), the page
// logs no errors from them, and a gallery that was only partly computed (live in the notebook)
// shows what it has and says how to compute the rest.
//   node exported.mjs PAGE.html SCREENSHOTS_DIR
import { chromium } from "playwright-core";
import path from "node:path";

const [page_file, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const problems = [];
// nbconvert's template asks CDNs for MathJax and fonts; offline those fail, which is not ours.
page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(m.text()); });
page.on("pageerror", (e) => problems.push(e.message));
await page.goto("file://" + path.resolve(page_file), { waitUntil: "load" });
await page.waitForTimeout(500);
const roots = await page.locator(".microscope-root").count();
const waiting = await page.locator(".microscope-root .ms-loading").count();
const components = await page.$$eval(".microscope-root", (rs) => rs.map((r) => r.dataset.component));
let failed = 0;
const check = (ok, what) => { console.log((ok ? "ok   " : "FAIL ") + what); if (!ok) failed += 1; };
check(roots >= 3, `exported tour: ${roots} widgets (${components.join(", ")})`);
check(waiting === 0, "exported tour: every widget mounted");
check(problems.length === 0, `exported tour: no page errors ${problems.join("; ")}`);
const partial = page.locator('.microscope-root[data-component="Gallery"]').filter({ has: page.locator(".ms-empty") });
const partialCount = await partial.count();
const note = partialCount ? await partial.first().locator(".ms-gallery-status").textContent() : "";
const pictures = partialCount ? await partial.first().locator(".ms-cell img").count() : 0;
check(partialCount === 1 && note.includes("run the cell to compute") && pictures === 8,
  `exported tour: the live gallery keeps its ${pictures} computed units and says "${note.trim()}"`);
if (partialCount) {
  await partial.first().locator(".ms-cell:has(.ms-empty)").first().click();
  const text = await partial.first().locator('.ms-gallery-detail .ms-panel[data-tab="feature-vis"]').textContent();
  check(text.includes("run the cell"), "exported tour: an uncomputed unit's view says to run the cell to compute it");
}
await page.screenshot({ path: path.join(shots, "exported-tour.png"), fullPage: true });
await browser.close();
process.exit(failed ? 1 : 0);
