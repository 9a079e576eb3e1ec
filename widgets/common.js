// microscope widgets: shared helpers and the mount entry point. This file is concatenated with
// one file per component inside a function that defines `microscope` (see src/widget/assets.rs).
// Text from props always goes into the page as text (textContent / SVG text nodes), never as
// markup: node and class names come from untrusted model files.

// Text as shown: the invisible characters that reorder what follows them (a right-to-left
// override shows a name "\u202eevil" as "live") become visible escapes, `\u{202e}`, as the
// crate writes them in text output (`reorders` in src/widget/mod.rs).
microscope.shown = function (text) {
  return String(text).replace(/[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => "\\u{" + c.codePointAt(0).toString(16) + "}");
};

microscope.el = function (tag, attrs, children) {
  const svg = ["svg", "g", "rect", "path", "text", "title", "line", "circle"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = microscope.shown(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    // Attributes a person reads (a tooltip, an image's text, a screen reader's label).
    else if (k === "title" || k === "alt" || k === "aria-label") node.setAttribute(k, microscope.shown(v));
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of [].concat(children || [])) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === "string" ? document.createTextNode(microscope.shown(c)) : c);
  }
  return node;
};

microscope.fmt = function (v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toFixed(digits === undefined ? 3 : digits);
};

microscope.shape = function (s) {
  return s && s.length ? s.join("×") : "?";
};

microscope.count = function (n) {
  return n >= 1e6 ? (n / 1e6).toFixed(2) + "M" : n >= 1e3 ? (n / 1e3).toFixed(1) + "k" : String(n);
};

// A line of code with a copy button.
microscope.code = function (text) {
  const el = microscope.el;
  const button = el("button", {
    text: "copy",
    title: "copy to clipboard",
    onclick: () => {
      if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    },
  });
  return el("div", { class: "ms-bar" }, [el("code", { text }), button]);
};

microscope.image = function (src, size, alt) {
  return microscope.el("img", { src, width: size, height: size, class: "ms-px", alt: alt || "" });
};

// Mounts component `name` into the root element `id`, reading its props from `#id-props`; then
// adds the provenance footer (with "save page") and a download control on every image.
microscope.mount = function (id, name) {
  const root = document.getElementById(id);
  const script = document.getElementById(id + "-props");
  if (!root || !script) return;
  try {
    const props = JSON.parse(script.textContent);
    root.textContent = "";
    const component = microscope.components[name];
    if (!component) throw new Error("unknown component " + name);
    component(root, props);
    if (props.provenance) root.appendChild(microscope.provenance(root, name, props));
    microscope.downloads(root, props);
  } catch (e) {
    root.textContent = "";
    root.appendChild(microscope.el("div", { class: "ms-error", text: "microscope widget failed: " + e.message }));
    console.error(e);
  }
};

// On a page of a site (src/widget/site.rs): links to the graph, the layer, the previous and
// next unit, those the props' `links` has.
microscope.siteNav = function (links) {
  const el = microscope.el;
  const to = (key, text) => links[key] ? el("a", { href: links[key], class: "ms-nav-" + key, text }) : null;
  return el("nav", { class: "ms-bar ms-site-nav" }, [
    to("graph", "model graph"), to("layer", "layer gallery"), to("prev", "← previous unit"), to("next", "next unit →"),
  ]);
};

// The first `key` in a JSON value, depth first (as `Provenance::param` in src/provenance.rs).
microscope.find = function (v, key) {
  if (!v || typeof v !== "object") return undefined;
  if (!Array.isArray(v) && Object.prototype.hasOwnProperty.call(v, key)) return v[key];
  for (const x of Object.values(v)) {
    const found = microscope.find(x, key);
    if (found !== undefined) return found;
  }
  return undefined;
};

// The provenance footer (props.provenance, src/provenance.rs): one line (version, backend,
// model and its SHA-256, techniques, seed and steps) that expands to the full record as JSON,
// and a button that saves the widget as a standalone page.
microscope.provenance = function (root, name, props) {
  const el = microscope.el;
  const p = props.provenance;
  const parts = ["microscope " + p.crate_version, p.backend,
    p.model ? p.model + (p.model_sha256 ? " · sha256 " + p.model_sha256.slice(0, 12) + "…" : "") : "no model recorded"];
  if (p.model_left_out) parts.push("loaded in part");
  if (p.dataset) parts.push(p.dataset);
  p.techniques.forEach((t) => parts.push(t.name + " of " + t.target));
  ["seed", "steps"].forEach((k) => {
    const v = microscope.find(p.techniques.map((t) => t.params), k);
    if (v !== undefined) parts.push(k + " " + v);
  });
  return el("div", { class: "ms-provenance" }, [
    el("details", {}, [
      el("summary", { class: "ms-provenance-line", title: "what made this: show the full record", text: parts.join(" · ") }),
      el("pre", { class: "ms-provenance-record", text: JSON.stringify(p, null, 2) }),
    ]),
    // A page of a site (props.links, src/widget/site.rs) is a file already, its library shared.
    props.links ? null : el("button", { class: "ms-save-page", text: "save page", title: "download this widget as a standalone HTML page",
      onclick: () => microscope.save(microscope.page(root, name, props), microscope.fileName([props.title || props.layer || props.model, name], ".html")) }),
  ]);
};

