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
use crate::device::{cpu_threads, is_cpu, side_by_side, Device};
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
/// nothing else couples the images of a batch.
///
/// On the CPU the loop runs on burn-flex under burn's autodiff by name ([`Fast`]) rather than
/// through `Dispatch`; elsewhere on `Dispatch`'s autodiff device.
pub fn render(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: Option<&AtomicBool>,
) -> Result<Rendered> {
    let device: &Device = model.network().device();
    if is_cpu(device.burn()) {
        render_on::<Fast>(
            model,
            objective,
            config,
            progress,
            cancel,
            &Default::default(),
        )
    } else {
        render_through_dispatch(model, objective, config, progress, cancel)
    }
}

/// [`render`] on `Dispatch`'s autodiff device whatever the device, as the CPU rendered before it
/// had a backend of its own: for benches/feature_vis_step.rs, which times both, and the test that
/// both give the same pixels.
#[doc(hidden)]
pub fn render_through_dispatch(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: Option<&AtomicBool>,
) -> Result<Rendered> {
    let ad = model.network().device().autodiff();
    render_on::<Dispatch>(model, objective, config, progress, cancel, &ad)
}

fn render_on<B: Back + AutodiffBackend>(
    model: &Model,
    objective: &Objective,
    config: &RenderConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: Option<&AtomicBool>,
    ad: &B::Device,
) -> Result<Rendered> {
    let network = model.network();
    let spec = model.input_spec()?;
    let device: &Device = network.device();
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
    // Off the CPU one part: the device runs a batch's kernels as one.
    let (lanes, k) = if objective.per_image() && config.context.is_none() {
        let lanes = cpu_threads(device.burn()).min(config.batch).max(1);
        let per_lane = config.batch.div_ceil(lanes).div_ceil(PART_MOST);
        (lanes, (lanes * per_lane).min(config.batch))
    } else {
        (1, 1)
    };
    let mut parts: Vec<Part<B>> = Vec::with_capacity(k);
    let (mut rest, mut start) = (param, 0);
    for i in 0..k - 1 {
        // Sizes as even as they go: batch / k, the first (batch % k) one larger.
        let len = config.batch / k + usize::from(i < config.batch % k);
        let [head, tail] = rest.split(len);
        parts.push(Part::new(head, start, config, context.clone()));
        (rest, start) = (tail, start + len);
    }
    parts.push(Part::new(rest, start, config, context.clone()));
    // Lane j steps parts j, j + lanes, ... in turn.
    let mut lanes: Vec<Vec<Part<B>>> = (0..lanes).map(|_| Vec::new()).collect();
    let n = lanes.len();
    for (i, part) in parts.into_iter().enumerate() {
        lanes[i % n].push(part);
    }
    for step in 1..=config.steps {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) || crate::interrupt::requested() {
            return Err(Error::Cancelled {
                what: objective.name().to_string(),
                step,
            });
        }
        // The lanes run side by side, each on a thread and (on the CPU) a pool of its own (see
        // `side_by_side`); progress and cancellation stay on the caller's thread. Every part
        // draws the same transforms: each starts from the same generator state.
        let results = side_by_side(device.burn(), &mut lanes, |lane| {
            let mut sum = 0.0;
            let mut after = None;
            for part in lane.iter_mut() {
                let mut r = rng.clone();
                let redirect = step <= config.redirect_steps;
                sum += part.step(model, objective, config, redirect, &mut r)?;
                after.get_or_insert(r);
            }
            Ok::<_, Error>((sum, after.expect("a lane has a part")))
        });
        let mut sum = 0.0;
        let mut next = None;
        for r in results {
            let (v, r) = r?;
            sum += v;
            next.get_or_insert(r);
        }
        let next_rng = next.expect("at least one part");
        rng = next_rng;
        progress(Progress {
            step,
            total: config.steps,
            value: sum / config.batch as f32,
        });
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

/// Images `start..` of the batch, optimized on their own.
struct Part<B: AutodiffBackend> {
    param: Box<dyn Param<B> + Send>,
    adam: Adam<5, B::InnerBackend>,
    start: usize,
    redirected: bool,
    /// [`RenderConfig::context`] on this backend.
    context: Option<Tensor<B, 4>>,
}

impl<B: Back + AutodiffBackend> Part<B> {
    fn new(
        mut param: Box<dyn Param<B> + Send>,
        start: usize,
        config: &RenderConfig,
        context: Option<Tensor<B, 4>>,
    ) -> Self {
        param.set_tensor(param.tensor().clone().require_grad());
        Self {
            param,
            adam: Adam::new(config.learning_rate),
            start,
            redirected: false,
            context,
        }
    }

    /// One Adam step on this part; returns the sum of its images' objective values.
    fn step(
        &mut self,
        model: &Model,
        objective: &Objective,
        config: &RenderConfig,
        redirect: bool,
        rng: &mut StdRng,
    ) -> Result<f32> {
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
        let x = model.normalize(&DynTensor::new(image))?;
        let acts = if redirect {
            network.forward_redirected(&[(&input, x)], &layers)?
        } else {
            network.forward_any_size(&[(&input, x)], &layers)?
        };
        let acts: Activations<B> = layers
            .iter()
            .zip(acts)
            .map(|(l, a)| Ok((l.to_string(), a.to_nchw()?)))
            .collect::<Result<_>>()?;
        // A whole batch is the part that starts at row 0.
        let values = objective.eval_part(&acts, self.start)?;
        let sum = DynTensor::new(values.clone().sum()).to_vec()[0];
        let grads = values.sum().neg().backward();
        let g = self.param.tensor().grad(&grads).ok_or_else(|| {
            Error::Message(format!(
                "{}: the objective does not depend on the image",
                objective.name()
            ))
        })?;
        let next = self.adam.step(self.param.tensor().clone().inner(), g);
        self.param
            .set_tensor(Tensor::from_inner(next).require_grad());
        Ok(sum)
    }
}
