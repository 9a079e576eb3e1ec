//! ONNX's own transformer ops. Attention (opset 23 on), which PyTorch's exporter writes for
//! `scaled_dot_product_attention` from opset 23 (a ViT's `nn.MultiheadAttention`, timm's
//! attention blocks), and RMSNormalization, which it writes for `nn.RMSNorm`; and
//! RotaryEmbedding (opset 23), for models that rotate their queries and keys by position.
//!
//! Attention runs as the ops it is defined by, so that its parts are layers a user can look at:
//! the scores and the attention weights (`{node}/attention`, `[B, heads, queries, keys]`: one
//! unit per head, whose map is the head's attention pattern). Everything the op has is kept:
//! 3-D and 4-D inputs, grouped-query heads, a boolean or additive mask (also one shorter than
//! the keys), causal masks, sliding windows, a key/value cache and its padding, softcap, and
//! the scores as an output in each of their four stages.
//!
//! The shapes the masks and head groups depend on are only known when the network runs, so they
//! are computed by small integer subgraphs (Shape, Range, comparisons) beside the float ops.

use super::{check_counts, input, Lowerer};
use crate::error::{Error, Result};
use crate::network::node::{Attr, Node};
use crate::network::value::{HostTensor, MAX_RANK};

/// The nodes of one lowering, and their builder.
struct Graph<'l, 'a> {
    l: &'l mut Lowerer<'a>,
    n: &'l Node,
    out: Vec<Node>,
}

impl Graph<'_, '_> {
    /// Adds a node of `op` (role as for [`Lowerer::node`]) and returns its output.
    fn op(
        &mut self,
        op: &str,
        role: &str,
        inputs: Vec<String>,
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        self.op_into(op, role, inputs, None, attrs)
    }

    /// As [`Graph::op`], writing to `output` where given.
    fn op_into(
        &mut self,
        op: &str,
        role: &str,
        inputs: Vec<String>,
        output: Option<String>,
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        let node = self.l.node(self.n, op, role, inputs, output, attrs);
        let name = node.outputs[0].clone();
        self.out.push(node);
        name
    }

    /// A constant named after the node.
    fn constant(&mut self, role: &str, value: HostTensor) -> String {
        let name = self.l.fresh(format!("{}/{role}", self.n.name));
        self.l.constants.insert(name.clone(), value);
        name
    }

    fn ints(&mut self, role: &str, values: &[i64]) -> String {
        self.constant(role, HostTensor::i64(vec![values.len()], values.to_vec()))
    }

    fn scalar(&mut self, role: &str, value: f32) -> String {
        self.constant(role, HostTensor::f32(vec![], vec![value]))
    }

    /// Dimensions `start..end` of `x`'s shape, as a 1-D integer tensor.
    fn dims(&mut self, role: &str, x: &str, start: i64, end: Option<i64>) -> String {
        let mut attrs = vec![("start", Attr::Int(start))];
        attrs.extend(end.map(|e| ("end", Attr::Int(e))));
        self.op("Shape", role, vec![x.into()], attrs)
    }

    /// `0, 1, …, n - 1` for the length-1 tensor `n`.
    fn range(&mut self, role: &str, n: &str) -> String {
        let axis = self.ints(&format!("{role}_axis"), &[0]);
        let limit = self.op(
            "Squeeze",
            &format!("{role}_length"),
            vec![n.into(), axis],
            vec![],
        );
        let start = self.constant(&format!("{role}_start"), HostTensor::i64(vec![], vec![0]));
        let step = self.constant(&format!("{role}_step"), HostTensor::i64(vec![], vec![1]));
        self.op("Range", role, vec![start, limit, step], vec![])
    }

    fn unsqueeze(&mut self, role: &str, x: String, axes: &[i64]) -> String {
        let axes = self.ints(&format!("{role}_axes"), axes);
        self.op("Unsqueeze", role, vec![x, axes], vec![])
    }

