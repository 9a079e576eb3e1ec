//! The optimization loop (Lucid's `render.py`): Adam on an image parameterization so that the
//! objective rises, with transformation robustness, a seed, progress reports and cancellation.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::Dispatch;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::objective::{Activations, Objective};
use super::param::{FftImage, Param, PixelImage};
use super::transform::{self, Transform};
use crate::device::{cpu_threads, is_cpu, on_cpu_pool, side_by_side, Device};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::{Back, DynTensor, Fast};
use crate::optim::Adam;

/// Which parameterization to optimize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ParamKind {
    Fft,
    Pixel,
}

/// Everything that defines a render besides the network and the objective.
#[derive(Clone, Debug)]
pub struct RenderConfig {
    pub steps: usize,
    pub learning_rate: f32,
    pub seed: u64,
    /// Images in the batch.
    pub batch: usize,
    /// Image height and width.
    pub size: usize,
    pub param: ParamKind,
    pub transforms: Vec<Transform>,
    /// For this many first steps the gradient passes through ReLUs and Clips as if they were
    /// the identity ([`Network::forward_redirected`](crate::network::Network::forward_redirected)):
    /// a unit behind inputs that are all off for the random start image still gets a gradient.
    /// Adam's moments are reset after them, so that the real steps are not scaled by what the
    /// redirected gradients left in them.
    pub redirect_steps: usize,
    /// Fixed images `[M, C, size, size]` in [0, 1] put first in the batch every step, through
    /// the same transforms as the optimized images (caricature's reference image): the
    /// objective sees them as its first `M` rows. They are not optimized or returned.
    pub context: Option<DynTensor>,
}

/// One progress report: step (1-based), total steps, mean objective value over the batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
    pub value: f32,
}

/// The optimized images `[N, C, H, W]` in [0, 1], on the plain device.
pub struct Rendered {
    pub images: DynTensor,
}

/// Optimizes `config.batch` images of `config.size` pixels to maximize `objective` on `model`
/// (images are normalized as the model's input expects).
///
/// On the CPU, with a per-image objective, the batch is optimized in parts of at most 8 images,
/// each with its own gradient graph, in one lane per thread: the lanes run side by side, each on
/// a thread and thread pool of its own (burn-flex runs elementwise kernels and the gradient walk
/// on one thread, and independent lanes keep every core busy), and a lane steps its parts in
/// turn. The images are the same as one batch's: the parts share the random transform draws, and
/// nothing else couples the images of a batch. An objective that couples them (diversity) is
/// split into one part per lane and evaluated over the whole batch's activations between the
/// lanes' forward and backward passes (`coupled_step`). With fixed images
/// ([`RenderConfig::context`]) the batch stays whole.
///
/// Off the CPU the batch is optimized whole when it fits the device's free memory, and else in
/// as few parts as fit ([`step_bytes`]), in turn: the same images either way. On the CPU, memory
/// short of what the parts need makes them smaller. On either, a size whose one image needs more
/// than the memory there is is an error, before anything of that size is allocated.
///
/// On the CPU the loop runs on burn-flex under burn's autodiff by name ([`Fast`]) rather than
/// through `Dispatch`, and on a CUDA device on burn-cuda by name (`FastCuda`, in builds with the
/// `cuda` feature); elsewhere on `Dispatch`'s autodiff device.
///
/// `progress` hears of every step, in order: on the CPU as each step ends, on a GPU in bursts of
/// a few steps (reading a step's value waits for the device; see `reads_every`).
pub fn render(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: Option<&AtomicBool>,
) -> Result<Rendered> {
    render_in_parts(model, objective, config, progress, cancel, true)
}

/// The backend [`render`] runs on for `device`, with the revision of its arithmetic: the part of
/// every cache key of rendered pixels that names the device, so that a key changes only where
/// the pixels a seed gives do. `cuda/2`: the render runs on `FastCuda`, whose resampling
/// ([`crate::network::ops::resample::gathered`]) sums the warp's gradient in another order than
/// burn's scatter-adds through `Dispatch` did (`cuda` before). `cuda/3`: a batch that fits the
/// device's memory runs whole, where before it ran in parts of 8; a part's kernels see another
/// batch size, and a GPU's kernels for another size may sum in another order. `cpu/2`: a
/// depthwise convolution runs as our op on [`Fast`] (`depthwise2d` in network/fast.rs), which
/// sums its taps in another order than burn-flex's grouped convolution did (`cpu` before).
pub fn pixels_backend(device: &Device) -> &'static str {
    match device.kind() {
        "cuda" => "cuda/3",
        "cpu" => "cpu/2",
        kind => kind,
    }
}

