//! Objectives (Lucid's `objectives.py`): what feature visualization maximizes.
//!
//! An [`Objective`] is a named function from the activations of some layers to one value per
//! image of the batch. Objectives combine with `+`, `-`, `* f32` and unary `-`.
//!
//! # Shapes
//! Activations `[N, C, H, W]` (rank-2 outputs such as logits are viewed as `[N, C, 1, 1]`, and
//! tokens `[N, T, C]` as `[N, C, T, 1]`: see [`UnitLayout`](crate::network::UnitLayout));
//! objective values `[N]`.

use std::collections::HashMap;
use std::ops::{Add, Mul, Neg, Sub};
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::Dispatch;

use crate::error::{Error, Result};
use crate::network::guard;

/// Activations of the layers an objective reads, by layer name.
pub type Activations<B = Dispatch> = HashMap<String, Tensor<B, 4>>;

/// What an objective computes, as data rather than a closure: one declaration that evaluates
/// on every backend the runtime is instantiated on ([`Term::eval`]).
enum Term {
    Channels {
        layer: String,
        units: Vec<usize>,
    },
    Neurons {
        layer: String,
        units: Vec<usize>,
    },
    NeuronAt {
        layer: String,
        unit: usize,
        y: usize,
        x: usize,
    },
    DeepDream {
        layer: String,
    },
    /// Image `i` of the batch reads `directions[i % len]`.
    Directions {
        layer: String,
        directions: Vec<Vec<f32>>,
    },
    Caricature {
        layer: String,
        pow: f32,
    },
    Diversity {
        layer: String,
    },
    Add(Arc<Term>, Arc<Term>),
    Sub(Arc<Term>, Arc<Term>),
    Scale(Arc<Term>, f32),
    Neg(Arc<Term>),
}

/// A named, composable optimization target.
#[derive(Clone)]
pub struct Objective {
    name: String,
    layers: Vec<String>,
    term: Arc<Term>,
    /// Whether each image's value depends on that image's activations alone (false for
    /// diversity, which compares the images of the batch).
    per_image: bool,
}

impl std::fmt::Debug for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// An objective is recorded (e.g. in a provenance) by its name, which names every parameter.
impl serde::Serialize for Objective {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl Objective {
    fn new(name: String, layers: Vec<String>, term: Term) -> Self {
        Self {
            name,
            layers,
            term: Arc::new(term),
            per_image: true,
        }
    }

    /// Mean activation of channel `unit` of `layer`, for every image.
    pub fn channel(layer: &str, unit: usize) -> Self {
        Self::channels(layer, &[unit]).named(format!("channel({layer}:{unit})"))
    }

    /// Image `i` of the batch maximizes channel `units[i % len]` of `layer`: one unit per image.
    pub fn channels(layer: &str, units: &[usize]) -> Self {
        let (l, units) = (layer.to_string(), units.to_vec());
        let name = format!("channels({layer}:{units:?})");
        Self::new(name, vec![l.clone()], Term::Channels { layer: l, units })
    }

    /// The activation of channel `unit` at the centre position of `layer` (Lucid's
    /// `neuron`): one position's receptive field rather than the whole image.
    pub fn neuron(layer: &str, unit: usize) -> Self {
        Self::neurons(layer, &[unit]).named(format!("neuron({layer}:{unit})"))
    }

    /// Image `i` of the batch maximizes channel `units[i % len]` of `layer` at its centre
    /// position: a neuron per image, as [`Objective::channels`] has a channel per image.
    pub fn neurons(layer: &str, units: &[usize]) -> Self {
        let (l, units) = (layer.to_string(), units.to_vec());
        let name = format!("neurons({layer}:{units:?})");
        Self::new(name, vec![l.clone()], Term::Neurons { layer: l, units })
    }

    /// The activation of channel `unit` of `layer` at row `y`, column `x` of its activation map
    /// (token `y` of a token layer, whose map is one column wide).
    pub fn neuron_at(layer: &str, unit: usize, y: usize, x: usize) -> Self {
        let l = layer.to_string();
        Self::new(
            format!("neuron({layer}:{unit} at {y},{x})"),
            vec![l.clone()],
            Term::NeuronAt {
                layer: l,
                unit,
                y,
                x,
            },
        )
    }

