//! Dataset examples, DeepDream, weights and attribution, checked against brute force and hand
//! computation.

use microscope::data::{Dataset, ImageSpec, Split};
use microscope::import::builder::{AttrValue, OnnxBuilder};
use microscope::model::Model;
use microscope::network::HostTensor;
use microscope::technique::attribution::{attribution, Target};
use microscope::technique::dataset_examples::DatasetExamples;
use microscope::technique::deepdream::DeepDream;
use microscope::technique::weights::{expanded_weights, first_layer_filters, strongest_inputs};
use microscope::{zoo, Device, DynTensor};

/// Writes a model to a temporary file and loads it through the public path.
fn model_from(bytes: Vec<u8>, name: &str) -> Model {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("circuits");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, bytes).unwrap();
    Model::load(&path).unwrap()
}

#[test]
fn dataset_examples_equal_a_brute_force_scan() {
    let model = zoo::fashion().unwrap();
    let data = Dataset::fashion_mnist(Split::Test).unwrap().take(300);
    let units = [0, 5, 17, 63];
    let found = DatasetExamples {
        k: 4,
        batch: 64,
        crop: 10,
        scores: true,
    }
    .run(&model, &data, "conv2", &units)
    .unwrap();
    // Brute force: every image's activation map, its max and min per unit.
    let x = data
        .batch(0..300, &ImageSpec::unit(1, 28, 28), Device::cpu().burn())
        .unwrap();
    let act = model
        .network()
        .forward(&[("image", model.normalize(&x).unwrap())], &["conv2"])
        .unwrap()
        .remove(0);
    let (c, hw) = (act.dims()[1], act.dims()[2] * act.dims()[3]);
    let v = act.to_vec();
    for (slot, &u) in units.iter().enumerate() {
        let mut scores: Vec<(usize, f32, f32)> = (0..300)
            .map(|i| {
                let map = &v[(i * c + u) * hw..(i * c + u + 1) * hw];
                (
                    i,
                    map.iter().copied().fold(f32::MIN, f32::max),
                    map.iter().copied().fold(f32::MAX, f32::min),
                )
            })
            .collect();
        let all: Vec<f32> = scores.iter().map(|s| s.1).collect();
        assert_eq!(found[slot].scores, all, "unit {u}: every image's score");
        scores.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<usize> = scores[..4].iter().map(|s| s.0).collect();
        scores.sort_by(|a, b| a.2.total_cmp(&b.2));
        let bottom: Vec<usize> = scores[..4].iter().map(|s| s.0).collect();
        let got = &found[slot];
        assert_eq!(
            got.top.iter().map(|e| e.index).collect::<Vec<_>>(),
            top,
            "unit {u} top"
        );
        assert_eq!(
            got.bottom.iter().map(|e| e.index).collect::<Vec<_>>(),
            bottom,
            "unit {u} bottom"
        );
        let best = &got.top[0];
        assert_eq!(best.heatmap.len(), hw);
        let width = act.dims()[3];
        assert_eq!(
            best.heatmap[best.position.0 * width + best.position.1],
            best.score
        );
        assert_eq!(best.crop.len(), 10 * 10);
    }
}

#[test]
fn dataset_examples_stream_the_full_test_set_in_bounded_memory() {
    let model = zoo::fashion().unwrap();
    let data = Dataset::fashion_mnist(Split::Test).unwrap();
    let units: Vec<usize> = (0..64).collect();
    let found = DatasetExamples {
        k: 3,
        batch: 500,
        crop: 8,
        scores: false,
    }
    .run(&model, &data, "conv3", &units)
    .unwrap();
    assert_eq!(found.len(), 64);
    // Kept: k top and k bottom examples per unit, whatever the dataset size.
    assert!(found
        .iter()
        .all(|u| u.top.len() == 3 && u.bottom.len() == 3 && u.scores.is_empty()));
    assert!(found
        .iter()
        .all(|u| u.top[0].score >= u.top[2].score && u.bottom[0].score <= u.bottom[2].score));
}

