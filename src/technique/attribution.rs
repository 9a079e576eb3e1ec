//! Attribution: activation × gradient at a layer, for one input image, toward a class logit or
//! a unit. The layer's activation is fed back as a tracked leaf (activation patching), so the
//! gradient is taken with respect to the activation itself.
//!
//! # Shapes
//! image `[1, C, H, W]` in [0, 1] · spatial map `[h, w]` · channel scores `[c]` of the layer.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::Dispatch;

use super::render;
use crate::device::{is_cpu, on_cpu_pool};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::{Back, DynTensor, Fast, Named, Reading};

/// What the attribution explains.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Output `index` of node `node` (e.g. a class of `logits`).
    Logit { node: String, index: usize },
    /// The mean activation of a unit.
    Unit { layer: String, index: usize },
}

/// Where the target's value comes from, by position in `layer`'s activation.
#[derive(Clone, Debug)]
pub struct AttributionMap {
    pub layer: String,
    /// The target's value on the image.
    pub value: f32,
    /// Σ over channels of activation × gradient, `[h, w]` row-major.
    pub spatial: Vec<f32>,
    pub height: usize,
    pub width: usize,
    /// Σ over positions of activation × gradient, one score per channel.
    pub channels: Vec<f32>,
}

/// Activation × gradient at `layer` for `target` on `image` (pixels in [0, 1]).
pub fn attribution(
    model: &Model,
    image: &DynTensor,
    layer: &str,
    target: &Target,
) -> Result<AttributionMap> {
    on_cpu_pool(model.network().device().burn(), || {
        attribution_here(model, image, layer, target)
    })
}

fn attribution_here(
    model: &Model,
    image: &DynTensor,
    layer: &str,
    target: &Target,
) -> Result<AttributionMap> {
    let lg = layer_gradient(model, image, layer, target)?;
    let (a, g, [c, h, w]) = (&lg.activation, &lg.gradient, lg.dims);
    let mut spatial = vec![0.0; h * w];
    let mut channels = vec![0.0; c];
    for ch in 0..c {
        for p in 0..h * w {
            let v = a[ch * h * w + p] * g[ch * h * w + p];
            spatial[p] += v;
            channels[ch] += v;
        }
    }
    Ok(AttributionMap {
        layer: layer.to_string(),
        value: lg.value,
        spatial,
        height: h,
        width: w,
        channels,
    })
}

/// A layer's activation on one image and the target's gradient with respect to it.
pub(crate) struct LayerGradient {
    /// The target's value on the image.
    pub value: f32,
    /// `[c, h, w]` row-major, both.
    pub activation: Vec<f32>,
    pub gradient: Vec<f32>,
    pub dims: [usize; 3],
}

/// The activation of `layer` on `image` (`[1, C, H, W]` in [0, 1]) and the gradient of `target`
/// with respect to it, for a layer of maps. Runs where it is called (callers wrap it in
/// `on_cpu_pool`).
pub(crate) fn layer_gradient(
    model: &Model,
    image: &DynTensor,
    layer: &str,
    target: &Target,
) -> Result<LayerGradient> {
    let any = activation_gradient(model, image, layer, target, |dims| match dims {
        [1, _, _, _] => Ok(()),
        _ => Err(Error::Message(format!(
            "{layer}: attribution needs a [1, C, H, W] activation, found {dims:?}"
        ))),
    })?;
    let [_, c, h, w] = any.dims[..] else {
        unreachable!("checked to be [1, C, H, W]")
    };
    Ok(LayerGradient {
        value: any.value,
        activation: any.activation,
        gradient: any.gradient,
        dims: [c, h, w],
    })
}

/// A layer's activation on one image and the target's gradient with respect to it, in the
/// layer's own layout.
pub(crate) struct AnyGradient {
    /// The target's value on the image.
    pub value: f32,
    /// Integrated gradients': the target's value with the layer's activation at zero.
    pub start: Option<f32>,
    /// The activation's shape (its first dimension is 1); both hold that many values.
    pub dims: Vec<usize>,
    pub activation: Vec<f32>,
    pub gradient: Vec<f32>,
}

