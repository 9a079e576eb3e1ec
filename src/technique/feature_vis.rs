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
    /// The first steps whose gradient passes through ReLUs and Clips (see
    /// [`RenderConfig::redirect_steps`]); 16 by default, 0: none. A unit whose inputs are all
    /// off for the random start image gets no gradient without it: with none, zoo:fashion's
    /// conv3:16 ends at 0.05 and conv3:25 at -0.14, below the best test image (0.46, -0.08),
    /// whatever the seed, learning rate, step count or parameterization; with 16, every unit of
    /// conv1, conv2 and conv3 beats its best test image. Adam starts afresh after these steps:
    /// without that, EfficientNet-Lite0's class visualizations fell from 5 of 10 top-1 (128
    /// steps) to 0 of 10, with it they rose to 9 of 10. Lucid passes only the gradient that
    /// pushes a dead input up, and only where none gets through; that needs a custom backward,
    /// which burn's dispatch backend does not offer.
    pub redirect_steps: usize,
    /// What "a unit" means in [`FeatureVis::run`] and [`FeatureVis::run_units`] (and so in
    /// galleries and unit views): its channel's mean, or its centre neuron.
    pub unit_objective: UnitObjective,
    /// What [`FeatureVis::render`] maximizes (any [`Objective`], composed with `+ - *`).
    pub objective: Option<Objective>,
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
            redirect_steps: 16,
            unit_objective: UnitObjective::Channel,
            objective: None,
            cache: Cache::default_location(),
        }
    }
}

/// What a feature visualization of a unit maximizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub enum UnitObjective {
    /// The mean of the unit's channel over all positions ([`Objective::channels`]).
    #[default]
    Channel,
    /// The unit's channel at the centre position ([`Objective::neurons`]): one receptive field.
    Neuron,
}