#[test]
fn deepdream_raises_its_objective() {
    let model = zoo::fashion().unwrap();
    let data = Dataset::fashion_mnist(Split::Test).unwrap().take(1);
    let image = data
        .batch(0..1, &ImageSpec::unit(1, 28, 28), Device::cpu().burn())
        .unwrap();
    let (dream, before, after) = DeepDream::default().run(&model, &image, "conv2").unwrap();
    assert_eq!(dream.dims(), vec![1, 1, 28, 28]);
    assert!(after > before, "deepdream objective {before} -> {after}");
    // Its jitter is drawn from the seed: the same seed gives the same pixels, another another.
    let again = DeepDream::default().run(&model, &image, "conv2").unwrap().0;
    assert_eq!(again.to_vec(), dream.to_vec(), "same seed, same pixels");
    let other = DeepDream {
        seed: 1,
        ..Default::default()
    };
    let other = other.run(&model, &image, "conv2").unwrap().0;
    assert_ne!(other.to_vec(), dream.to_vec(), "another seed, other pixels");
}

/// x [1, 1, 2, 2] → conv "layer" (1×1, 1→2, weights w, no bias) → flatten → Gemm "out" (8→1).
fn tiny_linear(w: [f32; 2], v: [f32; 8]) -> Model {
    let mut b = OnnxBuilder::new();
    b.input("x", &[1, 1, 2, 2])
        .initializer("w", &HostTensor::f32(vec![2, 1, 1, 1], w.to_vec()))
        .initializer("v", &HostTensor::f32(vec![1, 8], v.to_vec()))
        .node("Conv", "layer", &["x", "w"], &[]);
    read_out(&mut b, "layer");
    model_from(b.to_bytes("tiny"), "tiny_linear")
}

/// `from` → flatten → Gemm "out" with the weights "v" (one output), the graph's output.
fn read_out(b: &mut OnnxBuilder, from: &str) {
    b.node("Flatten", "flat", &[from], &[])
        .node(
            "Gemm",
            "out",
            &["flat", "v"],
            &[("transB", AttrValue::Int(1))],
        )
        .output("out");
}

/// x [1, 1, 2, 2] → Relu "skip" → conv "layer" (1×1, weight w) → Add "sum" (layer + skip) →
/// flatten → Gemm "out" (4→1, weights v): a residual block, whose skip goes around the layer.
fn tiny_residual(w: f32, v: [f32; 4]) -> Model {
    let mut b = OnnxBuilder::new();
    b.input("x", &[1, 1, 2, 2])
        .initializer("w", &HostTensor::f32(vec![1, 1, 1, 1], vec![w]))
        .initializer("v", &HostTensor::f32(vec![1, 4], v.to_vec()))
        .node("Relu", "skip", &["x"], &[])
        .node("Conv", "layer", &["skip", "w"], &[])
        .node("Add", "sum", &["layer", "skip"], &[]);
    read_out(&mut b, "sum");
    model_from(b.to_bytes("tiny"), "tiny_residual")
}

/// Attribution at a layer with a skip around it: the network after the layer reads the skip
/// as computed from the image (attribution feeds it once, beside the patched layer), and the
/// gradient is the layer's own.
#[test]
fn attribution_at_a_layer_with_a_skip_around_it() {
    let (w, v) = (3.0, [1.0, -2.0, 0.5, 4.0]);
    let model = tiny_residual(w, v);
    let x = [0.5f32, -0.25, 0.75, 0.125];
    let image = DynTensor::from_host(&x, &[1, 1, 2, 2], Device::cpu().burn());
    let target = Target::Logit {
        node: "out".into(),
        index: 0,
    };
    let map = attribution(&model, &image, "layer", &target).unwrap();
    let skip = |p: usize| x[p].max(0.0);
    // out = Σ v[p] (w + 1) skip[p]; its gradient with respect to layer[p] is v[p].
    let value: f32 = (0..4).map(|p| v[p] * (w + 1.0) * skip(p)).sum();
    assert!((map.value - value).abs() < 1e-5, "{} vs {value}", map.value);
    for (p, v) in v.iter().enumerate() {
        let want = w * skip(p) * v;
        assert!(
            (map.spatial[p] - want).abs() < 1e-5,
            "position {p}: {} vs {want}",
            map.spatial[p]
        );
    }
}

