//! ms per feature-visualization step: GoogLeNet (ONNX light model with seeded random weights),
//! one mid layer, 8 units in one batch, 128 px, Lucid's FFT parameterization and transforms.
//!
//! usage: cargo bench --bench feature_vis_step -- MODEL.onnx [LAYER] [STEPS] [DEVICE]
//! Prints `microscope_fv_step_ms MS`; `benches/feature_vis.sh` runs it next to a PyTorch loop
//! doing what Lucent does and prints the ratio.

use std::time::Instant;

use microscope::technique::render::{render, ParamKind, RenderConfig};
use microscope::technique::transform::standard_transforms;
use microscope::technique::Objective;
use microscope::{Device, Model};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let path = args
        .first()
        .expect("usage: feature_vis_step MODEL.onnx [LAYER] [STEPS]");
    let layer = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("inception_4a/output");
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let device = Device::parse(args.get(3).map(String::as_str).unwrap_or("cpu"))
        .unwrap_or_else(|e| panic!("{e}"));
    let model = Model::load_on(path, device).unwrap_or_else(|e| panic!("{e}"));
    let units: Vec<usize> = (0..8).collect();
    let objective = Objective::channels(layer, &units);
    let config = |steps| RenderConfig {
        steps,
        learning_rate: 0.05,
        seed: 0,
        batch: units.len(),
        size: 128,
        param: ParamKind::Fft,
        transforms: standard_transforms(128),
        redirect_steps: 0,
        context: None,
    };
    // Warm up (allocations, kernels), then time a full run and divide.
    render(&model, &objective, &config(2), &mut |_| {}, None).unwrap();
    // Step times come from the progress callback; the second half shows the steady state (a
    // GPU backend compiles and autotunes kernels for each new image size the random scale draws).
    let t = Instant::now();
    let mut stamps = Vec::with_capacity(steps);
    render(
        &model,
        &objective,
        &config(steps),
        &mut |_| stamps.push(t.elapsed().as_secs_f64()),
        None,
    )
    .unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!("microscope_fv_step_ms {ms:.1}");
    if steps >= 4 {
        let half = steps / 2;
        let steady = (stamps[steps - 1] - stamps[half - 1]) * 1e3 / (steps - half) as f64;
        eprintln!(
            "microscope steady state (last {} steps): {steady:.1} ms/step",
            steps - half
        );
    }
}