    /// `x` split into `heads` heads and turned head-major: `[B, S, heads · d]` →
    /// `[B, heads, S, d]`.
    fn by_head(&mut self, role: &str, x: String, heads: i64) -> String {
        let shape = self.ints(&format!("{role}_heads_shape"), &[0, 0, heads, -1]);
        let split = self.op("Reshape", &format!("{role}_heads"), vec![x, shape], vec![]);
        let perm = vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))];
        self.op("Transpose", &format!("{role}_by_head"), vec![split], perm)
    }
}

/// The attributes Attention reads.
struct Settings {
    /// Heads of 3-D inputs (queries, keys and values); `None` for 4-D ones.
    heads: Option<(i64, i64)>,
    scale: Option<f32>,
    softcap: f32,
    causal: bool,
    left: i64,
    right: i64,
    mode: i64,
}

impl Settings {
    fn read(n: &Node) -> Result<Self> {
        let fail = |reason: String| Error::node(&n.name, &n.op, reason);
        let heads = match (n.has_attr("q_num_heads"), n.has_attr("kv_num_heads")) {
            (false, false) => None,
            (true, true) => {
                let (q, kv) = (n.int("q_num_heads", 0)?, n.int("kv_num_heads", 0)?);
                if q <= 0 || kv <= 0 || q % kv != 0 {
                    return Err(fail(format!(
                        "q_num_heads {q} and kv_num_heads {kv}: both must be positive, and the \
                         queries' heads a multiple of the keys'"
                    )));
                }
                Some((q, kv))
            }
            _ => {
                return Err(fail(
                    "q_num_heads and kv_num_heads are given together (for 3-D inputs) or not \
                     at all (4-D inputs)"
                        .into(),
                ))
            }
        };
        let scale = match n.has_attr("scale") {
            true => Some(n.float("scale", 1.0)?),
            false => None,
        };
        let softcap = n.float("softcap", 0.0)?;
        if scale.is_some_and(|s| !s.is_finite()) || !softcap.is_finite() {
            return Err(fail(format!(
                "scale {scale:?} and softcap {softcap} must be finite numbers"
            )));
        }
        let [left, right] = ["left_window_size", "right_window_size"].map(|a| n.int(a, -1));
        let (left, right) = (left?, right?);
        if left < -1 || right < -1 {
            return Err(fail(format!(
                "window sizes {left} and {right}: each is -1 (unbounded) or at least 0"
            )));
        }
        let mode = n.int("qk_matmul_output_mode", 0)?;
        if !(0..=3).contains(&mode) {
            return Err(fail(format!("qk_matmul_output_mode {mode} is not 0 to 3")));
        }
        Ok(Settings {
            heads,
            scale,
            softcap,
            causal: n.int("is_causal", 0)? != 0,
            left,
            right,
            mode,
        })
    }
}

