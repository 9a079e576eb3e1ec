//! `NeuronGroups` (the neuron groups of Olah et al., "The Building Blocks of Interpretability",
//! 2018): a layer's activations on one image, factorized into a few groups of units that fire
//! together, each with where it fires on the image and what it responds to.
//!
//! The layer's activation vectors at its positions (a map's `H·W` positions, or a vision
//! transformer's patch tokens) form a non-negative matrix `A [P, C]`, factorized by
//! non-negative matrix factorization into `maps [P, k] × directions [k, C]`, as Lucid's
//! `ChannelReducer` does with scikit-learn's NMF. A group's map says where on the image it
//! fires; its direction, a non-negative mix of the layer's units, is what it responds to, drawn
//! by feature visualization ([`Objective::directions`]: one image per group, in one batch).
//! [`NeuronGroupsResult::attribution`] says how much each group supports a class or a unit, and
//! [`NeuronGroupsResult::group_support`] each group of a later layer (Building Blocks' group
//! attribution), by integrated gradients at the groups' layer.
//!
//! # Shapes
//! image `[1, C, H, W]` in [0, 1] · maps `k × P` (rows × cols of the layer's grid) ·
//! directions `k × C` (unit length) · visualizations `[k, C, S, S]`.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::Dispatch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::attribution::{activation_gradient_of, Scalar, Target, TargetValue};
use super::feature_vis::{FeatureVis, Visualization};
use super::objective::Objective;
use crate::device::on_cpu_pool;
use crate::error::{Error, Result};
use crate::model::{Layer, Model};
use crate::network::{DynTensor, TokenGrid, UnitLayout};
use crate::provenance::Provenance;

/// Settings of a neuron-group factorization (builder style). They serialize as a provenance
/// records them (the feature visualization's are a record of their own).
#[derive(Clone, Debug, serde::Serialize)]
pub struct NeuronGroups {
    /// How many groups (Building Blocks shows 6).
    pub groups: usize,
    /// Multiplicative-update iterations of the factorization.
    pub iterations: usize,
    /// How the groups' directions are drawn (its objective is replaced by theirs).
    #[serde(skip)]
    pub vis: FeatureVis,
}

impl Default for NeuronGroups {
    fn default() -> Self {
        Self {
            groups: 6,
            // On zoo:efficientnet-lite0's sample photos the explained share stops moving
            // (< 0.001 per 100 iterations) by 300 at blocks.10 to blocks.15.
            iterations: 400,
            vis: FeatureVis::default(),
        }
    }
}

/// A layer's neuron groups on one image, largest first.
#[derive(Clone, Debug)]
pub struct NeuronGroupsResult {
    pub layer: String,
    /// The image, `[1, C, H, W]` in [0, 1].
    pub image: DynTensor,
    /// The layer's grid of positions over the image: `rows × cols`.
    pub rows: usize,
    pub cols: usize,
    /// Group `g`'s strength at each position, row by row (`rows · cols` values, ≥ 0), in units
    /// of activation along its direction.
    pub maps: Vec<Vec<f32>>,
    /// Group `g`'s mix of the layer's units: one weight ≥ 0 per unit, unit length.
    pub directions: Vec<Vec<f32>>,
    /// Group `g`'s share of the factorization's total activation (they sum to 1).
    pub shares: Vec<f32>,
    /// How much of the positive activations the groups reproduce: `1 − |A − WH|² / |A|²`.
    pub explained: f32,
    /// The share of the layer's squared activation that is negative, which the factorization
    /// (non-negative) leaves out: 0 after a ReLU.
    pub negative: f32,
    /// Each group's direction, feature-visualized (group `g` is image `g`); its activations are
    /// each image's mean projection on its group's direction.
    pub visualization: Visualization,
    pub provenance: Provenance,
}

impl NeuronGroupsResult {
    /// The `n` units that weigh most in group `g`, heaviest first.
    pub fn top_units(&self, g: usize, n: usize) -> Vec<usize> {
        let Some(d) = self.directions.get(g) else {
            return Vec::new();
        };
        let mut units: Vec<usize> = (0..d.len()).collect();
        units.sort_by(|&a, &b| d[b].total_cmp(&d[a]).then(a.cmp(&b)));
        units.truncate(n);
        units
    }
}

