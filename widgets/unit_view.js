// UnitView: one unit, one tab per technique. Also used inside a Gallery for the unit a user
// clicks (with the tabs that gallery computed).
//
// A tab whose body is `Later` was not computed. With `load` (a live kernel), opening it calls
// `load(tabId, set)`, and `set(body)` replaces its content (a `Progress` body while it runs);
// without, it says how to compute it.

microscope.unitView = function (p, load) {
  const el = microscope.el;
  const fig = (pic, size) => el("figure", {}, [microscope.image(pic.src, size, pic.caption), el("figcaption", { text: pic.caption })]);
  const big = 160;

  // Input attributions: one heatmap per method over the image, all computed in Rust; the
  // selector only shows one and hides the others.
  const inputAttribution = (b) => {
    const maps = b.inputs.map((m) => m.heatmap
      ? el("img", { src: m.heatmap, width: big, height: big, alt: m.title, class: "ms-attr-map", "data-method": m.id })
      : el("span", { class: "ms-attr-map ms-muted", "data-method": m.id, text: "not computed" }));
    const select = el("select", { class: "ms-attr-method" }, b.inputs.map((m) => el("option", { value: m.id, text: m.title })));
    const about = el("p", { class: "ms-attr-about" });
    const caveat = el("p", { class: "ms-muted ms-attr-caveat" });
    const note = el("p", { class: "ms-muted ms-attr-note" });
    const show = () => {
      const i = select.selectedIndex, m = b.inputs[i];
      maps.forEach((x, j) => { x.hidden = j !== i; });
      about.textContent = m.about;
      caveat.textContent = "Misleads: " + m.caveat;
      note.textContent = m.note;
    };
    select.addEventListener("change", show);
    show();
    return el("div", {}, [
      el("div", { class: "ms-muted", text: "input attribution over the pixels" }),
      el("div", { class: "ms-figs" }, [
        el("figure", {}, [el("span", { class: "ms-overlay" }, [microscope.image(b.image.src, big, "input")].concat(maps)), el("figcaption", {}, [select])]),
        el("div", { class: "ms-attr-text" }, [about, caveat, note]),
      ]),
    ]);
  };

  const render = {
    FeatureVis: (b) => el("div", {}, [
      el("div", { class: "ms-figs" }, [fig(b.positive, big), fig(b.negative, big)]),
      b.diversity.length ? el("div", { class: "ms-muted", text: "diversity: " + b.diversity.length + " images optimized together, pushed apart" }) : null,
      el("div", { class: "ms-figs" }, b.diversity.map((d) => fig(d, 96))),
    ]),
    DatasetExamples: (b) => {
      // A unit without positions (logits, fully connected) has whole inputs and no heatmaps.
      const maps = b.top.concat(b.bottom).some((e) => e.heatmap);
      const toggle = el("input", { type: "checkbox", class: "ms-heat-toggle" });
      const card = (e) => {
        const crop = microscope.image(e.crop, 88, e.heatmap ? "crop" : "input");
        const whole = el("span", { class: "ms-overlay", hidden: true }, [microscope.image(e.image, 88, "input"), el("img", { src: e.heatmap, width: 88, height: 88, alt: "heatmap" })]);
        const f = el("figure", { class: "ms-example" }, [crop, whole,
          el("figcaption", { text: (e.label ? e.label + " · " : "") + "#" + e.index + " · " + microscope.fmt(e.score) })]);
        f.swap = (on) => { crop.hidden = on; whole.hidden = !on; };
        return f;
      };
      const top = b.top.map(card), bottom = b.bottom.map(card);
      toggle.addEventListener("change", () => top.concat(bottom).forEach((f) => f.swap(toggle.checked)));
      return el("div", {}, [
        maps ? el("label", { class: "ms-bar" }, [toggle, "show each whole input with the unit's activation heatmap"])
          : el("div", { class: "ms-muted", text: "whole inputs: this unit has no positions" }),
        b.heatmap ? el("div", { class: "ms-muted", text: "heatmap: " + b.heatmap }) : null,
        el("div", { class: "ms-muted", text: "top (strongest)" }), el("div", { class: "ms-figs" }, top),
        el("div", { class: "ms-muted", text: "bottom (weakest)" }), el("div", { class: "ms-figs" }, bottom),
      ]);
    },
    DeepDream: (b) => el("div", { class: "ms-figs" }, [fig(b.before, big), fig(b.after, big)]),
    Caricature: (b) => el("div", { class: "ms-figs" }, [fig(b.image, big), fig(b.caricature, big)]),
    Pictures: (b) => el("div", { class: "ms-figs" }, b.pictures.map((pic) => fig(pic, big))),
    NeuronGroups: (b) => el("div", {}, [
      el("div", { class: "ms-muted", text: b.note }),
      el("div", { class: "ms-figs" }, [fig(b.image, big)].concat(b.groups.map((g) => el("figure", { class: g.mine ? "ms-group ms-mine" : "ms-group" }, [
        el("div", { class: "ms-figs" }, [fig(g.place, 112), fig(g.drawn, 112)]),
        g.support ? el("figcaption", { text: g.support }) : null,
      ])))),
    ]),
    Weights: (b) => el("div", {}, [
      el("div", { class: "ms-muted", text: b.from ? "from " + b.from + " (strongest first: unit, L2 norm, sum)" : "first layer: the unit's filter" }),
      el("div", { class: "ms-figs" }, b.cards.map((c) => el("figure", { class: "ms-weight" }, [
        el("div", { class: "ms-figs" }, [microscope.image(c.weights, 72, "weights"), c.feature_vis ? microscope.image(c.feature_vis, 72, "feature visualization") : null]),
        el("figcaption", { text: (b.from ? "unit " + c.unit + " · " : "") + "‖w‖ " + microscope.fmt(c.norm) + " · Σ " + microscope.fmt(c.sum) }),
      ]))),
    ]),
    Attribution: (b) => el("div", {}, [
      el("div", { class: "ms-figs" }, [
        el("figure", {}, [el("span", { class: "ms-overlay" }, [microscope.image(b.image.src, big, "input"), el("img", { src: b.spatial, width: big, height: big, alt: "attribution" })]),
          el("figcaption", { text: b.image.caption })]),
        el("div", {}, [
          el("div", { class: "ms-muted", text: "through " + b.at + " (activation × gradient)" }),
          el("table", { class: "ms-list" }, [el("tr", {}, [el("th", { text: "unit" }), el("th", { text: "score" })])].concat(
            b.channels.map((c) => el("tr", {}, [el("td", { text: String(c.unit) }), el("td", { text: microscope.fmt(c.score) })])))),
        ]),
      ]),
      b.inputs && b.inputs.length ? inputAttribution(b) : null,
    ]),
    Histogram: (b) => {
      const box = el("div", { class: "ms-svg" });
      // The SVG comes from our own plotting code (numbers and fixed captions only).
      box.innerHTML = b.svg;
      return el("div", {}, [box, el("div", { class: "ms-muted", text: b.count + " inputs · mean " + microscope.fmt(b.mean) + " · max " + microscope.fmt(b.max) })]);
    },
    Unavailable: (b) => el("div", { class: "ms-muted ms-unavailable", text: b.reason }),
    Later: (b) => el("div", { class: "ms-muted ms-unavailable ms-later", text: b.reason }),
    Progress: (b) => {
      const bar = microscope.progress();
      bar.set(b.fraction, b.label);
      return bar;
    },
  };
  const body = (b) => (render[b.kind] || render.Unavailable)(b);

  const tabs = el("div", { class: "ms-tabs", role: "tablist" });
  const panels = el("div", {});
  const buttons = [];
  p.tabs.forEach((t, i) => {
    let content = body(t.body);
    const panel = el("div", { class: "ms-panel", role: "tabpanel", "data-tab": t.id, hidden: i !== 0 }, [
      el("p", { class: "ms-about", text: t.about }),
      content,
    ]);
    const set = (b) => {
      t.body = b;
      const next = body(b);
      panel.replaceChild(next, content);
      content = next;
    };
    const open = () => {
      if (load && t.body.kind === "Later") load(t.id, set);
    };
    const button = el("button", { class: "ms-tab", role: "tab", "data-tab": t.id, "aria-selected": i === 0 ? "true" : "false", text: t.title });
    button.addEventListener("click", () => {
      buttons.forEach((b) => b.setAttribute("aria-selected", "false"));
      Array.from(panels.children).forEach((x) => { x.hidden = true; });
      button.setAttribute("aria-selected", "true");
      panel.hidden = false;
      open();
    });
    if (i === 0) setTimeout(open, 0);
    buttons.push(button);
    tabs.appendChild(button);
    panels.appendChild(panel);
  });
  return el("div", { class: "ms-unit", "data-name": p.layer + ":" + p.unit }, [
    el("div", { class: "ms-bar" }, [
      el("span", { class: "ms-title", text: p.layer + ":" + p.unit }),
      el("span", { class: "ms-muted", text: p.op + " · unit " + p.unit + " of " + p.units + " · " + p.model }),
    ]),
    tabs,
    panels,
    p.code ? microscope.code(p.code) : null,
  ]);
};

microscope.components.UnitView = function (root, p) {
  if (p.links) root.appendChild(microscope.siteNav(p.links));
  root.appendChild(microscope.unitView(p));
};
