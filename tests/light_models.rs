//! The nine ONNX "light" models (AlexNet, GoogLeNet, VGG19, ResNet-50, SqueezeNet, DenseNet-121,
//! ShuffleNet, ZFNet-512, Inception-v2) from the onnx wheel's backend test data.
//!
//! 1. `microscope eval` reproduces each model's expected output on the backend-test input
//!    (`np.arange(n).reshape(shape) / n`).
//! 2. Those models' weights are constants (ConstantOfShape), which would hide wrong numerics, so
//!    `tests/support/light_reference.py` also writes each model with seeded random weights and
//!    onnxruntime's value of every intermediate node; every node must match with rtol 1e-3 and
//!    atol 1e-4 × max(1, the tensor's largest magnitude): float32 sums run in a different order
//!    in each backend, and deep nets (DenseNet-121 has 668 nodes) accumulate those differences
//!    in absolute terms where activations grow to O(10).

mod support;

use std::path::Path;
use std::process::Command;

use microscope::import::{load_onnx, proto, tensor};
use microscope::{npy, DynTensor};
use prost::Message;
use support::reference::{mismatch, Reference};

const MODELS: &[&str] = &[
    "light_bvlc_alexnet",
    "light_densenet121",
    "light_inception_v1",
    "light_inception_v2",
    "light_resnet50",
    "light_shufflenet",
    "light_squeezenet",
    "light_vgg19",
    "light_zfnet512",
];

fn backend_input(shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n).map(|i| i as f32 / n as f32).collect()
}

