//! The memory a render plans on per image (`render::step_bytes`, which decides on a GPU whether a
//! batch is optimized whole or in parts) covers what a step takes, measured here as the peak of
//! the heap on the CPU: an allocator of this test binary's own counts the live bytes. The pass
//! that finds every node's shape holds no more than a forward pass does.
//!
//! One test in this binary, so that no other test's allocations mix into the counts.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use microscope::technique::render::{render_in_one_part, step_bytes, ParamKind, RenderConfig};
use microscope::technique::transform::standard_transforms;
use microscope::technique::Objective;
use microscope::{Device, Model};

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only watch.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.dealloc(p, layout)
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            let live = LIVE.fetch_add(new_size, Relaxed) + new_size;
            PEAK.fetch_max(live, Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn config(batch: usize, size: usize) -> RenderConfig {
    RenderConfig {
        steps: 2,
        learning_rate: 0.05,
        seed: 0,
        batch,
        size,
        param: ParamKind::Fft,
        transforms: standard_transforms(size),
        redirect_steps: 0,
        context: None,
    }
}

/// The peak of the heap, above what was live before, over a 2-step render of `batch` units of
/// `layer` in one part (as a GPU renders a batch that fits).
fn peak_bytes(model: &Model, layer: &str, batch: usize, size: usize) -> usize {
    let units: Vec<usize> = (0..batch).collect();
    let objective = Objective::channels(layer, &units);
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let rendered = render_in_one_part(model, &objective, &config(batch, size), &mut |_| {}, None)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(rendered);
    PEAK.load(Relaxed) - before
}

#[test]
fn the_planned_memory_per_image_covers_a_steps_peak() {
    let cases = [
        // The issue-20 case: LRN, max pools with their indices, Concats.
        ("light_inception_v1", "inception_4a/output", 128),
        ("light_inception_v1", "inception_3a/output", 224),
        // Batch norms, residual Adds.
        ("light_resnet50", "gpu_0/res4_2_branch2b_bn/relu", 224),
        // Concats of every earlier layer of a block.
        ("light_densenet121", "Concat_237", 128),
    ];
    for (name, layer, size) in cases {
        let model = Model::load_on(support::light_model(name), Device::cpu())
            .unwrap_or_else(|e| panic!("{e}"));
        // First uses allocate once: weights copied to the CPU backend, thread pools.
        peak_bytes(&model, layer, 1, size);
        let (small, large) = (2, 6);
        let per_image = (peak_bytes(&model, layer, large, size) as f64
            - peak_bytes(&model, layer, small, size) as f64)
            / (large - small) as f64;
        let objective = Objective::channels(layer, &[0]);
        let planned = step_bytes(&model, &objective, &config(1, size)).unwrap() as f64;
        println!(
            "{name} {layer} {size} px: a step takes {:.1} MB per image, the plan {:.1} MB ({:.2}×)",
            per_image / 1e6,
            planned / 1e6,
            planned / per_image
        );
        assert!(
            per_image > 0.0 && planned >= per_image,
            "{name} {layer}: planned {planned} bytes an image, a step took {per_image}"
        );
    }
    // The pass that finds every node's shape (`microscope info`, the layer graph) keeps each
    // activation only until its last reader, as any forward pass does: it held all of them at
    // once, 24 GB for a 768 px MobileNetV5 that evaluates in 2 GB.
    let model = Model::load_on(support::light_model("light_densenet121"), Device::cpu())
        .unwrap_or_else(|e| panic!("{e}"));
    let net = model.network();
    let spec = model.input_spec().unwrap();
    let outputs: Vec<String> = net.outputs().to_vec();
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let all = net
        .forward_bytes([spec.height, spec.width], &outputs)
        .unwrap() as usize;
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    net.shapes().unwrap_or_else(|e| panic!("{e}"));
    let peak = PEAK.load(Relaxed) - before;
    println!(
        "light_densenet121: the shapes pass peaks at {:.1} MB; all its activations are {:.1} MB",
        peak as f64 / 1e6,
        all as f64 / 1e6
    );
    assert!(
        peak > 0 && peak < all / 2,
        "{peak} bytes at the peak, {all} in all"
    );
}
