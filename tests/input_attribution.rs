//! Input attributions (saliency, gradient × input, Integrated Gradients, SmoothGrad, Grad-CAM),
//! checked against their defining properties, direct autodiff and a hand-computed network.

use microscope::data::{Dataset, ImageSpec, Split};
use microscope::import::builder::{AttrValue, OnnxBuilder};
use microscope::model::Model;
use microscope::network::HostTensor;
use microscope::technique::attribution::Target;
use microscope::technique::input_attribution::{grad_cam, InputAttribution, Scope, METHODS};
use microscope::{zoo, Device, DynTensor};

/// The first `n` Fashion-MNIST test images `[n, 1, 28, 28]` and their labels.
fn test_images(n: usize) -> (DynTensor, Vec<usize>) {
    let data = Dataset::fashion_mnist(Split::Test).unwrap().take(n);
    let x = data
        .batch(0..n, &ImageSpec::unit(1, 28, 28), Device::cpu().burn())
        .unwrap();
    (x, data.labels().to_vec())
}

fn image(all: &DynTensor, i: usize) -> DynTensor {
    DynTensor::new(all.to_rank::<4>().unwrap().narrow(0, i, 1))
}

fn logit(index: usize) -> Target {
    Target::Logit {
        node: "logits".into(),
        index,
    }
}

/// Completeness (Sundararajan et al.): Σ attributions = f(x) − f(baseline), up to the error of
/// the Riemann sum. In a ReLU network the gradient jumps along the path, so the error falls as
/// 1/steps; it is relative to f(x) − f(baseline), so a class whose logit barely moves from the
/// baseline needs more steps than the image's own class.
#[test]
fn integrated_gradients_add_up_to_the_change_of_the_logit() {
    let model = zoo::fashion().unwrap();
    let (x, labels) = test_images(4);
    let ig = InputAttribution::default();
    let mut worst: f32 = 0.0;
    for (i, &label) in labels.iter().enumerate() {
        let m = ig
            .run("integrated-gradients", &model, &image(&x, i), &logit(label))
            .unwrap();
        let c = m.completeness.unwrap();
        println!(
            "image {i}, its class {}: Σ {:.4}, f(x) − f(0) = {:.4} − {:.4}, gap {:.3}%, {} steps",
            label,
            c.sum,
            c.value,
            c.baseline,
            100.0 * c.relative_gap(),
            c.steps
        );
        assert!(c.relative_gap() < 0.01, "image {i}: {c:?}");
        assert!((m.pixels.iter().sum::<f32>() - c.sum).abs() < 1e-4);
        worst = worst.max(c.relative_gap());
    }
    println!("largest gap, {} steps: {:.3}%", ig.steps, 100.0 * worst);
    // Any baseline: from a grey image too.
    let grey = DynTensor::from_host(&[0.5; 784], &[1, 1, 28, 28], Device::cpu().burn());
    let c = ig
        .clone()
        .baseline(grey)
        .run(
            "integrated-gradients",
            &model,
            &image(&x, 0),
            &logit(labels[0]),
        )
        .unwrap()
        .completeness
        .unwrap();
    println!("grey baseline: {c:?}, gap {:.3}%", 100.0 * c.relative_gap());
    assert!(c.relative_gap() < 0.01, "{c:?}");
    // Every class of one image: the gap shrinks as the steps grow, and with 512 steps every
    // class whose logit moves by more than 2 from the baseline is within 1 %.
    let gaps = |steps: usize| -> Vec<(f32, f32)> {
        (0..10)
            .map(|class| {
                let c = ig
                    .clone()
                    .steps(steps)
                    .max_steps(steps)
                    .batch(64)
                    .run("integrated-gradients", &model, &image(&x, 0), &logit(class))
                    .unwrap()
                    .completeness
                    .unwrap();
                (c.gap().abs(), (c.value - c.baseline).abs())
            })
            .collect()
    };
    let mean = |g: &[(f32, f32)]| g.iter().map(|p| p.0).sum::<f32>() / g.len() as f32;
    let (coarse, fine) = (gaps(32), gaps(512));
    println!(
        "all classes of image 0: mean |gap| {:.4} at 32 steps, {:.4} at 512",
        mean(&coarse),
        mean(&fine)
    );
    assert!(mean(&fine) < mean(&coarse) / 4.0);
    for (class, (gap, change)) in fine.iter().enumerate() {
        assert!(
            *change < 2.0 || gap / change < 0.01,
            "class {class}: {gap} of {change}"
        );
    }
    // The defaults refine until the gap is under 1 %: every class of every image gets there,
    // the ones whose logit barely moves from the baseline included.
    let mut used = Vec::new();
    for i in 0..labels.len() {
        for class in 0..10 {
            let c = ig
                .clone()
                .batch(64)
                .run("integrated-gradients", &model, &image(&x, i), &logit(class))
                .unwrap()
                .completeness
                .unwrap();
            assert!(c.relative_gap() < 0.01, "image {i}, class {class}: {c:?}");
            used.push((c.steps, c.relative_gap(), c.value - c.baseline));
        }
    }
    let count = |s: usize| used.iter().filter(|u| u.0 == s).count();
    let worst = used.iter().fold(0f32, |m, u| m.max(u.1));
    let smallest = used.iter().fold(f32::INFINITY, |m, u| m.min(u.2.abs()));
    println!(
        "10 classes of 4 images: {} at 128 steps, {} at 384, {} at 1152, {} at 3456; largest gap \
         {:.3}%, smallest |f(x) − f(0)| {smallest:.3}",
        count(128),
        count(384),
        count(1152),
        count(3456),
        100.0 * worst
    );
    // Batching changes nothing: one point per pass gives the same attributions.
    let run = |batch| {
        ig.clone()
            .steps(16)
            .batch(batch)
            .run(
                "integrated-gradients",
                &model,
                &image(&x, 1),
                &logit(labels[1]),
            )
            .unwrap()
            .pixels
    };
    let (one, many) = (run(1), run(18));
    let diff = one
        .iter()
        .zip(&many)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff < 1e-5, "batch 1 vs 18: {diff}");
}

