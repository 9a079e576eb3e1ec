//! Attribution: activation × gradient at a layer, for one input image, toward a class logit or
//! a unit. The layer's activation is fed back as a tracked leaf (activation patching), so the
//! gradient is taken with respect to the activation itself.
//!
//! # Shapes
//! image `[1, C, H, W]` in [0, 1] · spatial map `[h, w]` · channel scores `[c]` of the layer.

use burn::prelude::*;
use burn::Dispatch;

use crate::device::on_cpu_pool;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::{DynTensor, Reading};

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
    let value = |out: &DynTensor| target_values(out, target, reading);
    activation_gradient_of(model, image, layer, target.node(), value, accept, 1)
}

/// [`activation_gradient`] of any scalar: `value` computes it (`[N]`, summed) from the output of
/// `node`, which comes after `layer`. With `path` > 1, the gradient is integrated gradients':
/// the mean of the gradients at `path` points (midpoints) along the straight path from a zero
/// activation at `layer` to the activation, and `AnyGradient::start` the scalar at zero.
pub(crate) fn activation_gradient_of(
    model: &Model,
    image: &DynTensor,
    layer: &str,
    node: &str,
    value: impl Fn(&DynTensor) -> Result<Tensor<Dispatch, 1>>,
    accept: impl FnOnce(&[usize]) -> Result<()>,
    path: usize,
) -> Result<AnyGradient> {
    let net = model.network();
    let x = model.normalize(image)?;
    let input = net.image_input()?.name.clone();
    let act = net
        .forward_any_size(&[(&input, x.clone())], &[layer])?
        .remove(0);
    let dims = act.dims();
    accept(&dims)?;
    let tensor = net.node(layer)?.outputs[0].clone();
    let activation = act.to_vec();
    // The scalar with `layer`'s activation scaled by `alpha`, and (tracked) that activation as
    // a leaf. The image is fed as well, for nodes that read only its size (a ViT's class token).
    let at = |alpha: f32, track: bool| -> Result<(DynTensor, DynTensor)> {
        // The activation itself stays on its device (the attribution tab's one step); a point
        // along the path is scaled here.
        let mut leaf = match alpha == 1.0 {
            true => act.detached(),
            false => {
                let scaled: Vec<f32> = activation.iter().map(|v| v * alpha).collect();
                DynTensor::from_host(&scaled, &dims, &act.device()).detached()
            }
        };
        if track {
            leaf = leaf.require_grad();
        }
        let out = net
            .forward_any_size(&[(&input, x.detached()), (&tensor, leaf.clone())], &[node])?
            .remove(0);
        Ok((DynTensor::new(value(&out)?.sum()), leaf))
    };
    let gradient_at = |alpha: f32| -> Result<(f32, Vec<f32>)> {
        let (v, leaf) = at(alpha, true)?;
        let grads = v.backward();
        let grad = leaf
            .grad(&grads)
            .ok_or_else(|| Error::Message(format!("{node} does not depend on {layer}")))?;
        Ok((v.to_vec()[0], grad.to_vec()))
    };
    let (end, gradient, start) = if path <= 1 {
        let (end, gradient) = gradient_at(1.0)?;
        (end, gradient, None)
    } else {
        let mut mean = vec![0.0; activation.len()];
        for k in 0..path {
            let (_, g) = gradient_at((k as f32 + 0.5) / path as f32)?;
            mean.iter_mut()
                .zip(g)
                .for_each(|(sum, g)| *sum += g / path as f32);
        }
        let value = |alpha| -> Result<f32> { Ok(at(alpha, false)?.0.to_vec()[0]) };
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