/// ONNX's Attention: `softmax(q kᵀ · scale + bias) v` per head, where the bias comes from the
/// mask, a causal or sliding-window limit and the cache's padding; a query row that no key is
/// left to gives zeros. A boolean mask selects keys; any other is added to the scores.
pub(super) fn onnx_attention(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_counts(n, 3..=7, 1..=4)?;
    let s = Settings::read(n)?;
    let fail = |reason: &str| Error::node(&n.name, &n.op, reason);
    let [q, k, v, mask, past_key, past_value, nonpad] = std::array::from_fn(|i| input(n, i));
    if past_key.is_empty() != past_value.is_empty() {
        return Err(fail(
            "past_key and past_value are given together or not at all",
        ));
    }
    if !nonpad.is_empty() && !past_key.is_empty() {
        return Err(fail(
            "nonpad_kv_seqlen (an external cache) cannot be combined with past_key and \
             past_value (the op's own cache)",
        ));
    }
    let output = |i: usize| n.outputs.get(i).filter(|o| !o.is_empty()).cloned();
    let boolean_mask = l.booleans.contains(&mask);
    let mut g = Graph {
        l,
        n,
        out: Vec::new(),
    };

    // Queries, keys and values, `[B, heads, S, d]`; the cache in front of the keys and values.
    let (q, k, v) = match s.heads {
        Some((q_heads, kv_heads)) => (
            g.by_head("query", q, q_heads),
            g.by_head("key", k, kv_heads),
            g.by_head("value", v, kv_heads),
        ),
        None => (q, k, v),
    };
    let cached = |g: &mut Graph, past: &str, new: String, role: &str, at: usize| match (
        past.is_empty(),
        output(at),
    ) {
        (true, None) => new,
        (true, Some(o)) => g.op_into(
            "Identity",
            &format!("present_{role}"),
            vec![new],
            Some(o),
            vec![],
        ),
        (false, o) => {
            let axis = vec![("axis", Attr::Int(2))];
            let inputs = vec![past.to_string(), new];
            g.op_into("Concat", &format!("present_{role}"), inputs, o, axis)
        }
    };
    let k = cached(&mut g, &past_key, k, "key", 1);
    let v = cached(&mut g, &past_value, v, "value", 2);

    // Grouped-query attention: `heads_q / heads_kv` query heads share each key and value head.
    // The queries of a group are laid end to end (`[B, heads_kv, group · S, d]`, a reshape, no
    // copy) instead of the keys and values being repeated. 4-D inputs give their head counts
    // only when the network runs.
    let grouped = match s.heads {
        Some((q_heads, kv_heads)) if q_heads == kv_heads => None,
        Some((q_heads, kv_heads)) => {
            let kv = g.ints("kv_group_shape", &[0, kv_heads, -1, 0]);
            let q = g.ints("query_head_shape", &[0, q_heads, -1, 0]);
            Some((kv, q))
        }
        None => {
            let kv_heads = g.dims("kv_heads", &k, 1, Some(2));
            let q_heads = g.dims("query_heads", &q, 1, Some(2));
            let [zero, rest] = [g.ints("zero", &[0]), g.ints("rest", &[-1, 0])];
            let concat = |g: &mut Graph, role: &str, heads: String| {
                let inputs = vec![zero.clone(), heads, rest.clone()];
                g.op("Concat", role, inputs, vec![("axis", Attr::Int(0))])
            };
            let kv = concat(&mut g, "kv_group_shape", kv_heads);
            let q = concat(&mut g, "query_head_shape", q_heads);
            Some((kv, q))
        }
    };
    let regroup = |g: &mut Graph, role: &str, x: String, shape: Option<&String>| match shape {
        Some(shape) => g.op("Reshape", role, vec![x, shape.clone()], vec![]),
        None => x,
    };

    // The scores, `[B, heads_q, S_q, S_kv]`, scaled and softcapped.
    let grouped_q = regroup(
        &mut g,
        "query_groups",
        q.clone(),
        grouped.as_ref().map(|s| &s.0),
    );
    let perm = vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))];
    let keys_t = g.op("Transpose", "key_transposed", vec![k.clone()], perm);
    let scores = g.op("MatMul", "scores", vec![grouped_q, keys_t], vec![]);
    let scores = regroup(
        &mut g,
        "scores_by_head",
        scores,
        grouped.as_ref().map(|s| &s.1),
    );
    let scale = match s.scale {
        Some(scale) => g.scalar("scale", scale),
        None => {
            // 1 / √d, d the queries' head size.
            let d = g.dims("head_size", &q, 3, Some(4));
            let d = g.op(
                "Cast",
                "head_size_float",
                vec![d],
                vec![("to", Attr::Int(1))],
            );
            let root = g.op("Sqrt", "head_size_root", vec![d], vec![]);
            g.op("Reciprocal", "scale", vec![root], vec![])
        }
    };
    let mut scores = g.op("Mul", "scaled_scores", vec![scores, scale], vec![]);
    if s.softcap > 0.0 {
        let cap = g.scalar("softcap", s.softcap);
        let x = g.op("Div", "softcap_divided", vec![scores, cap.clone()], vec![]);
        let x = g.op("Tanh", "softcap_tanh", vec![x], vec![]);
        scores = g.op("Mul", "capped_scores", vec![x, cap], vec![]);
    }
    let mut qk_output = (s.mode <= 1).then(|| scores.clone());

    // The bias: the mask's, and -∞ where a causal or window limit or the padding rules a key out.
    let positional = s.causal || s.left >= 0 || s.right >= 0;
    let masked = !mask.is_empty() || positional || !nonpad.is_empty();
    let constants = masked.then(|| {
        let neg_inf = g.scalar("minus_infinity", f32::NEG_INFINITY);
        (g.scalar("zero_bias", 0.0), neg_inf)
    });
    let kv_len = masked.then(|| g.dims("kv_length", &k, 2, Some(3)));
    let mut bias = None;
    let mut allowed: Vec<String> = Vec::new();
    if let (Some((zero, neg_inf)), Some(kv_len)) = (&constants, &kv_len) {
        if !mask.is_empty() {
            let mask = match boolean_mask {
                true => {
                    let inputs = vec![mask, zero.clone(), neg_inf.clone()];
                    g.op("Where", "mask_bias", inputs, vec![])
                }
                false => mask,
            };
            // A mask shorter than the keys leaves the rest out (opset 24).
            let mask_len = g.dims("mask_length", &mask, -1, None);
            let missing = g.op(
                "Sub",
                "mask_missing",
                vec![kv_len.clone(), mask_len],
                vec![],
            );
            let before = g.ints("mask_pad_start", &[0]);
            let axis0 = vec![("axis", Attr::Int(0))];
            let pads = g.op("Concat", "mask_pads", vec![before, missing], axis0);
            let axes = g.ints("mask_pad_axes", &[-1]);
            let inputs = vec![mask, pads, neg_inf.clone(), axes];
            bias = Some(g.op("Pad", "padded_mask", inputs, vec![]));
        }
        let keys = (positional || !nonpad.is_empty()).then(|| g.range("key_position", kv_len));
        if let (true, Some(keys)) = (positional, &keys) {
            // Query i is at position i + offset: after the cache (its length, or per batch
            // the keys that are not padding, less the queries).
            let q_len = g.dims("query_length", &q, 2, Some(3));
            let queries = g.range("query_position", &q_len);
            let mut at = g.unsqueeze("query_column", queries, &[1]);
            let offset = if !past_key.is_empty() {
                Some(g.dims("past_length", &past_key, 2, Some(3)))
            } else if !nonpad.is_empty() {
                let lead = g.op("Sub", "query_offset", vec![nonpad.clone(), q_len], vec![]);
                Some(g.unsqueeze("query_offset_by_batch", lead, &[1, 2]))
            } else {
                None
            };
            if let Some(offset) = offset {
                at = g.op("Add", "query_at", vec![at, offset], vec![]);
            }
            let before = g.op(
                "Sub",
                "key_distance",
                vec![at.clone(), keys.clone()],
                vec![],
            );
            if s.causal {
                let inputs = vec![keys.clone(), at.clone()];
                allowed.push(g.op("LessOrEqual", "causal", inputs, vec![]));
            }
            if s.left >= 0 {
                let left = g.constant("left_window", HostTensor::i64(vec![], vec![s.left]));
                let inputs = vec![before.clone(), left];
                allowed.push(g.op("LessOrEqual", "left_window_keys", inputs, vec![]));
            }
            if s.right >= 0 {
                let after = g.op("Neg", "key_lead", vec![before], vec![]);
                let right = g.constant("right_window", HostTensor::i64(vec![], vec![s.right]));
                let inputs = vec![after, right];
                allowed.push(g.op("LessOrEqual", "right_window_keys", inputs, vec![]));
            }
            if !nonpad.is_empty() {
                // Per batch, `[B, S_q, S_kv]`: an axis for the heads after the batch's.
                for a in &mut allowed {
                    *a = g.unsqueeze("positional_by_batch", a.clone(), &[1]);
                }
            }
        }
        if let (false, Some(keys)) = (nonpad.is_empty(), &keys) {
            let lengths = g.unsqueeze("nonpad_column", nonpad.clone(), &[1]);
            let real = g.op("Less", "nonpad_keys", vec![keys.clone(), lengths], vec![]);
            allowed.push(g.unsqueeze("nonpad_by_batch", real, &[1, 2]));
        }
    }
    let mut limits = allowed.into_iter();
    if let (Some(first), Some((zero, neg_inf))) = (limits.next(), &constants) {
        let all = limits.fold(first, |a, b| g.op("And", "allowed", vec![a, b], vec![]));
        let inputs = vec![all, zero.clone(), neg_inf.clone()];
        let limit = g.op("Where", "limit_bias", inputs, vec![]);
        bias = Some(match bias {
            Some(mask) => g.op("Add", "bias", vec![mask, limit], vec![]),
            None => limit,
        });
    }
    if let Some(bias) = &bias {
        scores = g.op("Add", "masked_scores", vec![scores, bias.clone()], vec![]);
    }
    if s.mode == 2 {
        qk_output = Some(scores.clone());
    }

    // The attention weights; a row the bias rules every key out of is zeros.
    let softmax_role = if bias.is_some() {
        "attention_softmax"
    } else {
        "attention"
    };
    let axis = vec![("axis", Attr::Int(-1))];
    let mut weights = g.op("Softmax", softmax_role, vec![scores], axis);
    if let (Some(bias), Some((zero, _))) = (bias, constants) {
        let axes = g.ints("row_axes", &[-1]);
        let attrs = vec![("keepdims", Attr::Int(1))];
        let best = g.op("ReduceMax", "row_bias", vec![bias, axes], attrs);
        let attrs = vec![("detect_positive", Attr::Int(0))];
        let empty = g.op("IsInf", "row_masked", vec![best], attrs);
        weights = g.op("Where", "attention", vec![empty, zero, weights], vec![]);
    }
    if s.mode == 3 {
        qk_output = Some(weights.clone());
    }
    if let (Some(o), Some(value)) = (output(3), qk_output) {
        g.op_into("Identity", "qk_matmul_output", vec![value], Some(o), vec![]);
    }

    // The heads' weighted values, `[B, heads_q, S_q, d_v]`, or `[B, S_q, heads_q · d_v]` for
    // 3-D inputs.
    let weights = regroup(
        &mut g,
        "attention_groups",
        weights,
        grouped.as_ref().map(|s| &s.0),
    );
    let y = output(0);
    let context = match (s.heads, grouped.as_ref()) {
        (None, None) => unreachable!("4-D inputs are always regrouped"),
        (Some(_), None) => g.op("MatMul", "context", vec![weights, v], vec![]),
        (None, Some(shapes)) => {
            let c = g.op("MatMul", "context", vec![weights, v], vec![]);
            let inputs = vec![c, shapes.1.clone()];
            return finish(g, "Reshape", "", inputs, y, vec![]);
        }
        (Some(_), Some(shapes)) => {
            let c = g.op("MatMul", "grouped_context", vec![weights, v], vec![]);
            g.op("Reshape", "context", vec![c, shapes.1.clone()], vec![])
        }
    };
    let perm = vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))];
    let joined = g.op("Transpose", "context_by_position", vec![context], perm);
    let shape = g.ints("output_shape", &[0, 0, -1]);
    finish(g, "Reshape", "", vec![joined, shape], y, vec![])
}

