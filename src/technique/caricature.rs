//! `Caricature` (Lucid's caricature recipe): from an image, a new image whose activations at a
//! layer point the way the image's do, exaggerated. What the layer "sees" in the image, drawn
//! with the layer's own features: its direction in activation space, made visible.
//!
//! The image goes first in the render batch as a fixed reference, through the same random
//! transforms as the optimized image, and the objective ([`Objective::caricature`]) compares
//! the two at the layer every step.
//!
//! # Shapes
//! image `[1, C, S, S]` in [0, 1] · caricature the same.

use std::sync::atomic::AtomicBool;

use super::cache::{decode, encode, Cache};
use super::objective::Objective;
use super::render::{self, ParamKind, Progress, RenderConfig};
use super::transform::standard_transforms;
use crate::error::{Error, Result};
use crate::model::{Layer, Model};
use crate::network::DynTensor;

/// Settings of a caricature (builder style). They serialize as a provenance records them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Caricature {
    pub steps: usize,
    pub seed: u64,
    pub learning_rate: f32,
    /// The weight of the direction over the length of the activation: `max(0.1, cos)^pow` (see
    /// [`Objective::caricature`]).
    pub cossim_pow: f32,
    pub param: ParamKind,
    /// Where results are cached (`None`: always compute).
    #[serde(skip)]
    pub cache: Option<Cache>,
}

impl Default for Caricature {
    fn default() -> Self {
        Self {
            steps: 512,
            seed: 0,
            learning_rate: 0.05,
            // Measured on zoo:fashion test images (512 steps): cosine with the image's
            // activation 0.86 (pow 1), 0.91 (pow 2), 0.95–0.97 (pow 4) at conv2 and conv3.
            cossim_pow: 4.0,
            param: ParamKind::Fft,
            cache: Cache::default_location(),
        }
    }
}

/// A caricature and how close it came.
#[derive(Clone, Debug)]
pub struct CaricatureResult {
    pub layer: String,
    /// The reference image at the size rendered, `[1, C, H, W]` in [0, 1].
    pub image: DynTensor,
    /// The caricature, `[1, C, H, W]` in [0, 1].
    pub caricature: DynTensor,
    /// The cosine similarity of the caricature's activation at the layer with the image's
    /// (both untransformed).
    pub similarity: f32,
}

impl Caricature {
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn cossim_pow(mut self, pow: f32) -> Self {
        self.cossim_pow = pow;
        self
    }

    /// Uses `cache` for results (`None`: no caching).
    pub fn cache(mut self, cache: Option<Cache>) -> Self {
        self.cache = cache;
        self
    }

    /// The caricature of `image` (`[1, C, S, S]` in [0, 1]; the model's input size for a layer
    /// behind a Flatten) at `layer`.
    pub fn run(&self, layer: &Layer, image: &DynTensor) -> Result<CaricatureResult> {
        self.run_with(layer.model(), &layer.name, image, &mut |_| {}, None)
    }

    /// [`Caricature::run`] by layer name, with progress reports and a cancel flag.
    pub fn run_with(
        &self,
        model: &Model,
        layer: &str,
        image: &DynTensor,
        progress: &mut dyn FnMut(Progress),
        cancel: Option<&AtomicBool>,
    ) -> Result<CaricatureResult> {
        let spec = model.input_spec()?;
        let dims = image.dims();
        if dims.len() != 4 || dims[0] != 1 || dims[1] != spec.channels || dims[2] != dims[3] {
            return Err(Error::Message(format!(
                "caricature at {layer}: the image is {dims:?}; it takes one square image of {} \
                 channels, [1, {}, S, S]",
                spec.channels, spec.channels
            )));
        }
        model.layer(layer)?;
        if !self.cossim_pow.is_finite() {
            return Err(Error::Message(format!(
                "caricature at {layer}: cossim_pow {}; it takes a finite number",
                self.cossim_pow
            )));
        }
        let size = dims[2];
        // The transforms draw a larger batch than the input; the reference and the caricature
        // are compared after the same draw, at the input size (fit back, as for layers behind a
        // Flatten).
        let mut transforms = standard_transforms(size);
        transforms.push(super::transform::Transform::Fit(size));
        let config = RenderConfig {
            steps: self.steps,
            learning_rate: self.learning_rate,
            seed: self.seed,
            batch: 1,
            size,
            param: self.param,
            transforms,
            redirect_steps: 0,
            context: Some(image.clone()),
        };
        let objective = Objective::caricature(layer, self.cossim_pow);
        let key = Cache::key(&[
            // Bumped when the pixels a seed gives change (2: the CPU backend's own LRN and
            // convolution, whose sums round differently).
            "caricature/2",
            model.digest(),
            objective.name(),
            &crate::digest::sha256_hex(&floats_le(&image.to_vec())),
            &format!(
                "{}/{}/{}/{:?}",
                self.steps, self.seed, self.learning_rate, self.param
            ),
            render::pixels_backend(model.network().device()),
        ]);
        let device = model.network().device().burn().clone();
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.get(&key))
            .and_then(|bytes| decode(&bytes));
        let caricature = match cached.as_deref() {
            Some([(shape, pixels)]) if *shape == dims => {
                DynTensor::from_host(pixels, shape, &device)
            }
            _ => {
                let rendered = render::render(model, &objective, &config, progress, cancel)?;
                if let Some(cache) = &self.cache {
                    let entry = (rendered.images.dims(), rendered.images.to_vec());
                    // A cache that cannot be written only costs a recomputation next time.
                    let _ = cache.put(&key, &encode(&[entry]));
                }
                rendered.images
            }
        };
        let similarity = cosine_at(model, layer, image, &caricature)?;
        Ok(CaricatureResult {
            layer: layer.to_string(),
            image: image.clone(),
            caricature,
            similarity,
        })
    }
}

fn floats_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The cosine similarity of `a`'s and `b`'s activations at `layer` (images `[1, C, H, W]`).
pub fn cosine_at(model: &Model, layer: &str, a: &DynTensor, b: &DynTensor) -> Result<f32> {
    let net = model.network();
    let input = net.image_input()?.name.clone();
    let mut acts = Vec::with_capacity(2);
    for image in [a, b] {
        let x = model.normalize(image)?;
        let out = net.forward_any_size(&[(&input, x)], &[layer])?.remove(0);
        acts.push(out.to_vec());
    }
    let dot: f32 = acts[0].iter().zip(&acts[1]).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    Ok(dot / (norm(&acts[0]) * norm(&acts[1])).max(1e-12))
}
