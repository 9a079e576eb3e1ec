//! The Reduce ops: Mean, Sum, Max, Min, Prod, and the sums of a function of the values (L1, L2,
//! SumSquare, LogSum, LogSumExp). Axes as an attribute before the opset that made them an input
//! (13 for ReduceSum, 18 for the others), `keepdims`, `noop_with_empty_axes`.
//!
//! Device tensors are reduced with burn's ops; host tensors (shape arithmetic, booleans) and empty
//! ones (whose reductions are the op's identity: 0, 1, -inf, +inf) on the host.
//!
//! CumSum, the running sum along an axis, is here too.

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{DynTensor, Elem, HostData, HostTensor, Storage, Wide};
use burn::prelude::Backend;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    /// The sum of absolute values.
    L1,
    /// The square root of the sum of squares (ConvNeXt V2's and XCiT's norms).
    L2,
    SumSquare,
    LogSum,
    /// log(sum(exp(x))), computed past the maximum so that it does not overflow.
    LogSumExp,
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

/// ReduceProd (opsets 1–18).
pub fn reduce_prod<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::Prod, 18)
}

/// ReduceL1 (opsets 1–18).
pub fn reduce_l1<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::L1, 18)
}

/// ReduceL2 (opsets 1–18).
pub fn reduce_l2<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::L2, 18)
}

/// ReduceSumSquare (opsets 1–18).
pub fn reduce_sum_square<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::SumSquare, 18)
}

/// ReduceLogSum (opsets 1–18).
pub fn reduce_log_sum<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::LogSum, 18)
}

/// ReduceLogSumExp (opsets 1–18).
pub fn reduce_log_sum_exp<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    reduce(ctx, Kind::LogSumExp, 18)
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
    // LogSumExp: the maximum over the axes, subtracted first and added back to the log.
    let mut peak = None;
    if kind == Kind::LogSumExp {
        let mut m = s.clone();
        for &a in &axes {
            m = m.max_dim(x.storage_axis(a));
        }
        s = s - m.clone();
        peak = Some(m);
    }
    s = match kind {
        Kind::L1 => s.abs(),
        Kind::L2 | Kind::SumSquare => s.clone() * s,
        Kind::LogSumExp => s.exp(),
        _ => s,
    };
    for &a in &axes {
        let a = x.storage_axis(a);
        s = match kind {
            Kind::Mean => s.mean_dim(a),
            Kind::Max => s.max_dim(a),
            Kind::Min => s.min_dim(a),
            Kind::Prod => s.prod_dim(a),
            _ => s.sum_dim(a),
        };
    }
    s = match kind {
        // The smallest normal float under the root keeps its gradient finite (0, not NaN) where
        // every value is 0 (a channel a ReLU turned off), as PyTorch's norm does; any other sum
        // is far above it and stays as it is.
        Kind::L2 => (s + f32::MIN_POSITIVE).sqrt(),
        Kind::LogSum => s.log(),
        Kind::LogSumExp => s.log() + peak.expect("set for LogSumExp"),
        _ => s,
    };
    Ok(vec![Value::Device(
        DynTensor::from_storage(s, rank).reshape(&out),
    )])
}

