//! DeepDream: amplify whatever a layer sees in a given image, by gradient ascent on the mean
//! squared activation of the layer, over octaves (from a coarse scale up to the image's own).

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::Dispatch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::objective::{Activations, Objective};
use super::render;
use super::transform::warp;
use crate::device::{is_cpu, on_cpu_pool};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::{Back, DynTensor, Fast};

/// DeepDream settings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeepDream {
    pub octaves: usize,
    /// Size ratio between successive octaves, at least 1: the first octave is the image's size
    /// divided by it `octaves - 1` times.
    pub octave_scale: f32,
    pub steps_per_octave: usize,
    /// Step size on pixels in [0, 1], after normalizing the gradient by its mean magnitude.
    pub step_size: f32,
    /// Random shift (pixels) each step, for smoother results.
    pub jitter: usize,
    pub seed: u64,
}

impl Default for DeepDream {
    fn default() -> Self {
        Self {
            octaves: 3,
            octave_scale: 1.4,
            steps_per_octave: 10,
            step_size: 0.01,
            jitter: 2,
            seed: 0,
        }
    }
}

impl DeepDream {
    /// Dreams `image` (`[1, C, H, W]` in [0, 1]) at `layer`; returns the image and the
    /// objective before and after.
    pub fn run(
        &self,
        model: &Model,
        image: &DynTensor,
        layer: &str,
    ) -> Result<(DynTensor, f32, f32)> {
        on_cpu_pool(model.network().device().burn(), || {
            self.run_here(model, image, layer)
        })
    }

    /// [`DeepDream::run`] where it is called: on the CPU on burn-flex under burn's autodiff by
    /// name ([`Fast`]), as feature visualization renders, with our convolutions (a depthwise one
    /// included); elsewhere through `Dispatch`.
    ///
    /// EfficientNet-Lite0, a 224 px image, the default settings, 2 cores: 6.4 s through
    /// `Dispatch` and 2.5 s on [`Fast`] at `blocks.10/add`, 6.8–7.7 s and 3.5 s at `logits`. The
    /// first step's pixels agree within 3e-7; after that the two drift apart, as any two runs
    /// whose sums differ in order do: each step divides the gradient by its mean magnitude, and
    /// through `Dispatch` alone, an input 3e-7 off in one pixel in 97 ends 10 steps later up to
    /// 0.41 off (mean 0.016) at `blocks.10/add`.
    fn run_here(
        &self,
        model: &Model,
        image: &DynTensor,
        layer: &str,
    ) -> Result<(DynTensor, f32, f32)> {
        let device = model.network().device();
        if is_cpu(device.burn()) {
            return self.run_on::<Fast>(model, image, layer, &Default::default());
        }
        self.run_on::<Dispatch>(model, image, layer, &device.autodiff())
    }