impl UnitObjective {
    /// Image `i` maximizes `units[i % len]` of `layer`.
    pub fn objective(self, layer: &str, units: &[usize]) -> Objective {
        match self {
            UnitObjective::Channel => Objective::channels(layer, units),
            UnitObjective::Neuron => Objective::neurons(layer, units),
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
    /// Unit `units[i]`'s activation on image `i` (no transforms): its channel mean, or its
    /// centre neuron with [`UnitObjective::Neuron`]; for [`FeatureVis::render`], the
    /// objective's value.
    pub activations: Vec<f32>,
    /// What was maximized, e.g. `channels(conv3:[1, 2])` or `class(logits:3) - 0.5 * ...`.
    pub objective: String,
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

    /// Visualizes units by their centre neuron rather than their channel mean (see
    /// [`UnitObjective`]).
    pub fn unit_objective(mut self, unit_objective: UnitObjective) -> Self {
        self.unit_objective = unit_objective;
        self
    }

    /// What [`FeatureVis::render`] maximizes: any objective, e.g.
    /// `Objective::class("logits", 3) - Objective::channel("conv3", 7) * 0.5`.
    pub fn objective(mut self, objective: Objective) -> Self {
        self.objective = Some(objective);
        self
    }

    /// The first steps whose gradient passes through ReLUs and Clips (0: none).
    pub fn redirect_steps(mut self, steps: usize) -> Self {
        self.redirect_steps = steps;
        self
    }

    /// Uses `cache` for results (`None`: no caching).
    pub fn cache(mut self, cache: Option<Cache>) -> Self {
        self.cache = cache;
        self
    }

    /// The cache key: everything the pixels depend on. The objective's name names every
    /// parameter of it.
    fn key(
        &self,
        model: &Model,
        objective: &Objective,
        batch: usize,
        size: usize,
        fixed: bool,
    ) -> String {
        let what = objective.name();
        let mut parts = vec![
            // Bumped when the pixels a seed gives change (2: one resampling for scale and
            // rotation; 4: redirected gradients in the first steps; 5: Adam restarts after them;
            // 6: LRN's own op on the CPU backend, whose sums round differently; 7: so does its
            // convolution).
            "feature-vis/7".to_string(),
            model.digest().to_string(),
            what.to_string(),
            format!(
                "{batch}/{}/{}/{}/{}/{}",
                self.steps, self.seed, self.negative, self.learning_rate, self.redirect_steps
            ),
            format!(
                "{size}/{:?}/{}{}",
                self.param,
                self.diversity,
                if fixed { "/fit" } else { "" }
            ),
            render::pixels_backend(model.network().device()).to_string(),
        ];
        // Layers whose units are read by their concentration (attention weights), which were
        // read as they are before.
        let net = model.network();
        for layer in objective.layers() {
            if net.concentrates(layer) {
                parts.push(format!("{layer}/concentration"));
            }
        }
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
        let objective = self.unit_objective.objective(layer, units);
        let (images, activations) =
            self.optimize(model, &objective, units.len(), progress, cancel)?;
        let target = match units {
            [u] => format!("{layer}:{u}"),
            _ => format!("{layer}:{units:?}"),
        };
        Ok(Visualization {
            layer: layer.to_string(),
            units: units.to_vec(),
            images,
            activations,
            objective: objective.name().to_string(),
            provenance: Provenance::of(model).technique("feature-vis", &target, self),
        })
    }

    /// `images` images that maximize the objective set with [`FeatureVis::objective`] (any
    /// layers, any composition); `activations` holds the objective's value on each.
    pub fn render(&self, model: &Model, images: usize) -> Result<Visualization> {
        let objective = self.objective.as_ref().ok_or_else(|| {
            Error::Message(
                "FeatureVis::render needs an objective: `.objective(Objective::...)` (units: \
                 `run` or `run_units`)"
                    .into(),
            )
        })?;
        if images == 0 {
            return Err(Error::Message(format!(
                "{}: no images to render",
                objective.name()
            )));
        }
        let (pixels, values) = self.optimize(model, objective, images, &mut |_| {}, None)?;
        Ok(Visualization {
            layer: objective.layers().join(", "),
            units: Vec::new(),
            images: pixels,
            activations: values,
            objective: objective.name().to_string(),
            provenance: Provenance::of(model).technique("feature-vis", objective.name(), self),
        })
    }

    /// Renders `batch` images for `objective` (negated, and with diversity, as set), or takes
    /// them from the cache; returns them with `objective`'s value on each.
    fn optimize(
        &self,
        model: &Model,
        objective: &Objective,
        batch: usize,
        progress: &mut dyn FnMut(Progress),
        cancel: Option<&AtomicBool>,
    ) -> Result<(DynTensor, Vec<f32>)> {
        let spec = model.input_spec()?;
        let mut size = self.size.unwrap_or(spec.height.min(spec.width).min(128));
        let mut transforms = standard_transforms(size);
        // A layer behind a Flatten and a fully connected layer (fashion's logits) takes only
        // the input size: render at it, and fit the transformed batch back to it every step.
        let mut fixed = false;
        for layer in objective.layers() {
            fixed |= !super::objective::reachable_at_any_size(model, layer, size)?;
        }
        if fixed {
            if spec.height != spec.width {
                return Err(Error::Message(format!(
                    "{}: reachable only from the input size {}×{}, and renders are square",
                    objective.name(),
                    spec.height,
                    spec.width
                )));
            }
            size = spec.height;
            transforms = standard_transforms(size);
            transforms.push(super::transform::Transform::Fit(size));
        }
        let mut target = objective.clone();
        if self.negative {
            target = -target;
        }
        if self.diversity != 0.0 {
            for layer in objective.layers() {
                target = target + Objective::diversity(layer) * self.diversity;
            }
        }
        let config = RenderConfig {
            steps: self.steps,
            learning_rate: self.learning_rate,
            seed: self.seed,
            batch,
            size,
            param: self.param,
            transforms,
            redirect_steps: self.redirect_steps,
            context: None,
        };
        let key = self.key(model, objective, batch, size, fixed);
        let device = model.network().device().burn().clone();
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.get(&key))
            .and_then(|bytes| decode(&bytes));
        // What the key stands for: `batch` [C, size, size] images and one value each. An entry
        // of any other shape (intact, but not what this key means) is a miss.
        let fits = |shape: &Vec<usize>, values: &Vec<f32>| {
            shape.len() == 4
                && shape[0] == batch
                && shape[2..] == [size, size]
                && values.len() == batch
        };
        if let Some([(shape, pixels), (_, values)]) = cached
            .as_deref()
            .filter(|c| matches!(c, [(s, _), (_, a)] if fits(s, a)))
        {
            return Ok((DynTensor::from_host(pixels, shape, &device), values.clone()));
        }
        let rendered = render::render(model, &target, &config, progress, cancel)?;
        let values = super::objective::objective_values(model, objective, &rendered.images)?;
        if let Some(cache) = &self.cache {
            let images = (rendered.images.dims(), rendered.images.to_vec());
            // A cache that cannot be written only costs a recomputation next time.
            let _ = cache.put(
                &key,
                &encode(&[images, (vec![values.len()], values.clone())]),
            );
        }
        Ok((rendered.images, values))
    }
}
