//! Input attributions: which pixels of one image a class logit or a unit's activation depends
//! on. Five methods, declared once in [`METHODS`] (the unit view's selector and the tests read
//! that table): saliency, gradient × input, Integrated Gradients, SmoothGrad and Grad-CAM.
//!
//! Every method but Grad-CAM differentiates with respect to the un-normalized pixels in [0, 1]:
//! the model's input normalization is part of the differentiated function, so gradient × input
//! and Integrated Gradients are in the target's units per pixel of the user's image.
//!
//! Integrated Gradients (Sundararajan et al. 2017) integrates the gradient along the straight
//! path from a baseline x′ to the image x with the midpoint rule: `steps` gradients at
//! α = (k + ½) / steps, k = 0..steps, so `(x − x′) · mean gradient` sums to nearly
//! f(x) − f(x′) (completeness; [`Completeness`] reports the gap). While the gap is over
//! `tolerance` of f(x) − f(x′), the pieces are cut in three (up to `max_steps`): the old
//! midpoints are midpoints again, so only the two new points of each piece are computed.
//! SmoothGrad (Smilkov et al. 2017) averages the gradient over `samples` copies of the image
//! with Gaussian noise of σ = `noise` × (max − min of the image), drawn from `seed`. The points
//! of both run `batch` at a time through one forward and one backward pass. Grad-CAM
//! (Selvaraju et al. 2017) weighs the activation maps A_k of a convolution by α_k, the spatial
//! mean of the target's gradient with respect to them, and keeps ReLU(Σ_k α_k A_k), upsampled
//! (bilinear) to the image.
//!
//! # Shapes
//! image and baseline `[1, C, H, W]` in [0, 1] · per-pixel attributions `[C, H, W]` · display
//! map `[H, W]` · points of IG and SmoothGrad `[n, C, H, W]` · Grad-CAM's layer `[1, K, h, w]`.

use burn::tensor::backend::AutodiffBackend;
use burn::Dispatch;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::attention_flow::{attention_flow, attention_layers, Flow};
use super::attribution::{layer_gradient, target_values, Target};
use super::param::normal;
use super::weights::previous_spatial_layer;
use crate::device::{cpu_threads, is_cpu, on_cpu_pool, side_by_side};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::{Back, DynTensor, Fast};

/// Settings of the input attribution methods (builder style); each method reads its own. They
/// serialize as the technique's parameters in a provenance (the baseline by its shape).
#[derive(Clone, Debug, serde::Serialize)]
pub struct InputAttribution {
    /// Integrated Gradients: gradients along the path (midpoint rule), at first.
    pub steps: usize,
    /// Integrated Gradients: while the completeness gap is over `tolerance` (relative to
    /// f(x) − f(baseline)), the steps are tripled, up to `max_steps`.
    pub tolerance: f32,
    /// Integrated Gradients: the most steps the refinement goes to (`steps` or less: none).
    pub max_steps: usize,
    /// Integrated Gradients: the image the path starts from (`[1, C, H, W]` in [0, 1]);
    /// `None`: black.
    #[serde(serialize_with = "crate::provenance::image_shape")]
    pub baseline: Option<DynTensor>,
    /// SmoothGrad: noisy copies averaged.
    pub samples: usize,
    /// SmoothGrad: the noise's σ as a fraction of the image's range (max − min).
    pub noise: f32,
    /// SmoothGrad's noise: same seed, same numbers.
    pub seed: u64,
    /// Grad-CAM: the convolution whose maps are weighed; `None`: the nearest spatial layer
    /// before the target (for a class logit, the last convolution).
    pub layer: Option<String>,
    /// Points (images) per forward and backward pass.
    pub batch: usize,
}

impl Default for InputAttribution {
    fn default() -> Self {
        Self {
            // Sundararajan et al. suggest 20–300; on zoo:fashion, 128 keeps the completeness gap
            // of an image's own class under 1 % (tests/input_attribution.rs). A class whose
            // logit barely moves from the baseline needs more: of the 10 classes of 4 test
            // images, 25 were within 1 % at 128 steps, 11 at 384, 3 at 1152, and one (a change
            // of 0.21, its gradients cancelling along the path) at 3456 (gap 5.3 % at 1152).
            steps: 128,
            tolerance: 0.01,
            max_steps: 3456,
            baseline: None,
            // Smilkov et al.: 50 samples, σ 10–20 % of the range (15 % in their figures).
            samples: 50,
            noise: 0.15,
            seed: 0,
            layer: None,
            batch: 16,
        }
    }
}

