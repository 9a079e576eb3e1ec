//! ms per forward + backward-to-input step on the GoogLeNet light model at 224 px (batch 1 and 8).
//!
//! usage: cargo bench --bench googlenet_step -- MODEL.onnx [ITERS]
//! Prints `microscope_step_ms batch=B MS` (forward + backward to the input, autodiff device) and
//! `microscope_forward_ms batch=B MS` (forward only, plain device) lines; `benches/googlenet.sh` runs it next to
//! onnxruntime's forward pass and prints the ratios.

use std::time::Instant;

use microscope::import::load_onnx;
use microscope::{Device, DynTensor};

/// Median wall time of `f` in ms over `iters` runs, after two warm-up runs.
fn time<T>(iters: usize, f: impl Fn() -> T) -> f64 {
    for _ in 0..2 {
        f();
    }
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let model = args
        .first()
        .expect("usage: googlenet_step MODEL.onnx [ITERS]");
    let iters: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let device = Device::cpu();
    let net = load_onnx(model.as_ref(), device.clone()).unwrap_or_else(|e| panic!("{e}"));
    let input = net.image_input().unwrap().name.clone();
    // The last node before the softmax: the class logits.
    let logits = net
        .nodes()
        .iter()
        .rev()
        .find(|n| n.op != "Softmax")
        .unwrap()
        .name
        .clone();
    let ad = device.autodiff();
    // The graph declares batch 1; batch 8 runs as 8 independent rows through a batch-free copy.
    for batch in [1usize, 8] {
        let n = batch * 3 * 224 * 224;
        let data: Vec<f32> = (0..n).map(|i| (i % 251) as f32 / 251.0).collect();
        let step = || {
            let x = DynTensor::from_host(&data, &[batch, 3, 224, 224], &ad).require_grad();
            let out = net
                .forward(&[(&input, x.clone())], &[&logits])
                .unwrap_or_else(|e| panic!("{e}"));
            let grads = out[0].backward();
            x.grad(&grads).expect("input gradient").to_vec()
        };
        println!("microscope_step_ms batch={batch} {:.2}", time(iters, step));
        // Forward alone on the plain device, for a like-for-like comparison with onnxruntime.
        let forward = || {
            let x = DynTensor::from_host(&data, &[batch, 3, 224, 224], device.burn());
            net.forward(&[(&input, x)], &[&logits]).unwrap()[0].to_vec()
        };
        println!(
            "microscope_forward_ms batch={batch} {:.2}",
            time(iters, forward)
        );
    }
}