/// The activation of `layer` on `image` (`[1, C, H, W]` in [0, 1]), whatever its layout, and the
/// gradient of `target` with respect to it; `accept` refuses an activation shape before anything
/// is differentiated. Runs where it is called (callers wrap it in `on_cpu_pool`).
pub(crate) fn activation_gradient(
    model: &Model,
    image: &DynTensor,
    layer: &str,
    target: &Target,
    accept: impl FnOnce(&[usize]) -> Result<()>,
) -> Result<AnyGradient> {
    let reading = model.network().reading(target.node());
    let value = TargetValue { target, reading };
    activation_gradient_of(model, image, layer, target.node(), &value, accept, 1)
}

/// A scalar computed from a node's output, on any backend: what [`activation_gradient_of`]
/// differentiates. (A trait rather than a closure, as one closure cannot take tensors of more
/// than one backend.)
pub(crate) trait Scalar {
    /// The scalar of `out`, the node's output for a batch of images: one value per image, or
    /// their sum (`[1]`); the gradient is taken of the sum either way.
    fn of<B: Backend>(&self, out: &DynTensor<B>) -> Result<Tensor<B, 1>>;
}

/// A [`Target`]'s value ([`target_values`]).
pub(crate) struct TargetValue<'a> {
    pub target: &'a Target,
    pub reading: Reading,
}

impl Scalar for TargetValue<'_> {
    fn of<B: Backend>(&self, out: &DynTensor<B>) -> Result<Tensor<B, 1>> {
        target_values(out, self.target, self.reading)
    }
}

/// [`activation_gradient`] of any scalar: `value` computes it from the output of `node`, which
/// comes after `layer`. With `path` > 1, the gradient is integrated gradients': the mean of the
/// gradients at `path` points (midpoints) along the straight path from a zero activation at
/// `layer` to the activation, and `AnyGradient::start` the scalar at zero.
///
/// On the CPU on burn-flex under burn's autodiff by name ([`Fast`]), as feature visualization
/// renders, with our convolutions; elsewhere through `Dispatch`. The points of the path go
/// through the rest of the network as many at a time as fit the memory there is (the points do
/// not interact, so the gradient of their sum is each one's own gradient).
pub(crate) fn activation_gradient_of(
    model: &Model,
    image: &DynTensor,
    layer: &str,
    node: &str,
    value: &impl Scalar,
    accept: impl FnOnce(&[usize]) -> Result<()>,
    path: usize,
) -> Result<AnyGradient> {
    let device = model.network().device();
    if is_cpu(device.burn()) {
        let ad = Default::default();
        return activation_gradient_on::<Fast>(model, image, layer, node, value, accept, path, &ad);
    }
    let ad = device.autodiff();
    activation_gradient_on::<Dispatch>(model, image, layer, node, value, accept, path, &ad)
}

