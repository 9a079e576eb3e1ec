//! Gradients flow from any activation to the input image, and only there by default.

mod support;

use microscope::import::parse_onnx;
use microscope::network::{DynTensor, Network};
use microscope::Device;

fn net() -> Network {
    parse_onnx(&support::small_conv_net(), "small", Device::cpu()).unwrap()
}

fn image(device: &burn::DispatchDevice) -> (Vec<f32>, DynTensor) {
    let data: Vec<f32> = (0..2 * 8 * 8)
        .map(|i| ((i * 37 % 101) as f32 / 101.0) - 0.5)
        .collect();
    let t = DynTensor::from_host(&data, &[1, 2, 8, 8], device);
    (data, t)
}

/// Mean activation of channel `unit` of node `conv2`.
fn unit_mean(net: &Network, x: DynTensor, unit: usize) -> DynTensor {
    let act = net.forward(&[("x", x)], &["conv2"]).unwrap().remove(0);
    let t = act.to_rank::<4>().unwrap().narrow(1, unit, 1).mean();
    DynTensor::new(t)
}

#[test]
fn input_gradient_matches_finite_differences() {
    let net = net();
    let device = Device::cpu();
    let (data, x) = image(&device.autodiff());
    let x = x.require_grad();
    let objective = unit_mean(&net, x.clone(), 2);
    let grads = objective.backward();
    let analytic = x.grad(&grads).expect("input gradient").to_vec();
    let eps = 1e-3;
    let plain = device.burn();
    let mut checked = 0;
    for i in 0..data.len() {
        let eval = |delta: f32| {
            let mut d = data.clone();
            d[i] += delta;
            unit_mean(&net, DynTensor::from_host(&d, &[1, 2, 8, 8], plain), 2).to_vec()[0]
        };
        let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
        let tol = 2e-3 + 2e-2 * numeric.abs();
        assert!(
            (numeric - analytic[i]).abs() <= tol,
            "pixel {i}: finite difference {numeric}, autodiff {}",
            analytic[i]
        );
        checked += usize::from(analytic[i] != 0.0);
    }
    assert!(
        checked > 20,
        "only {checked} pixels have a nonzero gradient"
    );
}

#[test]
fn no_weight_gradient_by_default() {
    let net = net();
    let device = Device::cpu().autodiff();
    for (tracked, weights) in [(false, net.frozen_weights()), (true, net.tracked_weights())] {
        let (_, x) = image(&device);
        let x = x.require_grad();
        let act = net
            .forward_with(&[("x", x.clone())], &["conv2"], Some(&weights))
            .unwrap()
            .remove(0);
        let grads = act.backward();
        assert!(x.grad(&grads).is_some(), "the input always gets a gradient");
        for name in ["w1", "b1", "w2", "b2"] {
            let w = weights.get(name).unwrap();
            assert_eq!(
                w.grad(&grads).is_some(),
                tracked,
                "weight {name}, tracked = {tracked}"
            );
        }
    }
}