#[test]
fn saliency_is_the_gradient_and_gradient_times_input_multiplies_it() {
    let model = zoo::fashion().unwrap();
    let (x, labels) = test_images(2);
    for (i, &label) in labels.iter().enumerate() {
        let img = image(&x, i);
        let target = logit(label);
        // The gradient computed directly: pixels on the autodiff device, the model's
        // normalization, the logit, backward.
        let net = model.network();
        let pixels = img.to_vec();
        let leaf = DynTensor::from_host(&pixels, &[1, 1, 28, 28], &Device::cpu().autodiff())
            .require_grad();
        let input = net.image_input().unwrap().name.clone();
        let out = net
            .forward(&[(&input, model.normalize(&leaf).unwrap())], &["logits"])
            .unwrap()
            .remove(0);
        let value = DynTensor::new(out.to_rank::<2>().unwrap().narrow(1, label, 1).sum());
        let want = leaf.grad(&value.backward()).unwrap().to_vec();
        let s = InputAttribution::default()
            .run("saliency", &model, &img, &target)
            .unwrap();
        assert_eq!(s.dims, [1, 28, 28]);
        assert!((s.value - value.to_vec()[0]).abs() < 1e-5);
        let scale = want.iter().fold(0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.0, "a zero gradient");
        for (p, (a, b)) in s.pixels.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-6 * scale, "pixel {p}: {a} vs {b}");
        }
        let gi = InputAttribution::default()
            .run("gradient-input", &model, &img, &target)
            .unwrap();
        for p in 0..784 {
            assert!((gi.pixels[p] - want[p] * pixels[p]).abs() <= 1e-6 * scale);
            assert_eq!(
                gi.map[p], gi.pixels[p],
                "one channel: the map is the pixels"
            );
        }
    }
}

#[test]
fn smoothgrad_is_reproducible_by_seed() {
    let model = zoo::fashion().unwrap();
    let (x, labels) = test_images(1);
    let (img, target) = (image(&x, 0), logit(labels[0]));
    let sg = InputAttribution::default().samples(8);
    let run = |seed| {
        sg.clone()
            .seed(seed)
            .run("smoothgrad", &model, &img, &target)
            .unwrap()
            .pixels
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a, b, "same seed, same numbers");
    let differ = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(
        differ > 700,
        "seeds 1 and 2 differ at only {differ} of 784 pixels"
    );
    // The average of noisy gradients is smoother than one gradient: neighbouring pixels agree
    // more (mean absolute difference between horizontal neighbours, relative to the mean size).
    let roughness = |m: &[f32]| {
        let size: f32 = m.iter().map(|v| v.abs()).sum();
        let steps: f32 = (0..28)
            .flat_map(|y| (0..27).map(move |x| (y, x)))
            .map(|(y, x)| (m[y * 28 + x + 1] - m[y * 28 + x]).abs())
            .sum();
        steps / size
    };
    let saliency = InputAttribution::default()
        .run("saliency", &model, &img, &target)
        .unwrap();
    let smooth = InputAttribution::default()
        .run("smoothgrad", &model, &img, &target)
        .unwrap();
    let (rs, rg) = (roughness(&saliency.map), roughness(&smooth.map));
    println!("roughness: saliency {rs:.3}, smoothgrad (50 samples) {rg:.3}");
    assert!(rg < rs, "smoothgrad {rg} vs saliency {rs}");
}