#[test]
fn eval_reproduces_expected_outputs() {
    let dir = support::onnx_fixtures().join("light");
    let out_root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("light-eval");
    for name in MODELS {
        let model = dir.join(format!("{name}.onnx"));
        let net = load_onnx(&model, support::test_device()).unwrap_or_else(|e| panic!("{e}"));
        let shape: Vec<usize> = net
            .image_input()
            .unwrap()
            .shape
            .iter()
            .map(|d| d.unwrap_or(1))
            .collect();
        let out = out_root.join(name);
        std::fs::create_dir_all(&out).unwrap();
        let input = out.join("input.npy");
        npy::write(&input, &shape, &backend_input(&shape)).unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_microscope"))
            .args([
                "eval",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .args(["--device", &support::test_device().to_string()])
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let bytes = std::fs::read(dir.join(format!("{name}_output_0.pb"))).unwrap();
        let want = tensor::decode(&proto::TensorProto::decode(bytes.as_slice()).unwrap()).unwrap();
        let output = &net.outputs()[0];
        let file: String = output
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let got = npy::read(&out.join(format!("{file}.npy"))).unwrap();
        assert_eq!(got.shape, want.shape, "{name}");
        if let Some((i, a, b)) = mismatch(&got.data, &want.to_f32(), 1e-3, 1e-4) {
            panic!("{name}: output[{i}] = {a}, expected {b}");
        }
        println!(
            "{name}: {} nodes, output {:?} matches",
            net.nodes().len(),
            got.shape
        );
    }
}

#[test]
fn every_node_matches_onnxruntime_with_random_weights() {
    let dir = support::onnx_fixtures().join("light-ref");
    let device = support::test_device();
    for name in MODELS {
        let net = load_onnx(&dir.join(format!("{name}_random.onnx")), device.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let input = npy::read(&dir.join(format!("{name}_input.npy"))).unwrap();
        let reference = Reference::read(&dir.join(name), input);
        let check = reference.check_every_node(name, &net);
        // End to end, from the image alone: the graph output after every node's rounding.
        let input = &reference.input;
        let graph_input = net.image_input().unwrap().name.clone();
        let x = DynTensor::from_host(&input.data, &input.shape, device.burn());
        let out = &net.outputs()[0];
        let got = net
            .forward(&[(&graph_input, x)], &[out])
            .unwrap()
            .remove(0)
            .to_vec();
        let want = reference.value(out);
        let scale = want.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let drift = got
            .iter()
            .zip(&want.data)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        println!(
            "{name}: {} nodes match onnxruntime (worst error {:.2} of tolerance); end-to-end output max |diff| / max |value| = {drift:.1e}",
            check.nodes, check.worst
        );
        assert!(
            drift < 1e-2,
            "{name}: end-to-end output drifts by {drift} of its scale"
        );
    }
}

#[test]
fn models_exported_for_batch_one_run_batches() {
    // light_inception_v1 declares [1, 3, 224, 224] and reshapes to a hard-coded [1, 1024].
    let dir = support::onnx_fixtures().join("light-ref");
    let name = "light_inception_v1";
    let net = load_onnx(
        &dir.join(format!("{name}_random.onnx")),
        support::test_device(),
    )
    .unwrap();
    let input = npy::read(&dir.join(format!("{name}_input.npy"))).unwrap();
    let mut two = input.data.clone();
    two.extend(input.data.iter().map(|v| 1.0 - v));
    let device = support::test_device();
    let x = DynTensor::from_host(&two, &[2, 3, 224, 224], device.burn());
    let out = net
        .forward(&[("data_0", x)], &[&net.outputs()[0]])
        .unwrap()
        .remove(0);
    assert_eq!(out.dims(), vec![2, 1000]);
    let rows = out.to_vec();
    let single = |data: &[f32]| {
        let x = DynTensor::from_host(data, &[1, 3, 224, 224], device.burn());
        net.forward(&[("data_0", x)], &[&net.outputs()[0]])
            .unwrap()
            .remove(0)
            .to_vec()
    };
    let flipped: Vec<f32> = input.data.iter().map(|v| 1.0 - v).collect();
    assert!(mismatch(&rows[..1000], &single(&input.data), 1e-4, 1e-6).is_none());
    assert!(mismatch(&rows[1000..], &single(&flipped), 1e-4, 1e-6).is_none());
}

/// Feature visualization on the CPU runs on a backend of microscope's own, whose LRN adds its
/// window sums in another order than the LRN composed of burn's ops that `Dispatch` runs. Adam's
/// first steps move every parameter by about the learning rate whatever its gradient's size, so
/// such rounding differences soon show in the pixels (GoogLeNet with seeded random weights, 32
/// steps, measured: a mean |Δpixel| near 0.05, as between the CPU and CUDA). What a user sees
/// must not change: each image drives its unit as strongly on either backend, and both far
/// above the start image.
#[test]
fn googlenet_renders_alike_on_the_cpu_backend_and_through_dispatch() {
    use microscope::technique::objective::unit_activations;
    use microscope::technique::render::{render, render_through_dispatch};
    use microscope::technique::render::{ParamKind, RenderConfig};
    use microscope::technique::{transform, Objective};
    let path = support::onnx_fixtures().join("light-ref/light_inception_v1_random.onnx");
    let model = microscope::Model::load_on(&path, microscope::Device::cpu()).unwrap();
    let config = |steps| RenderConfig {
        steps,
        learning_rate: 0.05,
        seed: 7,
        batch: 4,
        size: 96,
        param: ParamKind::Fft,
        transforms: transform::standard_transforms(96),
        redirect_steps: 8,
        context: None,
    };
    let (layer, units) = ("inception_3a/output", [0, 1, 2, 3]);
    let objective = Objective::channels(layer, &units);
    let drive = |images: &DynTensor| unit_activations(&model, layer, &units, images).unwrap();
    let ours = render(&model, &objective, &config(32), &mut |_| {}, None).unwrap();
    let theirs =
        render_through_dispatch(&model, &objective, &config(32), &mut |_| {}, None).unwrap();
    let start = render(&model, &objective, &config(0), &mut |_| {}, None).unwrap();
    let (a, b, s) = (
        drive(&ours.images),
        drive(&theirs.images),
        drive(&start.images),
    );
    let (pa, pb) = (ours.images.to_vec(), theirs.images.to_vec());
    let mean = pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum::<f32>() / pa.len() as f32;
    println!(
        "units {units:?}: cpu backend {a:?}, dispatch {b:?}, start {s:?}; mean |dpixel| {mean:.4}"
    );
    for i in 0..units.len() {
        let rise = (a[i] - s[i]).min(b[i] - s[i]);
        assert!(
            rise > 0.0,
            "unit {}: no rise from the start image",
            units[i]
        );
        assert!(
            (a[i] - b[i]).abs() <= 0.1 * (a[i] - s[i]).max(b[i] - s[i]),
            "unit {}: cpu backend {}, dispatch {}, start {}",
            units[i],
            a[i],
            b[i],
            s[i]
        );
    }
}