#[test]
fn forward_stops_at_the_last_needed_node() {
    // A network whose tail fails: requesting an early node must not run it.
    let net = net();
    let (_, x) = image(Device::cpu().burn());
    let early = net.forward(&[("x", x)], &["pool1"]).unwrap();
    assert_eq!(early[0].dims(), vec![1, 3, 4, 4]);
    let bad = DynTensor::from_host(&[0.0; 2 * 3 * 3], &[1, 2, 3, 3], Device::cpu().burn());
    // conv2 (3×3 kernel, no padding) on a 1×1 map fails, but relu1 does not need it.
    assert!(net.forward(&[("x", bad.clone())], &["relu1"]).is_ok());
    let err = net
        .forward(&[("x", bad)], &["conv2"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv2"), "{err}");
}

#[test]
fn max_pool_values_and_gradient_match_burns_kernel() {
    use burn::tensor::{module, Tensor, TensorData};
    use burn::Dispatch;
    // GoogLeNet's two pools: 3×3 stride 1 pad 1 (overlapping windows) and 3×3 stride 2. Values
    // come from a small set, so windows tie often: the gradient must go to the first maximum.
    let (n, c, h, w) = (2, 3, 11, 13);
    let data: Vec<f32> = (0..n * c * h * w)
        .map(|i| ((i * 7919) % 13) as f32 - 6.0)
        .collect();
    let device = Device::cpu().autodiff();
    for (stride, pad) in [(1i64, 1i64), (2, 0)] {
        let bytes = support::model(
            vec![support::node(
                "MaxPool",
                "pool",
                &["x"],
                &["y"],
                vec![
                    support::ints("kernel_shape", &[3, 3]),
                    support::ints("strides", &[stride, stride]),
                    support::ints("pads", &[pad; 4]),
                ],
            )],
            vec![],
            support::value_info("x", &[0, 3, 0, 0]),
            "y",
        );
        let net = parse_onnx(&bytes, "pool", Device::cpu()).unwrap();
        let x = DynTensor::from_host(&data, &[n, c, h, w], &device).require_grad();
        let ours = net
            .forward(&[("x", x.clone())], &["pool"])
            .unwrap()
            .remove(0)
            .to_rank::<4>()
            .unwrap();
        let leaf =
            Tensor::<Dispatch, 4>::from_data(TensorData::new(data.clone(), [n, c, h, w]), &device)
                .require_grad();
        let (s, p) = (stride as usize, pad as usize);
        let theirs = module::max_pool2d(leaf.clone(), [3, 3], [s, s], [p, p], [1, 1], false);
        assert_eq!(ours.dims(), theirs.dims(), "stride {stride}");
        let (ov, tv) = (
            ours.to_data().to_vec::<f32>().unwrap(),
            theirs.to_data().to_vec::<f32>().unwrap(),
        );
        assert_eq!(ov, tv, "values, stride {stride}");
        // Weigh each output differently, so that a gradient sent to the wrong input shows.
        let weights: Vec<f32> = (0..ov.len()).map(|i| 1.0 + (i % 7) as f32).collect();
        let weigh = |y: Tensor<Dispatch, 4>| {
            let wt = Tensor::<Dispatch, 4>::from_data(
                TensorData::new(weights.clone(), y.dims()),
                &device,
            );
            DynTensor::new((y * wt).sum())
        };
        let ours_grad = x.grad(&weigh(ours).backward()).unwrap().to_vec();
        let theirs_grad = leaf
            .grad(&weigh(theirs).backward())
            .unwrap()
            .to_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(ours_grad, theirs_grad, "gradient, stride {stride}");
        assert!(ours_grad.iter().filter(|&&g| g != 0.0).count() > n * c * 4);
    }
}

/// SegNet's decoder step: MaxPool keeps where each maximum came from (its Indices output),
/// MaxUnpool puts the pooled values back there, into a tensor of the pooled input's shape
/// (`Shape` of it, as exporters pass `output_shape`). Odd sizes, overlapping windows with ties,
/// asymmetric pads and ceil mode (padded explicitly before burn's kernel) all round-trip: each
/// output cell is its input where that input is a window's first maximum, else 0. The gradient
/// of a weighted sum reaches each such input once, with its own weight, however many windows
/// share it.
#[test]
fn max_unpool_puts_each_maximum_back_where_max_pool_found_it() {
    let (n, c, h, w) = (2, 3, 7, 9);
    let data: Vec<f32> = (0..n * c * h * w)
        .map(|i| ((i * 7919) % 11) as f32 - 5.0)
        .collect();
    let device = Device::cpu().autodiff();
    // kernel, stride, pads (top, left, bottom, right), ceil_mode
    let cases: [(i64, i64, [i64; 4], i64); 3] = [
        (3, 2, [1, 1, 1, 1], 0),
        (2, 2, [0, 0, 1, 1], 0),
        (2, 2, [0, 0, 0, 0], 1),
    ];
    for (k, s, pads, ceil) in cases {
        let bytes = support::model(
            vec![
                support::node(
                    "MaxPool",
                    "pool",
                    &["x"],
                    &["pooled", "where"],
                    vec![
                        support::ints("kernel_shape", &[k, k]),
                        support::ints("strides", &[s, s]),
                        support::ints("pads", &pads),
                        support::int("ceil_mode", ceil),
                    ],
                ),
                support::node("Shape", "shape", &["x"], &["size"], vec![]),
                support::node(
                    "MaxUnpool",
                    "unpool",
                    &["pooled", "where", "size"],
                    &["y"],
                    vec![
                        support::ints("kernel_shape", &[k, k]),
                        support::ints("strides", &[s, s]),
                        support::ints("pads", &pads),
                    ],
                ),
            ],
            vec![],
            support::value_info("x", &[0, 3, 0, 0]),
            "y",
        );
        let net = parse_onnx(&bytes, "segnet step", Device::cpu()).unwrap();
        // Each window's first maximum, found here by brute force over the unpadded cells.
        let at = |b: usize, y: usize, x: usize| data[((b * h) + y) * w + x];
        let out = |size: usize, pad: i64, end: i64| {
            let span = size as i64 + pad + end - k;
            (if ceil == 1 {
                (span + s - 1) / s
            } else {
                span / s
            }) + 1
        };
        let (oh, ow) = (out(h, pads[0], pads[2]), out(w, pads[1], pads[3]));
        let mut kept = vec![false; data.len()];
        for b in 0..n * c {
            for (py, px) in (0..oh).flat_map(|py| (0..ow).map(move |px| (py, px))) {
                let mut best: Option<(f32, usize)> = None;
                for (dy, dx) in (0..k).flat_map(|dy| (0..k).map(move |dx| (dy, dx))) {
                    let (y, x) = (py * s - pads[0] + dy, px * s - pads[1] + dx);
                    if (0..h as i64).contains(&y) && (0..w as i64).contains(&x) {
                        let v = at(b, y as usize, x as usize);
                        if best.is_none_or(|(m, _)| v > m) {
                            best = Some((v, (b * h + y as usize) * w + x as usize));
                        }
                    }
                }
                kept[best.unwrap().1] = true;
            }
        }
        let want: Vec<f32> = data
            .iter()
            .zip(&kept)
            .map(|(&v, &k)| if k { v } else { 0.0 })
            .collect();
        let x = DynTensor::from_host(&data, &[n, c, h, w], &device).require_grad();
        let y = net.forward(&[("x", x.clone())], &["y"]).unwrap().remove(0);
        let case = format!("kernel {k} stride {s} pads {pads:?} ceil {ceil}");
        assert_eq!(y.dims(), [n, c, h, w], "{case}");
        assert_eq!(y.to_vec(), want, "{case}");
        let weights: Vec<f32> = (0..data.len()).map(|i| 1.0 + (i % 5) as f32).collect();
        let weighted = y
            .to_rank::<4>()
            .unwrap()
            .mul(
                DynTensor::from_host(&weights, &[n, c, h, w], &device)
                    .to_rank::<4>()
                    .unwrap(),
            )
            .sum();
        let grad = x
            .grad(&DynTensor::new(weighted).backward())
            .unwrap()
            .to_vec();
        let want: Vec<f32> = weights
            .iter()
            .zip(&kept)
            .map(|(&g, &k)| if k { g } else { 0.0 })
            .collect();
        assert_eq!(grad, want, "gradient, {case}");
        assert!(kept.iter().filter(|&&k| k).count() > n * c * 8, "{case}");
    }
}

/// A deformable convolution as DCNv2 builds one: the offsets (a row and a column per tap) and
/// the mask (a sigmoid) are convolutions of the same input. The gradient of a unit's mean
/// reaches the input through all three (what is sampled, where, and how much it counts) and
/// matches finite differences.
#[test]
fn deform_conv_gradient_matches_finite_differences() {
    let opset19 = |bytes: Vec<u8>| {
        use prost::Message;
        let mut m = microscope::import::proto::ModelProto::decode(bytes.as_slice()).unwrap();
        m.opset_import[0].version = 19;
        m.encode_to_vec()
    };
    let (c, h, w, groups) = (4, 7, 6, 2);
    let conv = |name: &str, out: &str, weight: &str| {
        support::node(
            "Conv",
            name,
            &["x", weight],
            &[out],
            vec![support::ints("pads", &[1, 1, 1, 1])],
        )
    };
    let bytes = opset19(support::model(
        vec![
            conv("offset", "off", "w_off"),
            conv("mask_logits", "ml", "w_mask"),
            support::node("Sigmoid", "mask", &["ml"], &["mask"], vec![]),
            support::node(
                "DeformConv",
                "dcn",
                &["x", "w", "off", "b", "mask"],
                &["y"],
                vec![
                    support::ints("pads", &[1, 1, 1, 1]),
                    support::int("group", groups),
                    support::int("offset_group", 2),
                ],
            ),
        ],
        vec![
            // Offsets of a few pixels, so that points fall between pixels and off the edges.
            support::random("w_off", &[2 * 9 * 2, c as i64, 3, 3], 11, 0.6),
            support::random("w_mask", &[2 * 9, c as i64, 3, 3], 12, 0.5),
            support::random("w", &[6, c as i64 / groups, 3, 3], 13, 0.5),
            support::random("b", &[6], 14, 0.1),
        ],
        support::value_info("x", &[1, c as i64, h as i64, w as i64]),
        "y",
    ));
    let net = parse_onnx(&bytes, "dcn", Device::cpu()).unwrap();
    let data: Vec<f32> = (0..c * h * w)
        .map(|i| ((i * 37 % 101) as f32 / 101.0) - 0.5)
        .collect();
    let unit_mean = |x: DynTensor, unit: usize| {
        let y = net.forward(&[("x", x)], &["y"]).unwrap().remove(0);
        DynTensor::new(y.to_rank::<4>().unwrap().narrow(1, unit, 1).mean())
    };
    let device = Device::cpu();
    for unit in [0, 4] {
        let x = DynTensor::from_host(&data, &[1, c, h, w], &device.autodiff()).require_grad();
        let analytic = x
            .grad(&unit_mean(x.clone(), unit).backward())
            .unwrap()
            .to_vec();
        let eps = 1e-3;
        let mut nonzero = 0;
        for i in 0..data.len() {
            let eval = |delta: f32| {
                let mut d = data.clone();
                d[i] += delta;
                let x = DynTensor::from_host(&d, &[1, c, h, w], device.burn());
                unit_mean(x, unit).to_vec()[0]
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let tol = 2e-3 + 2e-2 * numeric.abs();
            assert!(
                (numeric - analytic[i]).abs() <= tol,
                "unit {unit}, pixel {i}: finite difference {numeric}, autodiff {}",
                analytic[i]
            );
            nonzero += usize::from(analytic[i].abs() > 1e-4);
        }
        assert!(nonzero > data.len() / 2, "unit {unit}: {nonzero} nonzero");
    }
}
