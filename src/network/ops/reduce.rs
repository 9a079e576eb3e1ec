//! ReduceMean, ReduceSum, ReduceMax and ReduceMin: axes as an attribute before the opset that
//! made them an input (13 for ReduceSum, 18 for the others), `keepdims`, `noop_with_empty_axes`.
//!
//! Device tensors are reduced with burn's ops; host tensors (shape arithmetic, booleans) and empty
//! ones (whose reductions are the op's identity: 0, -inf, +inf) on the host.

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{DynTensor, Elem, HostData, HostTensor};
use burn::prelude::Backend;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mean,
    Sum,
    Max,
    Min,
}

/// ReduceMean (opsets 1–18).
pub fn reduce_mean<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::Mean, 18)
}

/// ReduceSum (opsets 1–13).
pub fn reduce_sum<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::Sum, 13)
}

/// ReduceMax (opsets 1–20; 20 added booleans).
pub fn reduce_max<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::Max, 18)
}

/// ReduceMin (opsets 1–20; 20 added booleans).
pub fn reduce_min<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::Min, 18)
}

/// Reduces input 0 over its axes, read from input 1 from opset `axes_input_since` on.
fn reduce<B: Backend>(ctx: &Ctx<B>, kind: Kind, axes_input_since: i64) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let rank = dims.len();
    let axes = if ctx.node.opset >= axes_input_since {
        if ctx.has(1) {
            Some(ctx.ints(1)?)
        } else {
            None
        }
    } else {
        ctx.node.ints("axes")?
    };
    let keep = ctx.node.int("keepdims", 1)? != 0;
    let mut axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&a| ctx.axis(a, rank))
            .collect::<Result<_>>()?,
        _ if ctx.node.int("noop_with_empty_axes", 0)? != 0 => return Ok(vec![ctx.value(0)?]),
        _ => (0..rank).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    // The shape with reduced axes kept as 1, and the output's.
    let kept: Vec<usize> = (0..rank)
        .map(|a| if axes.contains(&a) { 1 } else { dims[a] })
        .collect();
    let out: Vec<usize> = (0..rank)
        .filter(|a| keep || !axes.contains(a))
        .map(|a| kept[a])
        .collect();
    if ctx.is_host(0) || dims.contains(&0) {
        let y = host_reduce(&ctx.host(0)?, &axes, &kept, kind);
        return Ok(vec![Value::Host(y.reshaped(out))]);
    }
    let x = ctx.float(0)?;
    let mut s = x.clone().into_storage();
    for &a in &axes {
        let a = x.storage_axis(a);
        s = match kind {
            Kind::Mean => s.mean_dim(a),
            Kind::Sum => s.sum_dim(a),
            Kind::Max => s.max_dim(a),
            Kind::Min => s.min_dim(a),
        };
    }
    Ok(vec![Value::Device(
        DynTensor::from_storage(s, rank).reshape(&out),
    )])
}

/// Reduces `h` over `axes` into the shape `kept` (reduced axes of size 1).
fn host_reduce(h: &HostTensor, axes: &[usize], kept: &[usize], kind: Kind) -> HostTensor {
    let dims = &h.shape;
    // For each input element, its output element: the row-major index over the axes kept.
    let mut strides = vec![0; dims.len()];
    let mut stride = 1;
    for a in (0..dims.len()).rev() {
        if !axes.contains(&a) {
            strides[a] = stride;
        }
        stride *= kept[a];
    }
    let target = |flat: usize| -> usize {
        let (mut rem, mut at) = (flat, 0);
        for a in (0..dims.len()).rev() {
            at += (rem % dims[a]) * strides[a];
            rem /= dims[a];
        }
        at
    };
    let n_out: usize = kept.iter().product();
    if h.elem == Elem::Float || kind == Kind::Mean {
        let (init, step): (f32, fn(f32, f32) -> f32) = match kind {
            Kind::Mean | Kind::Sum => (0.0, |a, b| a + b),
            // NaN-propagating, as the device kernels.
            Kind::Max => (
                f32::NEG_INFINITY,
                |a, b| if a >= b || a.is_nan() { a } else { b },
            ),
            Kind::Min => (
                f32::INFINITY,
                |a, b| if a <= b || a.is_nan() { a } else { b },
            ),
        };
        let mut acc = vec![init; n_out];
        for (i, v) in h.to_f32().into_iter().enumerate() {
            let o = target(i);
            acc[o] = step(acc[o], v);
        }
        if kind == Kind::Mean {
            let count = (h.len() / n_out.max(1)) as f32;
            acc.iter_mut().for_each(|v| *v /= count);
        }
        return HostTensor::f32(kept.to_vec(), acc);
    }
    // Integers and booleans (false < true): an empty max is the type's least value.
    let bool = h.elem == Elem::Bool;
    let (init, step): (i64, fn(i64, i64) -> i64) = match kind {
        Kind::Mean | Kind::Sum => (0, i64::wrapping_add),
        Kind::Max => (if bool { 0 } else { i64::MIN }, i64::max),
        Kind::Min => (if bool { 1 } else { i64::MAX }, i64::min),
    };
    let mut acc = vec![init; n_out];
    for (i, v) in h.to_i64().into_iter().enumerate() {
        let o = target(i);
        acc[o] = step(acc[o], v);
    }
    HostTensor {
        shape: kept.to_vec(),
        data: HostData::I64(acc),
        elem: h.elem,
    }
}
