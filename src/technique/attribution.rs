//! Attribution: activation × gradient at a layer, for one input image, toward a class logit or
//! a unit. The layer's activation is fed back as a tracked leaf (activation patching), so the
//! gradient is taken with respect to the activation itself.
//!
//! # Shapes
//! image `[1, C, H, W]` in [0, 1] · spatial map `[h, w]` · channel scores `[c]` of the layer.

use crate::device::on_cpu_pool;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::DynTensor;

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
    let net = model.network();
    let x = model.normalize(image)?;
    let input = net.image_input()?.name.clone();
    let act = net
        .forward_any_size(&[(&input, x.clone())], &[layer])?
        .remove(0);
    let dims = act.dims();
    if dims.len() != 4 || dims[0] != 1 {
        return Err(Error::Message(format!(
            "{layer}: attribution needs a [1, C, H, W] activation, found {dims:?}"
        )));
    }
    // Feed the activation back as a leaf and differentiate the target with respect to it.
    let leaf = act.detached().require_grad();
    let tensor = net.node(layer)?.outputs[0].clone();
    let (target_node, index) = match target {
        Target::Logit { node, index } => (node.as_str(), *index),
        Target::Unit { layer, index } => (layer.as_str(), *index),
    };
    // The image is fed as well, for nodes that read only its size (a ViT's class token).
    let out = net
        .forward_any_size(
            &[(&input, x.detached()), (&tensor, leaf.clone())],
            &[target_node],
        )?
        .remove(0);
    let units = crate::network::UnitLayout::units(&out.dims());
    if index >= units {
        return Err(Error::Message(format!(
            "{target_node}:{index} does not exist ({target_node} has {units} units)"
        )));
    }
    let value = match target {
        Target::Logit { .. } => DynTensor::new(out.to_rank::<2>()?.narrow(1, index, 1).sum()),
        Target::Unit { .. } => DynTensor::new(out.to_nchw()?.narrow(1, index, 1).mean()),
    };
    let grads = value.backward();
    let grad = leaf
        .grad(&grads)
        .ok_or_else(|| Error::Message(format!("{target_node} does not depend on {layer}")))?;
    let (a, g) = (act.to_vec(), grad.to_vec());
    let (c, h, w) = (dims[1], dims[2], dims[3]);
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
        value: value.to_vec()[0],
        spatial,
        height: h,
        width: w,
        channels,
    })
}