#[test]
fn attribution_matches_a_hand_computed_case() {
    let (w, v) = ([2.0, -1.0], [1.0, 2.0, 3.0, 4.0, 0.5, 0.25, -1.0, 2.0]);
    let model = tiny_linear(w, v);
    let x = [0.1f32, 0.2, 0.3, 0.4];
    let image = DynTensor::from_host(&x, &[1, 1, 2, 2], Device::cpu().burn());
    let map = attribution(
        &model,
        &image,
        "layer",
        &Target::Logit {
            node: "out".into(),
            index: 0,
        },
    )
    .unwrap();
    // activation a[c, p] = w[c] x[p]; gradient of out wrt a[c, p] = v[c·4 + p].
    let a = |c: usize, p: usize| w[c] * x[p];
    for p in 0..4 {
        let want = a(0, p) * v[p] + a(1, p) * v[4 + p];
        assert!(
            (map.spatial[p] - want).abs() < 1e-6,
            "position {p}: {} vs {want}",
            map.spatial[p]
        );
    }
    for c in 0..2 {
        let want: f32 = (0..4).map(|p| a(c, p) * v[c * 4 + p]).sum();
        assert!((map.channels[c] - want).abs() < 1e-6, "channel {c}");
    }
    // A linear path without bias: the attributions add up to the output.
    let total: f32 = map.channels.iter().sum();
    assert!((total - map.value).abs() < 1e-6, "{total} vs {}", map.value);
}

#[test]
fn attribution_toward_a_class_on_the_builtin_model() {
    let model = zoo::fashion().unwrap();
    let data = Dataset::fashion_mnist(Split::Test).unwrap().take(1);
    let image = data
        .batch(0..1, &ImageSpec::unit(1, 28, 28), Device::cpu().burn())
        .unwrap();
    let label = data.labels()[0];
    let map = attribution(
        &model,
        &image,
        "conv3",
        &Target::Logit {
            node: "logits".into(),
            index: label,
        },
    )
    .unwrap();
    assert_eq!((map.height, map.width, map.channels.len()), (7, 7, 64));
    let unit = attribution(
        &model,
        &image,
        "conv2",
        &Target::Unit {
            layer: "conv3".into(),
            index: 4,
        },
    )
    .unwrap();
    assert_eq!(unit.channels.len(), 64);
}

/// x → conv a (1×1, 2→3) → relu → conv b (1×1, 3→4) → maxpool 1×1 → conv c (1×1, 4→2), as
/// exported with a batch of 1 and of 3 (a file's batch is fixed at what its exporter was fed;
/// with 3, the weights were reshaped from a batch of 3 as if it were one image, and panicked).
#[test]
fn expanded_weights_are_the_product_of_weight_matrices_on_a_linear_path() {
    for batch in [1, 3] {
        expanded_weights_of_a_linear_path(batch);
    }
}

fn expanded_weights_of_a_linear_path(batch: i64) {
    let wa: Vec<f32> = (0..6).map(|i| i as f32 * 0.3 - 0.7).collect();
    let wb: Vec<f32> = (0..12).map(|i| (i * 5 % 7) as f32 * 0.2 - 0.5).collect();
    let wc: Vec<f32> = (0..8).map(|i| (i * 3 % 5) as f32 * 0.4 - 0.9).collect();
    let mut b = OnnxBuilder::new();
    b.input("x", &[batch, 2, 5, 5])
        .initializer("wa", &HostTensor::f32(vec![3, 2, 1, 1], wa))
        .initializer("wb", &HostTensor::f32(vec![4, 3, 1, 1], wb.clone()))
        .initializer("wc", &HostTensor::f32(vec![2, 4, 1, 1], wc.clone()))
        .node("Conv", "a", &["x", "wa"], &[])
        .node("Relu", "a/relu", &["a"], &[])
        .node("Conv", "b", &["a/relu", "wb"], &[])
        .node(
            "MaxPool",
            "pool",
            &["b"],
            &[("kernel_shape", AttrValue::Ints(vec![1, 1]))],
        )
        .node("Conv", "c", &["pool", "wc"], &[])
        .output("c");
    let name = format!("linear3-batch{batch}");
    let model = model_from(b.to_bytes(&name), &name);
    for unit in 0..2 {
        let e = expanded_weights(&model, "a", "c", unit).unwrap();
        assert_eq!(e.dims(), vec![3, 5, 5]);
        let v = e.to_vec();
        for i in 0..3 {
            // (Wc · Wb)[unit, i], at the centre; zero elsewhere (1×1 convolutions).
            let want: f32 = (0..4).map(|k| wc[unit * 4 + k] * wb[k * 3 + i]).sum();
            assert!(
                (v[i * 25 + 12] - want).abs() < 1e-5,
                "unit {unit} from {i}: {} vs {want}",
                v[i * 25 + 12]
            );
            assert!(v[i * 25..i * 25 + 25]
                .iter()
                .enumerate()
                .all(|(p, x)| p == 12 || *x == 0.0));
        }
    }
    let strongest = strongest_inputs(&expanded_weights(&model, "a", "c", 0).unwrap(), 2);
    assert_eq!(strongest.len(), 2);
    assert!(strongest[0].1 >= strongest[1].1);
}

