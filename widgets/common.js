// microscope widgets: shared helpers and the mount entry point. This file is concatenated with
// one file per component inside a function that defines `microscope` (see src/widget/assets.rs).
// Text from props always goes into the page as text (textContent / SVG text nodes), never as
// markup: node and class names come from untrusted model files.

microscope.el = function (tag, attrs, children) {
  const svg = ["svg", "g", "rect", "path", "text", "title", "line", "circle"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of [].concat(children || [])) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
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

// Mounts component `name` into the root element `id`, reading its props from `#id-props`.
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
  } catch (e) {
    root.textContent = "";
    root.appendChild(microscope.el("div", { class: "ms-error", text: "microscope widget failed: " + e.message }));
    console.error(e);
  }
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