/// How much each neuron group contributes to a target (a class logit, a unit, or a group of a
/// later layer), by integrated gradients at the groups' layer (Building Blocks' group
/// attribution, with the gradient integrated as Sundararajan et al. do): the part of the
/// activation a group reproduces, its map times its direction, times the target's gradient
/// averaged along the straight path from a zero activation at the layer to the activation
/// ([`PATH_STEPS`] midpoints). Where the path to the target is linear (the last convolution to
/// a classifier's logits) that is activation × gradient. The groups' contributions and what
/// the factorization leaves out sum to the layer's whole attribution, `total`, which is close to
/// `value − start`: how much the layer's activation on the image moves the target from where a
/// zero activation leaves it. (Plain activation × gradient, the gradient at the activation
/// alone, reads little more than where ReLU6 is flat: on the cat|espresso collage it gave all
/// of blocks.14's groups negative support for head's, and head's espresso group more from the
/// cat's group than from the espresso's.)
#[derive(Clone, Debug)]
pub struct GroupAttribution {
    pub toward: Toward,
    /// The target's value on the image.
    pub value: f32,
    /// The target's value with the groups' layer's activation at zero (the path's start).
    pub start: f32,
    /// Group `g`'s contribution: the sum of its map.
    pub groups: Vec<f32>,
    /// Where group `g` contributes: at position `p`, `maps[g][p] · (directions[g] · ḡ_p)`, with
    /// `ḡ_p` the target's gradient there averaged along the path (`rows · cols` values, row by
    /// row; < 0 where it works against the target).
    pub maps: Vec<Vec<f32>>,
    /// The layer's whole attribution, over every position (and any leading token): activation
    /// times averaged gradient, summed.
    pub total: f32,
}

/// What a [`GroupAttribution`] explains.
#[derive(Clone, Debug, PartialEq)]
pub enum Toward {
    /// A class logit or a unit.
    Target(Target),
    /// Group `group` (from 0) of the neuron groups of a later `layer` on the same image: the
    /// layer's activation along its direction, summed over its positions.
    Group { layer: String, group: usize },
}

impl std::fmt::Display for Toward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Toward::Target(t) => write!(f, "{}:{}", t.node(), t.index()),
            Toward::Group { layer, group } => write!(f, "{layer} group {}", group + 1),
        }
    }
}

impl GroupAttribution {
    /// What the groups leave out: `total` less their sum (the factorization's error, the
    /// negative activations it ignores, and any leading tokens).
    pub fn rest(&self) -> f32 {
        self.total - self.groups.iter().sum::<f32>()
    }

    /// The group that supports the target most (the largest contribution).
    pub fn strongest(&self) -> Option<usize> {
        (0..self.groups.len()).max_by(|&a, &b| self.groups[a].total_cmp(&self.groups[b]))
    }
}

impl NeuronGroupsResult {
    /// Each group's contribution to `target` on the groups' image, by integrated gradients at
    /// their layer in `model` (the model they were found in).
    pub fn attribution(&self, model: &Model, target: &Target) -> Result<GroupAttribution> {
        let reading = model.network().reading(target.node());
        let value = TargetValue { target, reading };
        self.support(model, target.node(), &value, Toward::Target(target.clone()))
    }

    /// How much each of these groups supports each of `later`'s, the groups of a later layer
    /// on the same image (Building Blocks' attribution between groups): for later group `b`,
    /// the support for its activation, the later layer's activation along its direction summed
    /// over its positions. One [`GroupAttribution`] per later group.
    pub fn group_support(
        &self,
        model: &Model,
        later: &NeuronGroupsResult,
    ) -> Result<Vec<GroupAttribution>> {
        if later.image.dims() != self.image.dims() || later.image.to_vec() != self.image.to_vec() {
            return Err(Error::Message(format!(
                "attribution of the neuron groups of {} to those of {}: they were found on \
                 different images; take the groups of both layers on one image",
                self.layer, later.layer
            )));
        }
        let node = later.layer.as_str();
        (0..later.directions.len())
            .map(|group| {
                let value = AlongGroup { later, group };
                let toward = Toward::Group {
                    layer: node.to_string(),
                    group,
                };
                self.support(model, node, &value, toward)
            })
            .collect()
    }