/// One method of input attribution: a row of [`METHODS`].
#[derive(Debug)]
pub struct MethodSpec {
    pub id: &'static str,
    pub title: &'static str,
    /// One line: what the map shows.
    pub about: &'static str,
    /// One line: how it misleads.
    pub caveat: &'static str,
    /// Whether its attributions take both signs (drawn blue to red) or only positive values
    /// (drawn as heat).
    pub signed: bool,
    /// The settings it reads, in words (empty when it has none).
    pub settings: fn(&InputAttribution) -> String,
    /// The targets it explains.
    pub scope: Scope,
    compute: fn(&InputAttribution, &Model, &DynTensor, &Target) -> Result<InputMap>,
}

/// The targets a method explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Any target of any network.
    Any,
    /// Targets computed from attention layers ([`attention_layers`]): a transformer's.
    Attention,
}

impl Scope {
    /// Whether a method of this scope explains `target`.
    pub fn applies(self, model: &Model, target: &Target) -> bool {
        match self {
            Scope::Any => true,
            Scope::Attention => attention_layers(model, target).is_ok_and(|l| !l.is_empty()),
        }
    }
}

/// The input attribution methods, in the order the unit view lists them.
pub static METHODS: &[MethodSpec] = &[
    MethodSpec {
        id: "saliency",
        title: "Saliency",
        about: "The gradient of the target with respect to each pixel: where a small change \
                moves it most.",
        caveat: "Noisy and local: it ignores the pixel's own value, and in a ReLU network it \
                 jumps from pixel to pixel.",
        signed: true,
        settings: |_| String::new(),
        scope: Scope::Any,
        compute: |s, m, x, t| s.saliency(m, x, t),
    },
    MethodSpec {
        id: "gradient-input",
        title: "Gradient × input",
        about: "The gradient times the pixel: a first-order estimate of each pixel's share of \
                the target.",
        caveat: "Black pixels always get zero, whatever the network does with them.",
        signed: true,
        settings: |_| String::new(),
        scope: Scope::Any,
        compute: |s, m, x, t| s.gradient_times_input(m, x, t),
    },
    MethodSpec {
        id: "integrated-gradients",
        title: "Integrated Gradients",
        about: "(x − baseline) × the gradient averaged along the path from a baseline image: \
                the attributions add up to f(x) − f(baseline).",
        caveat: "It explains the difference from the baseline: pixels equal to it (black ones, \
                 by default) get nothing.",
        signed: true,
        settings: |s| {
            let from = if s.baseline.is_some() {
                "the given"
            } else {
                "a black"
            };
            if s.max_steps > s.steps {
                format!(
                    "{} steps, tripled up to {} while the gap is over {} %, from {from} baseline",
                    s.steps,
                    s.max_steps,
                    100.0 * s.tolerance
                )
            } else {
                format!("{} steps from {from} baseline", s.steps)
            }
        },
        scope: Scope::Any,
        compute: |s, m, x, t| s.integrated_gradients(m, x, t),
    },
    MethodSpec {
        id: "smoothgrad",
        title: "SmoothGrad",
        about: "The gradient averaged over noisy copies of the image: saliency with its \
                pixel-to-pixel noise averaged away.",
        caveat: "Its noise level and sample count shape the map; it still shows sensitivity, \
                 not contribution.",
        signed: true,
        settings: |s| {
            format!(
                "{} samples, noise σ {} of the range, seed {}",
                s.samples, s.noise, s.seed
            )
        },
        scope: Scope::Any,
        compute: |s, m, x, t| s.smoothgrad(m, x, t),
    },
    MethodSpec {
        id: "grad-cam",
        title: "Grad-CAM",
        about: "A convolution's maps weighed by the mean gradient of the target, positive part, \
                upsampled: the coarse regions that raise it.",
        caveat: "As coarse as the layer, and blind to evidence against the target (the ReLU \
                 drops it).",
        signed: false,
        settings: |_| String::new(),
        scope: Scope::Any,
        compute: |s, m, x, t| s.grad_cam_map(m, x, t),
    },
    MethodSpec {
        id: "attention-rollout",
        title: "Attention rollout",
        about: "The attention weights, averaged over heads with the residual as half, \
                multiplied through the layers (Abnar & Zuidema): how much each patch flows into \
                the tokens the target reads.",
        caveat: "Blind to the target (every unit after the same layers gets one map) and to \
                 what the MLPs do with the tokens.",
        signed: false,
        settings: |_| String::new(),
        scope: Scope::Attention,
        compute: |_, m, x, t| flow_map("attention-rollout", m, x, t, Flow::Rollout),
    },
    MethodSpec {
        id: "gradient-rollout",
        title: "Gradient-weighted rollout",
        about: "Attention weights times the target's gradient with respect to them, positive \
                part, averaged over heads and accumulated through the layers (Chefer et al.).",
        caveat: "Shows where attention raised the target; what lowered it, and the MLPs' share, \
                 are left out.",
        signed: false,
        settings: |_| String::new(),
        scope: Scope::Attention,
        compute: |_, m, x, t| flow_map("gradient-rollout", m, x, t, Flow::Gradient),
    },
];