    /// Output `index` of `node` (a class logit, when `node` is the logits): what the network
    /// would draw for that class.
    pub fn class(node: &str, index: usize) -> Self {
        Self::channel(node, index).named(format!("class({node}:{index})"))
    }

    /// DeepDream: the mean of the squared activations of `layer`.
    pub fn deepdream(layer: &str) -> Self {
        let l = layer.to_string();
        Self::new(
            format!("deepdream({layer})"),
            vec![l.clone()],
            Term::DeepDream { layer: l },
        )
    }

    /// The mean of `layer`'s activations projected on `direction` (one weight per channel).
    pub fn direction(layer: &str, direction: &[f32]) -> Self {
        let directions = [direction.to_vec()];
        let name = format!("direction({layer}, {})", digest_of(&directions));
        Self::directions(layer, &directions).named(name)
    }

    /// Image `i` of the batch maximizes [`Objective::direction`] `directions[i % len]` of
    /// `layer`: a direction per image, as [`Objective::channels`] has a channel per image.
    pub fn directions(layer: &str, directions: &[Vec<f32>]) -> Self {
        let l = layer.to_string();
        Self::new(
            format!("directions({layer}, {})", digest_of(directions)),
            vec![l.clone()],
            Term::Directions {
                layer: l,
                directions: directions.to_vec(),
            },
        )
    }

    /// Caricature (Lucid's `dot_compare`): the first image of the batch is the reference (a
    /// fixed image that goes through the same transforms), and every other image should give
    /// `layer` activations that point the way the reference's do. An image's value is its
    /// projection on the reference's activation, `a·r / |r|`, weighted by `max(0.1, cos)^pow`
    /// (cos: the cosine of `a` and `r`), so a larger `pow` favours the direction over the
    /// length. The reference's own value is 0.
    pub fn caricature(layer: &str, pow: f32) -> Self {
        let l = layer.to_string();
        Self::new(
            format!("caricature({layer}, pow {pow})"),
            vec![l.clone()],
            Term::Caricature { layer: l, pow },
        )
        .per_image_if(false)
    }

    /// Lucid's diversity term: minus the mean cosine similarity between an image's Gram matrix
    /// of `layer` and every other image's, so images of a batch look different.
    pub fn diversity(layer: &str) -> Self {
        let l = layer.to_string();
        Self::new(
            format!("diversity({layer})"),
            vec![l.clone()],
            Term::Diversity { layer: l },
        )
        .per_image_if(false)
    }

    fn per_image_if(mut self, per_image: bool) -> Self {
        self.per_image = per_image;
        self
    }

    /// Whether each image's value depends on that image's activations alone: then parts of a
    /// batch can be optimized apart ([`Objective::eval_part`]).
    pub fn per_image(&self) -> bool {
        self.per_image
    }

    /// The same objective under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layers whose activations this objective reads.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// One value per image of the batch. A unit, layer or direction that does not fit the
    /// activations is an error naming this objective.
    pub fn eval<B: Backend>(&self, acts: &Activations<B>) -> Result<Tensor<B, 1>> {
        self.eval_part(acts, 0)
    }

    /// The values of images `start..start + n` of a batch, from those images' activations alone
    /// (`n` rows each): an objective that depends on an image's position in the batch (one unit
    /// per image) picks the units of those positions. A part smaller than the batch is only for
    /// [`Objective::per_image`] objectives; `start` 0 with the whole batch is [`Objective::eval`].
    /// (It once placed the rows in a zero-filled batch and evaluated that: for a
    /// 512-unit layer at 64 px in parts of a 128-image batch, every part wrote, summed and
    /// differentiated a 1 GB tensor per step, 99 % of it zeros.)
    pub fn eval_part<B: Backend>(
        &self,
        acts: &Activations<B>,
        start: usize,
    ) -> Result<Tensor<B, 1>> {
        for layer in &self.layers {
            if !acts.contains_key(layer) {
                return Err(Error::Message(format!(
                    "objective {}: no activation of {layer}",
                    self.name
                )));
            }
        }
        guard(
            || Ok(self.term.eval(acts, start)),
            |reason| Error::Message(format!("objective {}: {reason}", self.name)),
        )
    }

