//! Attention flow: which patches of the image a vision transformer's target draws on, read from
//! its attention weights instead of its pixels' gradients. Two rows of
//! [`super::input_attribution::METHODS`]:
//!
//! - Attention rollout (Abnar & Zuidema 2020, "Quantifying attention flow in transformers"):
//!   each attention layer's weights averaged over its heads, Ā, with the residual connection
//!   counted as half of the flow, M = ½Ā + ½I, multiplied through the layers,
//!   R = M_L ⋯ M_1. Row q of R says how much token q after the last layer draws on each token
//!   of the input. It knows no target: every unit after the same layers gets the same map.
//! - Gradient-weighted rollout (Chefer, Gur & Wolf 2021, "Generic attention-model
//!   explainability for interpreting bi-modal and encoder-decoder transformers"): each layer's
//!   weights times the target's gradient with respect to them, positive part, averaged over the
//!   heads, Ā = E_h[(∇A ⊙ A)⁺], accumulated from R = I as R ← R + Ā·R, so M = I + Ā.
//!
//! The map is the row of R that the target reads, over the patch tokens ([`TokenGrid`]): the
//! class token's row for the logits and whatever else comes after the token sequence, which
//! reads it through the class token; the mean of every token's row for a token unit or a head,
//! whose value is a mean over the tokens. Only that row is needed, so it is carried back
//! through the layers as a vector, r ← r·M (T² a layer rather than T³).
//!
//! The gradients of every attention layer come from one backward pass
//! ([`crate::network::Network::forward_probed`]): each is the gradient through every path, later
//! attention layers included, as the authors take it with hooks in PyTorch.
//!
//! # Shapes
//! image `[1, C, H, W]` · attention layers `[1, heads, T, T]` (a softmax over the keys, the
//! last axis) · r `[T]` · map `[rows, cols]` of the patch grid.

use super::attribution::{target_values, Target};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::{DynTensor, Reading, TokenGrid};

/// How the attention layers' weights are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Attention rollout: M = ½ · head-mean + ½ · I.
    Rollout,
    /// Gradient-weighted rollout: M = I + head-mean of (gradient ⊙ weights)⁺.
    Gradient,
}

/// Where a target's attention flow comes from on one image.
#[derive(Clone, Debug)]
pub struct AttentionFlow {
    /// The target's value on the image.
    pub value: f32,
    /// The attention layers it went through, in the order they run.
    pub layers: Vec<String>,
    /// The patch grid of their tokens.
    pub grid: TokenGrid,
    /// Whether the map is the class token's row (else the mean of every token's row).
    pub class_token: bool,
    /// The flow from each patch, `[grid.rows, grid.cols]` row-major.
    pub map: Vec<f32>,
}

impl AttentionFlow {
    /// One line on what the map was read from.
    pub fn describe(&self) -> String {
        let layers = match &self.layers[..] {
            [one] => format!("1 attention layer, {one}"),
            [first, .., last] => {
                format!("{} attention layers, {first} to {last}", self.layers.len())
            }
            [] => "no attention layer".into(),
        };
        let row = if self.class_token {
            "the class token's row"
        } else {
            "the mean row of every token"
        };
        format!(
            "{layers}; {row} over the {} × {} patches",
            self.grid.rows, self.grid.cols
        )
    }
}

/// The attention layers (units read by concentration: a softmax over keys, `[N, heads,
/// queries, keys]`) that `target` is computed from, its own layer included, in the order they
/// run. Empty for a network without attention before the target.
pub fn attention_layers(model: &Model, target: &Target) -> Result<Vec<String>> {
    let net = model.network();
    let node = net.node(target.node())?;
    let nodes = net.nodes();
    let Some(at) = nodes.iter().position(|n| std::ptr::eq(n, node)) else {
        return Ok(Vec::new());
    };
    let mut layers = Vec::new();
    for (i, n) in nodes.iter().enumerate().take(at + 1) {
        let rank4 = net.output_shape(&n.name).is_ok_and(|s| s.len() == 4);
        if !rank4 || !net.concentrates(&n.name) {
            continue;
        }
        let Some(out) = n.outputs.first() else {
            continue;
        };
        if i == at || net.computed_from(&[out.as_str()])[at] {
            layers.push(n.name.clone());
        }
    }
    Ok(layers)
}