/// An attention flow method's map, upsampled from the patch grid to the image.
fn flow_map(
    method: &'static str,
    model: &Model,
    image: &DynTensor,
    target: &Target,
    flow: Flow,
) -> Result<InputMap> {
    let x = Pixels::of(image)?;
    let f = attention_flow(model, image, target, flow)?;
    let [c, h, w] = x.dims;
    let map = upsample(&f.map, f.grid.rows, f.grid.cols, h, w);
    Ok(InputMap {
        method,
        value: f.value,
        dims: x.dims,
        pixels: map.repeat(c),
        map,
        completeness: None,
        layer: None,
        detail: Some(f.describe()),
    })
}

/// One method's attributions on one image.
#[derive(Clone, Debug)]
pub struct InputMap {
    /// The method's id in [`METHODS`].
    pub method: &'static str,
    /// The target's value on the image.
    pub value: f32,
    /// `[C, H, W]` of the image.
    pub dims: [usize; 3],
    /// One attribution per pixel and channel, `[C, H, W]` row-major (Grad-CAM: its map in every
    /// channel).
    pub pixels: Vec<f32>,
    /// For display: Σ over channels of `pixels` (Grad-CAM: its upsampled map), `[H, W]`.
    pub map: Vec<f32>,
    /// Integrated Gradients only.
    pub completeness: Option<Completeness>,
    /// Grad-CAM only: the layer whose maps were weighed.
    pub layer: Option<String>,
    /// Attention flow only: the layers and the token row it was read from, in words.
    pub detail: Option<String>,
}

/// How nearly Integrated Gradients' attributions add up to f(x) − f(baseline).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Completeness {
    /// f(x).
    pub value: f32,
    /// f(baseline).
    pub baseline: f32,
    /// Σ of the attributions.
    pub sum: f32,
    /// The gradients taken along the path.
    pub steps: usize,
}

impl Completeness {
    /// Σ attributions − (f(x) − f(baseline)).
    pub fn gap(&self) -> f32 {
        self.sum - (self.value - self.baseline)
    }

    /// |gap| / |f(x) − f(baseline)|.
    pub fn relative_gap(&self) -> f32 {
        self.gap().abs() / (self.value - self.baseline).abs().max(f32::MIN_POSITIVE)
    }
}

/// Grad-CAM at one layer, before upsampling.
#[derive(Clone, Debug)]
pub struct GradCam {
    pub layer: String,
    /// The target's value on the image.
    pub value: f32,
    /// α_k: the spatial mean of the target's gradient on map k, one per channel of the layer.
    pub weights: Vec<f32>,
    /// ReLU(Σ_k α_k A_k), `[height, width]` of the layer.
    pub map: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

/// The methods of [`METHODS`] whose [`Scope`] covers `target`, in their order: the attention
/// flow methods only for a transformer's targets.
pub fn methods_for(model: &Model, target: &Target) -> Vec<&'static MethodSpec> {
    METHODS
        .iter()
        .filter(|m| m.scope.applies(model, target))
        .collect()
}

impl MethodSpec {
    /// The method `id`, or an error listing the methods there are.
    pub fn find(id: &str) -> Result<&'static MethodSpec> {
        METHODS.iter().find(|m| m.id == id).ok_or_else(|| {
            let ids: Vec<&str> = METHODS.iter().map(|m| m.id).collect();
            Error::Message(format!(
                "no input attribution method {id:?} (methods: {})",
                ids.join(", ")
            ))
        })
    }
}