    fn combine(
        self,
        other: Objective,
        name: String,
        f: fn(Arc<Term>, Arc<Term>) -> Term,
    ) -> Objective {
        let mut layers = self.layers.clone();
        layers.extend(
            other
                .layers
                .iter()
                .filter(|l| !self.layers.contains(l))
                .cloned(),
        );
        let per_image = self.per_image && other.per_image;
        Objective::new(name, layers, f(self.term, other.term)).per_image_if(per_image)
    }
}

impl Term {
    /// The term's values for the rows of `acts`, which are the batch's rows `first..`.
    fn eval<B: Backend>(&self, acts: &Activations<B>, first: usize) -> Tensor<B, 1> {
        match self {
            Term::Channels { layer, units } => {
                let a = &acts[layer];
                let [n, c, h, w] = a.dims();
                let means = a.clone().reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
                pick(means, units, first)
            }
            Term::Neurons { layer, units } => {
                let a = &acts[layer];
                let [n, c, h, w] = a.dims();
                let centre = a
                    .clone()
                    .narrow(2, h / 2, 1)
                    .narrow(3, w / 2, 1)
                    .reshape([n, c]);
                pick(centre, units, first)
            }
            Term::NeuronAt { layer, unit, y, x } => {
                let a = &acts[layer];
                let n = a.dims()[0];
                a.clone()
                    .narrow(1, *unit, 1)
                    .narrow(2, *y, 1)
                    .narrow(3, *x, 1)
                    .reshape([n])
            }
            Term::DeepDream { layer } => {
                let a = &acts[layer];
                let n = a.dims()[0];
                a.clone()
                    .powi_scalar(2)
                    .reshape([n as i32, -1])
                    .mean_dim(1)
                    .reshape([n])
            }
            Term::Directions { layer, directions } => {
                let a = &acts[layer];
                let [n, c, h, w] = a.dims();
                let v = match directions.as_slice() {
                    [one] => TensorData::new(one.clone(), [1, c, 1, 1]),
                    _ => {
                        let rows: Vec<f32> = (first..first + n)
                            .flat_map(|i| directions[i % directions.len()].iter().copied())
                            .collect();
                        TensorData::new(rows, [n, c, 1, 1])
                    }
                };
                (a.clone() * Tensor::<B, 4>::from_data(v, &a.device()))
                    .reshape([n, c * h * w])
                    .mean_dim(1)
                    .reshape([n])
            }
            Term::Caricature { layer, pow } => {
                let pow = *pow;
                let a = &acts[layer];
                let [n, c, h, w] = a.dims();
                let flat = a.clone().reshape([n, c * h * w]);
                let reference = flat.clone().narrow(0, 0, 1).detach();
                let r_norm = reference
                    .clone()
                    .powi_scalar(2)
                    .sum()
                    .sqrt()
                    .add_scalar(1e-6);
                let a_norm = flat
                    .clone()
                    .powi_scalar(2)
                    .sum_dim(1)
                    .sqrt()
                    .add_scalar(1e-6);
                let dot = (flat * reference).sum_dim(1); // [n, 1]
                let projection = dot.clone() / r_norm.clone().unsqueeze::<2>();
                let cos = dot / (a_norm * r_norm.unsqueeze::<2>());
                let weight = cos.clamp_min(0.1).powf_scalar(pow);
                let values = (projection * weight).reshape([n]);
                // The reference is fixed: its row counts nothing.
                let mask: Vec<f32> = (0..n).map(|i| if i == 0 { 0.0 } else { 1.0 }).collect();
                values * Tensor::<B, 1>::from_data(TensorData::new(mask, [n]), &a.device())
            }
            Term::Diversity { layer } => {
                let a = &acts[layer];
                let [n, c, h, w] = a.dims();
                let flat = a.clone().reshape([n, c, h * w]);
                let gram = flat
                    .clone()
                    .matmul(flat.swap_dims(1, 2))
                    .reshape([n, c * c]);
                let norm = gram
                    .clone()
                    .powi_scalar(2)
                    .sum_dim(1)
                    .sqrt()
                    .add_scalar(1e-8);
                let unit = gram / norm;
                let sim = unit.clone().matmul(unit.transpose()); // [n, n], diagonal = 1
                let others = sim.sum_dim(1).reshape([n]).sub_scalar(1.0);
                others.neg().div_scalar(n.max(2) as f32 - 1.0)
            }
            Term::Add(a, b) => a.eval(acts, first) + b.eval(acts, first),
            Term::Sub(a, b) => a.eval(acts, first) - b.eval(acts, first),
            Term::Scale(a, k) => a.eval(acts, first).mul_scalar(*k),
            Term::Neg(a) => a.eval(acts, first).neg(),
        }
    }
}

/// What names a list of directions (caches key on objective names): the first 12 hex digits of
/// the SHA-256 of their values, little-endian, end to end.
fn digest_of(directions: &[Vec<f32>]) -> String {
    let bytes: Vec<u8> = directions
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    crate::digest::sha256_hex(&bytes)[..12].to_string()
}

/// Column `units[(first + i) % len]` of row `i` of `[N, C]`, whose rows are the batch's rows
/// `first..`.
fn pick<B: Backend>(values: Tensor<B, 2>, units: &[usize], first: usize) -> Tensor<B, 1> {
    let [n, _] = values.dims();
    let idx: Vec<i32> = (first..first + n)
        .map(|i| units[i % units.len()] as i32)
        .collect();
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [n, 1]), &values.device());
    values.gather(1, idx).reshape([n])
}

