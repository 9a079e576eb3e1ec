//! Weights: first-layer filters as images, and expanded weights between the units of two
//! layers (Circuits, "Visualizing Weights"): the path between them linearized (ReLU → identity,
//! max → average pooling) and read off as the gradient of one output unit with respect to the
//! input layer's activations.
//!
//! # Shapes
//! filters `[O, I, kh, kw]` · expanded weights `[C_from, H_from, W_from]`

use crate::device::on_cpu_pool;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::DynTensor;

/// The first convolution's name and its filters, `[O, I, kH, kW]`, as the model has them (the
/// widgets scale them for display).
pub fn first_layer_filters(model: &Model) -> Result<(String, DynTensor)> {
    let net = model.network();
    let conv = net
        .nodes()
        .iter()
        .find(|n| n.op == "Conv")
        .ok_or_else(|| Error::Message(format!("{}: no Conv node", model.source())))?;
    let name = conv.inputs.get(1).cloned().unwrap_or_default();
    let w = net
        .constant(&name)
        .ok_or_else(|| conv.error("the weight is not a constant"))?;
    Ok((
        conv.name.clone(),
        DynTensor::from_host(&w.to_f32(), &w.shape, net.device().burn()),
    ))
}

/// Expanded weights from every unit of layer `from` to unit `unit` of layer `to`, at the centre
/// position of `to`: `[C_from, H_from, W_from]`, zero outside `unit`'s receptive field.
pub fn expanded_weights(model: &Model, from: &str, to: &str, unit: usize) -> Result<DynTensor> {
    on_cpu_pool(model.network().device().burn(), || {
        expanded_weights_here(model, from, to, unit)
    })
}

fn expanded_weights_here(model: &Model, from: &str, to: &str, unit: usize) -> Result<DynTensor> {
    let net = model.network();
    model.unit(to, unit)?;
    let source = net.node(from)?;
    let mut shape = net.output_shape(from)?;
    if shape.len() != 4 {
        return Err(Error::Message(format!(
            "{from}: expanded weights need a [N, C, H, W] layer, found {shape:?}"
        )));
    }
    // One image, like the one fed below, whatever batch the file was exported with.
    shape[0] = 1;
    let device = net.device().autodiff();
    let n: usize = shape.iter().product();
    let a = DynTensor::from_host(&vec![0.0; n], &shape, &device).require_grad();
    // The image is fed too, as zeros: nothing on a path of its values reaches `to` but through
    // `from`, which the patched activation replaces, yet nodes that read only its size (a ViT's
    // class token expanded to the batch) need it.
    let spec = model.input_spec()?;
    let input = net.image_input()?.name.clone();
    let image = DynTensor::from_host(
        &vec![0.0; spec.channels * spec.height * spec.width],
        &[1, spec.channels, spec.height, spec.width],
        &device,
    );
    let out = net
        .forward_linearized(&[(&input, image), (&source.outputs[0], a.clone())], &[to])?
        .remove(0);
    // The unit at the centre position (a map's centre, the middle token, or the unit itself).
    let out = out.to_nchw()?;
    let [_, _, h, w] = out.dims();
    let value = out
        .narrow(1, unit, 1)
        .narrow(2, h / 2, 1)
        .narrow(3, w / 2, 1)
        .sum();
    let grads = DynTensor::new(value).backward();
    let g = a
        .grad(&grads)
        .ok_or_else(|| Error::Message(format!("{to} does not depend on {from}")))?;
    Ok(g.reshape(&shape[1..]))
}

/// The units of `from` with the strongest expanded weights (L2 norm) to `to:unit`, strongest
/// first, as (unit, norm, signed sum). The units are the first axis of `weights` (a scalar is
/// one unit).
pub fn strongest_inputs(weights: &DynTensor, k: usize) -> Vec<(usize, f32, f32)> {
    let d = weights.dims();
    let per: usize = d
        .get(1..)
        .unwrap_or_default()
        .iter()
        .product::<usize>()
        .max(1);
    let data = weights.to_vec();
    let mut rows: Vec<(usize, f32, f32)> = data
        .chunks(per)
        .enumerate()
        .map(|(c, w)| {
            (
                c,
                w.iter().map(|v| v * v).sum::<f32>().sqrt(),
                w.iter().sum(),
            )
        })
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.truncate(k);
    rows
}

/// Ops whose output is a "layer" in the Circuits sense: a set of units computed from the layer
/// before. Elementwise ops, normalizations and pooling in between are looked through.
const LAYER_OPS: [&str; 8] = [
    "Conv",
    "ConvTranspose",
    "DeformConv",
    "Gemm",
    "MatMul",
    "Concat",
    "Add",
    "Sum",
];