/// [`activation_gradient_of`] on backend `B`, on its device `ad`.
#[allow(clippy::too_many_arguments)]
fn activation_gradient_on<B: Back + AutodiffBackend>(
    model: &Model,
    image: &DynTensor,
    layer: &str,
    node: &str,
    value: &impl Scalar,
    accept: impl FnOnce(&[usize]) -> Result<()>,
    path: usize,
    ad: &B::Device,
) -> Result<AnyGradient> {
    let net = model.network();
    let (pixels, image_dims) = (image.to_vec(), image.dims());
    // The image, normalized, `n` times over as a batch (untracked).
    let images = |n: usize| -> Result<DynTensor<B>> {
        let mut dims = image_dims.clone();
        if let Some(first) = dims.first_mut() {
            *first *= n;
        }
        model.normalize(&DynTensor::from_host_on(&pixels.repeat(n), &dims, ad))
    };
    let input = net.image_input()?.name.clone();
    // The activation, and what the network after it reads from before it (a skip around it):
    // computed once here, rather than again for every point. (Through `Dispatch`: one image
    // without a gradient runs faster there on the CPU than on `Fast`, ~70 ms against ~100 ms
    // to EfficientNet-Lite0's head.)
    let (act, beside) = net.forward_beside(&[(&input, model.normalize(image)?)], layer, node)?;
    let on_b = |t: &DynTensor| DynTensor::<B>::from_host_on(&t.to_vec(), &t.dims(), ad);
    let act = on_b(&act);
    let beside: Vec<Named<B>> = (beside.iter()).map(|(n, t)| (n.clone(), on_b(t))).collect();
    let dims = act.dims();
    accept(&dims)?;
    let tensor = net.node(layer)?.outputs[0].clone();
    let activation = act.to_vec();
    // Points of the path in one pass: as many as fit, and only for a layer whose first axis is
    // the batch.
    let batch =
        match (path > 1 && dims.first() == Some(&1)).then(|| render::available_memory(model)) {
            None => 1,
            Some(None) => path,
            Some(Some(available)) => {
                let [_, _, h, w] = image.to_rank::<4>()?.dims();
                let per_image = render::one_image_fits(
                    model,
                    "attribution",
                    &[node.to_string()],
                    [h, w],
                    available,
                    &format!("an image of {h}×{w} px"),
                    "attribute a smaller image",
                )?;
                path.min(render::fit_count(per_image, available))
            }
        }
        .max(1);
    // The scalar (summed over the batch) with `layer`'s activation scaled by each of `alphas`,
    // one point each, and (tracked) those activations as a leaf, with the values `beside` it
    // for each point. The image is fed as well, for nodes that read only its size (a ViT's
    // class token).
    let at = |alphas: &[f32], track: bool| -> Result<(DynTensor<B>, DynTensor<B>)> {
        let n = alphas.len();
        // (`n` > 1 only where the first axis is the batch's, of 1.)
        let mut leaf_dims = dims.clone();
        if let Some(first) = leaf_dims.first_mut() {
            *first *= n;
        }
        let mut leaf = match alphas == [1.0] {
            // The activation itself stays where it is (the attribution tab's one step).
            true => DynTensor::from_inner(act.clone().inner()),
            false => {
                let scaled: Vec<f32> = alphas
                    .iter()
                    .flat_map(|&alpha| activation.iter().map(move |v| v * alpha))
                    .collect();
                DynTensor::from_vec_on(scaled, &leaf_dims, ad)
            }
        };
        if track {
            leaf = leaf.require_grad();
        }
        let mut feeds = vec![
            (input.as_str(), images(n)?),
            (tensor.as_str(), leaf.clone()),
        ];
        feeds.extend(
            beside
                .iter()
                .map(|(t, v)| (t.as_str(), v.repeat_leading(n))),
        );
        let out = net.forward_any_size(&feeds, &[node])?.remove(0);
        Ok((DynTensor::new(value.of(&out)?.sum()), leaf))
    };
    // The scalar summed over the points `alphas`, and its gradient summed over them.
    let gradient_at = |alphas: &[f32]| -> Result<(f32, Vec<f32>)> {
        let (v, leaf) = at(alphas, true)?;
        let grads = v.backward();
        let grad = leaf
            .grad(&grads)
            .ok_or_else(|| Error::Message(format!("{node} does not depend on {layer}")))?
            .to_vec();
        let mut sum = vec![0.0; activation.len()];
        for point in grad.chunks(activation.len().max(1)) {
            sum.iter_mut().zip(point).for_each(|(s, g)| *s += g);
        }
        Ok((v.to_vec()[0], sum))
    };
    let (end, gradient, start) = if path <= 1 {
        let (end, gradient) = gradient_at(&[1.0])?;
        (end, gradient, None)
    } else {
        let alphas: Vec<f32> = (0..path).map(|k| (k as f32 + 0.5) / path as f32).collect();
        let mut mean = vec![0.0; activation.len()];
        for (step, points) in alphas.chunks(batch).enumerate() {
            if crate::interrupt::requested() {
                return Err(Error::Cancelled {
                    what: format!("attribution at {layer}"),
                    step,
                });
            }
            let (_, g) = gradient_at(points)?;
            mean.iter_mut()
                .zip(g)
                .for_each(|(sum, g)| *sum += g / path as f32);
        }
        let value = |alpha| -> Result<f32> { Ok(at(&[alpha], false)?.0.to_vec()[0]) };
        (value(1.0)?, mean, Some(value(0.0)?))
    };
    Ok(AnyGradient {
        value: end,
        start,
        activation,
        gradient,
        dims,
    })
}