/// Writes a model to a temporary file and loads it through the public path.
fn load(bytes: Vec<u8>, name: &str) -> Model {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.onnx"));
    std::fs::write(&path, bytes).unwrap();
    Model::load(&path).unwrap()
}

/// x [1, 1, 4, 4] → conv "a" (1×1, 1→2, weights w, bias b) → relu → max pool 2×2 "pool"
/// → flatten → Gemm "out" (8 → 2, weights v).
#[test]
fn grad_cam_matches_a_hand_computed_case() {
    let (w, b) = ([2.0f32, -1.0], [0.5f32, 0.25]);
    let v: Vec<f32> = (0..16).map(|i| ((i * 5 % 7) as f32 - 3.0) * 0.5).collect();
    let mut o = OnnxBuilder::new();
    o.input("x", &[1, 1, 4, 4])
        .initializer("w", &HostTensor::f32(vec![2, 1, 1, 1], w.to_vec()))
        .initializer("b", &HostTensor::f32(vec![2], b.to_vec()))
        .initializer("v", &HostTensor::f32(vec![2, 8], v.clone()))
        .node("Conv", "a", &["x", "w", "b"], &[])
        .node("Relu", "relu", &["a"], &[])
        .node(
            "MaxPool",
            "pool",
            &["relu"],
            &[
                ("kernel_shape", AttrValue::Ints(vec![2, 2])),
                ("strides", AttrValue::Ints(vec![2, 2])),
            ],
        )
        .node("Flatten", "flat", &["pool"], &[])
        .node(
            "Gemm",
            "out",
            &["flat", "v"],
            &[("transB", AttrValue::Int(1))],
        )
        .output("out");
    let model = load(o.to_bytes("gradcam"), "gradcam_hand");
    let x: Vec<f32> = (0..16).map(|i| (i * 7 % 16) as f32 / 16.0 - 0.3).collect();
    let image = DynTensor::from_host(&x, &[1, 1, 4, 4], Device::cpu().burn());
    let class = 1;
    // By hand: pool[k, i, j] = max over its 2×2 window of relu(w_k x + b_k); the output is
    // linear in pool, so ∂out/∂pool[k, i, j] = v[class, 4k + 2i + j] and α_k is the mean of
    // those four weights.
    let pool = |k: usize, i: usize, j: usize| {
        let mut m = f32::NEG_INFINITY;
        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            m = m.max((w[k] * x[(2 * i + dy) * 4 + 2 * j + dx] + b[k]).max(0.0));
        }
        m
    };
    let alpha: Vec<f32> = (0..2)
        .map(|k| (0..4).map(|p| v[8 * class + 4 * k + p]).sum::<f32>() / 4.0)
        .collect();
    let coarse: Vec<f32> = (0..4)
        .map(|p| (alpha[0] * pool(0, p / 2, p % 2) + alpha[1] * pool(1, p / 2, p % 2)).max(0.0))
        .collect();
    let target = Target::Logit {
        node: "out".into(),
        index: class,
    };
    let cam = grad_cam(&model, &image, "pool", &target).unwrap();
    assert_eq!((cam.height, cam.width), (2, 2));
    for (k, (got, want)) in cam.weights.iter().zip(&alpha).enumerate() {
        assert!((got - want).abs() < 1e-6, "α_{k}: {got} vs {want}");
    }
    for (p, (got, want)) in cam.map.iter().zip(&coarse).enumerate() {
        assert!((got - want).abs() < 1e-5, "position {p}: {got} vs {want}");
    }
    assert!(
        coarse.iter().any(|&c| c > 0.0),
        "a map of zeros checks little"
    );
    // Upsampled 2 → 4 with pixel centres aligned: rows and columns mix the two coarse cells
    // with weights 1, ¾, ¼, 0.
    let mix = [(0, 1, 0.0f32), (0, 1, 0.25), (0, 1, 0.75), (0, 1, 1.0)];
    let m = InputAttribution::default()
        .layer("pool")
        .run("grad-cam", &model, &image, &target)
        .unwrap();
    assert_eq!(m.layer.as_deref(), Some("pool"));
    for (y, &(y0, y1, fy)) in mix.iter().enumerate() {
        for (x, &(x0, x1, fx)) in mix.iter().enumerate() {
            let at = |i: usize, j: usize| coarse[i * 2 + j];
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            let want = top * (1.0 - fy) + bottom * fy;
            assert!(
                (m.map[y * 4 + x] - want).abs() < 1e-5,
                "pixel ({y}, {x}): {} vs {want}",
                m.map[y * 4 + x]
            );
        }
    }
}

