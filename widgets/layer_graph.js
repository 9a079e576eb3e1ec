// LayerGraph: the network drawn top to bottom. Ranks, x positions and each group's inner layout
// come from Rust (src/widget/layer_graph.rs); this component stacks the rows, grows a row where
// a group is expanded, draws, and handles zoom, pan, search, selection and expand/collapse.

microscope.components.LayerGraph = function (root, p) {
  const el = microscope.el;
  const [NW, NH] = p.node_size;
  const GAP = p.rank_gap;
  const nodes = p.nodes;
  const groups = p.groups;
  const expanded = new Set();
  const consumers = nodes.map(() => []);
  nodes.forEach((n, i) => n.inputs.forEach((s) => consumers[s].push(i)));
  const itemOfGroup = {};
  p.items.forEach((it, k) => { if (it.kind === "group") itemOfGroup[it.index] = k; });
  let selected = null;
  let matches = new Set();
  let view = { x: 20, y: 20, k: 1 };

  // Layout.
  const search = el("input", { type: "search", placeholder: "search nodes by name", "aria-label": "search nodes" });
  const hidden = (p.quantizers ? " · " + p.quantizers + " quantizers not drawn" : "") +
    (p.shape_nodes ? " · " + p.shape_nodes + " nodes of shape arithmetic not drawn" : "");
  const info = el("span", { class: "ms-muted", text: nodes.length + " nodes · " + groups.length + " groups" + hidden });
  // A model loaded in part (Model::load_partial) says so beside its name, as its provenance
  // records it.
  const leftOut = p.provenance.model_left_out;
  const partial = leftOut
    ? el("span", { class: "ms-partial", title: "loaded in part: the nodes that depend on an unsupported op are left out", text: "partial: " + leftOut })
    : null;
  const bar = el("div", { class: "ms-bar" }, [
    el("span", { class: "ms-title", text: p.model }),
    partial,
    info,
    search,
    el("button", { text: "fit", title: "show the whole graph", onclick: () => fit(true) }),
    el("button", { text: "+", title: "zoom in", onclick: () => zoom(1.25) }),
    el("button", { text: "−", title: "zoom out", onclick: () => zoom(0.8) }),
    el("button", { text: "expand all", class: "ms-expand-all", onclick: () => { groups.forEach((_, g) => expanded.add(g)); draw(); fit(); } }),
    el("button", { text: "collapse all", class: "ms-collapse-all", onclick: () => { expanded.clear(); draw(); fit(); } }),
  ]);
  const svg = el("svg", { role: "img", "aria-label": "layer graph" });
  const viewport = el("g", {});
  svg.appendChild(viewport);
  const canvas = el("div", { class: "ms-canvas" }, [svg]);
  const side = el("div", { class: "ms-side" });
  const below = el("div", { class: "ms-graph-gallery" });
  root.appendChild(bar);
  root.appendChild(el("div", { class: "ms-graph" }, [canvas, side]));
  root.appendChild(below);

  // Live (see live.js): a selected layer's gallery is computed in the kernel, shown below.
  let channel = null;
  if (p.live) {
    microscope.connect(root, p.live).then((r) => {
      channel = r.channel || null;
      root.dataset.live = channel ? "connected" : "offline";
      details();
    });
  } else {
    root.dataset.live = "offline";
  }
  function gallery(n) {
    below.textContent = "";
    const progress = microscope.progress();
    progress.set(null, "preparing the gallery of " + n.name);
    below.appendChild(progress);
    channel.request({ op: "gallery", layer: n.name }, (d) => {
      if (d.kind === "gallery") {
        below.textContent = "";
        const box = el("div", { class: "ms-detail" });
        below.appendChild(box);
        d.gallery.start = d.gallery.units.slice(0, 8).map((u) => u.index);
        microscope.components.Gallery(box, d.gallery);
      } else if (d.kind === "error") {
        below.textContent = "";
        below.appendChild(el("div", { class: "ms-error", text: d.message }));
      }
    });
  }

  let pos = []; // node index -> {x, y} centre of what shows it (itself, or its collapsed group)
  let visible = []; // node index -> bool (drawn as its own box)

  function place() {
    const rows = {};
    p.items.forEach((it) => { (rows[it.rank] = rows[it.rank] || []).push(it); });
    const size = (it) => (it.kind === "group" && expanded.has(it.index)
      ? [groups[it.index].width, groups[it.index].height] : [NW, NH]);
    const boxes = [];
    let top = 0;
    const ranks = Object.keys(rows).map(Number).sort((a, b) => a - b);
    for (const r of ranks) {
      const row = rows[r].slice().sort((a, b) => a.x - b.x);
      const height = Math.max(...row.map((it) => size(it)[1]));
      let shift = 0;
      for (const it of row) {
        const [w, h] = size(it);
        boxes.push({ it, left: it.x - NW / 2 + shift, top: top + (height - h) / 2, w, h });
        shift += w - NW;
      }
      top += height + GAP;
    }
    pos = nodes.map(() => null);
    visible = nodes.map(() => false);
    for (const b of boxes) {
      if (b.it.kind === "node") {
        pos[b.it.index] = { x: b.left + NW / 2, y: b.top + NH / 2 };
        visible[b.it.index] = true;
      } else {
        const g = groups[b.it.index];
        for (const m of g.members) {
          if (expanded.has(b.it.index)) {
            pos[m] = { x: b.left + nodes[m].gx, y: b.top + nodes[m].gy };
            visible[m] = true;
          } else {
            pos[m] = { x: b.left + NW / 2, y: b.top + NH / 2 };
          }
        }
      }
    }
    return boxes;
  }

  function label(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function nodeBox(i) {
    const n = nodes[i];
    const { x, y } = pos[i];
    const cls = "ms-node" + (i === selected ? " ms-selected" : "") + (matches.has(i) ? " ms-match" : "");
    return el("g", { class: cls, "data-node": i, "data-name": n.name, transform: `translate(${x - NW / 2},${y - NH / 2})` }, [
      el("title", { text: n.name }),
      el("rect", { width: NW, height: NH }),
      el("text", { x: 8, y: 17, text: label(n.name, 24) }),
      el("text", { x: 8, y: 32, class: "ms-sub", text: label(n.op + " · " + microscope.shape(n.shape), 28) }),
    ]);
  }

  function draw() {
    const boxes = place();
    viewport.textContent = "";
    const edges = el("g", {});
    const shapes = el("g", {});
    for (const b of boxes) {
      if (b.it.kind !== "group") continue;
      const gi = b.it.index;
      const g = groups[gi];
      const open = expanded.has(gi);
      const hit = g.members.some((m) => matches.has(m) || m === selected);
      const title = (open ? "▾ " : "▸ ") + g.name;
      const sub = g.members.length + " nodes" + (open ? "" : " · click to expand");
      shapes.appendChild(el("g", {
        class: "ms-group" + (open ? "" : " ms-collapsed") + (hit && !open ? " ms-match" : ""),
        "data-group": gi,
        "data-name": g.name,
        transform: `translate(${b.left},${b.top})`,
      }, [
        el("title", { text: g.name }),
        el("rect", { width: b.w, height: b.h }),
        el("text", { x: 8, y: open ? 15 : 17, class: "ms-toggle", text: label(title, 26) }),
        open ? null : el("text", { x: 8, y: 32, class: "ms-sub", text: sub }),
      ]));
    }
    const seen = new Set();
    nodes.forEach((n, i) => {
      if (visible[i]) shapes.appendChild(nodeBox(i));
      for (const s of n.inputs) {
        const a = pos[s], b = pos[i];
        if (!a || !b || (a.x === b.x && a.y === b.y)) continue;
        const key = a.x + "," + a.y + ">" + b.x + "," + b.y;
        if (seen.has(key)) continue;
        seen.add(key);
        const y1 = a.y + NH / 2, y2 = b.y - NH / 2, dy = Math.max(20, (y2 - y1) / 2);
        edges.appendChild(el("path", { class: "ms-edge", d: `M${a.x},${y1} C${a.x},${y1 + dy} ${b.x},${y2 - dy} ${b.x},${y2}` }));
      }
    });
    viewport.appendChild(edges);
    viewport.appendChild(shapes);
    apply();
  }

  function apply() {
    viewport.setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`);
  }

  // `whole`: the whole graph in view; otherwise readable text (scale ≥ 0.6 unless the width
  // needs less), top of the graph at the top.
  function fit(whole) {
    const box = viewport.getBBox();
    const w = canvas.clientWidth || 800, h = canvas.clientHeight || 560;
    if (!box.width || !box.height) return;
    const across = (w - 30) / box.width;
    const k = whole ? Math.min(1.2, across, (h - 30) / box.height) : Math.min(1, Math.max(Math.min(0.6, across), Math.min(across, (h - 30) / box.height)));
    view = { k, x: (w - box.width * k) / 2 - box.x * k, y: 15 - box.y * k };
    apply();
  }

  function zoom(f, cx, cy) {
    const w = canvas.clientWidth || 800, h = canvas.clientHeight || 560;
    cx = cx === undefined ? w / 2 : cx;
    cy = cy === undefined ? h / 2 : cy;
    const k = Math.min(4, Math.max(0.02, view.k * f));
    view.x = cx - (cx - view.x) * (k / view.k);
    view.y = cy - (cy - view.y) * (k / view.k);
    view.k = k;
    apply();
  }

  function centre(i) {
    const w = canvas.clientWidth || 800, h = canvas.clientHeight || 560;
    view.k = Math.max(view.k, 0.8);
    view.x = w / 2 - pos[i].x * view.k;
    view.y = h / 2 - pos[i].y * view.k;
    apply();
  }

  function reveal(i) {
    if (nodes[i].group !== null && nodes[i].group !== undefined) expanded.add(nodes[i].group);
  }

  function link(i) {
    return el("li", { text: nodes[i].name, onclick: () => { reveal(i); select(i); centre(i); } });
  }

  function details() {
    side.textContent = "";
    if (matches.size) {
      const list = Array.from(matches).slice(0, 40);
      side.appendChild(el("div", { class: "ms-muted", text: matches.size + " matching nodes" }));
      side.appendChild(el("ul", { class: "ms-results" }, list.map(link)));
    }
    if (selected === null) {
      side.appendChild(el("div", { class: "ms-muted", text: "Click a node to see its details; click a dashed group to expand it. Drag to pan, scroll to zoom." }));
      return;
    }
    const n = nodes[selected];
    side.appendChild(el("div", { class: "ms-title ms-selected-name", text: n.name }));
    side.appendChild(el("dl", {}, [
      el("dt", { text: "op" }), el("dd", { text: n.op }),
      el("dt", { text: "output" }), el("dd", { class: "ms-selected-shape", text: microscope.shape(n.shape) }),
      el("dt", { text: "units" }), el("dd", { text: n.units > 0 ? String(n.units) : "–" }),
      el("dt", { text: "parameters" }), el("dd", { text: microscope.count(n.params) }),
      el("dt", { text: "group" }), el("dd", { text: n.group === null || n.group === undefined ? "–" : groups[n.group].name }),
    ]));
    if (n.inputs.length) {
      side.appendChild(el("div", { class: "ms-muted", text: "inputs" }));
      side.appendChild(el("ul", { class: "ms-results" }, n.inputs.map(link)));
    }
    if (consumers[selected].length) {
      side.appendChild(el("div", { class: "ms-muted", text: "read by" }));
      side.appendChild(el("ul", { class: "ms-results" }, consumers[selected].map(link)));
    }
    // On a site (src/widget/site.rs): the layer's own page.
    const page = p.links && p.links.nodes ? p.links.nodes[selected] : null;
    if (page) side.appendChild(el("a", { class: "ms-page-link", href: page, text: "open its gallery page →" }));
    if (n.code) {
      side.appendChild(el("div", { class: "ms-muted", text: "open it in the notebook" }));
      side.appendChild(microscope.code(n.code));
    }
    if (channel && n.code && n.units > 0) {
      side.appendChild(el("button", {
        class: "ms-graph-gallery-button", text: "show its gallery below",
        title: "computes the feature visualizations of its first units in the kernel; click a unit for more",
        onclick: () => gallery(n),
      }));
    }
  }

  function select(i) {
    selected = i;
    draw();
    details();
  }

  // Interaction: click (select / toggle), drag (pan), wheel (zoom).
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false };
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!drag.moved) { drag.moved = true; canvas.setPointerCapture(e.pointerId); canvas.classList.add("ms-dragging"); }
    view.x = drag.vx + dx;
    view.y = drag.vy + dy;
    apply();
  });
  canvas.addEventListener("pointerup", (e) => {
    const moved = drag && drag.moved;
    drag = null;
    canvas.classList.remove("ms-dragging");
    if (moved) return;
    const target = e.target.closest ? e.target.closest("[data-node],[data-group]") : null;
    if (!target) return;
    if (target.hasAttribute("data-node")) {
      select(Number(target.getAttribute("data-node")));
    } else {
      const g = Number(target.getAttribute("data-group"));
      if (expanded.has(g)) expanded.delete(g); else expanded.add(g);
      draw();
    }
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    zoom(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  search.addEventListener("input", () => {
    const q = search.value.trim().toLowerCase();
    matches = new Set();
    if (q) nodes.forEach((n, i) => { if (n.name.toLowerCase().includes(q)) matches.add(i); });
    draw();
    details();
  });
  search.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !matches.size) return;
    const first = matches.values().next().value;
    reveal(first);
    select(first);
    centre(first);
  });

  draw();
  details();
  // Fit once the element is laid out (outputs are often attached before layout).
  requestAnimationFrame(() => fit());
};