/// Adds the last node, which writes `output`, and hands the nodes over.
fn finish(
    mut g: Graph,
    op: &str,
    role: &str,
    inputs: Vec<String>,
    output: Option<String>,
    attrs: Vec<(&str, Attr)>,
) -> Result<Vec<Node>> {
    g.op_into(op, role, inputs, output, attrs);
    Ok(g.out)
}

/// RMSNormalization: `x / √(mean(x²) + ε) · scale`, the mean over the axes from `axis` on.
pub(super) fn rms_normalization(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_counts(n, 2..=2, 1..=1)?;
    let [x, scale] = std::array::from_fn(|i| input(n, i));
    let axis = n.int("axis", -1)?;
    let epsilon = n.float("epsilon", 1e-5)?;
    let fail = |reason: String| Error::node(&n.name, &n.op, reason);
    if !epsilon.is_finite() || epsilon < 0.0 {
        return Err(fail(format!(
            "epsilon {epsilon} is not a finite number of at least 0"
        )));
    }
    let ranks = MAX_RANK as i64;
    if !(-ranks..ranks).contains(&axis) {
        return Err(fail(format!(
            "axis {axis} is outside the ranks the runtime holds (up to {ranks})"
        )));
    }
    let output = n.outputs.first().filter(|o| !o.is_empty()).cloned();
    let mut g = Graph {
        l,
        n,
        out: Vec::new(),
    };
    let axes = match axis {
        // The last -axis axes, whatever the rank.
        ..=-1 => g.ints("axes", &(axis..0).collect::<Vec<_>>()),
        // From axis to the rank, which is known when the network runs (an axis past it is an
        // index out of range there, not an empty list of axes, which would reduce them all).
        _ => {
            let shape = g.op("Shape", "input_shape", vec![x.clone()], vec![]);
            let rank = g.op("Size", "rank", vec![shape], vec![]);
            let step = g.constant("axes_step", HostTensor::i64(vec![], vec![1]));
            let zero = g.constant("axes_zero", HostTensor::i64(vec![], vec![0]));
            let inputs = vec![zero, rank.clone(), step.clone()];
            let all = g.op("Range", "input_axes", inputs, vec![]);
            let at = g.constant("axis", HostTensor::i64(vec![], vec![axis]));
            let start = g.op("Gather", "first_axis", vec![all, at], vec![]);
            g.op("Range", "axes", vec![start, rank, step], vec![])
        }
    };
    let squares = g.op("Mul", "squares", vec![x.clone(), x.clone()], vec![]);
    let keep = vec![("keepdims", Attr::Int(1))];
    let mean = g.op("ReduceMean", "mean_square", vec![squares, axes], keep);
    let epsilon = g.scalar("epsilon", epsilon);
    let shifted = g.op("Add", "mean_square_epsilon", vec![mean, epsilon], vec![]);
    let root = g.op("Sqrt", "root_mean_square", vec![shifted], vec![]);
    let normalized = g.op("Div", "normalized", vec![x, root], vec![]);
    finish(g, "Mul", "", vec![normalized, scale], output, vec![])
}