// A file name from parts: [A-Za-z0-9_.-] kept, others become _ (as `paths::file_name`).
microscope.fileName = function (parts, ext) {
  const stem = parts.filter((x) => x !== undefined && x !== null && x !== "").join("-");
  return (stem || "microscope").replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 200) + ext;
};

// Downloads `content` (a URL, or a string saved as HTML) as `file`.
microscope.save = function (content, file) {
  const blob = content.startsWith("data:") ? null : URL.createObjectURL(new Blob([content], { type: "text/html" }));
  const a = microscope.el("a", { href: blob || content, download: file, hidden: true });
  document.body.appendChild(a);
  a.click();
  a.remove();
  if (blob) setTimeout(() => URL.revokeObjectURL(blob), 10000);
};

// JSON that is safe inside a <script> element (as `script_json` in src/widget/html.rs).
microscope.scriptJson = function (v) {
  return JSON.stringify(v).replace(/[<>&\u2028\u2029]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
};

// The widget as a standalone page, as `Widget::to_page` writes it (src/widget/html.rs): the
// current props (with what a live kernel computed since, and no kernel link), the stylesheet
// and the component library from the output, the provenance in the head. Strings from props
// reach the page as text or as escaped JSON only.
microscope.page = function (root, name, props) {
  const ours = (node, tag, test) => node && node.tagName === tag && test(node.textContent) ? node : null;
  const isLib = (t) => t.includes("const microscope = { version: \"" + microscope.version + "\"");
  const isCss = (t) => t.includes(".microscope-root {");
  const props_ = document.getElementById(root.id + "-props");
  const lib = ours(props_ && props_.nextElementSibling, "SCRIPT", isLib) ||
    Array.from(document.querySelectorAll("script")).find((s) => isLib(s.textContent));
  const css = ours(root.nextElementSibling, "STYLE", isCss) ||
    Array.from(document.querySelectorAll("style")).find((s) => isCss(s.textContent));
  if (!lib || !css) throw new Error("the widget's library or stylesheet is not on this page");
  const code = lib.textContent;
  const cut = code.lastIndexOf("\nwindow.microscope.mount(");
  const doc = document.implementation.createHTMLDocument(props.title || props.layer || props.model || name);
  const add = (parent, tag, attrs, text) => {
    const node = doc.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    parent.appendChild(node);
    return node;
  };
  doc.documentElement.setAttribute("lang", "en");
  doc.head.prepend(doc.createElement("meta"));
  doc.head.firstChild.setAttribute("charset", "utf-8");
  add(doc.head, "meta", { name: "viewport", content: "width=device-width, initial-scale=1" });
  add(doc.head, "meta", { name: "generator", content: "microscope " + microscope.version });
  if (props.provenance) add(doc.head, "script", { type: "application/json", id: "microscope-provenance" }, microscope.scriptJson(props.provenance));
  add(doc.head, "style", {}, microscope.pageCss);
  const saved = Object.assign({}, props, { live: null });
  const box = add(doc.body, "div", { id: root.id, class: "microscope-root", "data-component": name });
  add(box, "div", { class: "ms-loading" }, "microscope widget: needs JavaScript (trust the notebook)");
  add(doc.body, "style", {}, css.textContent);
  add(doc.body, "script", { type: "application/json", id: root.id + "-props" }, microscope.scriptJson(saved));
  add(doc.body, "script", {}, (cut < 0 ? code : code.slice(0, cut)) +
    "\nwindow.microscope.mount(" + JSON.stringify(root.id) + ", " + JSON.stringify(name) + ");");
  return "<!DOCTYPE html>\n" + doc.documentElement.outerHTML + "\n";
};

// A download control on every PNG image in `root`, now and whenever one is added (tabs computed
// live, gallery cells filling in). Each image is wrapped with a link that saves it, named after
// the unit ([data-name]), the tab ([data-tab]) and the image's alt text.
microscope.downloads = function (root, props) {
  const el = microscope.el;
  const decorate = (img) => {
    if (!img.src || !img.src.startsWith("data:image/png") || img.parentNode.classList.contains("ms-dl")) return;
    const named = img.closest("[data-name]");
    const tab = img.closest("[data-tab]");
    const file = microscope.fileName([named ? named.dataset.name : props.title || props.layer || props.model,
      tab ? tab.dataset.tab : null, img.alt], ".png");
    const link = el("a", { class: "ms-download", href: img.src, download: file, title: "download " + file, text: "↓" });
    link.addEventListener("click", (e) => e.stopPropagation());
    const wrap = el("span", { class: "ms-dl" });
    img.replaceWith(wrap);
    wrap.appendChild(img);
    wrap.appendChild(link);
  };
  const scan = (node) => {
    if (node.tagName === "IMG") decorate(node);
    else if (node.querySelectorAll) node.querySelectorAll("img").forEach(decorate);
  };
  scan(root);
  new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach(scan)))
    .observe(root, { childList: true, subtree: true });
};