    /// Each group's support for the scalar `value` computes from `node`'s output.
    fn support(
        &self,
        model: &Model,
        node: &str,
        value: &(impl Scalar + Sync),
        toward: Toward,
    ) -> Result<GroupAttribution> {
        let layer = self.layer.as_str();
        let dims = self.image.dims();
        let [1, _, height, width] = dims[..] else {
            return Err(Error::Message(format!(
                "attribution of the neuron groups of {layer}: their image is {dims:?}, not one \
                 image [1, C, H, W]"
            )));
        };
        let any = on_cpu_pool(model.network().device().burn(), || {
            activation_gradient_of(
                model,
                &self.image,
                layer,
                node,
                value,
                |_| Ok(()),
                PATH_STEPS,
            )
        })?;
        let total = any
            .activation
            .iter()
            .zip(&any.gradient)
            .map(|(a, g)| a * g)
            .sum();
        let (gradient, rows, cols, units) = on_grid(layer, &any.dims, any.gradient, height, width)?;
        let fits = self.directions.first().map(Vec::len) == Some(units);
        if (rows, cols) != (self.rows, self.cols) || !fits {
            return Err(Error::Message(format!(
                "attribution of the neuron groups of {layer}: in this model, {layer} is \
                 {rows}×{cols} positions of {units} units on their image, not the groups' \
                 {}×{} of {}; take the model they were found in",
                self.rows,
                self.cols,
                self.directions.first().map_or(0, Vec::len)
            )));
        }
        let maps: Vec<Vec<f32>> = self
            .maps
            .iter()
            .zip(&self.directions)
            .map(|(map, direction)| {
                (0..rows * cols)
                    .map(|p| {
                        let along: f32 = direction
                            .iter()
                            .zip(&gradient[p * units..(p + 1) * units])
                            .map(|(d, g)| d * g)
                            .sum();
                        map[p] * along
                    })
                    .collect()
            })
            .collect();
        Ok(GroupAttribution {
            toward,
            value: any.value,
            start: any.start.unwrap_or(any.value),
            groups: maps.iter().map(|m| m.iter().sum()).collect(),
            maps,
            total,
        })
    }

    /// The groups' support for the `k` top outputs of `node` (a classifier's logits, `[1, N]`)
    /// on their image, strongest first: [`NeuronGroupsResult::attribution`] toward each.
    pub fn top_classes(
        &self,
        model: &Model,
        node: &str,
        k: usize,
    ) -> Result<Vec<GroupAttribution>> {
        let net = model.network();
        let input = net.image_input()?.name.clone();
        let x = model.normalize(&self.image)?;
        let out = net.forward_any_size(&[(&input, x)], &[node])?.remove(0);
        let dims = out.dims();
        let [1, n] = dims[..] else {
            return Err(Error::Message(format!(
                "top classes of the neuron groups of {}: {node}'s output on their image is \
                 {dims:?}, not one row of class scores [1, N]; take a classifier's logits",
                self.layer
            )));
        };
        let scores = out.to_vec();
        let mut classes: Vec<usize> = (0..n).collect();
        classes.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        classes
            .into_iter()
            .take(k)
            .map(|index| {
                let node = node.to_string();
                self.attribution(model, &Target::Logit { node, index })
            })
            .collect()
    }
}

/// A later layer's activation along one of its groups' directions, summed over its positions
/// (what [`NeuronGroupsResult::group_support`] attributes).
struct AlongGroup<'a> {
    later: &'a NeuronGroupsResult,
    group: usize,
}

impl Scalar for AlongGroup<'_> {
    fn of<B: Backend>(&self, out: &DynTensor<B>) -> Result<Tensor<B, 1>> {
        let later = self.later;
        let (node, positions) = (later.layer.as_str(), later.rows * later.cols);
        let direction = &later.directions[self.group];
        let dims = out.dims();
        let units = direction.len();
        let data = TensorData::new(direction.clone(), [units]);
        let d = Tensor::<B, 1>::from_data(data, &out.device());
        Ok(match dims[..] {
            [_, c, h, w] if c == units && h * w == positions => {
                (out.to_rank::<4>()? * d.reshape([1, units, 1, 1])).sum()
            }
            // The patch tokens, after any leading ones.
            [_, t, c] if c == units && t >= positions => {
                let a = out.to_rank::<3>()?.narrow(1, t - positions, positions);
                (a * d.reshape([1, 1, units])).sum()
            }
            _ => {
                return Err(Error::Message(format!(
                    "attribution to the neuron groups of {node}: in this model, {node}'s output \
                     is {dims:?}, not the groups' {}×{} positions of {units} units; take the \
                     model they were found in",
                    later.rows, later.cols
                )))
            }
        })
    }
}

