// Gallery: every unit of a layer as a thumbnail of its feature visualization. Hover enlarges a
// cell; clicking opens the unit's view below the grid; sort by index or activation.
//
// Live (see live.js): units and tabs that were not computed are computed in the kernel on
// click, and a button computes all the remaining units, the cells filling in batch by batch.
// Without a live kernel they say how to compute them.

microscope.components.Gallery = function (root, p) {
  const el = microscope.el;
  const sort = el("select", { "aria-label": "sort units", class: "ms-sort" }, [
    el("option", { value: "index", text: "sort by unit index" }),
    el("option", { value: "activation", text: "sort by activation (highest first)" }),
    el("option", { value: "activation-asc", text: "sort by activation (lowest first)" }),
  ]);
  const grid = el("div", { class: "ms-grid" });
  grid.style.setProperty("--ms-cell", Math.max(56, Math.min(96, p.thumbnail + 8)) + "px");
  const detail = el("div", { class: "ms-detail ms-gallery-detail", hidden: true });
  const status = el("span", { class: "ms-muted ms-gallery-status" });
  const rest = el("button", { class: "ms-compute-rest", hidden: true });
  const stop = el("button", { class: "ms-stop", text: "stop", hidden: true });
  const bar = microscope.progress();
  bar.hidden = true;
  if (p.links) root.appendChild(microscope.siteNav(p.links));
  root.appendChild(el("div", { class: "ms-bar" }, [
    el("span", { class: "ms-title", text: p.layer }),
    el("span", { class: "ms-muted", text: p.op + " · " + microscope.shape(p.shape) + " · " + p.units.length + " units · " + p.steps + " steps, seed " + p.seed }),
    sort,
  ]));
  if (p.unit_value) root.appendChild(el("div", { class: "ms-muted ms-unit-value", text: p.unit_value }));
  root.appendChild(el("div", { class: "ms-bar" }, [status, rest, stop]));
  root.appendChild(bar);
  root.appendChild(grid);
  root.appendChild(detail);

  let channel = null;
  let offline = "Not computed here: run the cell in a live microscope kernel to compute it.";
  const missing = () => p.units.filter((u) => !u.image);
  const tabsDone = {};

  function updateStatus() {
    const todo = missing().length;
    const computed = p.units.length - todo;
    status.textContent = todo === 0 ? "" : computed + " of " + p.units.length + " units computed; " +
      (channel ? "click a unit to compute it, or" : "run the cell to compute the rest.");
    rest.hidden = !channel || todo === 0;
    rest.textContent = "compute the other " + todo + " units";
  }

  // On a site (src/widget/site.rs) each cell links to its unit's page.
  const href = (i) => (p.links && p.links.units ? p.links.units[i] : null);

  function drawCell(cell, u) {
    cell.textContent = "";
    const link = href(p.units.indexOf(u));
    if (link) cell = cell.appendChild(el("a", { href: link, class: "ms-cell-link" }));
    cell.appendChild(u.image ? el("img", { src: u.image, alt: "unit " + u.index, class: "ms-px" })
      : el("div", { class: "ms-empty", title: channel ? "not computed: click to compute" : "not computed: run the cell to compute" }));
    cell.appendChild(el("div", { class: "ms-label", text: u.index + (u.activation === null ? "" : " · " + microscope.fmt(u.activation, 2)) }));
  }

  let open = null;
  let openUnit = null;
  const cells = p.units.map((u) => {
    const cell = el("div", { class: "ms-cell", "data-unit": u.index, "data-name": p.layer + ":" + u.index, title: "unit " + u.index });
    drawCell(cell, u);
    if (!href(p.units.indexOf(u))) cell.addEventListener("click", () => show(u, cell));
    return cell;
  });

  // New cells from the kernel.
  function fill(units) {
    units.forEach((nu) => {
      const i = p.units.findIndex((u) => u.index === nu.index);
      if (i < 0) return;
      Object.assign(p.units[i], nu);
      drawCell(cells[i], p.units[i]);
      if (openUnit === p.units[i] && open) show(p.units[i], cells[i], true);
    });
    updateStatus();
  }

  const fvPicture = (u) => ({ kind: "Pictures", pictures: [{ src: u.image, caption: "activation " + microscope.fmt(u.activation) }] });

  // The unit's view, inline: what the gallery computed (the feature visualization); the other
  // tabs are computed on demand in a live kernel, or say how to compute them.
  function view(u) {
    const code = "model.unit(" + JSON.stringify(p.layer) + ", " + u.index + ")?.view()?";
    const done = tabsDone[u.index] || {};
    const later = (id, what) => done[id] || ({ kind: "Later", reason: channel ? what + ": computing…" : what + " is not computed here: run " + code + " in a live microscope kernel to compute every tab." });
    const tab = (id, title, about, body) => ({ id, title, about, body });
    return {
      model: p.model, layer: p.layer, op: p.op, unit: u.index, units: p.units.length, code,
      // The tabs the props list (the unit view's, declared once in Rust), the gallery's own
      // computed cells filling theirs.
      tabs: p.tabs.map((t) => tab(t.id, t.title, t.about.split("{unit}").join(p.layer + ":" + u.index),
        t.id !== p.cell_tab ? later(t.id, t.title)
          : u.image ? fvPicture(u) : { kind: "Later", reason: channel ? "computing…" : offline })),
    };
  }

  // Computes a tab of unit `u` in the kernel.
  function load(u) {
    return (id, set) => {
      const again = { kind: "Later", reason: "cancelled by a newer request: open the tab again to compute it." };
      if (id === p.cell_tab) {
        set({ kind: "Progress", fraction: 0, label: "optimizing an image for unit " + u.index });
        channel.request({ op: "units", units: [u.index] }, (d) => {
          if (d.kind === "progress") set({ kind: "Progress", fraction: d.fraction, label: "optimizing an image for unit " + u.index });
          else if (d.kind === "units") fill(d.units);
          else if (d.kind === "error") set({ kind: "Unavailable", reason: d.message });
          else if (d.kind === "cancelled" && !u.image) set(again);
        });
        return;
      }
      set({ kind: "Progress", fraction: null, label: "computing" });
      channel.request({ op: "tab", unit: u.index, tab: id }, (d) => {
        if (d.kind === "progress") set({ kind: "Progress", fraction: d.fraction, label: d.label });
        else if (d.kind === "tab") {
          (tabsDone[u.index] = tabsDone[u.index] || {})[id] = d.tab.body;
          set(d.tab.body);
        } else if (d.kind === "error") set({ kind: "Unavailable", reason: d.message });
        else if (d.kind === "cancelled") set(again);
      });
    };
  }

  function show(u, cell, refresh) {
    if (!refresh) {
      if (open) open.classList.remove("ms-open");
      if (open === cell) { open = null; openUnit = null; detail.hidden = true; return; }
    }
    open = cell;
    openUnit = u;
    cell.classList.add("ms-open");
    detail.hidden = false;
    detail.textContent = "";
    detail.appendChild(microscope.unitView(view(u), channel ? load(u) : null));
  }

  // Computes `todo` (unit indices) in the kernel; cells fill in batch by batch.
  function compute(todo) {
    if (!channel || !todo.length) return;
    bar.hidden = false;
    stop.hidden = false;
    rest.disabled = true;
    bar.set(0, "computing " + todo.length + " units");
    const end = (text) => { stop.hidden = true; rest.disabled = false; bar.set(1, text); updateStatus(); };
    channel.request({ op: "units", units: todo }, (d) => {
      if (d.kind === "progress") bar.set(d.fraction, d.label);
      else if (d.kind === "units") fill(d.units);
      else if (d.kind === "done") end("done");
      else if (d.kind === "cancelled") end("stopped");
      else if (d.kind === "error") end(d.message);
    });
  }
  rest.addEventListener("click", () => compute(missing().map((u) => u.index)));
  stop.addEventListener("click", () => channel && channel.cancel());

  function order() {
    const by = sort.value;
    const key = (i) => (p.units[i].activation === null ? -Infinity : p.units[i].activation);
    const idx = p.units.map((_, i) => i);
    if (by === "activation") idx.sort((a, b) => key(b) - key(a));
    else if (by === "activation-asc") idx.sort((a, b) => key(a) - key(b));
    else idx.sort((a, b) => p.units[a].index - p.units[b].index);
    grid.textContent = "";
    idx.forEach((i) => grid.appendChild(cells[i]));
  }
  sort.addEventListener("change", order);
  order();
  updateStatus();

  if (p.live) {
    status.textContent = "connecting to the kernel…";
    microscope.connect(root, p.live).then((r) => {
      channel = r.channel || null;
      if (!channel && r.reason) offline = "Not computed: " + r.reason + "; run the cell to compute it.";
      root.dataset.live = channel ? "connected" : "offline";
      cells.forEach((c, i) => drawCell(c, p.units[i]));
      updateStatus();
      if (open && openUnit) show(openUnit, open, true);
      // A gallery opened from a layer graph starts with its first units.
      if (channel && p.start) compute(p.start.filter((i) => p.units[i] && !p.units[i].image));
    });
  } else {
    root.dataset.live = "offline";
  }
};
