//! ms per feature-visualization step: GoogLeNet (ONNX light model with seeded random weights),
//! one mid layer, 8 units in one batch, 128 px, Lucid's FFT parameterization and transforms.
//!
//! usage: cargo bench --bench feature_vis_step -- MODEL.onnx [LAYER] [STEPS] [DEVICE]
//! Prints `microscope_fv_step_ms MS`; `benches/feature_vis.sh` runs it next to a PyTorch loop
//! doing what Lucent does and prints the ratio. In the environment:
//! - `BATCHES="8 32 128"`: also one `microscope_fv_batch BATCH MS` line per batch size (unit i of
//!   the batch is channel i of the layer, modulo its channels), for throughput;
//! - `GALLERY=B`: instead, the whole layer's gallery (every unit, STEPS steps, batches of B
//!   units), timed: `microscope_gallery_s UNITS B SECONDS`;
//! - `DISPATCH=1`: also the same loop through burn's `Dispatch` backend, as the device ran it
//!   before it had a named backend of its own (`microscope_fv_dispatch_step_ms MS`): what our
//!   own ops gain;
//! - `RENDER=dispatch`: `microscope_fv_step_ms` through `Dispatch` too, for a profile of that
//!   loop alone (benches/gpu.sh);
//! - `DIVERSITY=N`: also the unit view's diversity render (N images of unit 0, whose diversity
//!   term couples them), in parts side by side and in one part, three alternating runs each:
//!   `microscope_diversity_step_ms N PARTS ONE` (the medians).

use std::time::Instant;

use microscope::technique::render::{
    render, render_in_one_part, render_parts, render_through_dispatch, step_bytes, ParamKind,
    Progress, RenderConfig, Rendered,
};
use microscope::technique::transform::standard_transforms;
use microscope::technique::Objective;
use microscope::{Device, Model};

fn config(steps: usize, batch: usize) -> RenderConfig {
    RenderConfig {
        steps,
        learning_rate: 0.05,
        seed: 0,
        batch,
        size: 128,
        param: ParamKind::Fft,
        transforms: standard_transforms(128),
        redirect_steps: 0,
        context: None,
    }
}

/// Milliseconds per step of `steps` steps over `units` in one batch, after a 2-step warm-up
/// (allocations, kernels); the steady state (second half) goes to stderr, as a GPU backend
/// compiles and autotunes kernels for each new image size the random scale draws.
/// The render loop the bench times: [`render`] or [`render_through_dispatch`].
type Render = fn(
    &Model,
    &Objective,
    &RenderConfig,
    &mut dyn FnMut(Progress),
    Option<&std::sync::atomic::AtomicBool>,
) -> microscope::Result<Rendered>;

fn ms_per_step(model: &Model, layer: &str, units: &[usize], steps: usize, render: Render) -> f64 {
    let objective = Objective::channels(layer, units);
    objective_ms_per_step(model, &objective, units.len(), steps, render)
}

/// [`ms_per_step`] of any objective over a batch of `batch` images.
fn objective_ms_per_step(
    model: &Model,
    objective: &Objective,
    batch: usize,
    steps: usize,
    render: Render,
) -> f64 {
    render(model, objective, &config(2, batch), &mut |_| {}, None).unwrap();
    let t = Instant::now();
    let mut stamps = Vec::with_capacity(steps);
    render(
        model,
        objective,
        &config(steps, batch),
        &mut |_| stamps.push(t.elapsed().as_secs_f64()),
        None,
    )
    .unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    // Off the CPU progress comes in bursts (the render reads its values every few steps, see
    // `reads_every` in render.rs): the steady state runs from the end of a burst, the first one
    // that ends in the second half (steps of one burst are reported microseconds apart).
    let ends = |i: usize| i + 1 < steps && stamps[i + 1] - stamps[i] > 1e-4;
    let from = (steps >= 4)
        .then(|| (steps / 2 - 1..steps).find(|&i| ends(i)))
        .flatten();
    if let Some(from) = from {
        let steady = (stamps[steps - 1] - stamps[from]) * 1e3 / (steps - 1 - from) as f64;
        eprintln!(
            "microscope batch {batch}: steady state (last {} steps) {steady:.1} ms/step",
            steps - 1 - from
        );
    }
    ms
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let path = args
        .first()
        .expect("usage: feature_vis_step MODEL.onnx [LAYER] [STEPS] [DEVICE]");
    let layer = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("inception_4a/output");
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let device = Device::parse(args.get(3).map(String::as_str).unwrap_or("cpu"))
        .unwrap_or_else(|e| panic!("{e}"));
    let model = Model::load_on(path, device).unwrap_or_else(|e| panic!("{e}"));
    let channels = model.layer(layer).unwrap_or_else(|e| panic!("{e}")).units;
    let units = |n: usize| (0..n).map(|i| i % channels).collect::<Vec<_>>();
    let numbers = |name: &str| -> Vec<usize> {
        std::env::var(name)
            .unwrap_or_default()
            .split_whitespace()
            .map(|b| {
                b.parse()
                    .unwrap_or_else(|_| panic!("{name}: {b} is no number"))
            })
            .collect()
    };
    let gallery = numbers("GALLERY").first().copied();
    if gallery.is_none() {
        let through_dispatch = std::env::var("RENDER").is_ok_and(|v| v == "dispatch");
        let first: Render = if through_dispatch {
            render_through_dispatch
        } else {
            render
        };
        let ms = ms_per_step(&model, layer, &units(8), steps, first);
        println!("microscope_fv_step_ms {ms:.1}");
        if std::env::var("DISPATCH").is_ok_and(|v| v == "1") {
            let ms = ms_per_step(&model, layer, &units(8), steps, render_through_dispatch);
            println!("microscope_fv_dispatch_step_ms {ms:.1}");
        }
    }
    for b in numbers("BATCHES") {
        // How the render steps the batch: in one part off the CPU where it fits the device.
        let objective = Objective::channels(layer, &units(b));
        let parts = render_parts(&model, &objective, &config(steps, b)).unwrap();
        let plan = step_bytes(&model, &objective, &config(steps, b)).unwrap();
        eprintln!(
            "microscope batch {b}: {parts} part(s); the plan: {:.1} MB an image, {}",
            plan as f64 / 1e6,
            model.network().device().free_memory().map_or(
                "on the CPU parts by thread".to_string(),
                |f| format!("{:.1} GB free", f as f64 / 1e9)
            ),
        );
        let ms = ms_per_step(&model, layer, &units(b), steps, render);
        println!("microscope_fv_batch {b} {ms:.1}");
    }
    if let Some(n) = numbers("DIVERSITY").first().copied() {
        // As the unit view asks for it: unit 0 in every image, and the diversity term (weight 1).
        let objective = Objective::channels(layer, &vec![0; n]) + Objective::diversity(layer);
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (mut parts, mut one) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            parts.push(objective_ms_per_step(&model, &objective, n, steps, render));
            one.push(objective_ms_per_step(
                &model,
                &objective,
                n,
                steps,
                render_in_one_part,
            ));
        }
        let (parts, one) = (median(parts), median(one));
        println!("microscope_diversity_step_ms {n} {parts:.1} {one:.1}");
    }
    if let Some(b) = gallery {
        let all: Vec<usize> = (0..channels).collect();
        let t = Instant::now();
        for chunk in all.chunks(b) {
            let objective = Objective::channels(layer, chunk);
            render(
                &model,
                &objective,
                &config(steps, chunk.len()),
                &mut |_| {},
                None,
            )
            .unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!("microscope_gallery_s {channels} {b} {s:.1}");
    }
}