impl InputAttribution {
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// The largest completeness gap, relative to f(x) − f(baseline), that Integrated Gradients
    /// accepts before it triples its steps.
    pub fn tolerance(mut self, tolerance: f32) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The most steps Integrated Gradients refines to (`steps` or less: no refinement).
    pub fn max_steps(mut self, max_steps: usize) -> Self {
        self.max_steps = max_steps;
        self
    }

    /// The baseline of Integrated Gradients (`[1, C, H, W]` in [0, 1], like the image).
    pub fn baseline(mut self, baseline: DynTensor) -> Self {
        self.baseline = Some(baseline);
        self
    }

    pub fn samples(mut self, samples: usize) -> Self {
        self.samples = samples;
        self
    }

    pub fn noise(mut self, noise: f32) -> Self {
        self.noise = noise;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Grad-CAM's layer.
    pub fn layer(mut self, layer: &str) -> Self {
        self.layer = Some(layer.to_string());
        self
    }

    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Method `id` of [`METHODS`] on `image` (`[1, C, H, W]` in [0, 1]) toward `target`.
    pub fn run(
        &self,
        id: &str,
        model: &Model,
        image: &DynTensor,
        target: &Target,
    ) -> Result<InputMap> {
        let spec = MethodSpec::find(id)?;
        on_cpu_pool(model.network().device().burn(), || {
            (spec.compute)(self, model, image, target)
        })
    }

    /// Every method of [`METHODS`] that explains `target` ([`methods_for`]), in their order.
    pub fn run_all(
        &self,
        model: &Model,
        image: &DynTensor,
        target: &Target,
    ) -> Result<Vec<InputMap>> {
        methods_for(model, target)
            .into_iter()
            .map(|m| self.run(m.id, model, image, target))
            .collect()
    }

    /// `batch`, or fewer where that many images like `x` on their way to the target would not
    /// fit the memory available, or their pixels the memory budget (the same points, in more
    /// passes), or where on the CPU a lane's pass would hold more than
    /// [`LANE_PASS_BYTES`](super::render::LANE_PASS_BYTES); an
    /// error where one alone does not fit.
    fn batch_that_fits(&self, model: &Model, x: &Pixels, target: &Target) -> Result<usize> {
        let pixels = (x.data.len() as u64).saturating_mul(4).max(1);
        let batch = self
            .batch
            .max(1)
            .min(usize::try_from(crate::budget::budget().bytes / pixels).unwrap_or(usize::MAX))
            .max(1);
        let Some(available) = super::render::available_memory(model) else {
            return Ok(batch);
        };
        let [_, h, w] = x.dims;
        let per_image = super::render::one_image_fits(
            model,
            "input attribution",
            &[target.node().to_string()],
            [h, w],
            available,
            &format!("an image of {h}×{w} px"),
            "attribute a smaller image",
        )?;
        let batch = batch.min(super::render::fit_count(per_image, available));
        let device = model.network().device().burn();
        if !is_cpu(device) {
            return Ok(batch);
        }
        // On the CPU, each lane's passes (see `gradients`) hold at most about
        // `LANE_PASS_BYTES`.
        Ok(batch.min(super::render::lane_pass(per_image).saturating_mul(cpu_threads(device))))
    }

    fn saliency(&self, model: &Model, image: &DynTensor, target: &Target) -> Result<InputMap> {
        let x = Pixels::of(image)?;
        let batch = self.batch_that_fits(model, &x, target)?;
        let (values, grads) = gradients(model, &x.data, x.dims, target, batch)?;
        Ok(x.map("saliency", values[0], grads))
    }

    fn gradient_times_input(
        &self,
        model: &Model,
        image: &DynTensor,
        target: &Target,
    ) -> Result<InputMap> {
        let x = Pixels::of(image)?;
        let s = self.saliency(model, image, target)?;
        let pixels = s.pixels.iter().zip(&x.data).map(|(g, v)| g * v).collect();
        Ok(x.map("gradient-input", s.value, pixels))
    }

    fn integrated_gradients(
        &self,
        model: &Model,
        image: &DynTensor,
        target: &Target,
    ) -> Result<InputMap> {
        let x = Pixels::of(image)?;
        let base = match &self.baseline {
            Some(b) => {
                let b = Pixels::of(b)?;
                if b.dims != x.dims {
                    return Err(Error::Message(format!(
                        "integrated gradients: the baseline is {:?}, the image {:?}",
                        b.dims, x.dims
                    )));
                }
                b.data
            }
            None => vec![0.0; x.data.len()],
        };
        if self.tolerance.is_nan() {
            return Err(Error::Message(
                "integrated gradients: tolerance NaN; it takes a number (0: refine up to \
                 max_steps)"
                    .into(),
            ));
        }
        let n = x.data.len();
        let batch = self.batch_that_fits(model, &x, target)?;
        let (values, _) = gradients(
            model,
            &[x.data.clone(), base.clone()].concat(),
            x.dims,
            target,
            batch.min(2),
        )?;
        // Σ of the gradients at the points so far, per pixel. The points go through the
        // network `batch` at a time, made as they go, so that only that many images (and no
        // list of `steps` alphas) are ever held: `steps` is the caller's, and may be large.
        let mut total = vec![0.0f64; n];
        let add = |total: &mut [f64], count: usize, alpha: &dyn Fn(usize) -> f32| -> Result<()> {
            let mut start = 0;
            while start < count {
                let len = batch.min(count - start);
                let mut points = Vec::with_capacity(len * n);
                for i in start..start + len {
                    let a = alpha(i);
                    points.extend(base.iter().zip(&x.data).map(|(b, v)| b + a * (v - b)));
                }
                let (_, grads) = gradients(model, &points, x.dims, target, len)?;
                for g in grads.chunks(n) {
                    total.iter_mut().zip(g).for_each(|(t, g)| *t += *g as f64);
                }
                start += len;
            }
            Ok(())
        };
        let mut steps = self.steps.max(1);
        add(&mut total, steps, &|k| (k as f32 + 0.5) / steps as f32)?;
        let (pixels, completeness) = loop {
            let pixels: Vec<f32> = total
                .iter()
                .zip(x.data.iter().zip(&base))
                .map(|(g, (v, b))| (v - b) * (*g / steps as f64) as f32)
                .collect();
            let completeness = Completeness {
                value: values[0],
                baseline: values[1],
                sum: pixels.iter().sum(),
                steps,
            };
            if completeness.relative_gap() <= self.tolerance
                || steps.saturating_mul(3) > self.max_steps
            {
                break (pixels, completeness);
            }
            // Each piece cut in three: its midpoint stays one, and two new points join it (piece
            // k's two are alphas 2k and 2k + 1).
            let old = steps as f32;
            add(&mut total, 2 * steps, &|i| {
                let k = (i / 2) as f32;
                let third = if i % 2 == 0 { 1.0 / 6.0 } else { 5.0 / 6.0 };
                (k + third) / old
            })?;
            steps *= 3;
        };
        let mut map = x.map("integrated-gradients", values[0], pixels);
        map.completeness = Some(completeness);
        Ok(map)
    }

    fn smoothgrad(&self, model: &Model, image: &DynTensor, target: &Target) -> Result<InputMap> {
        let x = Pixels::of(image)?;
        let (lo, hi) = x
            .data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let range = if hi > lo { hi - lo } else { 1.0 };
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(Error::Message(format!(
                "smoothgrad: noise {}; it is the noise's σ as a fraction of the image's range, a \
                 finite number of at least 0",
                self.noise
            )));
        }
        let samples = self.samples.max(1);
        let n = x.data.len();
        let mut rng = StdRng::seed_from_u64(self.seed);
        // The image itself (for its value), then the noisy copies, `batch` points at a time,
        // each copy's noise drawn as it is made (the same numbers as drawn all at once): only
        // a batch is ever held, whatever `samples` the caller asks for.
        let batch = self.batch_that_fits(model, &x, target)?;
        let count = samples.saturating_add(1);
        let (mut value, mut mean) = (0.0, vec![0.0f32; n]);
        let mut start = 0;
        while start < count {
            let len = batch.min(count - start);
            let mut points = Vec::with_capacity(len * n);
            for i in start..start + len {
                if i == 0 {
                    points.extend_from_slice(&x.data);
                } else {
                    let noise = normal(&mut rng, n, self.noise * range);
                    points.extend(noise.iter().zip(&x.data).map(|(e, v)| v + e));
                }
            }
            let (values, grads) = gradients(model, &points, x.dims, target, len)?;
            if start == 0 {
                value = values[0];
            }
            // The mean of the noisy copies' gradients, added in their order.
            for (i, g) in (start..).zip(grads.chunks(n)) {
                if i > 0 {
                    mean.iter_mut()
                        .zip(g)
                        .for_each(|(m, g)| *m += g / samples as f32);
                }
            }
            start += len;
        }
        Ok(x.map("smoothgrad", value, mean))
    }