/// CumSum (opsets 11–14): the running sum along the axis of input 1, `exclusive` (each sum
/// leaves its own value out) and `reverse` (from the end). PyTorch exports EdgeNeXt's and
/// DETR's sine position encodings (the cumulative sum of a mask of ones) so.
pub fn cumsum<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let axis = match ctx.ints(1)?.as_slice() {
        [a] => ctx.axis(*a, dims.len())?,
        other => {
            return Err(ctx.error(format!(
                "axis must be one integer, got {} values",
                other.len()
            )))
        }
    };
    let exclusive = ctx.node.int("exclusive", 0)? != 0;
    let reverse = ctx.node.int("reverse", 0)? != 0;
    let n = dims[axis];
    if ctx.is_host(0) || n == 0 || dims.contains(&0) {
        let h = ctx.host(0)?;
        // Element (outer, i, j) sits at (outer * n + i) * inner + j.
        let inner: usize = dims[axis + 1..].iter().product();
        let order: Vec<usize> = if reverse {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        let run = |get: &dyn Fn(usize) -> f64, set: &mut dyn FnMut(usize, f64)| {
            for start in (0..h.len()).step_by((n * inner).max(1)) {
                for j in 0..inner {
                    let mut sum = 0.0;
                    for &i in &order {
                        let at = start + i * inner + j;
                        let v = get(at);
                        if !exclusive {
                            sum += v;
                        }
                        set(at, sum);
                        if exclusive {
                            sum += v;
                        }
                    }
                }
            }
        };
        let data = match h.data.wide() {
            Wide::F32(v) => {
                let mut out = v.to_vec();
                run(&|at| f64::from(v[at]), &mut |at, s| out[at] = s as f32);
                HostData::F32(out)
            }
            Wide::I64(v) => {
                let mut out = v.to_vec();
                run(&|at| v[at] as f64, &mut |at, s| out[at] = s as i64);
                HostData::I64(out)
            }
        };
        return Ok(vec![Value::Host(HostTensor {
            shape: dims,
            data,
            elem: h.elem,
        })]);
    }
    let x = ctx.float(0)?;
    let a = x.storage_axis(axis);
    let rank = x.rank();
    let mut s = x.into_storage();
    if reverse {
        s = s.flip([a as isize]);
    }
    let mut sum = s.cumsum(a);
    if exclusive {
        // Shifted one along the axis, a zero first: the sums before each value.
        let mut first = sum.dims();
        first[a] = 1;
        let zero = Storage::<B>::zeros(first, &sum.device());
        sum = Storage::<B>::cat(vec![zero, sum.narrow(a, 0, n - 1)], a);
    }
    if reverse {
        sum = sum.flip([a as isize]);
    }
    Ok(vec![Value::Device(DynTensor::from_storage(sum, rank))])
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
    let integral = matches!(
        kind,
        Kind::Sum | Kind::Max | Kind::Min | Kind::Prod | Kind::L1 | Kind::SumSquare
    );
    if h.elem == Elem::Float || !integral {
        let (init, step): (f32, fn(f32, f32) -> f32) = match kind {
            // NaN-propagating, as the device kernels.
            Kind::Max => (
                f32::NEG_INFINITY,
                |a, b| if a >= b || a.is_nan() { a } else { b },
            ),
            Kind::Min => (
                f32::INFINITY,
                |a, b| if a <= b || a.is_nan() { a } else { b },
            ),
            Kind::Prod => (1.0, |a, b| a * b),
            _ => (0.0, |a, b| a + b),
        };
        let values = h.to_f32();
        let peak = (kind == Kind::LogSumExp).then(|| {
            host_reduce(
                &HostTensor::f32(dims.clone(), values.clone()),
                axes,
                kept,
                Kind::Max,
            )
            .to_f32()
        });
        let mut acc = vec![init; n_out];
        for (i, v) in values.into_iter().enumerate() {
            let o = target(i);
            let v = match kind {
                Kind::L1 => v.abs(),
                Kind::L2 | Kind::SumSquare => v * v,
                Kind::LogSumExp => (v - peak.as_ref().expect("set for LogSumExp")[o]).exp(),
                _ => v,
            };
            acc[o] = step(acc[o], v);
        }
        let count = (h.len() / n_out.max(1)) as f32;
        for (o, v) in acc.iter_mut().enumerate() {
            *v = match kind {
                Kind::Mean => *v / count,
                Kind::L2 => v.sqrt(),
                Kind::LogSum => v.ln(),
                Kind::LogSumExp => v.ln() + peak.as_ref().expect("set for LogSumExp")[o],
                _ => *v,
            };
        }
        return HostTensor::f32(kept.to_vec(), acc);
    }
    // Integers and booleans (false < true): an empty max is the type's least value.
    let bool = h.elem == Elem::Bool;
    let (init, step): (i64, fn(i64, i64) -> i64) = match kind {
        Kind::Max => (if bool { 0 } else { i64::MIN }, i64::max),
        Kind::Min => (if bool { 1 } else { i64::MAX }, i64::min),
        Kind::Prod => (1, i64::wrapping_mul),
        _ => (0, i64::wrapping_add),
    };
    let mut acc = vec![init; n_out];
    for (i, v) in h.to_i64().into_iter().enumerate() {
        let o = target(i);
        let v = match kind {
            Kind::L1 => v.wrapping_abs(),
            Kind::SumSquare => v.wrapping_mul(v),
            _ => v,
        };
        acc[o] = step(acc[o], v);
    }
    HostTensor {
        shape: kept.to_vec(),
        data: HostData::I64(acc),
        elem: h.elem,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_on};
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, Elem, HostTensor, Value};

    #[test]
    fn cumsum_runs_either_way_exclusive_or_not_on_host_and_device() {
        // [2, 3] along axis 1 (given as -1).
        let x: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let axis = || Value::Host(HostTensor::i64(vec![], vec![-1]));
        let cases = [
            (0, 0, [1.0, 3.0, 6.0, 4.0, 9.0, 15.0]),
            (1, 0, [0.0, 1.0, 3.0, 0.0, 4.0, 9.0]),
            (0, 1, [6.0, 5.0, 3.0, 15.0, 11.0, 6.0]),
            (1, 1, [5.0, 3.0, 0.0, 11.0, 6.0, 0.0]),
        ];
        let on = crate::Device::cpu();
        for (exclusive, reverse, want) in cases {
            let attrs = [
                ("exclusive", Attr::Int(exclusive)),
                ("reverse", Attr::Int(reverse)),
            ];
            let d = Value::Device(DynTensor::from_host(&x, &[2, 3], on.burn()));
            let dev = run("CumSum", 14, &attrs, vec![d, axis()])
                .unwrap()
                .remove(0);
            assert!(matches!(dev, Value::Device(_)));
            assert_eq!(dev.to_host().to_f32(), want, "{exclusive} {reverse}");
            let h = Value::Host(HostTensor::i64(vec![2, 3], (1..=6).collect()));
            let Value::Host(h) = run("CumSum", 14, &attrs, vec![h, axis()])
                .unwrap()
                .remove(0)
            else {
                panic!("host integers stay on the host");
            };
            assert_eq!(h.elem, Elem::Int);
            let want: Vec<i64> = want.iter().map(|&v| v as i64).collect();
            assert_eq!(h.to_i64(), want, "{exclusive} {reverse}");
        }
    }

    #[test]
    fn the_l2_norm_of_zeros_has_a_zero_gradient() {
        // ConvNeXt V2's GRN takes the L2 norm of each channel; a channel a ReLU turned off is all
        // zeros and must not make the gradient NaN.
        let ad = crate::Device::cpu().autodiff();
        let x = DynTensor::from_host(&[0.0, 0.0, 3.0, 4.0], &[2, 2], &ad).require_grad();
        let axes = Value::Host(HostTensor::i64(vec![1], vec![1]));
        let Value::Device(y) = run_on(
            "ReduceL2",
            18,
            &[],
            vec![Value::Device(x.clone()), axes],
            &ad,
        )
        .unwrap()
        .remove(0) else {
            panic!("device data is reduced on the device");
        };
        let norms = y.to_vec();
        assert!(
            norms[0].abs() < 1e-12 && (norms[1] - 5.0).abs() < 1e-6,
            "{norms:?}"
        );
        let g = x.grad(&y.backward()).unwrap().to_vec();
        assert_eq!(g[..2], [0.0, 0.0]);
        assert!(
            (g[2] - 0.6).abs() < 1e-6 && (g[3] - 0.8).abs() < 1e-6,
            "{g:?}"
        );
    }
}