/// The points along the path of [`GroupAttribution`]'s integrated gradients. From
/// zoo:efficientnet-lite0's blocks.14 to head, 16 put `total` within 1.5 % to 2.7 % of
/// `value − start` (the cat|espresso collage, the rocket).
pub const PATH_STEPS: usize = 16;

impl NeuronGroups {
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    pub fn iterations(mut self, iterations: usize) -> Self {
        self.iterations = iterations;
        self
    }

    /// The feature visualization's seed (the factorization draws nothing).
    pub fn seed(mut self, seed: u64) -> Self {
        self.vis = self.vis.seed(seed);
        self
    }

    /// The feature visualization's steps.
    pub fn steps(mut self, steps: usize) -> Self {
        self.vis = self.vis.steps(steps);
        self
    }

    /// Caches the groups' feature visualizations in `cache` (`None`: always compute).
    pub fn cache(mut self, cache: Option<super::cache::Cache>) -> Self {
        self.vis = self.vis.cache(cache);
        self
    }

    /// Draws the groups with `vis`'s settings.
    pub fn vis(mut self, vis: FeatureVis) -> Self {
        self.vis = vis;
        self
    }

    /// The neuron groups of `layer` on `image` (`[1, C, H, W]` in [0, 1]).
    pub fn run(&self, layer: &Layer, image: &DynTensor) -> Result<NeuronGroupsResult> {
        let model = layer.model();
        let name = layer.name.as_str();
        let fail = |what: String| Error::Message(format!("neuron groups of {name}: {what}"));
        let spec = model.input_spec()?;
        let dims = image.dims();
        if dims.len() != 4 || dims[0] != 1 || dims[1] != spec.channels {
            return Err(fail(format!(
                "the image is {dims:?}; it takes one image of {} channels, [1, {}, H, W]",
                spec.channels, spec.channels
            )));
        }
        let (matrix, rows, cols, units) = positions(model, name, image)?;
        let positions = rows * cols;
        if self.groups == 0 || self.groups > positions.min(units) {
            return Err(fail(format!(
                "{} groups; it takes 1 to {} (the fewer of its {positions} positions and {units} \
                 units)",
                self.groups,
                positions.min(units)
            )));
        }
        let total: f64 = matrix.iter().map(|&v| (v as f64).powi(2)).sum();
        let negative: f64 = matrix.iter().map(|&v| (v.min(0.0) as f64).powi(2)).sum();
        let positive: Vec<f32> = matrix.iter().map(|&v| v.max(0.0)).collect();
        if !total.is_finite() {
            return Err(fail("its activations on this image are not finite".into()));
        }
        if positive.iter().all(|&v| v == 0.0) {
            return Err(fail(
                "nothing to group: none of its activations on this image is above 0".into(),
            ));
        }
        let (w, h) = factorize(
            &positive,
            positions,
            units,
            self.groups,
            self.iterations,
            model.network().device().burn(),
        );
        let groups = groups_of(&w, &h, positions, units, self.groups);
        let directions: Vec<Vec<f32>> = groups.iter().map(|g| g.direction.clone()).collect();
        let visualization = self
            .vis
            .clone()
            .objective(Objective::directions(name, &directions))
            .render(model, self.groups)?;
        let params = serde_json::json!({
            "groups": self.groups,
            "iterations": self.iterations,
            "image": crate::digest::sha256_hex(
                &image.to_vec().iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
            ),
        });
        let provenance = visualization
            .provenance
            .clone()
            .technique("neuron-groups", name, &params);
        Ok(NeuronGroupsResult {
            layer: name.to_string(),
            image: image.clone(),
            rows,
            cols,
            explained: explained(&positive, &w, &h, positions, units, self.groups),
            maps: groups.iter().map(|g| g.map.clone()).collect(),
            shares: groups.iter().map(|g| g.share).collect(),
            directions,
            negative: if total > 0.0 {
                (negative / total) as f32
            } else {
                0.0
            },
            visualization,
            provenance,
        })
    }
}