    fn grad_cam_map(&self, model: &Model, image: &DynTensor, target: &Target) -> Result<InputMap> {
        let x = Pixels::of(image)?;
        let layer = match &self.layer {
            Some(l) => l.clone(),
            None => previous_spatial_layer(model, target.node())?
                .unwrap_or_else(|| target.node().to_string()),
        };
        let cam = grad_cam(model, image, &layer, target)?;
        let [c, h, w] = x.dims;
        let map = upsample(&cam.map, cam.height, cam.width, h, w);
        Ok(InputMap {
            method: "grad-cam",
            value: cam.value,
            dims: x.dims,
            pixels: map.repeat(c),
            map,
            completeness: None,
            layer: Some(layer),
            detail: None,
        })
    }
}

/// Grad-CAM of `target` at `layer` (a `[1, K, h, w]` activation) on `image`, before upsampling.
pub fn grad_cam(model: &Model, image: &DynTensor, layer: &str, target: &Target) -> Result<GradCam> {
    let g = on_cpu_pool(model.network().device().burn(), || {
        layer_gradient(model, image, layer, target)
    })?;
    let [k, h, w] = g.dims;
    let plane = h * w;
    let weights: Vec<f32> = g
        .gradient
        .chunks(plane)
        .map(|c| c.iter().sum::<f32>() / plane as f32)
        .collect();
    let mut map = vec![0.0; plane];
    for (ch, alpha) in weights.iter().enumerate().take(k) {
        for (m, a) in map
            .iter_mut()
            .zip(&g.activation[ch * plane..(ch + 1) * plane])
        {
            *m += alpha * a;
        }
    }
    map.iter_mut().for_each(|m| *m = m.max(0.0));
    Ok(GradCam {
        layer: layer.to_string(),
        value: g.value,
        weights,
        map,
        height: h,
        width: w,
    })
}

