// Gallery: every unit of a layer as a thumbnail of its feature visualization. Hover enlarges a
// cell; clicking opens the unit's details below the grid; sort by index or activation.

microscope.components.Gallery = function (root, p) {
  const el = microscope.el;
  const computed = p.units.filter((u) => u.image).length;
  const sort = el("select", { "aria-label": "sort units", class: "ms-sort" }, [
    el("option", { value: "index", text: "sort by unit index" }),
    el("option", { value: "activation", text: "sort by activation (highest first)" }),
    el("option", { value: "activation-asc", text: "sort by activation (lowest first)" }),
  ]);
  const grid = el("div", { class: "ms-grid" });
  grid.style.setProperty("--ms-cell", Math.max(56, Math.min(96, p.thumbnail + 8)) + "px");
  const detail = el("div", { class: "ms-detail ms-gallery-detail", hidden: true });
  const progress = el("div", { class: "ms-progress", title: computed + " of " + p.units.length + " computed" }, [el("div", {})]);
  progress.firstChild.style.width = (100 * computed / Math.max(1, p.units.length)) + "%";
  root.appendChild(el("div", { class: "ms-bar" }, [
    el("span", { class: "ms-title", text: p.layer }),
    el("span", { class: "ms-muted", text: p.op + " · " + microscope.shape(p.shape) + " · " + p.units.length + " units · " + p.steps + " steps, seed " + p.seed }),
    sort,
  ]));
  if (computed < p.units.length) {
    root.appendChild(el("div", { class: "ms-muted", text: computed + " of " + p.units.length + " units computed; run the cell to compute the rest." }));
    root.appendChild(progress);
  }
  root.appendChild(grid);
  root.appendChild(detail);

  let open = null;
  const cells = p.units.map((u) => {
    const cell = el("div", { class: "ms-cell", "data-unit": u.index, title: "unit " + u.index }, [
      u.image ? el("img", { src: u.image, alt: "unit " + u.index, class: "ms-px" }) : el("div", { class: "ms-empty", title: "not computed" }),
      el("div", { class: "ms-label", text: u.index + (u.activation === null ? "" : " · " + microscope.fmt(u.activation, 2)) }),
    ]);
    cell.addEventListener("click", () => show(u, cell));
    return cell;
  });

  // The unit's view, inline: the tabs of a unit view, with what the gallery computed (the
  // feature visualization) and, for the other techniques, the code that computes them.
  function view(u) {
    const code = "model.unit(" + JSON.stringify(p.layer) + ", " + u.index + ")?.view()?";
    const later = (what) => ({ kind: "Unavailable", reason: what + " is not part of the gallery: run " + code + " to compute every tab." });
    const tab = (id, title, about, body) => ({ id, title, about, body });
    return {
      model: p.model, layer: p.layer, op: p.op, unit: u.index, units: p.units.length, code,
      tabs: [
        tab("feature-vis", "Feature visualization", "The image optimized to excite " + p.layer + ":" + u.index + " (" + p.steps + " steps, seed " + p.seed + ").",
          u.image ? { kind: "Pictures", pictures: [{ src: u.image, caption: "activation " + microscope.fmt(u.activation) }] }
            : { kind: "Unavailable", reason: "Not computed yet: run the cell to compute it." }),
        tab("dataset-examples", "Dataset examples", "The inputs that activate the unit most and least.", later("Dataset examples")),
        tab("deepdream", "DeepDream", "What the layer amplifies in an input image.", later("DeepDream")),
        tab("weights", "Weights", "Expanded weights from the previous layer's strongest units.", later("Weights")),
        tab("attribution", "Attribution", "Where in an image, and through which units, the activation comes from.", later("Attribution")),
      ],
    };
  }

  function show(u, cell) {
    if (open) open.classList.remove("ms-open");
    if (open === cell) { open = null; detail.hidden = true; return; }
    open = cell;
    cell.classList.add("ms-open");
    detail.hidden = false;
    detail.textContent = "";
    detail.appendChild(microscope.unitView(view(u)));
  }

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
};