/// [`render`] on `Dispatch`'s autodiff device whatever the device, as the CPU and CUDA rendered
/// before each had a named backend of its own: for benches/feature_vis_step.rs, which times
/// both, and the test that both give the same pixels.
#[doc(hidden)]
pub fn render_through_dispatch(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: Option<&AtomicBool>,
) -> Result<Rendered> {
    let device = model.network().device();
    let ad = device.autodiff();
    let every = reads_every(device);
    render_on::<Dispatch>(model, objective, config, progress, cancel, &ad, true, every)
}

/// [`render`] on the CPU with the objective's values read every `every` steps rather than every
/// step, as a GPU reads them (see [`reads_every`]): for the test that this reports the same
/// values and gives the same pixels.
#[doc(hidden)]
pub fn render_reading_every(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: Option<&AtomicBool>,
    every: usize,
) -> Result<Rendered> {
    let device = model.network().device();
    if !is_cpu(device.burn()) {
        return Err(Error::Message(
            "render_reading_every renders on the CPU".into(),
        ));
    }
    let ad = Default::default();
    render_on::<Fast>(model, objective, config, progress, cancel, &ad, true, every)
}

/// How many steps' objective values [`render`] may leave on `device` before it reads them (and
/// reports their progress). Reading a value waits for the device to finish every kernel queued
/// so far. On a GPU, a read every step left the device idle at the start of each step, while
/// the host queued its first kernels; read every few steps, the host queues the next steps
/// while the device computes. The CPU computes as the host queues: reading there costs nothing,
/// and progress comes every step.
fn reads_every(device: &Device) -> usize {
    if is_cpu(device.burn()) {
        1
    } else {
        GPU_READS_EVERY
    }
}

/// Steps between reads off the CPU ([`reads_every`]): progress reaches the caller in bursts of
/// this many steps, a fraction of a second apart for GoogLeNet on a GPU.
const GPU_READS_EVERY: usize = 8;

/// [`render`] with the batch in one part, however many cores there are: the plain definition
/// that the tests hold the parts to, and the bench's baseline for them.
#[doc(hidden)]
pub fn render_in_one_part(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: Option<&AtomicBool>,
) -> Result<Rendered> {
    render_in_parts(model, objective, config, progress, cancel, false)
}

/// [`render`], with the batch in parts where `split` and the device allows.
fn render_in_parts(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: Option<&AtomicBool>,
    split: bool,
) -> Result<Rendered> {
    let device: &Device = model.network().device();
    let every = reads_every(device);
    if is_cpu(device.burn()) {
        let ad = Default::default();
        return render_on::<Fast>(
            model, objective, config, progress, cancel, &ad, split, every,
        );
    }
    #[cfg(feature = "cuda")]
    if let burn::DispatchDevice::Cuda(d) = device.burn() {
        let ad = d.clone();
        return render_on::<crate::network::FastCuda>(
            model, objective, config, progress, cancel, &ad, split, every,
        );
    }
    let ad = device.autodiff();
    render_on::<Dispatch>(
        model, objective, config, progress, cancel, &ad, split, every,
    )
}