/// RotaryEmbedding: each head's first `rotary_embedding_dim` values (all, by default) taken in
/// pairs (a value of the first half with its partner in the second, or neighbours when
/// interleaved) and each pair rotated by the angle whose cosine and sine the caches hold for the
/// token's position (its row of the caches, or the position `position_ids` gives).
pub(super) fn rotary_embedding(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_counts(n, 3..=4, 1..=1)?;
    let fail = |reason: String| Error::node(&n.name, &n.op, reason);
    let [x, cos, sin, positions] = std::array::from_fn(|i| input(n, i));
    // 3-D inputs `[B, S, heads · d]` say how many heads they hold; 4-D ones are
    // `[B, heads, S, d]`.
    let heads = match n.has_attr("num_heads") {
        true => Some(n.int("num_heads", 0)?),
        false => None,
    };
    if heads.is_some_and(|h| h <= 0) {
        return Err(fail(format!("num_heads {heads:?} is not positive")));
    }
    let interleaved = n.int("interleaved", 0)? != 0;
    let dim = n.int("rotary_embedding_dim", 0)?;
    if dim < 0 || dim % 2 != 0 {
        return Err(fail(format!(
            "rotary_embedding_dim {dim} is not an even number of at least 0"
        )));
    }
    let output = n.outputs.first().filter(|o| !o.is_empty()).cloned();
    let mut g = Graph {
        l,
        n,
        out: Vec::new(),
    };
    let by_position = vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))];
    // `[B, S, heads, d]`.
    let tokens = match heads {
        Some(h) => {
            let shape = g.ints("heads_shape", &[0, 0, h, -1]);
            g.op("Reshape", "heads", vec![x, shape], vec![])
        }
        None => g.op("Transpose", "by_position", vec![x], by_position.clone()),
    };
    // The angles of each token, `[B, S, 1, dim / 2]`.
    let angles = |g: &mut Graph, cache: String, role: &str| {
        let cache = match positions.is_empty() {
            true => cache,
            false => {
                let inputs = vec![cache, positions.clone()];
                g.op("Gather", &format!("{role}_at_position"), inputs, vec![])
            }
        };
        g.unsqueeze(&format!("{role}_by_head"), cache, &[2])
    };
    let cos = angles(&mut g, cos, "cos");
    let sin = angles(&mut g, sin, "sin");
    let last = g.ints("last_axis", &[-1]);
    let end = g.ints("end", &[i64::MAX]);
    let slice = |g: &mut Graph, role: &str, x: &str, start: String, stop: String, step| {
        let mut inputs = vec![x.to_string(), start, stop, last.clone()];
        if step != 1 {
            inputs.push(g.ints(&format!("{role}_step"), &[step]));
        }
        g.op("Slice", role, inputs, vec![])
    };
    let (rotated, kept) = match dim {
        0 => (tokens, None),
        _ => {
            let (zero, cut) = (g.ints("rotated_start", &[0]), g.ints("rotated_end", &[dim]));
            let rotated = slice(&mut g, "rotated_part", &tokens, zero, cut.clone(), 1);
            let kept = slice(&mut g, "kept_part", &tokens, cut, end.clone(), 1);
            (rotated, Some(kept))
        }
    };
    let (first, second) = match interleaved {
        true => {
            let [zero, one] = [g.ints("even_start", &[0]), g.ints("odd_start", &[1])];
            let first = slice(&mut g, "first", &rotated, zero, end.clone(), 2);
            (
                first,
                slice(&mut g, "second", &rotated, one, end.clone(), 2),
            )
        }
        false => {
            let half = match dim {
                0 => {
                    let d = g.dims("head_size", &rotated, -1, None);
                    let two = g.ints("two", &[2]);
                    g.op("Div", "half", vec![d, two], vec![])
                }
                _ => g.ints("half", &[dim / 2]),
            };
            let zero = g.ints("first_start", &[0]);
            let first = slice(&mut g, "first", &rotated, zero, half.clone(), 1);
            (first, slice(&mut g, "second", &rotated, half, end, 1))
        }
    };
    let product = |g: &mut Graph, role: &str, a: &str, b: &str| {
        g.op("Mul", role, vec![a.to_string(), b.to_string()], vec![])
    };
    let [cos_first, sin_second, sin_first, cos_second] = [
        product(&mut g, "cos_first", &cos, &first),
        product(&mut g, "sin_second", &sin, &second),
        product(&mut g, "sin_first", &sin, &first),
        product(&mut g, "cos_second", &cos, &second),
    ];
    let real = g.op("Sub", "real", vec![cos_first, sin_second], vec![]);
    let imaginary = g.op("Add", "imaginary", vec![sin_first, cos_second], vec![]);
    let axis = || vec![("axis", Attr::Int(-1))];
    let turned = match interleaved {
        true => {
            let real = g.unsqueeze("real_pair", real, &[-1]);
            let imaginary = g.unsqueeze("imaginary_pair", imaginary, &[-1]);
            let pairs = g.op("Concat", "pairs", vec![real, imaginary], axis());
            let shape = g.ints("pairs_shape", &[0, 0, 0, -1]);
            g.op("Reshape", "turned", vec![pairs, shape], vec![])
        }
        false => g.op("Concat", "turned", vec![real, imaginary], axis()),
    };
    let joined = match kept {
        Some(kept) => g.op("Concat", "joined", vec![turned, kept], axis()),
        None => turned,
    };
    match heads {
        Some(_) => {
            let shape = g.ints("output_shape", &[0, 0, -1]);
            finish(g, "Reshape", "", vec![joined, shape], output, vec![])
        }
        None => finish(g, "Transpose", "", vec![joined], output, by_position),
    }
}