/// `layer`'s activation vectors on `image`, one row per position (`rows × cols` of them, row
/// by row), `units` values each.
fn positions(
    model: &Model,
    layer: &str,
    image: &DynTensor,
) -> Result<(Vec<f32>, usize, usize, usize)> {
    let fail = |what: String| Error::Message(format!("neuron groups of {layer}: {what}"));
    let net = model.network();
    let input = net.image_input()?.name.clone();
    let x = model.normalize(image)?;
    let out = net.forward_any_size(&[(&input, x)], &[layer])?.remove(0);
    let dims = out.dims();
    if let Some(span) = net.reading(layer).span(&dims) {
        return Err(fail(format!(
            "its output {dims:?} holds softmax distributions of {span} values (attention \
             weights), not activations at positions on the image; take the token layer they \
             weigh, or the one after"
        )));
    }
    let [_, _, height, width] = image.dims()[..] else {
        unreachable!("checked to be [1, C, H, W]")
    };
    on_grid(layer, &dims, out.to_vec(), height, width)
}

/// `values`, a layer's output of shape `dims` on one `height × width` image, as one row per
/// position of the layer's grid over the image (`rows × cols` of them, row by row), `units`
/// values each: `(rows of values, rows, cols, units)`.
fn on_grid(
    layer: &str,
    dims: &[usize],
    values: Vec<f32>,
    height: usize,
    width: usize,
) -> Result<(Vec<f32>, usize, usize, usize)> {
    let fail = |what: String| Error::Message(format!("neuron groups of {layer}: {what}"));
    match UnitLayout::of(dims) {
        Some(UnitLayout::Maps) => {
            let [_, c, h, w] = [dims[0], dims[1], dims[2], dims[3]];
            let p = h * w;
            // [C, P] to [P, C].
            let matrix = (0..p)
                .flat_map(|i| (0..c).map(move |u| (i, u)))
                .map(|(i, u)| values[u * p + i])
                .collect();
            Ok((matrix, h, w, c))
        }
        Some(UnitLayout::Tokens) => {
            let [_, t, c] = [dims[0], dims[1], dims[2]];
            let grid = TokenGrid::of(t, height, width).ok_or_else(|| {
                fail(format!(
                    "its {t} tokens are no grid of square patches over the {height}×{width} \
                     image (after 0, 1, 2, 5, 9 or 17 leading tokens), so they have no \
                     positions on it"
                ))
            })?;
            let start = grid.skip * c;
            let matrix = values[start..start + grid.rows * grid.cols * c].to_vec();
            Ok((matrix, grid.rows, grid.cols, c))
        }
        _ => Err(fail(format!(
            "its output is {dims:?}, with no positions on the image: neuron groups split a \
             layer's activations over the image, so they take a layer of maps [N, C, H, W] or \
             patch tokens [N, T, C]"
        ))),
    }
}

/// Non-negative matrix factorization `A ≈ W·H` of `a` (`p × c`, row-major, ≥ 0) with `k`
/// components, on `device`: started from NNDSVDa (Boutsidis and Gallopoulos 2008, scikit-learn's
/// default start), then Lee and Seung's multiplicative updates for the squared error. Returns
/// `W` (`p × k`) and `H` (`k × c`), row-major. The same input gives the same result (the
/// eigenvector search starts from a fixed draw).
///
/// Written here rather than taken from a crate: the Rust NMF crates bring LAPACK bindings or an
/// unmaintained linear-algebra crate, and the updates are four matrix products each, which burn
/// already runs on the model's device. (From a random start, parts that fire in different places
/// were often merged: 2 of 5 seeds on this module's test matrix.)
fn factorize(
    a: &[f32],
    p: usize,
    c: usize,
    k: usize,
    iterations: usize,
    device: &burn::DispatchDevice,
) -> (Vec<f32>, Vec<f32>) {
    let tensor = |data: Vec<f32>, shape: [usize; 2]| {
        Tensor::<Dispatch, 2>::from_data(TensorData::new(data, shape), device)
    };
    let host = |t: Tensor<Dispatch, 2>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let m = tensor(a.to_vec(), [p, c]);
    let (w0, h0) = nndsvda(a, p, c, k, |gram_of_rows| match gram_of_rows {
        true => host(m.clone().matmul(m.clone().transpose())),
        false => host(m.clone().transpose().matmul(m.clone())),
    });
    let mut w = tensor(w0, [p, k]);
    let mut h = tensor(h0, [k, c]);
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
    // Keeps a denominator above 0 where a component has died out.
    let eps = (1e-12 + 1e-9 * mean * mean) as f32;
    for _ in 0..iterations {
        let wt = w.clone().transpose();
        let numerator = wt.clone().matmul(m.clone());
        let denominator = wt.matmul(w.clone()).matmul(h.clone()).add_scalar(eps);
        h = h * numerator / denominator;
        let ht = h.clone().transpose();
        let numerator = m.clone().matmul(ht.clone());
        let denominator = w.clone().matmul(h.clone().matmul(ht)).add_scalar(eps);
        w = w * numerator / denominator;
    }
    (host(w), host(h))
}