/// [`render`] on backend `B`, with the batch in parts where `split` (and the device) allows, and
/// the objective's values read every `every` steps ([`reads_every`]).
#[allow(clippy::too_many_arguments)]
fn render_on<B: Back + AutodiffBackend>(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: Option<&AtomicBool>,
    ad: &B::Device,
    split: bool,
    every: usize,
) -> Result<Rendered> {
    let network = model.network();
    let spec = model.input_spec()?;
    let device: &Device = network.device();
    // Before any image is allocated: the plan checks that one fits (see `lanes_and_parts`).
    let coupled = !objective.per_image();
    let (lanes, k) = lanes_and_parts(model, objective, config, split)?;
    // The fixed images, as untracked leaves of this backend's graph.
    let context = match &config.context {
        Some(c) => Some(Tensor::<B, 4>::from_data(c.to_rank::<4>()?.into_data(), ad)),
        None => None,
    };
    let shape = [config.batch, spec.channels, config.size, config.size];
    let mut rng = StdRng::seed_from_u64(config.seed);
    let param: Box<dyn Param<B> + Send> = match config.param {
        ParamKind::Fft => Box::new(FftImage::<B>::new(shape, &mut rng, ad)),
        ParamKind::Pixel => Box::new(PixelImage::<B>::new(shape, &mut rng, ad)),
    };
    let mut parts: Vec<Part<B>> = Vec::with_capacity(k);
    let (mut rest, mut start) = (param, 0);
    for i in 0..k - 1 {
        // Sizes as even as they go: batch / k, the first (batch % k) one larger.
        let len = config.batch / k + usize::from(i < config.batch % k);
        let [head, tail] = rest.split(len);
        parts.push(Part::new(head, start, len, config, context.clone()));
        (rest, start) = (tail, start + len);
    }
    parts.push(Part::new(
        rest,
        start,
        config.batch - start,
        config,
        context.clone(),
    ));
    // Lane j steps parts j, j + lanes, ... in turn.
    let mut lanes: Vec<Vec<Part<B>>> = (0..lanes).map(|_| Vec::new()).collect();
    let n = lanes.len();
    for (i, part) in parts.into_iter().enumerate() {
        lanes[i % n].push(part);
    }
    // Steps whose objective values are still on the device, oldest first.
    let mut unread: Vec<(usize, Sums<B::InnerBackend>)> = Vec::new();
    for step in 1..=config.steps {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) || crate::interrupt::requested() {
            return Err(Error::Cancelled {
                what: objective.name().to_string(),
                step,
            });
        }
        let redirect = step <= config.redirect_steps;
        let (sums, next_rng) = if coupled && k > 1 {
            let (sum, next) = coupled_step(model, objective, config, redirect, &rng, &mut lanes)?;
            (Sums::Read(sum), next)
        } else {
            // The lanes run side by side, each on a thread and (on the CPU) a pool of its own
            // (see `side_by_side`); progress and cancellation stay on the caller's thread. Every
            // part draws the same transforms: each starts from the same generator state.
            let results = side_by_side(device.burn(), &mut lanes, |lane| {
                let mut sums = Vec::with_capacity(lane.len());
                let mut after = None;
                for part in lane.iter_mut() {
                    let mut r = rng.clone();
                    sums.push(part.step(model, objective, config, redirect, &mut r)?);
                    after.get_or_insert(r);
                }
                Ok::<_, Error>((sums, after.expect("a lane has a part")))
            });
            let mut sums = Vec::with_capacity(results.len());
            let mut next = None;
            for r in results {
                let (s, r) = r?;
                sums.push(s);
                next.get_or_insert(r);
            }
            (Sums::Queued(sums), next.expect("at least one part"))
        };
        rng = next_rng;
        unread.push((step, sums));
        if unread.len() >= every.max(1) || step == config.steps {
            for (step, sum) in read_sums(std::mem::take(&mut unread)) {
                progress(Progress {
                    step,
                    total: config.steps,
                    value: sum / config.batch as f32,
                });
            }
        }
    }
    let mut parts: Vec<&Part<B>> = lanes.iter().flatten().collect();
    parts.sort_by_key(|p| p.start);
    let images: Vec<Tensor<B::InnerBackend, 4>> =
        parts.iter().map(|p| p.param.image().inner()).collect();
    // Back on the network's plain device, as every technique hands images on.
    let images =
        Tensor::<Dispatch, 4>::from_data(Tensor::cat(images, 0).into_data(), device.burn());
    Ok(Rendered {
        images: DynTensor::new(images),
    })
}

/// The most images in one part of a batch rendered on the CPU (see `render_on`).
const PART_MOST: usize = 8;

/// The lanes [`render`] steps `config`'s batch in side by side, and the parts they step in turn,
/// where `split` allows.
fn lanes_and_parts(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    split: bool,
) -> Result<(usize, usize)> {
    settings_in_range(objective, config)?;
    // Parts of the batch optimized side by side (see above), in lanes: one lane per CPU thread
    // (at most one per image), each lane stepping its parts in turn, and no part larger than
    // `PART_MOST` images. Measured on 2 cores, GoogLeNet inception_4a, 128 px:
    // - batch 8, each lane on a pool of its own (`side_by_side`): 159 ms per step with 2 parts,
    //   165 with 4, 174 with 8. (When the parts shared one pool, 4 did best, by stealing each
    //   other's kernels; that sharing could hang, see `on_cpu_pool`.)
    // - batch 128 (a gallery's batch can be that large), 2 lanes: 3438 ms per step with one part
    //   of 64 per lane, 2957 with parts of 8, 3000 with parts of 4 (the mean of 3 runs each);
    //   parts of 8 step at batch 8's rate per image, and hold one part's graph at a time.
    //   (Then each part evaluated the objective on its rows padded to the whole batch. Without
    //   the padding, parts of 8 at batch 128, 10 steps, alternating runs on 2 cores: 2487 and
    //   2539 ms per step before, 2249 and 2145 after.)
    // An objective that couples its images (diversity compares them with each other) is split
    // too, into one part per lane, and steps in three phases (`coupled_step`).
    // Off the CPU one part where it fits the device's memory (the device runs a batch's kernels
    // as one, and more images per kernel cost little more time), else as few parts as fit, in
    // turn.
    // On either, the memory there is to spare (the CPU's available memory, the GPU's free
    // memory; unlimited where the system does not say) bounds the images stepping at once:
    // fewer make smaller parts or fewer lanes, and none is an error, where asking for the
    // memory anyway gets the process killed (and a notebook's state lost) or a GPU's panic.
    let device = model.network().device();
    let on_cpu = is_cpu(device.burn());
    let fit = match available_memory(model) {
        Some(available) => images_that_fit(model, objective, config, available)?,
        None => usize::MAX,
    };
    let coupled = !objective.per_image();
    Ok(if !split || config.context.is_some() {
        (1, 1)
    } else if !on_cpu {
        // A coupled objective's parts would all hold their graphs at once (`coupled_step`).
        (
            1,
            if coupled {
                1
            } else {
                parts_of(config.batch, fit)
            },
        )
    } else {
        let lanes = cpu_threads(device.burn()).min(config.batch).max(1);
        if coupled {
            (lanes, lanes)
        } else {
            cpu_lanes_and_parts(config.batch, lanes, fit)
        }
    })
}