#[test]
fn every_method_runs_toward_a_class_and_a_unit() {
    let model = zoo::fashion().unwrap();
    let (x, labels) = test_images(1);
    let img = image(&x, 0);
    let fast = InputAttribution::default().steps(8).samples(4);
    for target in [
        logit(labels[0]),
        Target::Unit {
            layer: "conv2".into(),
            index: 5,
        },
    ] {
        // Every method for a CNN: the attention flow methods explain transformers.
        let maps = fast.run_all(&model, &img, &target).unwrap();
        let general: Vec<_> = METHODS.iter().filter(|m| m.scope == Scope::Any).collect();
        assert_eq!(maps.len(), general.len());
        for (spec, m) in general.iter().zip(&maps) {
            assert_eq!(m.method, spec.id);
            assert_eq!(
                (m.dims, m.map.len(), m.pixels.len()),
                ([1, 28, 28], 784, 784)
            );
            assert!(m.map.iter().all(|v| v.is_finite()), "{}", spec.id);
            assert!(m.map.iter().any(|&v| v != 0.0), "{}: all zero", spec.id);
        }
        // Every method reports the same value of the target.
        assert!(maps.iter().all(|m| (m.value - maps[0].value).abs() < 1e-4));
    }
    // Grad-CAM toward a class takes the last convolution by default.
    let cam = fast.run("grad-cam", &model, &img, &logit(0)).unwrap();
    assert_eq!(cam.layer.as_deref(), Some("conv3"));
    let err = fast
        .run("saliency", &model, &img, &logit(10))
        .unwrap_err()
        .to_string();
    assert!(err.contains("logits:10"), "{err}");
}

/// The code cells of the input attribution section of notebooks/05-circuits.ipynb, line for
/// line (checked below), after the lines of the earlier cells they use; where a cell ends in a
/// value the notebook shows, this displays it.
#[rustfmt::skip]
#[test]
fn notebook_05_input_attribution_cells_run() -> microscope::Result<()> {
    use microscope::prelude::*;
    // The notebook displays its figures; here each is rendered, not printed (CI's log would carry
    // a page of base64 per figure).
    let display = |w: &Images| assert!(!w.pictures.is_empty() && !w.to_html().is_empty(), "{}", w.title);
    let model = zoo::fashion()?;
    let data = Dataset::fashion_mnist(Split::Test)?.take(100);
    let spec = microscope::data::ImageSpec::unit(1, 28, 28);
    let image = data.batch(0..1, &spec, model.network().device().burn())?;
    let classes: Vec<String> = model.classes().unwrap_or_else(|| data.classes().to_vec());
    let label = data.labels()[0];

    use microscope::technique::input_attribution::{methods_for, InputAttribution};
    let class_target = Target::Logit { node: "logits".into(), index: label };
    let settings = InputAttribution::default().seed(0);
    let maps = settings.run_all(&model, &image, &class_target)?;
    let methods = methods_for(&model, &class_target);
    for (spec, m) in methods.iter().zip(&maps) {
        let total: f32 = m.map.iter().sum();
        println!("{:<21} Σ {total:+8.3}   misleads: {}", spec.title, spec.caveat);
    }

    let mut drawn: Vec<f32> = Vec::new();
    for m in &maps {
        let scale = m.map.iter().fold(1e-12f32, |s, v| s.max(v.abs()));
        drawn.extend(m.map.iter().map(|v| 0.5 + v / (2.0 * scale)));
    }
    let drawn = DynTensor::from_host(&drawn, &[maps.len(), 1, 28, 28], Device::cpu().burn());
    let titles: Vec<String> = methods.iter().map(|m| m.title.to_string()).collect();
    display(&Images::from_tensor("input", &image, &[classes[label].clone()]));
    display(&Images::from_tensor(&format!("input attributions toward {}", classes[label]), &drawn, &titles));

    let ig = settings.run("integrated-gradients", &model, &image, &class_target)?;
    if let Some(c) = ig.completeness {
        println!("f(x) = {:.3}, f(black) = {:.3}, f(x) − f(black) = {:.3}", c.value, c.baseline, c.value - c.baseline);
        println!("Σ attributions = {:.3}: gap {:.2} % ({} steps)", c.sum, 100.0 * c.relative_gap(), c.steps);
    }

    fn background_sum(map: &[f32], pixels: &[f32]) -> f32 {
        map.iter().zip(pixels).filter(|(_, p)| **p == 0.0).map(|(v, _)| v).sum()
    }
    let grey = DynTensor::from_host(&vec![0.5f32; 28 * 28], &[1, 1, 28, 28], Device::cpu().burn());
    let from_grey = settings.clone().baseline(grey).run("integrated-gradients", &model, &image, &class_target)?;
    let pixels = image.to_vec();
    println!("on black background pixels: Σ {:+.3} from a black baseline, {:+.3} from grey",
        background_sum(&ig.map, &pixels), background_sum(&from_grey.map, &pixels));
    let mut both: Vec<f32> = Vec::new();
    for m in [&ig, &from_grey] {
        let scale = m.map.iter().fold(1e-12f32, |s, v| s.max(v.abs()));
        both.extend(m.map.iter().map(|v| 0.5 + v / (2.0 * scale)));
    }
    let both = DynTensor::from_host(&both, &[2, 1, 28, 28], Device::cpu().burn());
    display(&Images::from_tensor("Integrated Gradients from two baselines", &both, &["black".to_string(), "grey".to_string()]));

    // What the prose says: black pixels get nothing from a black baseline, something from grey.
    assert_eq!(background_sum(&ig.map, &pixels), 0.0);
    assert!(background_sum(&from_grey.map, &pixels).abs() > 0.01);
    Ok(())
}