/// NNDSVDa's start for [`factorize`]: the `k` leading singular pairs of `a`, each split into its
/// positive and negative parts and the larger kept, zeros then set to `a`'s mean (so that
/// multiplicative updates can move them). The singular pairs come from the leading eigenvectors
/// of the smaller Gram matrix, `A·Aᵀ` (`p ≤ c`) or `Aᵀ·A`, which `gram(p ≤ c)` computes
/// (row-major), found by [`leading_eigen`].
fn nndsvda(
    a: &[f32],
    p: usize,
    c: usize,
    k: usize,
    gram: impl FnOnce(bool) -> Vec<f32>,
) -> (Vec<f32>, Vec<f32>) {
    let rows = p <= c;
    let n = if rows { p } else { c };
    let g: Vec<f64> = gram(rows).into_iter().map(f64::from).collect();
    let (values, vectors) = leading_eigen(&g, n, k);
    let a64 = |i: usize, j: usize| a[i * c + j] as f64;
    let (mut w, mut h) = (vec![0f64; p * k], vec![0f64; k * c]);
    for (g, (&value, found)) in values.iter().zip(&vectors).enumerate() {
        let sigma = value.max(0.0).sqrt();
        if sigma <= 0.0 {
            continue;
        }
        // The unit singular vectors: one is the eigenvector, the other `A·v / σ` or `Aᵀ·u / σ`.
        let other: Vec<f64> = match rows {
            true => (0..c)
                .map(|j| (0..p).map(|i| a64(i, j) * found[i]).sum::<f64>() / sigma)
                .collect(),
            false => (0..p)
                .map(|i| (0..c).map(|j| a64(i, j) * found[j]).sum::<f64>() / sigma)
                .collect(),
        };
        let (u, v) = if rows {
            (found.clone(), other)
        } else {
            (other, found.clone())
        };
        let part = |x: &[f64], sign: f64| -> Vec<f64> {
            x.iter().map(|&t| (sign * t).max(0.0)).collect::<Vec<_>>()
        };
        let norm = |x: &[f64]| x.iter().map(|t| t * t).sum::<f64>().sqrt();
        let (up, un, vp, vn) = (part(&u, 1.0), part(&u, -1.0), part(&v, 1.0), part(&v, -1.0));
        let (pos, neg) = (norm(&up) * norm(&vp), norm(&un) * norm(&vn));
        let (x, y, size) = if pos >= neg {
            (up, vp, pos)
        } else {
            (un, vn, neg)
        };
        let (nx, ny) = (norm(&x), norm(&y));
        if nx == 0.0 || ny == 0.0 {
            continue;
        }
        let scale = (sigma * size).sqrt();
        for i in 0..p {
            w[i * k + g] = scale * x[i] / nx;
        }
        for j in 0..c {
            h[g * c + j] = scale * y[j] / ny;
        }
    }
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
    let fill = |m: Vec<f64>| -> Vec<f32> {
        m.into_iter()
            .map(|v| if v > 0.0 { v as f32 } else { mean as f32 })
            .collect()
    };
    (fill(w), fill(h))
}