/// The lanes and parts for a batch of `batch` images on the CPU with `lanes` threads, when
/// `fit` images can step at once (each lane holds one part's graph at a time): parts of at most
/// [`PART_MOST`] images, smaller or in fewer lanes when `fit` asks.
fn cpu_lanes_and_parts(batch: usize, lanes: usize, fit: usize) -> (usize, usize) {
    let lanes = lanes.min(fit).clamp(1, batch.max(1));
    let most = PART_MOST.min(fit / lanes).max(1);
    let per_lane = batch.div_ceil(lanes).div_ceil(most);
    (lanes, (lanes * per_lane).min(batch).max(1))
}

/// The parts a batch of `batch` images steps in, one at a time, when `fit` images can step at
/// once: as few as keep each within `fit`, at most one an image.
fn parts_of(batch: usize, fit: usize) -> usize {
    batch.div_ceil(fit.clamp(1, batch.max(1))).max(1)
}

/// An error that names the setting of `config` out of its range: a size or batch of 0 (an
/// image of no pixels, which burn's reshape cannot make), a learning rate that is not a number
/// above 0 (NaN pixels, drawn black).
fn settings_in_range(objective: &Objective, config: &RenderConfig) -> Result<()> {
    let problem = if config.size == 0 {
        "size 0 px; it takes at least 1".to_string()
    } else if config.batch == 0 {
        "a batch of 0 images; it takes at least 1".to_string()
    } else if !(config.learning_rate.is_finite() && config.learning_rate > 0.0) {
        format!(
            "learning rate {}; it takes a finite number above 0",
            config.learning_rate
        )
    } else {
        return Ok(());
    };
    Err(Error::Message(format!(
        "{}: {problem}",
        short_name(objective)
    )))
}

/// The memory there is to spare on `model`'s device: the CPU's available memory (inside a
/// cgroup limit, what the limit leaves), a GPU's free memory; `None` where the system does not
/// say.
pub(crate) fn available_memory(model: &Model) -> Option<u64> {
    let device = model.network().device();
    if is_cpu(device.burn()) {
        crate::budget::available_memory()
    } else {
        device.free_memory()
    }
}

/// [`step_bytes`] for one image of `size` (`[h, w]` px) on its way to `layers`, where its
/// forward pass alone (half of that) fits `available` bytes; else an error that says `what`
/// (the work), `image` (what is that large), the sizes and `advice`.
pub(crate) fn one_image_fits(
    model: &Model,
    what: &str,
    layers: &[String],
    size: [usize; 2],
    available: u64,
    image: &str,
    advice: &str,
) -> Result<u64> {
    let per_image = step_bytes_at(model, layers, size)?;
    let forward = per_image / STEP_BYTES_PER_FORWARD_BYTE;
    if forward > available {
        return Err(Error::Device {
            device: model.network().device().to_string(),
            message: format!(
                "{what}: {image} makes about {} of activations on its way to {}, and {} of \
                 memory is available; {advice}",
                crate::budget::human(forward),
                layers.join(", "),
                crate::budget::human(available),
            ),
        });
    }
    Ok(per_image)
}

/// How many images of `config`'s batch can step at once in `available` bytes, beside what the
/// whole batch holds through the render ([`batch_holds`]): [`fit_count`] at [`step_bytes`] an
/// image. An error that says the sizes when one image's forward pass alone (half of
/// [`step_bytes`]) needs more than all of `available`, or when the batch leaves too little for
/// it.
fn images_that_fit(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    available: u64,
) -> Result<usize> {
    let side = transform::largest_size(&config.transforms, config.size);
    let image = format!(
        "one image of up to {side} px (size {} and its transforms)",
        config.size
    );
    let per_image = one_image_fits(
        model,
        &short_name(objective),
        objective.layers(),
        [side, side],
        available,
        &image,
        "render smaller images",
    )?;
    let forward = per_image / STEP_BYTES_PER_FORWARD_BYTE;
    let held = batch_holds(model, objective, config, forward, available)?;
    Ok(fit_count(per_image, available - held))
}