/// Bilinear upsampling of a `[h, w]` map to `[out_h, out_w]`, with pixel centres aligned (as
/// PyTorch's `align_corners=False`; samples past the edge take the edge value).
pub fn upsample(map: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    // Source coordinate of output index i along an axis of n → m: (i + ½)·n/m − ½, clamped.
    let taps = |n: usize, m: usize| -> Vec<(usize, usize, f32)> {
        (0..m)
            .map(|i| {
                let s = ((i as f32 + 0.5) * n as f32 / m as f32 - 0.5).clamp(0.0, (n - 1) as f32);
                let i0 = s.floor() as usize;
                (i0, (i0 + 1).min(n - 1), s - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (taps(h, out_h), taps(w, out_w));
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let at = |y: usize, x: usize| map[y * w + x];
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// One image's pixels on the host.
struct Pixels {
    data: Vec<f32>,
    dims: [usize; 3],
}

impl Pixels {
    fn of(image: &DynTensor) -> Result<Pixels> {
        let d = image.dims();
        let [1, c, h, w] = d[..] else {
            return Err(Error::Message(format!(
                "input attribution takes one image [1, C, H, W], found {d:?}"
            )));
        };
        Ok(Pixels {
            data: image.to_vec(),
            dims: [c, h, w],
        })
    }

    /// The result of `method` with these per-pixel attributions; the display map sums channels.
    fn map(&self, method: &'static str, value: f32, pixels: Vec<f32>) -> InputMap {
        let [_, h, w] = self.dims;
        let mut map = vec![0.0; h * w];
        for channel in pixels.chunks(h * w) {
            map.iter_mut().zip(channel).for_each(|(m, p)| *m += p);
        }
        InputMap {
            method,
            value,
            dims: self.dims,
            pixels,
            map,
            completeness: None,
            layer: None,
            detail: None,
        }
    }
}

/// The target's value on each of the images in `points` (`[C, H, W]` each, concatenated, in
/// [0, 1] pixel space) and its gradient with respect to their pixels, `batch` images per
/// forward and backward pass (the images of a batch do not interact, so the gradient of the
/// batch's sum is each image's own gradient).
///
/// On the CPU on burn-flex under burn's autodiff by name ([`Fast`]), as feature visualization
/// renders, with our convolutions (a depthwise one included), max pooling and ReLU; elsewhere
/// through `Dispatch`. EfficientNet-Lite0's two unit views in tests/imagenet.rs, whose
/// attribution tabs take ~120 gradients each (2 cores): 73 + 56 s through `Dispatch`, 47 + 40 s
/// on [`Fast`].
fn gradients(
    model: &Model,
    points: &[f32],
    dims: [usize; 3],
    target: &Target,
    batch: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let device = model.network().device();
    if !is_cpu(device.burn()) {
        return gradients_on::<Dispatch>(model, points, dims, target, batch, &device.autodiff());
    }
    // On the CPU the points go through the network in lanes side by side, one per thread, each
    // lane on a pool of its own, as a render's images do: on one pool of 2 threads, the passes'
    // elementwise kernels (clips, masks, copies) ran on one thread while the other waited, and
    // a batch of 16 images at 224 px made tensors too large for the allocator to reuse (a
    // quarter of the time in the kernel, mapping fresh pages). EfficientNet-Lite0, SmoothGrad
    // toward blocks.10/add, 48 points on 2 cores: ~11.2 s at a batch of 16 on one pool.
    let per = dims.iter().product::<usize>().max(1);
    let count = points.len() / per;
    let lanes = cpu_threads(device.burn()).min(count).max(1);
    let lane_batch = (batch / lanes).max(1);
    let mut shares: Vec<&[f32]> = points.chunks(count.div_ceil(lanes).max(1) * per).collect();
    let (mut values, mut grads) = (Vec::new(), Vec::with_capacity(points.len()));
    for r in side_by_side(device.burn(), &mut shares, |share| {
        gradients_on::<Fast>(model, share, dims, target, lane_batch, &Default::default())
    }) {
        let (v, g) = r?;
        values.extend(v);
        grads.extend(g);
    }
    Ok((values, grads))
}

/// [`gradients`] on backend `B`, on its device `device`.
fn gradients_on<B: Back + AutodiffBackend>(
    model: &Model,
    points: &[f32],
    [c, h, w]: [usize; 3],
    target: &Target,
    batch: usize,
    device: &B::Device,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let net = model.network();
    let input = net.image_input()?.name.clone();
    let per = c * h * w;
    let (mut values, mut grads) = (Vec::new(), Vec::with_capacity(points.len()));
    for (step, chunk) in points.chunks(batch.max(1) * per).enumerate() {
        if crate::interrupt::requested() {
            return Err(Error::Cancelled {
                what: "input attribution".into(),
                step,
            });
        }
        let n = chunk.len() / per;
        let x = DynTensor::<B>::from_host_on(chunk, &[n, c, h, w], device).require_grad();
        let out = net.forward_any_size(&[(&input, model.normalize(&x)?)], &[target.node()])?;
        let out = super::per_image(&[target.node()], out, n)?.remove(0);
        let v = target_values(&out, target, net.reading(target.node()))?;
        values.extend(DynTensor::new(v.clone()).to_vec());
        let g = x.grad(&DynTensor::new(v).backward()).ok_or_else(|| {
            Error::Message(format!("{} does not depend on the image", target.node()))
        })?;
        grads.extend(g.to_vec());
    }
    Ok((values, grads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_declared_once_with_unique_ids() {
        let mut ids: Vec<&str> = METHODS.iter().map(|m| m.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), METHODS.len());
        let err = MethodSpec::find("occlusion").unwrap_err().to_string();
        assert!(METHODS.iter().all(|m| err.contains(m.id)), "{err}");
    }

    #[test]
    fn upsampling_interpolates_between_pixel_centres() {
        // [1, 2] → 4 wide: edges keep their value, the middle mixes ¾ and ¼.
        let up = upsample(&[1.0, 2.0], 1, 2, 1, 4);
        assert_eq!(up, vec![1.0, 1.25, 1.75, 2.0]);
        // Same size: unchanged.
        let m = [1.0, -2.0, 3.0, 0.5, 4.0, 7.0];
        assert_eq!(upsample(&m, 2, 3, 2, 3), m.to_vec());
    }
}