impl Target {
    /// The node whose output holds the target.
    pub fn node(&self) -> &str {
        match self {
            Target::Logit { node, .. } => node,
            Target::Unit { layer, .. } => layer,
        }
    }

    /// The output (class) or unit it explains.
    pub fn index(&self) -> usize {
        match self {
            Target::Logit { index, .. } | Target::Unit { index, .. } => *index,
        }
    }
}

/// The target's value for each image of a batch, `[N]`, from `out`, the output of
/// [`Target::node`] (`[N, classes]` for a logit; any unit layout for a unit).
pub(crate) fn target_values<B: Backend>(
    out: &DynTensor<B>,
    target: &Target,
    reading: Reading,
) -> Result<Tensor<B, 1>> {
    let dims = out.dims();
    let (node, n) = (target.node(), dims.first().copied().unwrap_or(0));
    let units = crate::network::UnitLayout::units(&dims);
    let index = target.index();
    if index >= units {
        return Err(Error::Message(format!(
            "{node}:{index} does not exist ({node} has {units} units)"
        )));
    }
    Ok(match target {
        Target::Logit { .. } => out.to_rank::<2>()?.narrow(1, index, 1).reshape([n]),
        Target::Unit { .. } => {
            let unit = out.clone().to_unit_maps(reading)?.narrow(1, index, 1);
            let [_, _, h, w] = unit.dims();
            unit.reshape([n, h * w]).mean_dim(1).reshape([n])
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::device::Device;
    use crate::import::builder::OnnxBuilder;
    use crate::import::parse_onnx;
    use crate::network::DynTensor;

    /// What patching a layer recomputes for nothing comes back beside it: a skip around the
    /// layer, computed on the device, and not the shape arithmetic on the host that reads it.
    /// Fed for a batch of points, it gives what the image gives.
    #[test]
    fn the_values_beside_a_layer_are_the_skip_around_it() {
        let mut b = OnnxBuilder::new();
        b.input("x", &[1, 1, 2, 2])
            .initializer(
                "w",
                &crate::network::HostTensor::f32(vec![1, 1, 1, 1], vec![3.0]),
            )
            .node("Relu", "skip", &["x"], &[])
            .node("Conv", "layer", &["skip", "w"], &[])
            .node("Add", "sum", &["layer", "skip"], &[])
            .node("Shape", "shape", &["skip"], &[])
            .node("Reshape", "out", &["sum", "shape"], &[]);
        b.output("out");
        let net = parse_onnx(&b.to_bytes("residual"), "residual", Device::cpu()).unwrap();
        let device = Device::cpu();
        let x = [0.5f32, -0.25, 0.75, 0.125];
        let image = DynTensor::from_host(&x, &[1, 1, 2, 2], device.burn());
        let (act, beside) = net
            .forward_beside(&[("x", image.clone())], "layer", "out")
            .unwrap();
        let names: Vec<&str> = beside.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["skip"]);
        assert_eq!(act.to_vec(), [1.5, 0.0, 2.25, 0.375]);
        // Two points, the activation and twice it, with the skip fed beside them.
        let points: Vec<f32> = [1.0, 2.0]
            .iter()
            .flat_map(|k| act.to_vec().into_iter().map(move |a| a * k))
            .collect();
        let leaf = DynTensor::from_host(&points, &[2, 1, 2, 2], device.burn());
        let images = DynTensor::from_host(&[x, x].concat(), &[2, 1, 2, 2], device.burn());
        let skip = beside[0].1.repeat_leading(2);
        let fed = net
            .forward_any_size(
                &[
                    ("x", images.clone()),
                    ("layer", leaf.clone()),
                    ("skip", skip),
                ],
                &["out"],
            )
            .unwrap();
        let plain = net
            .forward_any_size(&[("x", images), ("layer", leaf)], &["out"])
            .unwrap();
        assert_eq!(fed[0].dims(), [2, 1, 2, 2]);
        assert_eq!(fed[0].to_vec(), plain[0].to_vec());
        assert_eq!(fed[0].to_vec()[..4], [2.0, 0.0, 3.0, 0.5]);
    }
}