impl Add for Objective {
    type Output = Objective;
    fn add(self, rhs: Objective) -> Objective {
        let name = format!("{} + {}", self.name, rhs.name);
        self.combine(rhs, name, Term::Add)
    }
}

impl Sub for Objective {
    type Output = Objective;
    fn sub(self, rhs: Objective) -> Objective {
        let name = format!("{} - {}", self.name, rhs.name);
        self.combine(rhs, name, Term::Sub)
    }
}

impl Mul<f32> for Objective {
    type Output = Objective;
    fn mul(self, k: f32) -> Objective {
        let name = format!("{k} * {}", self.name);
        let per_image = self.per_image;
        Objective::new(name, self.layers, Term::Scale(self.term, k)).per_image_if(per_image)
    }
}

impl Neg for Objective {
    type Output = Objective;
    fn neg(self) -> Objective {
        let name = format!("-{}", self.name);
        let per_image = self.per_image;
        Objective::new(name, self.layers, Term::Neg(self.term)).per_image_if(per_image)
    }
}

/// The mean activation of `units[i]` of `layer` on image `i` of `images` (`[N, C, H, W]` in
/// [0, 1], any size), on the plain device: how strongly each image drives its unit.
pub fn unit_activations(
    model: &crate::model::Model,
    layer: &str,
    units: &[usize],
    images: &crate::network::DynTensor,
) -> Result<Vec<f32>> {
    objective_values(model, &Objective::channels(layer, units), images)
}

/// `objective`'s value on each image of `images` (`[N, C, H, W]` in [0, 1], any size), without
/// transforms, on the plain device.
pub fn objective_values(
    model: &crate::model::Model,
    objective: &Objective,
    images: &crate::network::DynTensor,
) -> Result<Vec<f32>> {
    let net = model.network();
    let x = model.normalize(images)?;
    let input = net.image_input()?.name.clone();
    let layers: Vec<&str> = objective.layers().iter().map(String::as_str).collect();
    let outs = net.forward_any_size(&[(&input, x)], &layers)?;
    let outs = super::per_image(&layers, outs, images.dims()[0])?;
    let acts: Activations = layers
        .iter()
        .zip(outs)
        .map(|(l, a)| Ok((l.to_string(), a.to_unit_maps(net.reading(l))?)))
        .collect::<Result<_>>()?;
    Ok(crate::network::DynTensor::new(objective.eval(&acts)?).to_vec())
}