/// The `k` largest eigenvalues of the symmetric, positive semi-definite `n × n` matrix `g`
/// (row-major), largest first, with their unit eigenvectors: subspace iteration on `k` + 6
/// vectors from a fixed start, then the eigenvectors of `g` within that subspace ([`jacobi`]).
///
/// Written here rather than taken from a linear-algebra crate: nalgebra did this in one call,
/// but as a dependency of the crate that notebooks compile against it is indexed by the
/// rust-analyzer inside every kernel and spare, and held 0.2 GB more in each (1.77 GB measured,
/// 1.5 GB without). A start for the factorization needs no more precision than this gives.
fn leading_eigen(g: &[f64], n: usize, k: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let m = (k + 6).min(n);
    // A fixed start: the same matrix gives the same result.
    let mut rng = StdRng::seed_from_u64(0x6e6d66);
    let mut q: Vec<Vec<f64>> = (0..m)
        .map(|_| (0..n).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let times = |x: &[f64]| -> Vec<f64> {
        (0..n)
            .map(|i| {
                g[i * n..(i + 1) * n]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    };
    orthonormalize(&mut q);
    for _ in 0..60 {
        q = q.iter().map(|x| times(x)).collect();
        orthonormalize(&mut q);
    }
    // `Qᵀ·G·Q`, and its eigenvectors carried back by `Q`.
    let gq: Vec<Vec<f64>> = q.iter().map(|x| times(x)).collect();
    let t: Vec<f64> = (0..m * m)
        .map(|ij| q[ij / m].iter().zip(&gq[ij % m]).map(|(a, b)| a * b).sum())
        .collect();
    let (values, y) = jacobi(&t, m);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order
        .into_iter()
        .take(k)
        .map(|e| {
            let v: Vec<f64> = (0..n)
                .map(|i| (0..m).map(|j| q[j][i] * y[j * m + e]).sum())
                .collect();
            (values[e], v)
        })
        .unzip()
}

/// Makes `vectors` orthonormal in their order (modified Gram–Schmidt, twice over for
/// precision); a vector that lies in the span of those before it becomes zero.
fn orthonormalize(vectors: &mut [Vec<f64>]) {
    for i in 0..vectors.len() {
        let (done, rest) = vectors.split_at_mut(i);
        let v = &mut rest[0];
        let before = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for _ in 0..2 {
            for u in done.iter() {
                let dot: f64 = u.iter().zip(v.iter()).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, y)| *x -= dot * y);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        // What is left of a vector in the span of the others is rounding error: drop it.
        let scale = if norm > 1e-9 * before {
            1.0 / norm
        } else {
            0.0
        };
        v.iter_mut().for_each(|x| *x *= scale);
    }
}

/// The eigenvalues and eigenvectors of the small symmetric `m × m` matrix `t` (row-major), by
/// cyclic Jacobi rotations: column `e` of the returned row-major matrix is the eigenvector of
/// eigenvalue `e`.
fn jacobi(t: &[f64], m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = t.to_vec();
    let mut v: Vec<f64> = (0..m * m)
        .map(|ij| if ij / m == ij % m { 1.0 } else { 0.0 })
        .collect();
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _ in 0..100 {
        let off: f64 = (0..m * m)
            .filter(|ij| ij / m != ij % m)
            .map(|ij| a[ij] * a[ij])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * scale {
            break;
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[p * m + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q]: tan θ = t, the smaller root.
                let theta = (a[q * m + q] - a[p * m + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let cos = 1.0 / (t * t + 1.0).sqrt();
                let sin = t * cos;
                for r in 0..m {
                    let (x, y) = (a[r * m + p], a[r * m + q]);
                    a[r * m + p] = cos * x - sin * y;
                    a[r * m + q] = sin * x + cos * y;
                }
                for r in 0..m {
                    let (x, y) = (a[p * m + r], a[q * m + r]);
                    a[p * m + r] = cos * x - sin * y;
                    a[q * m + r] = sin * x + cos * y;
                }
                for r in 0..m {
                    let (x, y) = (v[r * m + p], v[r * m + q]);
                    v[r * m + p] = cos * x - sin * y;
                    v[r * m + q] = sin * x + cos * y;
                }
            }
        }
    }
    ((0..m).map(|i| a[i * m + i]).collect(), v)
}

/// One group: its map, its unit-length direction, and its share of the activation.
struct Group {
    map: Vec<f32>,
    direction: Vec<f32>,
    share: f32,
}

/// The groups of a factorization `W·H`, each direction scaled to unit length (its length moved
/// into its map), largest share first.
fn groups_of(w: &[f32], h: &[f32], p: usize, c: usize, k: usize) -> Vec<Group> {
    let mut groups: Vec<Group> = (0..k)
        .map(|g| {
            let row = &h[g * c..(g + 1) * c];
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            let direction = match norm > 0.0 {
                true => row.iter().map(|v| v / norm).collect(),
                false => vec![0.0; c],
            };
            let map: Vec<f32> = (0..p).map(|i| w[i * k + g] * norm).collect();
            // Everything is ≥ 0, so W·H's sum splits by group: Σ_p W[p, g] · Σ_c H[g, c].
            let mass = map.iter().sum::<f32>() * direction.iter().sum::<f32>();
            Group {
                map,
                direction,
                share: mass,
            }
        })
        .collect();
    let total: f32 = groups.iter().map(|g| g.share).sum();
    for g in &mut groups {
        g.share = if total > 0.0 { g.share / total } else { 0.0 };
    }
    groups.sort_by(|x, y| y.share.total_cmp(&x.share));
    groups
}

/// `1 − |A − W·H|² / |A|²`.
fn explained(a: &[f32], w: &[f32], h: &[f32], p: usize, c: usize, k: usize) -> f32 {
    let (mut error, mut norm) = (0f64, 0f64);
    for i in 0..p {
        for j in 0..c {
            let x: f32 = (0..k).map(|g| w[i * k + g] * h[g * c + j]).sum();
            let v = a[i * c + j];
            error += ((v - x) as f64).powi(2);
            norm += (v as f64).powi(2);
        }
    }
    if norm > 0.0 {
        (1.0 - error / norm) as f32
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix made of `k` non-negative parts with disjoint supports is factorized back into
    /// them: nearly all of it explained, each part found once.
    #[test]
    fn a_sum_of_non_negative_parts_is_split_back_into_them() {
        let (p, c, k) = (40, 12, 3);
        // Part g fires at positions g·p/k.. with varying strength, on units g·c/k.. in a fixed
        // mix (an outer product: one direction, one map).
        let mut a = vec![0f32; p * c];
        for g in 0..k {
            for i in g * p / k..(g + 1) * p / k {
                for j in g * c / k..(g + 1) * c / k {
                    a[i * c + j] =
                        (1.0 + (i % 5) as f32 * 0.3) * (1.0 + (j % 3) as f32 * (g + 1) as f32);
                }
            }
        }
        let device = crate::Device::cpu().burn().clone();
        let (w, h) = factorize(&a, p, c, k, 500, &device);
        let share = explained(&a, &w, &h, p, c, k);
        assert!(share > 0.999, "explained {share}");
        let groups = groups_of(&w, &h, p, c, k);
        let mut found: Vec<usize> = groups
            .iter()
            .map(|g| {
                let top = (0..c)
                    .max_by(|&x, &y| g.direction[x].total_cmp(&g.direction[y]))
                    .unwrap();
                top * k / c
            })
            .collect();
        found.sort();
        assert_eq!(found, [0, 1, 2]);
        let shares: f32 = groups.iter().map(|g| g.share).sum();
        assert!((shares - 1.0).abs() < 1e-5);
        // The same matrix, the same factorization.
        assert_eq!(factorize(&a, p, c, k, 500, &device), (w, h));
    }

    /// The leading eigenpairs of a symmetric matrix with known ones: `G = Σ λᵢ uᵢ uᵢᵀ` over an
    /// orthonormal basis, and Jacobi's rotations on a small matrix reproduce it.
    #[test]
    fn leading_eigenpairs_are_found() {
        let n = 30;
        let mut basis: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| ((i * 31 + j * 17) % 23) as f64 - 11.0)
                    .collect()
            })
            .collect();
        orthonormalize(&mut basis);
        let lambdas: Vec<f64> = (0..n).map(|i| 100.0 * 0.7f64.powi(i as i32)).collect();
        let g: Vec<f64> = (0..n * n)
            .map(|ij| {
                (0..n)
                    .map(|e| lambdas[e] * basis[e][ij / n] * basis[e][ij % n])
                    .sum()
            })
            .collect();
        let (values, vectors) = leading_eigen(&g, n, 4);
        for e in 0..4 {
            assert!(
                (values[e] - lambdas[e]).abs() < 1e-6 * lambdas[0],
                "{values:?}"
            );
            let dot: f64 = vectors[e].iter().zip(&basis[e]).map(|(a, b)| a * b).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-6, "eigenvector {e}: {dot}");
        }
        let small = [4.0, 1.0, -2.0, 1.0, 3.0, 0.5, -2.0, 0.5, 1.0];
        let (values, v) = jacobi(&small, 3);
        for i in 0..3 {
            for j in 0..3 {
                let back: f64 = (0..3)
                    .map(|e| values[e] * v[i * 3 + e] * v[j * 3 + e])
                    .sum();
                assert!((back - small[i * 3 + j]).abs() < 1e-10, "{i},{j}: {back}");
            }
        }
    }
}