/// The bytes the whole batch's images hold through the render (each one's parameters, their
/// gradient, Adam's two moments, the image, and what a step adds: [`HELD_COPIES`] of its
/// pixels), where they and one image's forward pass (`forward` bytes) fit `available`; an error
/// that says the sizes if not.
fn batch_holds(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    forward: u64,
    available: u64,
) -> Result<u64> {
    let channels = model.input_spec()?.channels as u128;
    let side = config.size as u128;
    let per_image = channels
        .saturating_mul(side * side)
        .saturating_mul(4 * HELD_COPIES);
    let held = (config.batch as u128).saturating_mul(per_image);
    if held.saturating_add(forward as u128) <= available as u128 {
        return Ok(held as u64);
    }
    let advice = if per_image.saturating_add(forward as u128) > available as u128 {
        "render smaller images"
    } else {
        "render fewer images at once"
    };
    Err(Error::Device {
        device: model.network().device().to_string(),
        message: format!(
            "{}: {} images of {} px hold about {} through a render (each one's parameters, \
             their gradient, Adam's moments, the image), an image's step needs about {} more, \
             and {} of memory is available; {advice}",
            short_name(objective),
            config.batch,
            config.size,
            crate::budget::human(u64::try_from(held).unwrap_or(u64::MAX)),
            crate::budget::human(forward),
            crate::budget::human(available),
        ),
    })
}

/// `objective`'s name for a message, cut short: a name lists the units of each image, and a
/// large batch's would fill the notebook.
fn short_name(objective: &Objective) -> String {
    const MOST: usize = 80;
    let name = objective.name();
    match name.char_indices().nth(MOST) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_string(),
    }
}

/// Copies of an image's pixels a render holds for each image of its batch (see
/// [`batch_holds`]): the parameters, their gradient, Adam's two moments and the image make 5.
/// Measured on the CPU inside a cgroup (its peak usage, GoogLeNet to inception_4a at 224 px, in
/// parts of 8 on 2 cores): batch 128 took 355 MB more than batch 16, 5.3 copies an image.
const HELD_COPIES: u128 = 6;