/// Whether `layer` can be computed from an image of another size than `size` (the network is
/// fully convolutional up to it), as one image: one forward pass of a grey image of twice that
/// size and 16 px more (a size near `size` can still give a Flatten the same length, as pooling
/// rounds down).
/// Above 256 px the other size is 136 px (up to 600) or 528 px: far enough from `size` for
/// that, and bounded, so that the pass takes little memory whatever size is asked for (the
/// render then says whether that size fits, `render::step_bytes`).
pub(crate) fn reachable_at_any_size(
    model: &crate::model::Model,
    layer: &str,
    size: usize,
) -> Result<bool> {
    let net = model.network();
    let spec = model.input_spec()?;
    let other = match size {
        0..=256 => 2 * size + 16,
        257..600 => 136,
        _ => 528,
    };
    let grey = crate::network::DynTensor::from_host(
        &vec![0.5; spec.channels * other * other],
        &[1, spec.channels, other, other],
        net.device().burn(),
    );
    let input = net.image_input()?.name.clone();
    // The pass must also keep its one image: a Reshape to `[-1, C, T]` (a text recognizer's
    // columns read as a sequence) takes a larger image as more images, without an error.
    Ok(net
        .forward_any_size(&[(&input, model.normalize(&grey)?)], &[layer])
        .is_ok_and(|outs| outs.first().is_some_and(|o| o.dims().first() == Some(&1))))
}

#[cfg(test)]
mod tests {
    use burn_flex::{Flex, FlexDevice};

    use super::*;
    use crate::network::ops::Fast;

    /// A part of a batch gets, from its own rows, exactly the values and activation gradients
    /// that the whole batch gives those rows, for per-image objectives whose units depend on
    /// the row (a unit per image, fewer units than images, and their sums and scales).
    #[test]
    fn a_part_gets_the_batchs_values_and_gradients() {
        let (total, c, h, w) = (7, 5, 3, 4);
        let x: Vec<f32> = (0..total * c * h * w)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let objectives = [
            Objective::channels("l", &[4, 0, 3, 1, 2, 2, 0]),
            Objective::neurons("l", &[1, 3]),
            Objective::channels("l", &[2, 4, 1]) * 0.5 - Objective::neurons("l", &[0, 1, 2, 3]),
        ];
        fn bits<const D: usize>(t: Tensor<Flex, D>) -> Vec<u32> {
            let v: Vec<f32> = t.into_data().to_vec().unwrap();
            v.iter().map(|v| v.to_bits()).collect()
        }
        for objective in &objectives {
            assert!(objective.per_image(), "{}", objective.name());
            let a = Tensor::<Fast, 4>::from_data(
                TensorData::new(x.clone(), [total, c, h, w]),
                &FlexDevice,
            )
            .require_grad();
            let whole = objective
                .eval(&HashMap::from([("l".to_string(), a.clone())]))
                .unwrap();
            let grads = whole.clone().sum().backward();
            let whole_grad = a.grad(&grads).unwrap();
            for (start, n) in [(0, 3), (3, 2), (5, 2)] {
                let part = Tensor::<Fast, 4>::from_inner(a.clone().inner().narrow(0, start, n))
                    .require_grad();
                let values = objective
                    .eval_part(&HashMap::from([("l".to_string(), part.clone())]), start)
                    .unwrap();
                let grads = values.clone().sum().backward();
                assert_eq!(
                    bits(values.inner()),
                    bits(whole.clone().inner().narrow(0, start, n)),
                    "{}: values of rows {start}..{}",
                    objective.name(),
                    start + n
                );
                assert_eq!(
                    bits(part.grad(&grads).unwrap()),
                    bits(whole_grad.clone().narrow(0, start, n)),
                    "{}: gradients of rows {start}..{}",
                    objective.name(),
                    start + n
                );
            }
        }
    }
}