    /// [`DeepDream::run_here`] on backend `B`, on its device `ad`.
    fn run_on<B: Back + AutodiffBackend>(
        &self,
        model: &Model,
        image: &DynTensor,
        layer: &str,
        ad: &B::Device,
    ) -> Result<(DynTensor, f32, f32)> {
        let net = model.network();
        let device = net.device();
        let objective = Objective::deepdream(layer);
        let input = net.image_input()?.name.clone();
        let value = |x: &DynTensor<B>| -> Result<f32> {
            let act = net
                .forward_any_size(&[(&input, model.normalize(x)?)], &[layer])?
                .remove(0);
            let acts: Activations<B> = [(layer.to_string(), act.to_nchw()?)].into_iter().collect();
            Ok(DynTensor::new(objective.eval(&acts)?).to_vec()[0])
        };
        let original = image.to_rank::<4>()?;
        let [_, _, h, w] = original.dims();
        // The image as an untracked tensor of this backend's graph.
        let original = Tensor::<B, 4>::from_data(original.into_data(), ad);
        if h == 0 || w == 0 {
            return Err(Error::Message(format!(
                "deepdream({layer}): the image is {h}×{w} px; there is nothing to dream"
            )));
        }
        if !self.step_size.is_finite() {
            return Err(Error::Message(format!(
                "deepdream({layer}): step_size {}; it takes a finite number",
                self.step_size
            )));
        }
        if !(self.octave_scale.is_finite() && self.octave_scale >= 1.0) {
            return Err(Error::Message(format!(
                "deepdream({layer}): octave_scale {}; it is the size ratio from one octave to the \
                 next, a finite number of at least 1 (the octaves grow from a smaller copy up to \
                 the image's own size)",
                self.octave_scale
            )));
        }
        // A layer reachable only from the input size (behind a Flatten) dreams at that size
        // alone: the same number of steps, in one octave.
        let (octaves, steps_per_octave) =
            if super::objective::reachable_at_any_size(model, layer, h.max(w))? {
                (self.octaves, self.steps_per_octave)
            } else {
                (1, self.octaves.saturating_mul(self.steps_per_octave))
            };
        // Each octave's size: the image's, divided by `octave_scale` once for each octave after
        // it.
        // (In f32 as before, so that the sizes, and the pixels, stay the same.)
        let size_of = |octave: usize| {
            let after = i32::try_from(octaves - 1 - octave).unwrap_or(i32::MAX);
            let scale = self.octave_scale.powi(after).recip();
            (
                (h as f32 * scale).round() as usize,
                (w as f32 * scale).round() as usize,
            )
        };
        if octaves > 0 {
            let (fh, fw) = size_of(0);
            if fh == 0 || fw == 0 {
                return Err(Error::Message(format!(
                    "deepdream({layer}): {octaves} octaves of scale {} make the first octave \
                     {fh}×{fw} px, from the image's {h}×{w}; dream in fewer octaves or with a \
                     smaller octave_scale",
                    self.octave_scale
                )));
            }
        }
        // The objective before and the last octave run the image at its own size: an error that
        // says so where that alone needs more memory than there is (rather than the process
        // killed).
        if let Some(available) = render::available_memory(model) {
            render::one_image_fits(
                model,
                &format!("deepdream({layer})"),
                objective.layers(),
                [h, w],
                available,
                &format!("an image of {h}×{w} px"),
                "dream a smaller image",
            )?;
        }
        let before = value(&DynTensor::new(original.clone()))?;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut x = original.clone();
        for octave in 0..octaves {
            // Resize the current dream to this octave's size.
            let (th, tw) = size_of(octave);
            let [_, _, ch, _] = x.dims();
            x = warp(x, th as f32 / ch as f32, 0.0);
            // A network's error says its node; this says which octave and size it was at.
            let at_octave = |e: Error| {
                Error::Message(format!(
                    "deepdream({layer}), octave {} of {octaves} at {th}×{tw} px: {e}",
                    octave + 1
                ))
            };
            for step in 0..steps_per_octave {
                if crate::interrupt::requested() {
                    return Err(Error::Cancelled {
                        what: format!("deepdream({layer})"),
                        step: octave.saturating_mul(steps_per_octave).saturating_add(step),
                    });
                }
                let (dy, dx) = (
                    rng.random_range(0..=self.jitter),
                    rng.random_range(0..=self.jitter),
                );
                let leaf = x.clone().detach().require_grad();
                let shifted = leaf.clone().roll(&[dy as i64, dx as i64], &[2, 3]);
                let act = net
                    .forward_any_size(
                        &[(&input, model.normalize(&DynTensor::new(shifted))?)],
                        &[layer],
                    )
                    .map_err(at_octave)?
                    .remove(0);
                let acts: Activations<B> =
                    [(layer.to_string(), act.to_nchw()?)].into_iter().collect();
                let grads = objective.eval(&acts)?.sum().backward();
                let Some(g) = leaf.grad(&grads) else { break };
                let norm = g.clone().abs().mean().add_scalar(1e-8);
                let moved = x.inner() + g.div(norm.unsqueeze()).mul_scalar(self.step_size);
                x = Tensor::from_inner(moved.clamp(0.0, 1.0));
            }
        }
        let after = value(&DynTensor::new(x.clone()))?;
        // Back on the network's plain device, as every technique hands images on.
        let dream = Tensor::<Dispatch, 4>::from_data(x.into_data(), device.burn());
        Ok((DynTensor::new(dream), before, after))
    }
}