/// Every line of the notebook's input attribution cells is in the test above (spaces aside).
#[test]
fn notebook_05_input_attribution_cells_are_the_tested_code() {
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    let here = squeeze(include_str!("input_attribution.rs"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/notebooks/05-circuits.ipynb");
    let nb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cells = nb["cells"].as_array().unwrap();
    let text = |c: &serde_json::Value| -> String {
        c["source"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect()
    };
    let start = cells
        .iter()
        .position(|c| text(c).starts_with("## Input attributions"))
        .expect("the notebook has an input attribution section");
    let code: Vec<String> = cells[start..]
        .iter()
        .take_while(|c| {
            c["cell_type"] != "markdown"
                || !text(c).starts_with("## ")
                || text(c).starts_with("## Input")
        })
        .filter(|c| c["cell_type"] == "code")
        .map(text)
        .collect();
    assert_eq!(code.len(), 4, "input attribution code cells");
    for line in code.iter().flat_map(|c| c.lines()) {
        assert!(here.contains(&squeeze(line)), "not in the test: {line}");
    }
}

/// Steps and samples are the caller's, and any number of them is a long computation that can be
/// stopped, not an allocation of them all: `steps: 1 << 40` made a list of 2^40 alphas (4 TiB:
/// an abort, the process and a notebook's state gone), `samples: 1 << 40` drew all their noise
/// at once. The points now go through the network a batch at a time, made as they go (the
/// same pixels as before: the batches are the same). A NaN noise is an error, not a blank map.
#[test]
fn any_number_of_steps_or_samples_holds_one_batch_and_stops_when_asked() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let model = zoo::fashion().unwrap();
    let (x, labels) = test_images(1);
    let many = InputAttribution {
        steps: 1 << 40,
        samples: 1 << 40,
        ..InputAttribution::default()
    };
    for id in ["integrated-gradients", "smoothgrad"] {
        let flag = Arc::new(AtomicBool::new(false));
        let stop = flag.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            stop.store(true, Ordering::Relaxed);
        });
        let err = microscope::interrupt::with_cancel(flag, || {
            many.run(id, &model, &image(&x, 0), &logit(labels[0]))
        })
        .map(|_| ())
        .unwrap_err();
        stopper.join().unwrap();
        assert!(
            matches!(err, microscope::Error::Cancelled { .. }),
            "{id}: {err}"
        );
    }
    let err = InputAttribution {
        noise: f32::NAN,
        ..InputAttribution::default()
    }
    .run("smoothgrad", &model, &image(&x, 0), &logit(labels[0]))
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(err.contains("noise NaN"), "{err}");
}