/// SegNet's decoder: MaxPool keeps its Indices, MaxUnpool puts values back by them. The layer
/// before the decoder's convolution is the one whose values the unpooling reads (`middle`), not
/// the encoder, which reaches it only through where the maxima are. Linearized, max pooling
/// averages (each of the 2×2 window's cells weighs 1/4) and unpooling spreads each value evenly
/// over its window (1/4 again), so expanded weights depend on the weights alone, not on where an
/// image's maxima happen to be.
#[test]
fn expanded_weights_through_max_unpool_spread_each_value_over_its_window() {
    use microscope::technique::weights::previous_layer;
    let wa: Vec<f32> = (0..6).map(|i| i as f32 * 0.3 - 0.7).collect();
    let wb: Vec<f32> = (0..9).map(|i| (i * 5 % 7) as f32 * 0.2 - 0.5).collect();
    let wc: Vec<f32> = (0..6).map(|i| (i * 3 % 5) as f32 * 0.4 - 0.9).collect();
    let window = || {
        [
            ("kernel_shape", AttrValue::Ints(vec![2, 2])),
            ("strides", AttrValue::Ints(vec![2, 2])),
        ]
    };
    let mut b = OnnxBuilder::new();
    b.input("x", &[1, 2, 6, 6])
        .initializer("wa", &HostTensor::f32(vec![3, 2, 1, 1], wa))
        .initializer("wb", &HostTensor::f32(vec![3, 3, 1, 1], wb.clone()))
        .initializer("wc", &HostTensor::f32(vec![2, 3, 1, 1], wc.clone()))
        .node("Conv", "encoder", &["x", "wa"], &[])
        .node_outputs(
            "MaxPool",
            "pool",
            &["encoder"],
            &["pool", "where"],
            &window(),
        )
        .node("Conv", "middle", &["pool", "wb"], &[])
        .node("Shape", "size", &["encoder"], &[])
        .node(
            "MaxUnpool",
            "unpool",
            &["middle", "where", "size"],
            &window(),
        )
        .node("Conv", "decoder", &["unpool", "wc"], &[])
        .output("decoder");
    let model = model_from(b.to_bytes("segnet"), "segnet");
    assert_eq!(
        previous_layer(&model, "decoder").unwrap().as_deref(),
        Some("middle")
    );
    assert_eq!(
        previous_layer(&model, "middle").unwrap().as_deref(),
        Some("encoder")
    );
    for unit in 0..2 {
        // The decoder's centre (3, 3) is in the window of the middle's cell (1, 1).
        let e = expanded_weights(&model, "middle", "decoder", unit).unwrap();
        assert_eq!(e.dims(), vec![3, 3, 3]);
        let v = e.to_vec();
        for i in 0..3 {
            let want = wc[unit * 3 + i] / 4.0;
            for (p, &got) in v[i * 9..i * 9 + 9].iter().enumerate() {
                let want = if p == 4 { want } else { 0.0 };
                assert!(
                    (got - want).abs() < 1e-6,
                    "middle {i} cell {p} to decoder {unit}: {got}"
                );
            }
        }
        // From the encoder, through both: the four cells of the window, each (Wc · Wb)[unit, i] / 16.
        let e = expanded_weights(&model, "encoder", "decoder", unit).unwrap();
        assert_eq!(e.dims(), vec![3, 6, 6]);
        let v = e.to_vec();
        for i in 0..3 {
            let want: f32 = (0..3)
                .map(|k| wc[unit * 3 + k] * wb[k * 3 + i])
                .sum::<f32>()
                / 16.0;
            for (p, &got) in v[i * 36..i * 36 + 36].iter().enumerate() {
                let (y, x) = (p / 6, p % 6);
                let inside = (2..4).contains(&y) && (2..4).contains(&x);
                let want = if inside { want } else { 0.0 };
                assert!(
                    (got - want).abs() < 1e-6,
                    "encoder {i} cell {p} to decoder {unit}: {got}"
                );
            }
        }
    }
}

