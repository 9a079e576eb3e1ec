// Behaviour of the widget pages written by tests/widgets.rs, in headless Chromium:
//   node widgets.mjs PAGES_DIR SCREENSHOTS_DIR
// Checks: the graph renders every node and shows a clicked node's name and shape; search marks
// matches; each unit-view tab shows its own panel, and the attribution tab's method selector
// shows one method's heatmap at a time; gallery hover enlarges and sorting sorts; no page logs
// a console error or fetches anything from the network; hostile node names render as text and
// run nothing; neuron groups against classes draw a table of bars. Export: every image has a download control for its PNG, the provenance footer
// shows the seed and expands to the record, and "save page" downloads a standalone page that
// works on its own. Saves light and dark screenshots of the three widgets.
import { chromium } from "playwright-core";
import { watchProblems } from "./lab.mjs";
import fs from "node:fs";
import path from "node:path";

const [pages, shots] = process.argv.slice(2);
const manifest = JSON.parse(fs.readFileSync(path.join(pages, "manifest.json"), "utf8"));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let failed = 0;
function check(ok, what) {
  console.log((ok ? "ok   " : "FAIL ") + what);
  if (!ok) failed += 1;
}

async function open(file, scheme) {
  const context = await browser.newContext({ colorScheme: scheme, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = watchProblems(page);
  await page.goto("file://" + path.resolve(pages, file));
  await page.waitForSelector(".microscope-root > :not(.ms-loading)");
  return { page, problems, context };
}

async function done(file, o) {
  check(o.problems.length === 0, `${file}: no console errors or network requests ${o.problems.join("; ")}`);
  await o.context.close();
}

// Every PNG image has a download link to the same PNG, with a safe file name.
async function downloadsOnEveryImage(page, file) {
  const images = await page.$$eval(".microscope-root img", (imgs) => imgs.filter((i) => i.src.startsWith("data:image/png")).map((i) => {
    const a = i.parentElement.querySelector(":scope > a.ms-download");
    return { ok: !!a && a.href === i.src, name: a ? a.getAttribute("download") : "" };
  }));
  const bad = images.filter((i) => !i.ok || !/^[A-Za-z0-9_.-]+\.png$/.test(i.name));
  check(images.length > 0 && bad.length === 0, `${file}: each of ${images.length} images has a PNG download link with a safe name (${bad.length} without${bad.length ? ": " + bad[0].name : ""})`);
  return images;
}

// The provenance footer: visible, naming the seed and steps, and expanding to the record.
async function footer(page, file, want) {
  const line = page.locator(".microscope-root > .ms-provenance .ms-provenance-line").first();
  const text = (await line.isVisible()) ? await line.textContent() : "";
  check(want.every((w) => text.includes(w)), `${file}: the provenance footer shows ${want.join(", ")} (${text})`);
  await line.click();
  const record = JSON.parse(await page.locator(".microscope-root > .ms-provenance .ms-provenance-record").first().textContent());
  check(record.model_sha256 === manifest.sha256, `${file}: ... and expands to the full record`);
  await line.click();
}

// "save page": downloads the widget as a page, which is written next to the others and opened.
async function savePage(page, file) {
  const [download] = await Promise.all([page.waitForEvent("download"), page.locator(".ms-save-page").first().click()]);
  const name = download.suggestedFilename();
  check(/^[A-Za-z0-9_.-]+\.html$/.test(name), `${file}: save page downloads ${name}`);
  const saved = "saved_" + file;
  await download.saveAs(path.join(pages, saved));
  return saved;
}

async function shot(o, name, scheme) {
  await o.page.waitForTimeout(150);
  await o.page.screenshot({ path: path.join(shots, `${name}-${scheme}.png`), fullPage: true });
}

// Layer graph: GoogLeNet and DenseNet-121.
for (const scheme of ["light", "dark"]) {
  const o = await open("graph.html", scheme);
  const { page } = o;
  if (scheme === "light") {
    const want = manifest["graph.html"].nodes;
    await page.click(".ms-expand-all");
    check((await page.locator(".ms-node").count()) === want, `graph: all ${want} nodes drawn after expand all`);
    const probe = manifest.probe;
    await page.click("text=fit");
    await page.locator(`.ms-node[data-name="${probe.name}"]`).click();
    check((await page.textContent(".ms-selected-name")) === probe.name, `graph: clicking ${probe.name} shows its name`);
    check((await page.textContent(".ms-selected-shape")) === probe.shape, `graph: ... and its shape ${probe.shape}`);
    const code = await page.textContent(".ms-side code");
    check(code === `model.layer("${probe.name}")?`, `graph: ... and the code to open it (${code})`);
    await page.click(".ms-collapse-all");
    const collapsed = await page.locator(".ms-node").count();
    check(collapsed < want, `graph: collapse all leaves ${collapsed} of ${want} nodes visible`);
    await page.fill("input[type=search]", "inception_4a");
    check((await page.locator(".ms-match").count()) > 0, "graph: search marks matching nodes");
    await page.locator(".ms-results li").first().click();
    check((await page.textContent(".ms-selected-name")).startsWith("inception_4a"), "graph: clicking a search result selects it");
    const before = await page.getAttribute(".ms-canvas svg > g", "transform");
    await page.mouse.move(500, 400);
    await page.mouse.wheel(0, -300);
    const after = await page.getAttribute(".ms-canvas svg > g", "transform");
    check(before !== after, "graph: the wheel zooms");
    await page.fill("input[type=search]", "");
    await page.click(".ms-collapse-all");
  }
  // The picture: one block expanded, one node selected.
  await page.locator('.ms-group[data-name="inception_3a"]').click();
  await page.locator('.ms-node[data-name="inception_3a/3x3"]').click();
  check((await page.locator(".ms-node").count()) > 20, `graph (${scheme}): expanding a group shows its nodes`);
  await page.mouse.move(0, 0);
  await shot(o, "graph", scheme);
  await done("graph.html", o);
}
{
  const t0 = Date.now();
  const o = await open("graph_densenet.html", "light");
  await o.page.click(".ms-expand-all");
  const want = manifest["graph_densenet.html"].nodes;
  check((await o.page.locator(".ms-node").count()) === want, `densenet graph: all ${want} nodes drawn after expand all (${Date.now() - t0} ms)`);
  await done("graph_densenet.html", o);
}

// Gallery.
for (const scheme of ["light", "dark"]) {
  const o = await open("gallery.html", scheme);
  const { page } = o;
  if (scheme === "light") {
    const cell = page.locator(".ms-cell").first();
    const small = await cell.boundingBox();
    await cell.hover();
    await page.waitForTimeout(400);
    const large = await cell.boundingBox();
    check(large.width > small.width * 1.5, `gallery: hover enlarges a cell (${small.width} → ${large.width} px)`);
    await page.mouse.move(0, 0);
    await page.selectOption(".ms-sort", "activation");
    const acts = await page.$$eval(".ms-cell .ms-label", (ls) => ls.map((l) => parseFloat(l.textContent.split("·")[1])));
    check(acts.every((a, i) => i === 0 || acts[i - 1] >= a), "gallery: sort by activation orders cells highest first");
    await page.selectOption(".ms-sort", "index");
    const idx = await page.$$eval(".ms-cell", (cs) => cs.map((c) => Number(c.dataset.unit)));
    check(idx.every((u, i) => i === 0 || idx[i - 1] < u), "gallery: sort by index restores unit order");
    await page.locator('.ms-cell[data-unit="5"]').click();
    check((await page.textContent(".ms-gallery-detail .ms-title")) === "conv3:5", "gallery: clicking a unit opens its details inline");
    check(await page.locator(".ms-gallery-detail .ms-tab").count() >= 5, "gallery: ... as a unit view with its technique tabs");
    await page.click('.ms-gallery-detail .ms-tab[data-tab="weights"]');
    check((await page.textContent('.ms-gallery-detail .ms-panel[data-tab="weights"]')).includes('model.unit("conv3", 5)?.view()?'),
      "gallery: ... whose tabs the gallery did not compute say how to compute them");
    await page.locator('.ms-cell[data-unit="5"]').click();
    await downloadsOnEveryImage(page, "gallery.html");
    await footer(page, "gallery.html", ["seed " + manifest.seed, "steps " + manifest.steps, manifest.sha256.slice(0, 12)]);
    const three = page.locator('.ms-cell[data-unit="3"]');
    await three.hover();
    const [png] = await Promise.all([page.waitForEvent("download"), three.locator("a.ms-download").click()]);
    check(png.suggestedFilename() === "conv3_3-unit_3.png", `gallery: a cell's download is its PNG (${png.suggestedFilename()})`);
    check(!(await page.locator(".ms-gallery-detail").isVisible()), "gallery: ... and does not open the unit");
    const saved = await savePage(page, "gallery.html");
    const s = await open(saved, "light");
    check((await s.page.locator(".ms-cell img").count()) === (await page.locator(".ms-cell img").count()), `${saved}: the saved page shows the same cells`);
    await footer(s.page, saved, ["seed " + manifest.seed]);
    await done(saved, s);
  }
  await page.locator('.ms-cell[data-unit="7"]').click();
  await page.mouse.move(0, 0);
  await page.waitForTimeout(300);
  await shot(o, "gallery", scheme);
  await done("gallery.html", o);
}

// Unit view: every tab shows its own panel.
for (const scheme of ["light", "dark"]) {
  const o = await open("unit.html", scheme);
  const { page } = o;
  if (scheme === "light") {
    for (const id of manifest.tabs) {
      await page.click(`.ms-tab[data-tab="${id}"]`);
      const shown = await page.$$eval(".ms-panel", (ps) => ps.filter((p) => !p.hidden).map((p) => p.dataset.tab));
      check(shown.length === 1 && shown[0] === id, `unit view: tab ${id} shows only its panel (${shown})`);
      check(await page.locator(`.ms-panel[data-tab="${id}"] .ms-unavailable`).count() === 0, `unit view: tab ${id} has content`);
    }
    await page.click('.ms-tab[data-tab="dataset-examples"]');
    await page.check(".ms-heat-toggle");
    check(await page.locator(".ms-example .ms-overlay:visible").count() > 0, "unit view: the heatmap toggle shows whole inputs with heatmaps");
    // The attribution tab's selector shows one method's heatmap at a time, with its text.
    await page.click('.ms-tab[data-tab="attribution"]');
    const panel = '.ms-panel[data-tab="attribution"]';
    const options = await page.$$eval(`${panel} .ms-attr-method option`, (os) => os.map((x) => x.value));
    const methods = manifest.methods.map((m) => m.id);
    check(options.join() === methods.join(), `unit view: the attribution selector lists every method (${options})`);
    const drawn = new Set();
    for (const m of manifest.methods) {
      await page.selectOption(`${panel} .ms-attr-method`, m.id);
      const shown = await page.$$eval(`${panel} .ms-attr-map`, (xs) => xs.filter((x) => x.offsetParent !== null).map((x) => [x.dataset.method, x.getAttribute("src") || ""]));
      check(shown.length === 1 && shown[0][0] === m.id && shown[0][1].startsWith("data:image/png"), `unit view: selecting ${m.id} shows its heatmap alone (${shown.map((x) => x[0])})`);
      check((await page.textContent(`${panel} .ms-attr-about`)) === m.about, `unit view: ... with what ${m.id} shows`);
      if (shown.length) drawn.add(shown[0][1]);
    }
    check(drawn.size === methods.length, `unit view: the ${methods.length} methods draw ${drawn.size} different heatmaps`);
    // Every overlay (the layer attribution's, the input attributions') draws its visible
    // heatmap exactly on its image.
    const overlays = await page.$$eval('.ms-panel[data-tab="attribution"] .ms-overlay', (os) => os.map((o) => [...o.querySelectorAll("img")].filter((i) => i.offsetParent !== null).map((i) => { const r = i.getBoundingClientRect(); return r.x + "," + r.y; })));
    check(overlays.length === 2 && overlays.every((b) => b.length === 2 && b[0] === b[1]), `unit view: each attribution heatmap lies on its image, download controls and all (${overlays.map((b) => b.join(" / ")).join(" | ")})`);
    await page.click('.ms-tab[data-tab="feature-vis"]');
    const images = await downloadsOnEveryImage(page, "unit.html");
    check(images.some((i) => i.name.startsWith("conv3_7-feature-vis-positive")), `unit view: images are named after unit, tab and image (${images[0].name})`);
    await footer(page, "unit.html", ["seed " + manifest.seed, "steps " + manifest.steps]);
    const saved = await savePage(page, "unit.html");
    const s = await open(saved, "light");
    check((await s.page.locator(".ms-tab").count()) === manifest.tabs.length, `${saved}: the saved page has every tab`);
    await downloadsOnEveryImage(s.page, saved);
    await footer(s.page, saved, ["seed " + manifest.seed]);
    await done(saved, s);
  }
  await shot(o, "unit", scheme);
  await done("unit.html", o);
}

// Neuron groups against classes: a row per group and the rest, a column per class, each cell a
// number and a bar no longer than its column.
for (const scheme of ["light", "dark"]) {
  const o = await open("groups.html", scheme);
  const { page } = o;
  const want = manifest.group_support;
  const rows = await page.locator(".ms-group-support tr").count();
  const heads = await page.locator(".ms-group-support th").count();
  check(rows === want.groups + 2 && heads === want.classes + 1, `groups: ${rows} rows and ${heads} headers for ${want.groups} groups and ${want.classes} classes`);
  const bars = await page.$$eval(".ms-support", (bs) => bs.map((b) => [b.getBoundingClientRect().width, b.parentElement.getBoundingClientRect().width]));
  check(bars.length === want.classes * (want.groups + 1) && bars.some(([w]) => w > 0) && bars.every(([w, cell]) => w <= cell),
    `groups: a bar in each of ${bars.length} cells, within its cell`);
  if (scheme === "light") {
    await downloadsOnEveryImage(page, "groups.html");
    await footer(page, "groups.html", ["seed " + manifest.seed, "steps " + manifest.steps]);
  }
  await shot(o, "groups", scheme);
  await done("groups.html", o);
}
{
  // Between layers: a column per later group, its two pictures in its header.
  const o = await open("flow.html", "light");
  const heads = await o.page.$$eval(".ms-group-support th", (ths) => ths.map((th) => th.querySelectorAll("img").length));
  check(heads.length === 4 && heads.slice(1).every((n) => n === 2), `flow: each later group's header shows its two pictures (${heads})`);
  await downloadsOnEveryImage(o.page, "flow.html");
  await shot(o, "flow", "light");
  await done("flow.html", o);
}

// Hostile names: shown as text, never run.
for (const file of ["hostile_graph.html", "hostile_unit.html", "hostile_groups.html"]) {
  const o = await open(file, "light");
  const { page } = o;
  if (file === "hostile_graph.html") await page.click(".ms-expand-all");
  await page.waitForTimeout(200);
  const pwned = await page.evaluate(() => window.__pwned);
  check(pwned === undefined, `${file}: no script from node names ran`);
  check((await page.locator("img[src=x], b[onmouseover]").count()) === 0, `${file}: no element from node names exists`);
  const text = await page.evaluate(() => document.body.innerText + Array.from(document.querySelectorAll("title")).map((t) => t.textContent).join(" "));
  const shown = manifest.hostile.filter((h) => text.includes(h) || text.includes(h.slice(0, 20)));
  check(shown.length > 0, `${file}: the names appear as text (${shown.length} of ${manifest.hostile.length})`);
  if (file === "hostile_graph.html") {
    const partial = await page.locator(".ms-partial").textContent();
    check(partial.includes(manifest.hostile_unsupported),
      `${file}: the model is marked as loaded in part, the unsupported node's name as text (${JSON.stringify(partial)})`);
    const escaped = manifest.reordering.replace("\u202e", "\\u{202e}");
    check(text.includes(escaped) && !text.includes("\u202e"),
      `${file}: a right-to-left override in a name is shown as an escape (${JSON.stringify(escaped)})`);
  }
  if (file === "hostile_unit.html") {
    await downloadsOnEveryImage(page, file);
    const saved = await savePage(page, file);
    const s = await open(saved, "light");
    await s.page.waitForTimeout(200);
    check(await s.page.evaluate(() => window.__pwned) === undefined, `${saved}: no script from node names ran in the saved page`);
    check((await s.page.locator("img[src=x], b[onmouseover]").count()) === 0, `${saved}: no element from node names exists`);
    await done(saved, s);
  }
  await done(file, o);
}

await browser.close();
console.log(failed ? `${failed} browser checks failed` : "all browser checks passed");
process.exit(failed ? 1 : 0);