/// Ops besides activations that compute each unit from the same unit alone: between a
/// convolution and its ReLU's output they leave one layer, not two (`conv2` and
/// `conv2/relu_DequantizeLinear` in a quantized model).
const PER_UNIT_OPS: [&str; 6] = [
    "BatchNormalization",
    "QuantizeLinear",
    "DequantizeLinear",
    "Identity",
    "Dropout",
    "Cast",
];

/// Whether `op` computes each unit from the same unit alone: an activation or one of
/// [`PER_UNIT_OPS`].
fn per_unit(op: &str) -> bool {
    PER_UNIT_OPS.contains(&op) || crate::network::ops::spec(op).is_some_and(|s| s.activation)
}

/// The node whose units `layer`'s are, back through the activations and per-unit ops after it:
/// `conv1` for `conv1/relu` (and for its quantized form); `layer` itself otherwise.
pub fn own_layer(model: &Model, layer: &str) -> Result<String> {
    let net = model.network();
    let mut node = net.node(layer)?;
    while per_unit(&node.op) {
        let input = node.inputs.first();
        match net
            .nodes()
            .iter()
            .find(|m| input.is_some_and(|t| m.outputs.contains(t)))
        {
            Some(before) => node = before,
            None => break,
        }
    }
    Ok(node.name.clone())
}

/// The layer every path into `layer` passes through last (its nearest dominator whose op is in
/// [`LAYER_OPS`] and whose output has units), e.g. `conv2` for `conv3` through a ReLU and a
/// pool, or the previous block's output for an inception block. A layer's own convolution
/// under its activation is the same layer, and passed: `conv1` for `conv2/relu` (and for its
/// quantized form), not `conv2`. `None` for the first layer.
pub fn previous_layer(model: &Model, layer: &str) -> Result<Option<String>> {
    let net = model.network();
    let target = net.node(layer)?.name.clone();
    let nodes = net.nodes();
    let root = nodes.len();
    let mut producer = std::collections::HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for t in &n.outputs {
            producer.insert(t.as_str(), i);
        }
    }
    // Only paths that carry the image's values count ([`Network::values_of`]). A `Shape` reads
    // only the image's size, and what is computed from sizes and constants alone (a ViT's class
    // token expanded to the batch, as torchvision exports it) does not depend on the pixels: an
    // edge from such a node would make the input dominate every later layer. Nor do indices
    // (MaxPool's, which a MaxUnpool or a scatter reads): they say where values go, not what
    // they are.
    let sources: Vec<&str> = net.inputs().iter().map(|i| i.name.as_str()).collect();
    let values = net.values_of(&sources);
    // Immediate dominators over the node order (topological), graph inputs joined at `root`.
    let mut idom = vec![root; root + 1];
    let mut depth = vec![0usize; root + 1];
    for (v, n) in nodes.iter().enumerate() {
        let mut preds = net
            .value_inputs(n, &values)
            .filter_map(|t| producer.get(t.as_str()).copied());
        let reads_input = net
            .value_inputs(n, &values)
            .any(|t| sources.contains(&t.as_str()));
        let mut d = if reads_input {
            Some(root)
        } else {
            preds.next()
        };
        for p in preds {
            let (mut a, mut b) = (d.unwrap_or(p), p);
            while a != b {
                while depth[a] > depth[b] {
                    a = idom[a];
                }
                while depth[b] > depth[a] {
                    b = idom[b];
                }
                if a != b {
                    a = idom[a];
                    b = idom[b];
                }
            }
            d = Some(a);
        }
        idom[v] = d.unwrap_or(root);
        depth[v] = depth[idom[v]] + 1;
        if n.name == target {
            // Whether every node from the target up to `at` computes unit for unit.
            let mut same_layer = per_unit(&n.op);
            let mut at = idom[v];
            while at != root {
                let candidate = &nodes[at];
                let has_units = net.units(&candidate.name).is_ok_and(|u| u > 0);
                if LAYER_OPS.contains(&candidate.op.as_str()) && has_units && !same_layer {
                    return Ok(Some(candidate.name.clone()));
                }
                same_layer = same_layer && per_unit(&candidate.op);
                at = idom[at];
            }
            return Ok(None);
        }
    }
    Ok(None)
}

/// The nearest layer before `layer` (through [`previous_layer`]) whose output is spatial,
/// `[N, C, H, W]`: where expanded weights and attributions of a unit are read when `layer` or
/// the layers just before it have no positions (a classifier's logits, fully connected
/// layers): `conv3` for the logits of `fc1 → logits` after `conv3`. `None` when there is none.
pub fn previous_spatial_layer(model: &Model, layer: &str) -> Result<Option<String>> {
    let net = model.network();
    let mut at = previous_layer(model, layer)?;
    while let Some(name) = at {
        if net.output_shape(&name)?.len() == 4 {
            return Ok(Some(name));
        }
        at = previous_layer(model, &name)?;
    }
    Ok(None)
}