microscope.components.LayerCard = function (root, p) {
  const el = microscope.el;
  root.appendChild(
    el("div", { class: "ms-detail" }, [
      el("div", { class: "ms-title", text: p.layer }),
      el("dl", { class: "ms-side-dl" }, [
        el("span", { class: "ms-muted", text: "op " }),
        el("span", { text: p.op + " · output " + microscope.shape(p.shape) + " · " + p.units + " units · " + microscope.count(p.params) + " parameters" }),
      ]),
      p.unit_value ? el("div", { class: "ms-muted ms-unit-value", text: p.unit_value }) : null,
      el("div", { class: "ms-muted", text: p.model }),
      microscope.code(p.code),
    ]),
  );
};

microscope.components.Images = function (root, p) {
  const el = microscope.el;
  root.appendChild(el("div", { class: "ms-title", text: p.title }));
  root.appendChild(el("div", { class: "ms-figs" }, p.pictures.map((pic) =>
    el("figure", {}, [microscope.image(pic.src, p.size, pic.caption), el("figcaption", { text: pic.caption })]))));
};

// Neuron groups against what they support (GroupSupport in src/widget/images.rs): a row per
// group (where it fires, what it responds to), a column per class or later group (a later group
// with its pictures), each cell the group's support with a bar as long as its size (green for,
// red against).
microscope.components.GroupSupport = function (root, p) {
  const el = microscope.el;
  const fig = (pic, size) => el("figure", {}, [microscope.image(pic.src, size, pic.caption), el("figcaption", { text: pic.caption })]);
  const values = p.columns.flatMap((c) => c.groups.concat([c.rest]));
  const top = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  const cell = (v) => {
    const bar = el("div", { class: v >= 0 ? "ms-support ms-for" : "ms-support ms-against" });
    bar.style.width = (100 * Math.abs(v) / top).toFixed(1) + "%";
    return el("td", { class: "ms-support-cell" }, [el("div", { text: (v >= 0 ? "+" : "") + microscope.fmt(v, 2) }), bar]);
  };
  const head = el("tr", {}, [el("th", { text: "group" })].concat(p.columns.map((c) => el("th", {}, [
    c.pictures ? el("div", { class: "ms-figs" }, c.pictures.map((pic) => microscope.image(pic.src, 64, pic.caption))) : null,
    el("div", { text: c.label + " · " + microscope.fmt(c.value, 2) }),
  ]))));
  const rows = p.groups.map((g, i) => el("tr", {}, [el("td", {}, [el("div", { class: "ms-figs" }, [fig(g[0], 96), fig(g[1], 96)])])]
    .concat(p.columns.map((c) => cell(c.groups[i])))));
  const rest = el("tr", {}, [el("td", { class: "ms-muted", text: "the rest: what the groups leave out" })]
    .concat(p.columns.map((c) => cell(c.rest))));
  root.appendChild(el("div", { class: "ms-title", text: p.title }));
  root.appendChild(el("div", { class: "ms-muted", text: "each group's support for each column: integrated gradients at the groups' layer (from a zero activation there), of the part of the activation the group reproduces" }));
  root.appendChild(el("div", { class: "ms-figs" }, [fig(p.image, 160),
    el("table", { class: "ms-list ms-group-support" }, [head].concat(rows, [rest]))]));
};

microscope.components.Progress = function (root, p) {
  const el = microscope.el;
  const bar = el("div", { class: "ms-progress", role: "progressbar", "aria-valuenow": Math.round(100 * p.fraction) }, [el("div", {})]);
  bar.firstChild.style.width = (100 * p.fraction).toFixed(1) + "%";
  root.appendChild(el("div", { class: "ms-bar" }, [
    el("span", { text: p.label }),
    el("span", { class: "ms-muted", text: Math.round(100 * p.fraction) + "% " + p.detail }),
  ]));
  root.appendChild(bar);
};