/// A deformable convolution (DCNv2: offsets and a sigmoid mask, convolutions of its input) is a
/// layer, and its expanded weights are its own weights where its offsets at rest put the taps
/// (here, with offset convolutions without bias, the regular grid), the mask left out: a
/// sigmoid linearized is 0 at rest and would hide them all.
#[test]
fn expanded_weights_of_a_deformable_convolution_are_its_weights_at_rest() {
    use microscope::technique::weights::previous_layer;
    let stem: Vec<f32> = (0..6).map(|i| i as f32 * 0.3 - 0.7).collect();
    let wd: Vec<f32> = (0..2 * 3 * 9)
        .map(|i| (i * 7 % 11) as f32 * 0.1 - 0.5)
        .collect();
    let pad = || [("pads", AttrValue::Ints(vec![1, 1, 1, 1]))];
    let mut b = OnnxBuilder::new();
    b.opset(19)
        .input("x", &[1, 2, 5, 5])
        .initializer("w_stem", &HostTensor::f32(vec![3, 2, 1, 1], stem))
        .initializer(
            "w_off",
            &HostTensor::f32(vec![18, 3, 3, 3], vec![0.05; 18 * 27]),
        )
        .initializer(
            "w_mask",
            &HostTensor::f32(vec![9, 3, 3, 3], vec![0.1; 9 * 27]),
        )
        .initializer("w_deform", &HostTensor::f32(vec![2, 3, 3, 3], wd.clone()))
        .node("Conv", "stem", &["x", "w_stem"], &[])
        .node("Conv", "offsets", &["stem", "w_off"], &pad())
        .node("Conv", "mask_logits", &["stem", "w_mask"], &pad())
        .node("Sigmoid", "modulation", &["mask_logits"], &[])
        .node(
            "DeformConv",
            "deform",
            &["stem", "w_deform", "offsets", "", "modulation"],
            &pad(),
        )
        .output("deform");
    let model = model_from(b.to_bytes("dcn"), "dcn");
    assert_eq!(
        previous_layer(&model, "deform").unwrap().as_deref(),
        Some("stem")
    );
    for unit in 0..2 {
        let e = expanded_weights(&model, "stem", "deform", unit).unwrap();
        assert_eq!(e.dims(), vec![3, 5, 5]);
        let v = e.to_vec();
        for i in 0..3 {
            for (p, &got) in v[i * 25..i * 25 + 25].iter().enumerate() {
                let (y, x) = (p / 5, p % 5);
                let want = if (1..4).contains(&y) && (1..4).contains(&x) {
                    wd[((unit * 3 + i) * 3 + y - 1) * 3 + x - 1]
                } else {
                    0.0
                };
                assert!(
                    (got - want).abs() < 1e-6,
                    "stem {i} cell {p} to deform {unit}: {got}"
                );
            }
        }
    }
}

/// Weights of any rank rank their first axis: a vector's entries are units of one weight each,
/// and a scalar is one unit (it panicked).
#[test]
fn strongest_inputs_of_vectors_and_scalars() {
    let device = Device::cpu();
    let vector = DynTensor::from_host(&[1.0, -3.0, 2.0], &[3], device.burn());
    let ranked: Vec<usize> = strongest_inputs(&vector, 2).iter().map(|r| r.0).collect();
    assert_eq!(ranked, [1, 2]);
    let scalar = DynTensor::from_host(&[-2.0], &[], device.burn());
    assert_eq!(strongest_inputs(&scalar, 5), [(0, 2.0, -2.0)]);
}

