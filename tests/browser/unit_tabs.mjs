// A unit view page in headless Chromium: it mounts, every tab shows its own panel with content
// (none says why it could not be computed), nothing logs an error or asks the network, and each
// tab is saved as a screenshot.
//   node unit_tabs.mjs PAGE.html SCREENSHOTS_DIR NAME
import path from "node:path";
import { launch, watchProblems } from "./lab.mjs";

const [file, shots, name] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const problems = watchProblems(page);
let failed = 0;
const check = (ok, what) => { console.log((ok ? "ok   " : "FAIL ") + what); if (!ok) failed += 1; };
await page.goto("file://" + path.resolve(file));
await page.waitForSelector(".microscope-root > :not(.ms-loading)");
const tabs = await page.$$eval(".ms-tab", (ts) => ts.map((t) => t.dataset.tab));
check(tabs.length >= 6, `${name}: ${tabs.length} tabs (${tabs.join(", ")})`);
for (const id of tabs) {
  await page.click(`.ms-tab[data-tab="${id}"]`);
  const panel = page.locator(`.ms-panel[data-tab="${id}"]`);
  const unavailable = await panel.locator(".ms-unavailable").count();
  const images = await panel.locator("img, svg").count();
  check(unavailable === 0 && images > 0, `${name}: tab ${id} shows ${images} images and no "unavailable"`);
  await page.waitForTimeout(100);
  await page.screenshot({ path: path.join(shots, `${name}-${id}.png`), fullPage: true });
}
check(problems.length === 0, `${name}: no console errors or network requests ${problems.join("; ")}`);
await browser.close();
process.exit(failed ? 1 : 0);