/// Images of `per_image` bytes that fit [`MEMORY_SHARE`] of `available` bytes; at least one.
pub(crate) fn fit_count(per_image: u64, available: u64) -> usize {
    let usable = available / 100 * MEMORY_SHARE;
    usize::try_from(usable / per_image.max(1))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The most memory (as [`step_bytes`] plans it) that one lane's pass holds on the CPU: input
/// attribution's points, dataset examples' images (their forward passes hold about half of it,
/// the plan being a gradient step's). Larger passes paid more for their memory than they saved in calls:
/// EfficientNet-Lite0 at 224 px (96 MB a point toward blocks.10/add), SmoothGrad's 48 points on
/// 2 cores in 2 lanes: 5.3 s at 1 point a pass, 6.2 at 2, 6.7 at 4, 7.7 at 8 (the fresh pages
/// of tensors too large for the allocator to keep); zoo::fashion (0.8 MB a point), Integrated
/// Gradients' 384 points: 0.54 s at 8 a pass, 0.8 to 0.9 at 1.
pub(crate) const LANE_PASS_BYTES: u64 = 64 << 20;

/// Images of `per_image` bytes (as [`step_bytes`] plans them) in one lane's pass on the CPU:
/// as many as [`LANE_PASS_BYTES`] holds, at least one.
pub(crate) fn lane_pass(per_image: u64) -> usize {
    usize::try_from(LANE_PASS_BYTES / per_image.max(1))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The parts [`render`] optimizes `config`'s batch in on `model`'s device (for the benches'
/// reports: on a GPU, 1 unless the batch does not fit its free memory).
#[doc(hidden)]
pub fn render_parts(model: &Model, objective: &Objective, config: &RenderConfig) -> Result<usize> {
    Ok(lanes_and_parts(model, objective, config, true)?.1)
}

/// The memory a step of [`render`] plans on for each image of its batch: the values of a forward
/// pass of one image as large as `config.transforms` can make it (`Network::forward_bytes`),
/// times [`STEP_BYTES_PER_FORWARD_BYTE`]. The forward pass that measures it runs at no more than
/// [`PROBE_MOST`] px, so that it fits where the render would not: larger sizes scale its figure
/// by area, as a convolutional network's activations grow. A layer that only the model's own
/// size reaches (behind a Flatten: its transforms fit the images to that size) is measured at
/// that size.
pub fn step_bytes(model: &Model, objective: &Objective, config: &RenderConfig) -> Result<u64> {
    let side = transform::largest_size(&config.transforms, config.size);
    step_bytes_at(model, objective.layers(), [side, side])
}

/// [`step_bytes`] for one image of `h` × `w` px on its way to `layers`.
fn step_bytes_at(model: &Model, layers: &[String], [h, w]: [usize; 2]) -> Result<u64> {
    let layers: Vec<&str> = layers.iter().map(String::as_str).collect();
    let net = model.network();
    let longest = h.max(w).max(1);
    let forward = if longest <= PROBE_MOST {
        net.forward_bytes([h, w], &layers)?
    } else {
        // Smaller, with the same shape; where the layers take no other size than this one
        // (a Flatten before them), at this size: the model's own, which its weights were made
        // for.
        let shrink = |s: usize| (s as u128 * PROBE_MOST as u128 / longest as u128).max(1) as usize;
        let probe = [shrink(h), shrink(w)];
        match net.forward_bytes(probe, &layers) {
            Ok(bytes) => {
                let area = |[a, b]: [usize; 2]| (a as u128) * (b as u128);
                u64::try_from(
                    (bytes as u128)
                        .saturating_mul(area([h, w]))
                        .div_ceil(area(probe).max(1)),
                )
                .unwrap_or(u64::MAX)
            }
            Err(_) => net.forward_bytes([h, w], &layers)?,
        }
    };
    Ok(forward.saturating_mul(STEP_BYTES_PER_FORWARD_BYTE))
}

/// The largest side [`step_bytes`] runs its forward pass at.
const PROBE_MOST: usize = 256;

/// A render step's memory per byte of its forward pass's values (what [`step_bytes`] plans on):
/// the values the backward pass needs stay, their gradients come and go, and kernels take
/// workspaces. Measured on the CPU (the heap's peak over a step, per image of the batch, with
/// the standard transforms; tests/memory_plan.rs): 0.95 for GoogLeNet to inception_4a at
/// 128 px, 1.09 to inception_3a at 224 px, 0.28 for ResNet-50 and 0.23 for DenseNet-121,
/// whose batch norms' outputs are not kept. About twice the most, for a GPU's memory pools and
/// kernel workspaces.
const STEP_BYTES_PER_FORWARD_BYTE: u64 = 2;

/// The share (percent) of the memory there is to spare that the images stepping at once may plan
/// on: the rest is left for the image parameters, Adam's moments and other work.
const MEMORY_SHARE: u64 = 75;

/// A step's objective values: the sum over its batch, already read (a [`coupled_step`] reads
/// it), or each part's sum still on the device, by lane and the lane's parts.
enum Sums<B: Backend> {
    Read(f32),
    Queued(Vec<Vec<Tensor<B, 1>>>),
}

/// Each step's sum over its batch, with all the queued values read at once (one wait for the
/// device). The parts' values add up as when each step read its own: within each lane in the
/// lane's order, then the lanes' sums in lane order (the same f32 sum, bit for bit).
fn read_sums<B: Backend>(steps: Vec<(usize, Sums<B>)>) -> Vec<(usize, f32)> {
    let queued: Vec<Tensor<B, 1>> = steps
        .iter()
        .filter_map(|(_, s)| match s {
            Sums::Queued(lanes) => Some(lanes.iter().flatten().cloned()),
            Sums::Read(_) => None,
        })
        .flatten()
        .collect();
    let values = if queued.is_empty() {
        Vec::new()
    } else {
        DynTensor::new(Tensor::cat(queued, 0)).to_vec()
    };
    let mut values = values.into_iter();
    let mut out = Vec::with_capacity(steps.len());
    for (step, sums) in steps {
        let sum = match sums {
            Sums::Read(sum) => sum,
            Sums::Queued(lanes) => {
                let mut sum = 0.0;
                for lane in lanes {
                    let mut in_lane = 0.0;
                    for _ in lane {
                        in_lane += values.next().expect("one value per queued sum");
                    }
                    sum += in_lane;
                }
                sum
            }
        };
        out.push((step, sum));
    }
    out
}

/// One step of a batch split into parts (one per lane) under an objective that couples its
/// images, which no part can evaluate from its own rows:
/// 1. each lane runs its part's images forward, keeping the part's gradient graph;
/// 2. the objective is evaluated on the whole batch's activations, untracked copies of the
///    parts' joined as leaves of a small graph of its own, and differentiated there;
/// 3. each lane sends its rows of that gradient back through its part's graph.
///
/// The gradient reaching each part's activations is the one a whole batch's backward pass would
/// send there (the objective's ops, on the same values), and no image reaches another part's
/// activations through the network, so the images are the batch's. Diversity's four images
/// (the unit view's feature-visualization tab) otherwise ran on one lane: on 2 cores, half the
/// machine for most of a step.
fn coupled_step<B: Back + AutodiffBackend>(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    redirect: bool,
    rng: &StdRng,
    lanes: &mut [Vec<Part<B>>],
) -> Result<(f32, StdRng)> {
    let device = model.network().device().burn();
    let layers = objective.layers();
    // 1. Every part draws the same transforms: each starts from the same generator state.
    let forward = side_by_side(device, lanes, |lane| {
        let mut r = rng.clone();
        let acts = lane[0].forward(model, objective, config, redirect, &mut r)?;
        Ok::<_, Error>((acts, r))
    });
    let mut joined: Vec<Vec<Tensor<B::InnerBackend, 4>>> = vec![Vec::new(); layers.len()];
    let mut next = None;
    for r in forward {
        let (acts, r) = r?;
        for (rows, a) in joined.iter_mut().zip(acts) {
            rows.push(a);
        }
        next.get_or_insert(r);
    }
    // 2. The lanes hold their parts in batch order (lane j, part j).
    let (sum, grads) = on_cpu_pool(device, || {
        let leaves: Vec<Tensor<B, 4>> = joined
            .into_iter()
            .map(|rows| Tensor::from_inner(Tensor::cat(rows, 0)).require_grad())
            .collect();
        let acts: Activations<B> = layers.iter().cloned().zip(leaves.clone()).collect();
        let values = objective.eval(&acts)?;
        let sum = DynTensor::new(values.clone().sum()).to_vec()[0];
        let grads = values.sum().neg().backward();
        let grads: Vec<_> = leaves.iter().map(|leaf| leaf.grad(&grads)).collect();
        Ok::<_, Error>((sum, grads))
    })?;
    // 3. Each part with its rows of the gradient.
    let mut work: Vec<_> = lanes
        .iter_mut()
        .map(|lane| {
            let (start, len) = (lane[0].start, lane[0].len);
            let rows: Vec<_> = grads
                .iter()
                .map(|g| g.as_ref().map(|g| g.clone().narrow(0, start, len)))
                .collect();
            (lane, rows)
        })
        .collect();
    for r in side_by_side(device, &mut work, |(lane, rows)| {
        lane[0].backward_from(std::mem::take(rows), objective)
    }) {
        r?;
    }
    Ok((sum, next.expect("at least one part")))
}

/// Images `start..start + len` of the batch, optimized on their own.
struct Part<B: AutodiffBackend> {
    param: Box<dyn Param<B> + Send>,
    adam: Adam<5, B::InnerBackend>,
    start: usize,
    len: usize,
    redirected: bool,
    /// [`RenderConfig::context`] on this backend.
    context: Option<Tensor<B, 4>>,
    /// Between the phases of a [`coupled_step`]: this part's activations of the objective's
    /// layers, in its order, tracked.
    pending: Vec<Tensor<B, 4>>,
}

impl<B: Back + AutodiffBackend> Part<B> {
    fn new(
        mut param: Box<dyn Param<B> + Send>,
        start: usize,
        len: usize,
        config: &RenderConfig,
        context: Option<Tensor<B, 4>>,
    ) -> Self {
        param.set_tensor(param.tensor().clone().require_grad());
        Self {
            param,
            adam: Adam::new(config.learning_rate),
            start,
            len,
            redirected: false,
            context,
            pending: Vec::new(),
        }
    }

    /// One Adam step on this part; returns the sum of its images' objective values, unread
    /// (`render_on` reads them when it reports progress).
    fn step(
        &mut self,
        model: &Model,
        objective: &Objective,
        config: &RenderConfig,
        redirect: bool,
        rng: &mut StdRng,
    ) -> Result<Tensor<B::InnerBackend, 1>> {
        let acts = self.activations(model, objective, config, redirect, rng)?;
        // A whole batch is the part that starts at row 0.
        let values = objective.eval_part(&acts, self.start)?;
        let sum = values.clone().sum().inner();
        let grads = values.sum().neg().backward();
        self.update(&grads, objective)?;
        Ok(sum)
    }

    /// The first phase of a [`coupled_step`]: this part's activations of the objective's layers
    /// (in its order), untracked; the tracked ones wait for [`Part::backward_from`].
    fn forward(
        &mut self,
        model: &Model,
        objective: &Objective,
        config: &RenderConfig,
        redirect: bool,
        rng: &mut StdRng,
    ) -> Result<Vec<Tensor<B::InnerBackend, 4>>> {
        let mut acts = self.activations(model, objective, config, redirect, rng)?;
        self.pending = objective
            .layers()
            .iter()
            .map(|l| {
                acts.remove(l).ok_or_else(|| {
                    Error::Message(format!(
                        "objective {}: no activation of {l}",
                        objective.name()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(self.pending.iter().map(|a| a.clone().inner()).collect())
    }

    /// The last phase of a [`coupled_step`]: `grads`, the negated objective's gradient with
    /// respect to this part's activations (`None` for a layer it does not depend on), sent back
    /// to the image, and the Adam step.
    fn backward_from(
        &mut self,
        grads: Vec<Option<Tensor<B::InnerBackend, 4>>>,
        objective: &Objective,
    ) -> Result<()> {
        // Σ acts · g, with g constant: its gradient with respect to acts is g itself.
        let terms: Vec<Tensor<B, 1>> = std::mem::take(&mut self.pending)
            .into_iter()
            .zip(grads)
            .filter_map(|(a, g)| Some((a * Tensor::from_inner(g?)).sum()))
            .collect();
        if terms.is_empty() {
            return Err(no_dependence(objective));
        }
        let grads = Tensor::cat(terms, 0).sum().backward();
        self.update(&grads, objective)
    }

    /// This part's images, transformed, through the network: the activations of the
    /// objective's layers, tracked.
    fn activations(
        &mut self,
        model: &Model,
        objective: &Objective,
        config: &RenderConfig,
        redirect: bool,
        rng: &mut StdRng,
    ) -> Result<Activations<B>> {
        if !redirect && self.redirected {
            // The first real step starts Adam afresh. The redirected gradients (the identity
            // through every ReLU) are far larger than the real ones in a deep network, and
            // Adam's second moment (β2 = 0.999) would remember them for hundreds of steps and
            // shrink every real step: EfficientNet-Lite0's class visualizations went from 5 of
            // 10 top-1 (128 steps, none redirected) to 0 of 10 with 16 redirected steps, and to
            // 9 of 10 with this reset.
            self.adam = Adam::new(config.learning_rate);
        }
        self.redirected = redirect;
        let network = model.network();
        let input = network.image_input()?.name.clone();
        let layers: Vec<&str> = objective.layers().iter().map(String::as_str).collect();
        let mut image = self.param.image();
        if let Some(fixed) = &self.context {
            image = Tensor::cat(vec![fixed.clone(), image], 0);
        }
        let image = transform::apply(&config.transforms, image, rng);
        let images = image.dims()[0];
        let x = model.normalize(&DynTensor::new(image))?;
        let acts = if redirect {
            network.forward_redirected(&[(&input, x)], &layers)?
        } else {
            network.forward_any_size(&[(&input, x)], &layers)?
        };
        // The parts of a coupled step take their rows of the gradient by image.
        let acts = super::per_image(&layers, acts, images)?;
        layers
            .iter()
            .zip(acts)
            .map(|(l, a)| Ok((l.to_string(), a.to_unit_maps(network.reading(l))?)))
            .collect()
    }

    /// The Adam step on this part's image, from the gradients of a backward pass.
    fn update(&mut self, grads: &B::Gradients, objective: &Objective) -> Result<()> {
        let g = self
            .param
            .tensor()
            .grad(grads)
            .ok_or_else(|| no_dependence(objective))?;
        let next = self.adam.step(self.param.tensor().clone().inner(), g);
        self.param
            .set_tensor(Tensor::from_inner(next).require_grad());
        Ok(())
    }
}

fn no_dependence(objective: &Objective) -> Error {
    Error::Message(format!(
        "{}: the objective does not depend on the image",
        objective.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off the CPU, a batch that fits the planned share of free memory stays whole; one that
    /// does not is cut into as few parts as fit, down to an image a part when not even one fits.
    #[test]
    fn device_parts_cut_only_what_does_not_fit() {
        let mb = 1u64 << 20;
        let parts = |batch, per_image, free| parts_of(batch, fit_count(per_image, free));
        // 75 % of 1000 MB planned: 37 images of 20 MB fit.
        assert_eq!(parts(32, 20 * mb, 1000 * mb), 1);
        assert_eq!(parts(37, 20 * mb, 1000 * mb), 1);
        assert_eq!(parts(38, 20 * mb, 1000 * mb), 2);
        assert_eq!(parts(128, 20 * mb, 1000 * mb), 4);
        assert_eq!(parts(8, 2000 * mb, 1000 * mb), 8);
        assert_eq!(parts(8, 20 * mb, 0), 8);
        assert_eq!(parts(1, 0, 1000 * mb), 1);
        assert_eq!(parts(3, u64::MAX, u64::MAX), 3);
        assert_eq!(parts(5, 1, u64::MAX), 1);
    }

    /// On the CPU, memory to spare leaves the lanes and parts of 8 as they were; less memory
    /// makes the parts smaller, then the lanes fewer, down to one image at a time.
    #[test]
    fn cpu_parts_shrink_only_for_memory() {
        for (batch, lanes) in [
            (1usize, 1usize),
            (5, 2),
            (8, 2),
            (32, 2),
            (128, 2),
            (128, 16),
            (3, 16),
        ] {
            let lanes = lanes.min(batch);
            let per_lane = batch.div_ceil(lanes).div_ceil(PART_MOST);
            let before = (lanes, (lanes * per_lane).min(batch));
            assert_eq!(cpu_lanes_and_parts(batch, lanes, usize::MAX), before);
            assert_eq!(cpu_lanes_and_parts(batch, lanes, 16 * lanes), before);
        }
        // 32 images, 2 lanes: 8 at once, parts of 4; 3 at once, 2 lanes of 1 image; 1 at once.
        assert_eq!(cpu_lanes_and_parts(32, 2, 8), (2, 8));
        assert_eq!(cpu_lanes_and_parts(32, 2, 3), (2, 32));
        assert_eq!(cpu_lanes_and_parts(32, 2, 1), (1, 32));
        assert_eq!(cpu_lanes_and_parts(4, 2, 0), (1, 4));
    }
}
