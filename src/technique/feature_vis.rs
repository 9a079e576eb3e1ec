//! `FeatureVis`: the image that most excites (or, negated, inhibits) a unit, rendered with
//! Lucid's recipe: FFT parameterization, decorrelated colour, transformation robustness, Adam
//! lr 0.05, 512 steps, 128 px (or the model's input size when smaller). One image per unit, all
//! units of a call in one batch.

use std::sync::atomic::AtomicBool;

use super::cache::{decode, encode, Cache};
use super::objective::Objective;
use super::render::{self, ParamKind, Progress, RenderConfig};
use super::transform::standard_transforms;
use crate::error::{Error, Result};
use crate::model::{Model, Unit};
use crate::network::DynTensor;
use crate::provenance::Provenance;

/// Settings of a feature visualization (builder style). They serialize as the technique's
/// parameters in a [`Provenance`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct FeatureVis {
    pub steps: usize,
    pub seed: u64,
    pub negative: bool,
    pub learning_rate: f32,
    /// Image size; `None`: 128 px, or the model's input size when that is smaller.
    pub size: Option<usize>,
    pub param: ParamKind,
    /// Weight of Lucid's diversity term (0: off). Only meaningful for several images per unit.
    pub diversity: f32,
    /// Where results are cached (`None`: always compute).
    #[serde(skip)]
    pub cache: Option<Cache>,
}

impl Default for FeatureVis {
    fn default() -> Self {
        Self {
            steps: 512,
            seed: 0,
            negative: false,
            learning_rate: 0.05,
            size: None,
            param: ParamKind::Fft,
            diversity: 0.0,
            cache: Cache::default_location(),
        }
    }
}

/// Rendered images, one per requested unit, with each unit's activation on its image.
#[derive(Clone, Debug)]
pub struct Visualization {
    pub layer: String,
    pub units: Vec<usize>,
    /// `[N, C, H, W]` in [0, 1].
    pub images: DynTensor,
    /// Mean activation of unit `units[i]` on image `i` (no transforms).
    pub activations: Vec<f32>,
    /// The model and the settings that made the images.
    pub provenance: Provenance,
}

impl FeatureVis {
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn negative(mut self, negative: bool) -> Self {
        self.negative = negative;
        self
    }

    pub fn size(mut self, size: usize) -> Self {
        self.size = Some(size);
        self
    }

    pub fn param(mut self, param: ParamKind) -> Self {
        self.param = param;
        self
    }

    pub fn diversity(mut self, weight: f32) -> Self {
        self.diversity = weight;
        self
    }

    /// Uses `cache` for results (`None`: no caching).
    pub fn cache(mut self, cache: Option<Cache>) -> Self {
        self.cache = cache;
        self
    }

    /// The cache key: everything the pixels depend on.
    fn key(&self, model: &Model, layer: &str, units: &[usize], size: usize, fixed: bool) -> String {
        let parts = [
            // Bumped when the pixels a seed gives change (2: one resampling for scale and rotation).
            "feature-vis/3".to_string(),
            model.digest().to_string(),
            layer.to_string(),
            format!("{units:?}"),
            format!(
                "{}/{}/{}/{}",
                self.steps, self.seed, self.negative, self.learning_rate
            ),
            // `fit` only where the batch is fitted to the input size: other keys are unchanged.
            format!(
                "{size}/{:?}/{}{}",
                self.param,
                self.diversity,
                if fixed { "/fit" } else { "" }
            ),
            model.network().device().kind().to_string(),
        ];
        Cache::key(&parts.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Visualizes one unit.
    pub fn run(&self, unit: &Unit) -> Result<Visualization> {
        self.run_units(unit.model(), unit.layer(), &[unit.index()])
    }

    /// Visualizes several units of one layer in one batch.
    pub fn run_units(&self, model: &Model, layer: &str, units: &[usize]) -> Result<Visualization> {
        self.run_with(model, layer, units, &mut |_| {}, None)
    }

    /// [`FeatureVis::run_units`] with progress reports and a cancel flag checked every step.
    pub fn run_with(
        &self,
        model: &Model,
        layer: &str,
        units: &[usize],
        progress: &mut dyn FnMut(Progress),
        cancel: Option<&AtomicBool>,
    ) -> Result<Visualization> {
        for &u in units {
            model.unit(layer, u)?;
        }
        if units.is_empty() {
            return Err(Error::Message(format!("{layer}: no units to visualize")));
        }
        let spec = model.input_spec()?;
        let mut size = self.size.unwrap_or(spec.height.min(spec.width).min(128));
        let mut transforms = standard_transforms(size);
        // A layer behind a Flatten and a fully connected layer (fashion's logits) takes only
        // the input size: render at it, and fit the transformed batch back to it every step.
        let fixed = !super::objective::reachable_at_any_size(model, layer, size)?;
        if fixed {
            if spec.height != spec.width {
                return Err(Error::Message(format!(
                    "{layer}: reachable only from the input size {}×{}, and renders are square",
                    spec.height, spec.width
                )));
            }
            size = spec.height;
            transforms = standard_transforms(size);
            transforms.push(super::transform::Transform::Fit(size));
        }
        let mut objective = Objective::channels(layer, units);
        if self.negative {
            objective = -objective;
        }
        if self.diversity != 0.0 {
            objective = objective + Objective::diversity(layer) * self.diversity;
        }
        let config = RenderConfig {
            steps: self.steps,
            learning_rate: self.learning_rate,
            seed: self.seed,
            batch: units.len(),
            size,
            param: self.param,
            transforms,
        };
        let key = self.key(model, layer, units, size, fixed);
        let device = model.network().device().burn().clone();
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.get(&key))
            .and_then(|bytes| decode(&bytes));
        // What the key stands for: one [C, size, size] image and one activation per unit. An
        // entry of any other shape (intact, but not what this key means) is a miss.
        let fits = |shape: &Vec<usize>, activations: &Vec<f32>| {
            shape.len() == 4
                && shape[0] == units.len()
                && shape[2..] == [size, size]
                && activations.len() == units.len()
        };
        let provenance = Provenance::of(model).technique(
            "feature-vis",
            &match units {
                [u] => format!("{layer}:{u}"),
                _ => format!("{layer}:{units:?}"),
            },
            self,
        );
        if let Some([(shape, pixels), (_, activations)]) = cached
            .as_deref()
            .filter(|c| matches!(c, [(s, _), (_, a)] if fits(s, a)))
        {
            return Ok(Visualization {
                layer: layer.to_string(),
                units: units.to_vec(),
                images: DynTensor::from_host(pixels, shape, &device),
                activations: activations.clone(),
                provenance,
            });
        }
        let rendered = render::render(model, &objective, &config, progress, cancel)?;
        let activations =
            super::objective::unit_activations(model, layer, units, &rendered.images)?;
        if let Some(cache) = &self.cache {
            let images = (rendered.images.dims(), rendered.images.to_vec());
            // A cache that cannot be written only costs a recomputation next time.
            let _ = cache.put(
                &key,
                &encode(&[images, (vec![activations.len()], activations.clone())]),
            );
        }
        Ok(Visualization {
            layer: layer.to_string(),
            units: units.to_vec(),
            images: rendered.images,
            activations,
            provenance,
        })
    }
}