/// The attention flow toward `target` on `image` (`[1, C, H, W]` in [0, 1]). Runs where it is
/// called (callers wrap it in `on_cpu_pool`).
pub fn attention_flow(
    model: &Model,
    image: &DynTensor,
    target: &Target,
    flow: Flow,
) -> Result<AttentionFlow> {
    let net = model.network();
    let node = target.node();
    let d = image.dims();
    let [1, _, height, width] = d[..] else {
        return Err(Error::Message(format!(
            "attention flow takes one image [1, C, H, W], found {d:?}"
        )));
    };
    let layers = attention_layers(model, target)?;
    if layers.is_empty() {
        return Err(Error::Message(format!(
            "{node} is computed from no attention layer (a softmax over keys, [N, heads, \
             queries, keys]): attention flow explains transformers"
        )));
    }
    for l in &layers {
        let over_keys = match net.reading(l) {
            Reading::Softmax { axis, .. } => axis == -1 || axis == 3,
            Reading::Values => false,
        };
        if !over_keys {
            return Err(Error::Message(format!(
                "{l}: its softmax is not over the last axis, so its rows are not one query's \
                 weights over the keys"
            )));
        }
    }
    let input = net.image_input()?.name.clone();
    let x = model.normalize(image)?;
    let names: Vec<&str> = layers.iter().map(String::as_str).collect();
    // The weights of each layer, and for the gradient-weighted rollout the target's gradient
    // with respect to them.
    let (value, out, weights, gradients) = match flow {
        Flow::Rollout => {
            let mut targets = names.clone();
            targets.push(node);
            let mut outs = net.forward_any_size(&[(&input, x)], &targets)?;
            let out = outs.pop().expect("one output per target");
            let value = target_values(&out, target, net.reading(node))?.sum();
            (DynTensor::new(value).to_vec()[0], out, outs, None)
        }
        Flow::Gradient => {
            let (mut outs, probes) =
                net.forward_probed(&[(&input, x.detached())], &names, &[node])?;
            let out = outs.remove(0);
            let value = DynTensor::new(target_values(&out, target, net.reading(node))?.sum());
            let grads = value.backward();
            // A layer the target does not reach through a differentiable path gets no gradient.
            let g: Vec<Option<Vec<f32>>> = probes
                .iter()
                .map(|p| p.leaf.grad(&grads).map(|g| g.to_vec()))
                .collect();
            let weights = probes.into_iter().map(|p| p.value).collect();
            (value.to_vec()[0], out, weights, Some(g))
        }
    };
    let first = weights[0].dims();
    let (heads, tokens) = match first[..] {
        [1, h, q, k] if q == k => (h, k),
        _ => (0, 0),
    };
    for (l, w) in layers.iter().zip(&weights) {
        if heads == 0 || w.dims() != first {
            return Err(Error::Message(format!(
                "{l} is {:?}: attention flow multiplies the weights of one sequence of tokens \
                 through the layers, [1, heads, T, T] with the same T in each ({} is {first:?}); \
                 windowed attention (Swin) and pooled tokens have no such sequence",
                w.dims(),
                layers[0]
            )));
        }
    }
    let grid = TokenGrid::of(tokens, height, width).ok_or_else(|| {
        Error::Message(format!(
            "the {tokens} tokens of {} do not tile the {height} × {width} image as square \
             patches after any of {:?} leading tokens",
            layers[0],
            TokenGrid::LEADING
        ))
    })?;
    // Host copies: each layer's weights (and gradients), checked against the memory budget.
    crate::budget::fits(&[layers.len(), 2, heads, tokens, tokens], 4)
        .map_err(|e| Error::Message(format!("attention flow toward {node}: {e}")))?;
    let out_dims = out.dims();
    let every_token = net.concentrates(node) || (out_dims.len() == 3 && out_dims[1] == tokens);
    let class_token = grid.skip > 0 && !every_token;
    let mut r = if class_token {
        let mut r = vec![0.0f32; tokens];
        r[0] = 1.0;
        r
    } else {
        vec![1.0 / tokens as f32; tokens]
    };
    let (keep, mix) = match flow {
        Flow::Rollout => (0.5, 0.5),
        Flow::Gradient => (1.0, 1.0),
    };
    let scale = mix / heads as f32;
    for (k, w) in weights.iter().enumerate().rev() {
        // What Ā averages over the heads: A, or (∇A ⊙ A)⁺ (zero without a gradient).
        let mut a = w.to_vec();
        if let Some(g) = &gradients {
            match &g[k] {
                Some(g) => a
                    .iter_mut()
                    .zip(g)
                    .for_each(|(a, g)| *a = (*a * g).max(0.0)),
                None => a.fill(0.0),
            }
        }
        // r·M = keep·r + mix·(r·Ā).
        let mut next: Vec<f32> = r.iter().map(|v| keep * v).collect();
        for (row, &rq) in a.chunks_exact(tokens).zip(r.iter().cycle()) {
            if rq != 0.0 {
                next.iter_mut()
                    .zip(row)
                    .for_each(|(n, &a)| *n += scale * rq * a);
            }
        }
        r = next;
    }
    let map = grid.patches(&r).map(<[f32]>::to_vec).ok_or_else(|| {
        Error::Message(format!(
            "{tokens} tokens hold no {} patches",
            grid.rows * grid.cols
        ))
    })?;
    Ok(AttentionFlow {
        value,
        layers,
        grid,
        class_token,
        map,
    })
}