#[test]
fn first_layer_filters_are_the_first_convolutions_weights() {
    let model = zoo::fashion().unwrap();
    let (layer, filters) = first_layer_filters(&model).unwrap();
    assert_eq!(layer, "conv1");
    assert_eq!(filters.dims(), vec![32, 1, 3, 3]);
    let conv = model.network().node("conv1").unwrap();
    let weight = model.network().constant(&conv.inputs[1]).unwrap();
    assert_eq!(
        filters.to_vec(),
        weight.to_f32(),
        "raw weights, not scaled for display"
    );
    // The unit view's Weights tab of a first-layer unit reports the filter's own norm; so does
    // the tab of a unit of its ReLU, whose units are the convolution's.
    let filter = &weight.to_f32()[3 * 9..4 * 9];
    let norm = filter.iter().map(|v| v * v).sum::<f32>().sqrt();
    for layer in ["conv1", "conv1/relu"] {
        let tab = model
            .unit(layer, 3)
            .unwrap()
            .view_tab("weights", &Default::default())
            .unwrap();
        let json = serde_json::to_value(&tab).unwrap();
        let shown = json["body"]["cards"][0]["norm"].as_f64().unwrap() as f32;
        assert!(
            (shown - norm).abs() < 1e-5 * norm.max(1.0),
            "{layer}: {shown} vs {norm}"
        );
    }
    // A later ReLU's tab draws the weights from the layer before its convolution.
    let tab = model
        .unit("conv2/relu", 3)
        .unwrap()
        .view_tab("weights", &Default::default())
        .unwrap();
    let json = serde_json::to_value(&tab).unwrap();
    assert_eq!(json["body"]["from"], "conv1");
}

#[test]
fn previous_layer_is_the_nearest_layer_every_path_passes() {
    use microscope::technique::weights::{own_layer, previous_layer};
    let fashion = zoo::fashion().unwrap();
    assert_eq!(
        previous_layer(&fashion, "conv3").unwrap().as_deref(),
        Some("conv2")
    );
    assert_eq!(
        previous_layer(&fashion, "logits").unwrap().as_deref(),
        Some("fc1")
    );
    assert_eq!(previous_layer(&fashion, "conv1").unwrap(), None);
    // A ReLU's units are its convolution's: the layer before `conv2/relu` is conv1's, not
    // conv2 (whose expanded weights to it would be the identity), and so in the float8 model,
    // through its quantizers. The first layer's ReLU has none before it, and its own filters.
    assert_eq!(
        previous_layer(&fashion, "conv2/relu").unwrap().as_deref(),
        Some("conv1")
    );
    assert_eq!(previous_layer(&fashion, "conv1/relu").unwrap(), None);
    assert_eq!(own_layer(&fashion, "conv1/relu").unwrap(), "conv1");
    assert_eq!(own_layer(&fashion, "pool1").unwrap(), "pool1");
    let float8 = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/quantized/float8.onnx");
    let float8 = microscope::Model::load(float8).unwrap();
    assert_eq!(
        previous_layer(&float8, "conv2/relu_DequantizeLinear")
            .unwrap()
            .as_deref(),
        Some("conv1")
    );
    assert_eq!(
        own_layer(&float8, "conv2/relu_DequantizeLinear").unwrap(),
        "conv2"
    );
    let path = std::env::var_os("MICROSCOPE_ONNX_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
        })
        .join("light/light_inception_v1.onnx");
    let googlenet = microscope::Model::load(path).unwrap();
    let prev = |l: &str| previous_layer(&googlenet, l).unwrap();
    // Through the pool between blocks, to the previous block's output.
    assert_eq!(
        prev("inception_4a/output").as_deref(),
        Some("inception_3b/output")
    );
    // Inside a branch, through the ReLU.
    assert_eq!(
        prev("inception_4a/3x3").as_deref(),
        Some("inception_4a/3x3_reduce")
    );
    assert!(previous_layer(&googlenet, "no_such_layer").is_err());
}
