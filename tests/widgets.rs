//! Widgets: snapshot tests of the generated HTML (fixed ids), the payload budget, and behaviour
//! in headless Chromium (driven by `tests/browser/widgets.mjs` through playwright-core), which
//! also saves screenshots of every widget in light and dark under `target/screenshots/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use microscope::data::{Dataset, Split};
use microscope::network::DynTensor;
use microscope::provenance::Provenance;
use microscope::technique::attribution::Target;
use microscope::technique::dataset_examples::DatasetExamples;
use microscope::technique::input_attribution::{methods_for, Scope};
use microscope::technique::{FeatureVis, NeuronGroups};
use microscope::widget::gallery::{GalleryOptions, GalleryUnit};
use microscope::widget::live::Live;
use microscope::widget::unit_view::{Body, Picture, Tab};
use microscope::widget::{Gallery, LayerGraph, UnitView, ViewOptions, Widget};
use microscope::{zoo, Model};
use support::{model, node, random, value_info};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn onnx_fixtures() -> PathBuf {
    std::env::var_os("MICROSCOPE_ONNX_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/fixtures/onnx"))
}

/// Compares `html` with `tests/snapshots/NAME.html`; `UPDATE_SNAPSHOTS=1` rewrites it. The
/// embedded stylesheet and component library are verbatim copies of `widgets/` (compiled in);
/// the snapshot names them instead of repeating them.
fn snapshot(name: &str, html: &str) {
    use microscope::widget::assets;
    assert_eq!(
        html.matches(assets::CSS).count(),
        1,
        "{name}: one embedded stylesheet"
    );
    assert_eq!(
        html.matches(&assets::library()).count(),
        1,
        "{name}: one embedded library"
    );
    let html = html
        .replace(assets::CSS, "/* widgets/microscope.css */")
        .replace(
            &assets::library(),
            "/* widgets/*.js (microscope::widget::assets::library) */",
        );
    let path = root().join("tests/snapshots").join(format!("{name}.html"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, html).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    if want != html {
        let html = html.as_str();
        let line = want
            .lines()
            .zip(html.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(html.lines().count()));
        panic!(
            "{name}: generated HTML differs from {} at line {} (UPDATE_SNAPSHOTS=1 to accept)",
            path.display(),
            line + 1
        );
    }
}

/// A tiny gallery and unit view with fixed content (no optimization), for snapshots.
fn fixed_gallery() -> Gallery {
    let tile = |v: f32| {
        microscope::widget::image::png(&microscope::widget::image::Planar {
            data: &[v, 1.0 - v, v, 1.0 - v],
            channels: 1,
            height: 2,
            width: 2,
        })
    };
    Gallery {
        model: "zoo:fashion".into(),
        layer: "conv3".into(),
        op: "Conv".into(),
        shape: vec![1, 64, 7, 7],
        units: vec![
            GalleryUnit {
                index: 0,
                image: Some(tile(0.2)),
                activation: Some(1.5),
            },
            GalleryUnit {
                index: 1,
                image: None,
                activation: None,
            },
        ],
        unit_value: None,
        thumbnail: 64,
        steps: 512,
        seed: 0,
        tabs: microscope::widget::unit_view::TABS
            .iter()
            .map(|t| t.header("{unit}", "conv3", &Default::default()))
            .collect(),
        cell_tab: microscope::widget::gallery::CELL_TAB,
        live: Some(Live {
            session: "session-1".into(),
            widget: "w0".into(),
        }),
        provenance: Provenance::of(&zoo::fashion().unwrap()).technique(
            "feature-vis",
            "conv3",
            &FeatureVis::default(),
        ),
    }
}

fn fixed_unit_view() -> UnitView {
    let pic = Picture {
        src: microscope::widget::image::heatmap(
            &[0.0, 1.0, -1.0, 0.5],
            2,
            2,
            microscope::widget::image::Scale::Heat,
        ),
        caption: "positive · activation 1.000".into(),
    };
    UnitView {
        model: "zoo:fashion".into(),
        layer: "conv3".into(),
        op: "Conv".into(),
        unit: 7,
        units: 64,
        tabs: vec![
            Tab {
                id: "feature-vis",
                title: "Feature visualization",
                about: "Images optimized to excite or inhibit the unit.".into(),
                body: Body::FeatureVis {
                    positive: pic.clone(),
                    negative: pic,
                    diversity: vec![],
                },
            },
            Tab {
                id: "dataset-examples",
                title: "Dataset examples",
                about: "Inputs that activate the unit most and least.".into(),
                body: Body::Unavailable {
                    reason: "No dataset attached".into(),
                },
            },
        ],
        code: "model.unit(\"conv3\", 7)?.view()?".into(),
        provenance: Provenance::of(&zoo::fashion().unwrap())
            .technique("feature-vis", "conv3:7", &FeatureVis::default())
            .technique("unit-view", "conv3:7", &ViewOptions::default()),
    }
}

#[test]
fn snapshots_of_the_generated_html() {
    let graph = LayerGraph::new(&zoo::fashion().unwrap()).unwrap();
    snapshot(
        "layer_graph_fashion",
        &graph.to_html_with_id("microscope-test"),
    );
    snapshot(
        "gallery_fixed",
        &fixed_gallery().to_html_with_id("microscope-test"),
    );
    snapshot(
        "unit_view_fixed",
        &fixed_unit_view().to_html_with_id("microscope-test"),
    );
    // Text fallbacks say what the widget holds.
    assert!(graph.text().starts_with("LayerGraph of zoo:fashion:"));
    assert!(fixed_gallery().text().contains("2 units"));
    assert!(fixed_unit_view().text().contains("Dataset examples"));
}

#[test]
fn every_output_has_a_unique_root_id() {
    let g = fixed_gallery();
    let (a, b) = (g.to_html(), g.to_html());
    let id = |h: &str| h.split('"').nth(1).unwrap().to_string();
    assert_ne!(id(&a), id(&b));
    assert!(id(&a).starts_with("microscope-"));
}

#[test]
fn layer_graph_groups_inception_blocks_and_lays_out_without_overlap() {
    let path = onnx_fixtures().join("light/light_inception_v1.onnx");
    let model = Model::load(&path)
        .unwrap_or_else(|e| panic!("{e}; run tests/run.sh to install the ONNX fixtures"));
    let g = LayerGraph::new(&model).unwrap();
    assert_eq!(g.nodes.len(), model.network().nodes().len() + 1);
    let names: Vec<&str> = g.groups.iter().map(|x| x.name.as_str()).collect();
    for block in ["inception_3a", "inception_4a", "inception_5b"] {
        assert!(names.contains(&block), "{block} not among {names:?}");
    }
    // Every box of a rank is at least a box width apart from the next.
    let mut by_rank: std::collections::BTreeMap<usize, Vec<f32>> = Default::default();
    for it in &g.items {
        by_rank.entry(it.rank).or_default().push(it.x);
    }
    for xs in by_rank.values_mut() {
        xs.sort_by(f32::total_cmp);
        for w in xs.windows(2) {
            assert!(w[1] - w[0] >= microscope::widget::layer_graph::NODE_W - 1e-3);
        }
    }
    // Collapsed, GoogLeNet is a short column of blocks, not a wall of 150 nodes.
    assert!(g.items.len() < 40, "{} boxes collapsed", g.items.len());
}

#[test]
fn a_512_unit_gallery_at_64_px_fits_the_payload_budget() {
    // One 3×3 convolution with 512 units on a 64 px RGB input: its feature visualizations are
    // noisy, hard-to-compress images (the worst case for the budget).
    let bytes = model(
        vec![node("Conv", "conv", &["x", "w", "b"], &["y"], vec![])],
        vec![
            random("w", &[512, 3, 3, 3], 7, 0.5),
            random("b", &[512], 8, 0.1),
        ],
        value_info("x", &[1, 3, 64, 64]),
        "y",
    );
    let dir = support::Scratch::new("budget");
    let path = dir.join("wide.onnx");
    std::fs::write(&path, bytes).unwrap();
    let model = Model::load(&path).unwrap();
    let options = GalleryOptions {
        feature_vis: FeatureVis::default().steps(4).cache(None),
        batch: 128,
        thumbnail: 64,
        units: None,
    };
    let gallery = model
        .layer("conv")
        .unwrap()
        .gallery_with(&options, &mut |_| {}, None)
        .unwrap();
    assert_eq!(gallery.units.len(), 512);
    let html = gallery.to_html();
    println!("512-unit gallery at 64 px: {} bytes", html.len());
    assert!(html.len() < 5_000_000, "{} bytes", html.len());
}

/// A small conv net whose node names are HTML and script ([`support::HOSTILE`]), loaded in
/// part: it ends in an unsupported node whose name is markup too, which the graph and every
/// provenance record then name.
fn hostile_model(dir: &Path) -> Model {
    let path = dir.join("hostile.onnx");
    std::fs::write(&path, support::hostile_names_model_with(true)).unwrap();
    let model = Model::load_partial(&path).unwrap();
    assert_eq!(
        model.left_out().unwrap().unsupported[0].node,
        support::HOSTILE_UNSUPPORTED
    );
    model
}

#[test]
fn widgets_work_in_chromium() {
    let browser = root().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {}; run tests/run.sh",
        browser.display()
    );
    let target = root().join("target");
    let pages = target.join("widget-pages");
    let shots = target.join("screenshots");
    std::fs::create_dir_all(&pages).unwrap();
    std::fs::create_dir_all(&shots).unwrap();
    let write = |name: &str, title: &str, w: &dyn Widget| {
        std::fs::write(pages.join(name), w.to_page(title)).unwrap();
    };
    // The layer graphs of GoogLeNet and DenseNet-121 (light models).
    let mut manifest = serde_json::Map::new();
    for (file, name) in [
        ("graph.html", "light_inception_v1"),
        ("graph_densenet.html", "light_densenet121"),
    ] {
        let model = Model::load(onnx_fixtures().join(format!("light/{name}.onnx")))
            .unwrap_or_else(|e| panic!("{e}; run tests/run.sh to install the ONNX fixtures"));
        let g = LayerGraph::new(&model).unwrap();
        manifest.insert(file.into(), serde_json::json!({ "nodes": g.nodes.len() }));
        write(file, name, &g);
    }
    let googlenet = Model::load(onnx_fixtures().join("light/light_inception_v1.onnx")).unwrap();
    let probe = "inception_4a/1x1";
    let shape = googlenet.layer(probe).unwrap().shape;
    manifest.insert(
        "probe".into(),
        serde_json::json!({ "name": probe, "shape": shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×") }),
    );
    // The built-in model's gallery and one unit's view, with a dataset attached.
    let fashion = zoo::fashion()
        .unwrap()
        .with_dataset(Dataset::fashion_mnist(Split::Test).unwrap().take(500));
    let fv = FeatureVis::default().steps(48).seed(3).cache(None);
    manifest.insert("seed".into(), serde_json::json!(fv.seed));
    manifest.insert("steps".into(), serde_json::json!(fv.steps));
    manifest.insert("sha256".into(), serde_json::json!(fashion.digest()));
    let gallery = fashion
        .layer("conv3")
        .unwrap()
        .gallery_with(
            &GalleryOptions {
                feature_vis: fv.clone(),
                ..Default::default()
            },
            &mut |_| {},
            None,
        )
        .unwrap();
    write("gallery.html", "conv3 gallery", &gallery);
    let options = ViewOptions {
        feature_vis: fv.clone(),
        ..Default::default()
    };
    let view = fashion
        .unit("conv3", 7)
        .unwrap()
        .view_with(&options)
        .unwrap();
    let tabs: Vec<&str> = view.tabs.iter().map(|t| t.id).collect();
    manifest.insert("tabs".into(), serde_json::json!(tabs));
    // The attribution tab's input attribution methods, as their table declares them: those
    // that explain a CNN's unit (not the attention flow methods).
    let target = Target::Unit {
        layer: "conv3".into(),
        index: 7,
    };
    let methods: Vec<serde_json::Value> = methods_for(&fashion, &target)
        .into_iter()
        .map(|m| serde_json::json!({ "id": m.id, "about": m.about }))
        .collect();
    manifest.insert("methods".into(), serde_json::json!(methods));
    assert!(view.unavailable().is_empty(), "{:?}", view.unavailable());
    // The neuron groups are conv3's after its ReLU, with conv3:7's own group outlined.
    let groups = view.tabs.iter().find_map(|t| match &t.body {
        Body::NeuronGroups { note, groups, .. } => Some((note, groups)),
        _ => None,
    });
    let (note, groups) = groups.expect("a neuron-groups tab");
    assert!(
        note.starts_with("at conv3/relu, conv3 after its activation: conv3:7 weighs"),
        "{note}"
    );
    assert_eq!(groups.iter().filter(|g| g.mine).count(), 1);
    assert!(groups.iter().all(|g| g.support.is_none()));
    write("unit.html", "conv3:7", &view);
    // Hostile names: the graph and a unit view of a model whose node names are markup.
    let dir = support::Scratch::new("hostile");
    let hostile = hostile_model(&dir);
    write(
        "hostile_graph.html",
        "hostile",
        &LayerGraph::new(&hostile).unwrap(),
    );
    let unit = hostile.unit(support::HOSTILE[2], 1).unwrap();
    let hostile_view = unit
        .view_with(&ViewOptions {
            feature_vis: FeatureVis::default().steps(4).cache(None),
            ..Default::default()
        })
        .unwrap();
    write("hostile_unit.html", "hostile unit", &hostile_view);
    // Neuron groups against classes: fashion's conv3 groups on a test image against its top 3
    // classes; and a classifier whose class names are markup.
    let spec = fashion.input_spec().unwrap();
    let device = fashion.network().device().burn().clone();
    let image = fashion
        .dataset()
        .unwrap()
        .batch(0..1, &spec, &device)
        .unwrap();
    let groups = NeuronGroups::default()
        .groups(3)
        .vis(fv.clone())
        .run(&fashion.layer("conv3/relu").unwrap(), &image)
        .unwrap();
    let table = groups.classes(&fashion, "logits", 3).unwrap();
    assert_eq!(table.columns.len(), 3);
    assert!(table.columns.iter().all(|c| c.groups.len() == 3));
    assert!(table.columns.windows(2).all(|w| w[0].value >= w[1].value));
    manifest.insert(
        "group_support".into(),
        serde_json::json!({ "groups": 3, "classes": 3 }),
    );
    write("groups.html", "neuron groups against classes", &table);
    // And conv2's groups supporting conv3's, each later group with its pictures.
    let earlier = NeuronGroups::default()
        .groups(2)
        .vis(fv.clone())
        .run(&fashion.layer("conv2/relu").unwrap(), &image)
        .unwrap();
    let flow = earlier.toward(&fashion, &groups).unwrap();
    assert_eq!(flow.columns.len(), 3);
    assert!(flow.columns.iter().all(|c| c.pictures.is_some()));
    write("flow.html", "conv2's groups supporting conv3's", &flow);
    let path = dir.join("hostile_classifier.onnx");
    std::fs::write(&path, support::hostile_classifier()).unwrap();
    let classifier = Model::load(&path).unwrap();
    let pattern: Vec<f32> = (0..3 * 16 * 16)
        .map(|i| (i * 7 % 17) as f32 / 16.0)
        .collect();
    let image = DynTensor::from_host(&pattern, &[1, 3, 16, 16], &device);
    let hostile_groups = NeuronGroups::default()
        .groups(2)
        .vis(FeatureVis::default().steps(4).cache(None))
        .run(&classifier.layer("relu").unwrap(), &image)
        .unwrap()
        .classes(&classifier, "logits", 3)
        .unwrap();
    assert!(hostile_groups
        .columns
        .iter()
        .any(|c| c.label.contains(support::HOSTILE[1])));
    write("hostile_groups.html", "hostile groups", &hostile_groups);
    manifest.insert("hostile".into(), serde_json::json!(support::HOSTILE));
    manifest.insert(
        "hostile_unsupported".into(),
        serde_json::json!(support::HOSTILE_UNSUPPORTED),
    );
    manifest.insert("reordering".into(), serde_json::json!(support::REORDERING));
    std::fs::write(
        pages.join("manifest.json"),
        serde_json::Value::Object(manifest).to_string(),
    )
    .unwrap();
    // Dataset examples come from the attached dataset: sanity-check the scan the view used.
    let direct = DatasetExamples {
        k: 6,
        ..Default::default()
    }
    .run(&fashion, fashion.dataset().unwrap(), "conv3", &[7])
    .unwrap();
    match &view.tabs[1].body {
        Body::DatasetExamples { top, .. } => {
            let got: Vec<usize> = top.iter().map(|e| e.index).collect();
            let want: Vec<usize> = direct[0].top.iter().map(|e| e.index).collect();
            assert_eq!(got, want);
        }
        other => panic!("dataset examples tab: {other:?}"),
    }
    let out = Command::new("node")
        .arg(browser.join("widgets.mjs"))
        .arg(&pages)
        .arg(&shots)
        .output()
        .expect("node is installed (tests/run.sh installs it)");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser checks failed");
    for name in ["graph", "gallery", "unit"] {
        for scheme in ["light", "dark"] {
            assert!(shots.join(format!("{name}-{scheme}.png")).exists());
        }
    }
}

/// A unit without positions (a classifier's logit) gets every tab: weights and attribution at
/// the last convolution, through the fully connected layers, and whole inputs as its dataset
/// examples.
#[test]
fn a_logit_unit_view_has_every_tab() {
    let fashion = zoo::fashion()
        .unwrap()
        .with_dataset(Dataset::fashion_mnist(Split::Test).unwrap().take(200));
    let options = ViewOptions {
        feature_vis: FeatureVis::default().steps(8).cache(None),
        ..Default::default()
    };
    let view = fashion
        .unit("logits", 9)
        .unwrap()
        .view_with(&options)
        .unwrap();
    assert!(view.unavailable().is_empty(), "{:?}", view.unavailable());
    for t in &view.tabs {
        match &t.body {
            // At the last spatial layer, after its ReLU: each group's contribution to the
            // logit, the largest outlined.
            Body::NeuronGroups { note, groups, .. } => {
                assert!(note.starts_with("at conv3/relu, the last layer"), "{note}");
                assert!(note.contains("integrated gradients"), "{note}");
                assert_eq!(groups.len(), 4);
                let support: Vec<f32> = groups
                    .iter()
                    .map(|g| {
                        let text = g.support.as_deref().expect("each group's support");
                        assert!(text.ends_with(" toward logits:9"), "{text}");
                        text.split(' ').next().unwrap().parse().unwrap()
                    })
                    .collect();
                let mine: Vec<usize> = (0..4).filter(|&g| groups[g].mine).collect();
                let top = support.iter().copied().fold(f32::MIN, f32::max);
                assert_eq!(mine.len(), 1);
                assert_eq!(support[mine[0]], top, "{support:?}");
            }
            Body::Weights { from, cards } => {
                assert_eq!(from.as_deref(), Some("conv3"));
                assert_eq!(cards.len(), 8);
            }
            Body::Attribution { at, inputs, .. } => {
                assert_eq!(at, "conv3");
                // Every input attribution method for a CNN drew its map (Grad-CAM at conv3
                // too); the attention flow methods, for transformers, are not offered.
                support::assert_methods_drawn(inputs, Some(Scope::Any));
            }
            Body::DatasetExamples {
                top,
                bottom,
                heatmap,
            } => {
                for e in top.iter().chain(bottom) {
                    assert!(e.heatmap.is_empty(), "a logit has no heatmap");
                }
                assert_eq!(heatmap, &None);
                // The top examples of "Ankle boot" are ankle boots.
                let boots = top
                    .iter()
                    .filter(|e| e.label.as_deref() == Some("Ankle boot"))
                    .count();
                assert!(
                    boots >= 5,
                    "{boots} of {} top examples are ankle boots",
                    top.len()
                );
            }
            _ => {}
        }
    }
}

/// The provenance in a widget's HTML: its props' `provenance`, as JSON.
fn provenance_in(html: &str) -> serde_json::Value {
    let start = html.find("-props\">").expect("a props element") + "-props\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let props: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
    props["provenance"].clone()
}

/// The `microscope-provenance` chunk of a saved PNG file.
fn provenance_in_png(bytes: &[u8]) -> serde_json::Value {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let chunk = reader
        .info()
        .utf8_text
        .iter()
        .find(|t| t.keyword == microscope::widget::export::PROVENANCE_KEY)
        .expect("a provenance chunk");
    serde_json::from_str(&chunk.get_text().unwrap()).unwrap()
}

/// Every widget kind that shows a result carries the provenance (model SHA-256, crate version,
/// backend, techniques with their seed and steps) in its HTML, its page and its text; a new
/// seed changes both the provenance and the PNG bytes, and a rerun gives the same bytes.
#[test]
fn every_widget_carries_its_provenance_and_a_seed_gives_the_same_png_bytes() {
    let model = zoo::fashion().unwrap();
    let fv = |seed| FeatureVis::default().steps(4).seed(seed).cache(None);
    let layer = model.layer("conv2").unwrap();
    let gallery = |seed| {
        let options = GalleryOptions {
            feature_vis: fv(seed),
            units: Some(vec![0, 1]),
            ..Default::default()
        };
        layer.gallery_with(&options, &mut |_| {}, None).unwrap()
    };
    let view = model
        .unit("conv2", 3)
        .unwrap()
        .view_with(&ViewOptions {
            feature_vis: fv(5),
            diversity_samples: 0,
            ..Default::default()
        })
        .unwrap();
    let vis = |seed| fv(seed).run_units(&model, "conv2", &[0, 1]).unwrap();
    let spec = model.input_spec().unwrap();
    let device = model.network().device().burn().clone();
    let image = Dataset::fashion_mnist(Split::Test)
        .unwrap()
        .batch(0..1, &spec, &device)
        .unwrap();
    let groups = NeuronGroups::default()
        .groups(2)
        .vis(fv(5))
        .run(&model.layer("conv2/relu").unwrap(), &image)
        .unwrap()
        .classes(&model, "logits", 2)
        .unwrap();
    let widgets: Vec<(&str, Box<dyn Widget>)> = vec![
        ("GroupSupport", Box::new(groups)),
        ("LayerGraph", Box::new(model.graph().unwrap())),
        ("LayerCard", Box::new(layer.card())),
        ("Gallery", Box::new(gallery(5))),
        ("UnitView", Box::new(view)),
        ("Images", Box::new(vis(5).images())),
    ];
    for (kind, w) in &widgets {
        let p = provenance_in(&w.to_html());
        assert_eq!(p["model"], "zoo:fashion", "{kind}");
        assert_eq!(p["model_sha256"], model.digest(), "{kind}");
        assert_eq!(p["crate_version"], env!("CARGO_PKG_VERSION"), "{kind}");
        assert_eq!(p["backend"], "cpu", "{kind}");
        if *kind != "LayerGraph" && *kind != "LayerCard" {
            let record = microscope::provenance::Provenance::param;
            let provenance = w.provenance().unwrap();
            assert_eq!(
                record(provenance, "seed"),
                Some(&serde_json::json!(5)),
                "{kind}"
            );
            assert_eq!(
                record(provenance, "steps"),
                Some(&serde_json::json!(4)),
                "{kind}"
            );
            assert!(
                w.text().contains("seed 5 · steps 4"),
                "{kind}: {}",
                w.text()
            );
        }
        let names: Vec<&str> = p["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        if *kind == "GroupSupport" {
            assert_eq!(names, ["feature-vis", "neuron-groups", "group-attribution"]);
            assert_eq!(p["techniques"][2]["params"]["node"], "logits");
        }
        if *kind == "UnitView" {
            // Every tab's technique with settings of its own is on record: the caricature's
            // weighting too, with the feature visualization's seed and steps, and the neuron
            // groups' count.
            assert_eq!(
                names,
                ["feature-vis", "caricature", "neuron-groups", "unit-view"]
            );
            let caricature = &p["techniques"][1]["params"];
            assert_eq!(
                (&caricature["seed"], &caricature["steps"]),
                (&serde_json::json!(5), &serde_json::json!(4))
            );
            assert_eq!(caricature["cossim_pow"], 4.0);
            assert_eq!(p["techniques"][2]["params"]["groups"], 4);
        }
        let page = w.to_page("a page");
        assert!(
            page.contains("<script type=\"application/json\" id=\"microscope-provenance\">"),
            "{kind}"
        );
        assert!(w.text().contains(model.digest()), "{kind}");
    }

    // Saved PNGs: the same seed twice gives the same bytes; another seed other pixels, and a
    // provenance that names it, in the widget and in the file.
    let dir = support::Scratch::new("export");
    let save = |seed: u64, name: &str| {
        let path = dir.join(name);
        assert_eq!(vis(seed).save_png(&path).unwrap(), vec![path.clone()]);
        std::fs::read(&path).unwrap()
    };
    let (a, again, other) = (save(1, "a.png"), save(1, "again.png"), save(2, "other.png"));
    assert_eq!(
        a, again,
        "a rerun with the same seed gives the same PNG bytes"
    );
    assert_ne!(a, other, "another seed gives other PNG bytes");
    assert_eq!(
        provenance_in_png(&a),
        provenance_in(&vis(1).images().to_html())
    );
    assert_eq!(
        provenance_in_png(&other)["techniques"][0]["params"]["seed"],
        2
    );
    let pixels = |seed| {
        let images = vis(seed).images();
        images
            .pictures
            .iter()
            .map(|p| p.src.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pixels(1),
        pixels(1),
        "the widget's own PNGs are the same on a rerun"
    );
    assert_ne!(pixels(1), pixels(2), "... and differ with the seed");
    let (g1, g2) = (gallery(1), gallery(2));
    assert_eq!(
        provenance_in(&g2.to_html())["techniques"][0]["params"]["seed"],
        2
    );
    assert_ne!(g1.units[0].image, g2.units[0].image);
    assert_eq!(g1.units[0].image, gallery(1).units[0].image);

    // One file per image into a directory, named after the title and caption.
    let each = dir.join("each");
    std::fs::create_dir_all(&each).unwrap();
    let files = vis(1).save_png(&each).unwrap();
    assert_eq!(files.len(), 2);
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("feature_visualization_of_conv2_conv2_"),
            "{name}"
        );
        assert!(name.ends_with(".png"));
    }

    // A standalone page; errors name the path.
    let page = dir.join("view.html");
    layer.card().save_html(&page).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains(model.digest()));
    let missing = dir.join("no/such/dir/fig.html");
    let err = layer.card().save_html(&missing).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    let err = vis(1)
        .save_png(dir.join("no/such.png"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no/such.png"), "{err}");
}

/// The tour explains the unit view's tabs in a table: it names every tab the view has, so a new
/// tab cannot go unexplained.
#[test]
fn the_tours_table_of_tabs_names_every_tab() {
    let tour = std::fs::read_to_string(root().join("notebooks/01-tour.ipynb")).unwrap();
    let tour: serde_json::Value = serde_json::from_str(&tour).unwrap();
    let table = tour["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["source"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect::<String>()
        })
        .find(|text| text.contains("| tab | what it shows |"))
        .expect("the tour's table of tabs");
    let tabs = microscope::widget::unit_view::TABS;
    for spec in tabs {
        assert!(
            table.contains(&format!("| **{}** |", spec.title)),
            "the tour's table does not name the {} tab",
            spec.title
        );
    }
    let count = [
        "", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    assert!(
        table.contains(&format!("computes {} tabs", count[tabs.len()])),
        "the tour says how many tabs there are: {} now",
        tabs.len()
    );
}
