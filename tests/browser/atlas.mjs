// The atlas site written by tests/atlas.rs, in headless Chromium, from file://:
//   node atlas.mjs SITE_DIR LAYER UNIT
//   node atlas.mjs SITE_DIR --hostile     (a site of tests/support's hostile node names)
// Opens index.html, clicks LAYER in the graph and then its page link, clicks unit UNIT in the
// gallery, and on the unit's page opens each tab (each shows its own panel); follows the unit
// page's links (next, layer, graph). Then opens every page of the site: each mounts, shows no
// widget error, logs no console error and fetches nothing from the network; with --hostile,
// only that walk, where also no script from the names runs and no element from them exists.
import { launch, watchProblems } from "./lab.mjs";
import fs from "node:fs";
import path from "node:path";

const [site, layer, unit] = process.argv.slice(2);
const hostile = layer === "--hostile";
const browser = await launch();
let failed = 0;
function check(ok, what) {
  console.log((ok ? "ok   " : "FAIL ") + what);
  if (!ok) failed += 1;
}
const url = (file) => "file://" + path.resolve(site, file);
const mounted = (page) => page.waitForSelector(".microscope-root > :not(.ms-loading)");

const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const problems = watchProblems(page);
let dialogs = 0;
page.on("dialog", (d) => { dialogs += 1; d.dismiss(); });
if (!hostile) {
await page.goto(url("index.html"));
await mounted(page);
await page.locator(`g[data-node][data-name="${layer}"]`).first().click();
await page.locator("a.ms-page-link").click();
const gallery = new RegExp(`/${layer}/index\\.html$`);
await page.waitForURL(gallery);
await mounted(page);
check((await page.locator(".ms-cell").count()) > 0,
  `a click on ${layer} in the graph and its page link opens its gallery (${page.url()})`);
await page.locator(`.ms-cell[data-unit="${unit}"] a.ms-cell-link img`).first().click();
await page.waitForURL(new RegExp(`/${unit}\\.html$`));
await mounted(page);
const tabs = await page.locator("button.ms-tab").evaluateAll((b) => b.map((x) => x.dataset.tab));
check(tabs.length > 0, `the unit's page has ${tabs.length} tabs`);
for (const tab of tabs) {
  await page.locator(`button.ms-tab[data-tab="${tab}"]`).click();
  const shown = await page.locator(".ms-panel").evaluateAll((ps) => ps.filter((p) => !p.hidden).map((p) => p.dataset.tab));
  check(shown.length === 1 && shown[0] === tab, `tab ${tab} shows its own panel (${shown})`);
}
await page.locator('button.ms-tab[data-tab="feature-vis"]').click();
const images = await page.locator('.ms-panel[data-tab="feature-vis"] img.ms-px').count();
check(images >= 2, `the feature-visualization tab shows its images (${images})`);
await page.locator("a.ms-nav-next").click();
await page.waitForURL(new RegExp(`/${Number(unit) + 1}\\.html$`));
await mounted(page);
check(true, "next unit");
await page.locator("a.ms-nav-layer").click();
await page.waitForURL(gallery);
await mounted(page);
await page.locator("a.ms-nav-graph").click();
await page.waitForURL(url("index.html"));
await mounted(page);
check(problems.length === 0, `no console errors or network requests on the way ${problems.join("; ")}`);
}

// Every page mounts.
const pages = [];
const walk = (dir) => fs.readdirSync(dir, { withFileTypes: true }).forEach((e) => {
  const p = path.join(dir, e.name);
  if (e.isDirectory() && e.name !== "store" && e.name !== "assets") walk(p);
  else if (e.name.endsWith(".html")) pages.push(path.relative(site, p));
});
walk(site);
const broken = [];
for (const file of pages) {
  problems.length = 0;
  await page.goto(url(file));
  await mounted(page);
  const error = await page.locator(".ms-error").count();
  if (error || problems.length) broken.push(file + " " + problems.join("; "));
  if (hostile) {
    const ran = await page.evaluate(() => window.__pwned);
    const elements = await page.locator('img[src="x"], b[onmouseover]').count();
    if (ran !== undefined || elements) broken.push(`${file}: script ran (${ran}) or ${elements} elements from names`);
  }
}
check(pages.length > 0 && broken.length === 0, `each of ${pages.length} pages mounts without errors ${broken.slice(0, 3).join(" | ")}`);
check(dialogs === 0, `no dialog opened (${dialogs})`);
await browser.close();
process.exit(failed ? 1 : 0);
