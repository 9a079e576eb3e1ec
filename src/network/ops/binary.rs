//! Elementwise operators of several inputs, with numpy broadcasting: Add, Sub, Mul, Div, Mod, Pow,
//! Max, Min, Sum, Mean, the comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual), the
//! logical And, Or and Xor, and Where.
//!
//! Activations are computed on the device with burn's ops, so gradients flow through them. When
//! every input lives on the host (shape arithmetic, folded constants), so does the result, and
//! integers stay integers. A boolean on the device is a float tensor of 0s and 1s: the runtime's
//! device values are float32.

use burn::prelude::*;
use burn::tensor::TensorData;

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{
    mask_to_float, storage_shape, DynTensor, Elem, HostData, HostTensor, Storage, Wide, MAX_RANK,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    /// Mod with `fmod = 0`: the remainder of the floored quotient, with the divisor's sign (as
    /// Python's `%`).
    Mod,
    /// Mod with `fmod = 1`: the remainder of the truncated quotient, with the dividend's sign (as
    /// C's `fmod`).
    Fmod,
    Pow,
    Max,
    Min,
    Equal,
    Less,
    Greater,
    LessEq,
    GreaterEq,
    /// And, Or and Xor read nonzero as true.
    And,
    Or,
    Xor,
}

impl Op {
    /// The op on host floats (computed in f64, stored as f32).
    pub(super) fn float(self, p: f64, q: f64) -> f64 {
        match self {
            Op::Add => p + q,
            Op::Sub => p - q,
            Op::Mul => p * q,
            Op::Div => p / q,
            // Rust's `%` on floats is C's fmod (exact, NaN for an infinite dividend or a zero
            // divisor, the dividend for an infinite divisor).
            Op::Fmod => p % q,
            // numpy's mod, which ONNX follows (opset 28 spells out its special cases): a nonzero
            // remainder moves to the divisor's sign, a zero one takes it.
            Op::Mod => {
                let r = p % q;
                if r == 0.0 {
                    0.0_f64.copysign(q)
                } else if (r < 0.0) != (q < 0.0) {
                    r + q
                } else {
                    r
                }
            }
            Op::Pow => p.powf(q),
            // numpy's maximum and minimum, which ONNX follows, propagate NaN (f64::max drops it).
            Op::Max | Op::Min if p.is_nan() || q.is_nan() => f64::NAN,
            Op::Max => p.max(q),
            Op::Min => p.min(q),
            Op::Equal => f64::from(u8::from(p == q)),
            Op::Less => f64::from(u8::from(p < q)),
            Op::Greater => f64::from(u8::from(p > q)),
            Op::LessEq => f64::from(u8::from(p <= q)),
            Op::GreaterEq => f64::from(u8::from(p >= q)),
            Op::And => f64::from(u8::from(p != 0.0 && q != 0.0)),
            Op::Or => f64::from(u8::from(p != 0.0 || q != 0.0)),
            Op::Xor => f64::from(u8::from((p != 0.0) != (q != 0.0))),
        }
    }

    /// The op on host integers; None for a division by zero.
    pub(super) fn int(self, p: i64, q: i64) -> Option<i64> {
        Some(match self {
            Op::Add => p.wrapping_add(q),
            Op::Sub => p.wrapping_sub(q),
            Op::Mul => p.wrapping_mul(q),
            Op::Div => p.checked_div(q)?,
            // `i64::MIN % -1` is 0 (wrapping), not an overflow.
            Op::Fmod if q != 0 => p.wrapping_rem(q),
            Op::Mod if q != 0 => match p.wrapping_rem(q) {
                // Opposite signs and |r| < |q|: no overflow.
                r if r != 0 && (r < 0) != (q < 0) => r + q,
                r => r,
            },
            Op::Mod | Op::Fmod => return None,
            Op::Pow => int_pow(p, q),
            Op::Max => p.max(q),
            Op::Min => p.min(q),
            Op::Equal => i64::from(p == q),
            Op::Less => i64::from(p < q),
            Op::Greater => i64::from(p > q),
            Op::LessEq => i64::from(p <= q),
            Op::GreaterEq => i64::from(p >= q),
            Op::And => i64::from(p != 0 && q != 0),
            Op::Or => i64::from(p != 0 || q != 0),
            Op::Xor => i64::from((p != 0) != (q != 0)),
        })
    }

    /// The element kind of the result: Pow keeps its base's, comparisons and logic make
    /// booleans.
    fn elem(self, a: Elem, b: Elem) -> Elem {
        let float = match self {
            Op::Equal
            | Op::Less
            | Op::Greater
            | Op::LessEq
            | Op::GreaterEq
            | Op::And
            | Op::Or
            | Op::Xor => return Elem::Bool,
            Op::Pow => a == Elem::Float,
            _ => a == Elem::Float || b == Elem::Float,
        };
        if float {
            Elem::Float
        } else {
            Elem::Int
        }
    }
}

/// `p^q` in integers (as numpy: wrapping; a negative exponent truncates `1 / p^|q|`).
fn int_pow(p: i64, q: i64) -> i64 {
    match (p, u32::try_from(q)) {
        (_, Ok(q)) => p.wrapping_pow(q),
        (_, Err(_)) if q >= 0 => p.wrapping_pow(u32::MAX),
        (1, _) => 1,
        (-1, _) => 1 - 2 * (q & 1),
        _ => 0,
    }
}

fn binary<B: Backend>(ctx: &Ctx<B>, op: Op) -> Result<Vec<Value<B>>> {
    if ctx.is_host(0) && ctx.is_host(1) {
        let (a, b) = (ctx.host(0)?, ctx.host(1)?);
        return Ok(vec![Value::Host(host_binary(ctx, &a, &b, op)?)]);
    }
    let (a, b) = (ctx.float(0)?, ctx.float(1)?);
    let shape = check_broadcast(ctx, &a.dims(), &b.dims())?;
    // burn's tensors are never empty: an empty result stays a shape on the host.
    if shape.contains(&0) {
        return Ok(vec![super::shape::empty(shape)]);
    }
    Ok(vec![Value::Device(device_binary(a, b, op, &shape))])
}

/// `op` on device tensors whose broadcast shape, `shape`, the caller has checked.
fn device_binary<B: Backend>(
    a: DynTensor<B>,
    b: DynTensor<B>,
    op: Op,
    shape: &[usize],
) -> DynTensor<B> {
    let (a, b) = (a.into_storage(), b.into_storage());
    // Arithmetic broadcasts in every backend; comparisons and selections want one shape.
    let full = storage_shape(shape);
    let y = match op {
        Op::Add => a + b,
        Op::Sub => a - b,
        Op::Mul => a * b,
        Op::Div => a / b,
        Op::Fmod => a.expand(full).fmod(b.expand(full)),
        Op::Mod => {
            // fmod, then a nonzero remainder of the other sign than the divisor moves by the
            // divisor (which also gives numpy's ±∞ for a finite dividend and an infinite divisor
            // of the other sign). NaN remainders have no sign and stay NaN.
            let b = b.expand(full);
            let r = a.expand(full).fmod(b.clone());
            let flip = (r.clone().sign() * b.clone().sign()).lower_elem(0.0);
            r.clone().mask_where(flip, r + b)
        }
        Op::Pow => a.expand(full).powf(b.expand(full)),
        Op::Max => a.expand(full).max_pair(b.expand(full)),
        Op::Min => a.expand(full).min_pair(b.expand(full)),
        Op::Equal | Op::Less | Op::Greater | Op::LessEq | Op::GreaterEq => {
            let (a, b) = (a.expand(full), b.expand(full));
            let mask = match op {
                Op::Equal => a.clone().equal(b),
                Op::Less => a.clone().lower(b),
                Op::Greater => a.clone().greater(b),
                Op::LessEq => a.clone().lower_equal(b),
                _ => a.clone().greater_equal(b),
            };
            mask_to_float(a, mask)
        }
        Op::And | Op::Or | Op::Xor => {
            let a = a.expand(full);
            let (p, q) = (
                a.clone().not_equal_elem(0.0),
                b.expand(full).not_equal_elem(0.0),
            );
            let mask = match op {
                Op::And => p.bool_and(q),
                Op::Or => p.bool_or(q),
                _ => p.bool_xor(q),
            };
            mask_to_float(a, mask)
        }
    };
    DynTensor::from_storage(y, shape.len())
}

pub fn add<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::Add)
}

pub fn sub<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::Sub)
}

pub fn mul<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::Mul)
}

pub fn div<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::Div)
}

/// Pow (opsets 7–15): the result has the base's type, the exponent may be of another.
pub fn pow<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    // An integer base on the host gives integers (shape arithmetic), whatever the exponent.
    if ctx.is_host(0) {
        let a = ctx.host(0)?;
        if a.elem != Elem::Float {
            return Ok(vec![Value::Host(host_binary(
                ctx,
                &a,
                &ctx.host(1)?,
                Op::Pow,
            )?)]);
        }
    }
    // A constant exponent (`x^2` in exported variances) is a scalar power, which burn computes
    // as products for integers: exact for negative bases, and its gradient needs no ln x.
    if !ctx.is_host(0) && ctx.is_host(1) {
        let e = ctx.host(1)?;
        let x = ctx.float(0)?;
        if e.len() == 1 && e.shape.len() <= x.rank() {
            let p = e.to_f32()[0];
            return Ok(vec![Value::Device(x.map(|t| t.powf_scalar(p)))]);
        }
    }
    binary(ctx, Op::Pow)
}

pub fn equal<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::Equal)
}

pub fn less<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::Less)
}

pub fn greater<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::Greater)
}

pub fn less_or_equal<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::LessEq)
}

pub fn greater_or_equal<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::GreaterEq)
}

pub fn and<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::And)
}

pub fn or<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::Or)
}

pub fn xor<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    binary(ctx, Op::Xor)
}

/// Mod (opsets 10–28): `fmod = 0` floors the quotient (the remainder has the divisor's sign, as
/// Python's `%`), `fmod = 1` truncates it (the dividend's sign, as C's `fmod`). Host integers
/// (shape arithmetic such as `Mod(56, 7)`) stay integers, and an integer modulo by zero is an
/// error naming the node. Floats follow numpy for both (opset 28 allows `fmod = 0` on them).
pub fn mod_<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    match ctx.node.int("fmod", 0)? {
        0 => binary(ctx, Op::Mod),
        1 => binary(ctx, Op::Fmod),
        other => Err(ctx.error(format!("fmod must be 0 or 1, got {other}"))),
    }
}

/// Folds `op` over all inputs (Sum, Mean, Max, Min): on the host when all of them live there.
fn variadic<B: Backend>(ctx: &Ctx<B>, op: Op) -> Result<Value<B>> {
    if (0..ctx.arity()).all(|i| ctx.is_host(i)) {
        let mut acc = ctx.host(0)?;
        for i in 1..ctx.arity() {
            acc = host_binary(ctx, &acc, &ctx.host(i)?, op)?;
        }
        return Ok(Value::Host(acc));
    }
    // The shape after each input, checked before any is computed.
    let mut shapes = vec![ctx.dims(0)?];
    for i in 1..ctx.arity() {
        let next = check_broadcast(ctx, &shapes[i - 1], &ctx.dims(i)?)?;
        shapes.push(next);
    }
    if let Some(last) = shapes.last().filter(|s| s.contains(&0)) {
        return Ok(super::shape::empty(last.clone()));
    }
    let mut acc = ctx.float(0)?;
    for (i, shape) in shapes.iter().enumerate().skip(1) {
        acc = device_binary(acc, ctx.float(i)?, op, shape);
    }
    Ok(Value::Device(acc))
}

pub fn sum<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    Ok(vec![variadic(ctx, Op::Add)?])
}

pub fn mean<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let n = ctx.arity() as f32;
    Ok(vec![match variadic(ctx, Op::Add)? {
        Value::Device(t) => Value::Device(t.map(|t| t.div_scalar(n))),
        Value::Host(h) => {
            let n = HostTensor::f32(Vec::new(), vec![n]);
            Value::Host(host_binary(ctx, &h, &n, Op::Div)?)
        }
    }])
}

/// Max (opsets 8–13): the elementwise maximum of any number of inputs.
pub fn max<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    Ok(vec![variadic(ctx, Op::Max)?])
}

/// Min (opsets 8–13): the elementwise minimum of any number of inputs.
pub fn min<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    Ok(vec![variadic(ctx, Op::Min)?])
}

/// Where (opsets 9–16): `condition ? X : Y`, the three broadcast together. A device condition
/// is a 0/1 float tensor (see the module header); nonzero is true.
pub fn where_<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims: Vec<Vec<usize>> = (0..3).map(|i| ctx.dims(i)).collect::<Result<_>>()?;
    let shape = check_broadcast(ctx, &dims[0], &dims[1])?;
    let shape = check_broadcast(ctx, &shape, &dims[2])?;
    if (0..3).all(|i| ctx.is_host(i)) {
        let (c, x, y) = (ctx.host(0)?, ctx.host(1)?, ctx.host(2)?);
        let [ic, ix, iy] = [&c, &x, &y].map(|t| broadcast_sources(&shape, &t.shape));
        let truth = c.to_f32();
        let take: Vec<bool> = ic.iter().map(|&i| truth[i] != 0.0).collect();
        let float = x.elem == Elem::Float || y.elem == Elem::Float;
        let data = if float {
            let (x, y) = (x.to_f32(), y.to_f32());
            HostData::F32(select(&take, &ix, &iy, &x, &y))
        } else {
            let (x, y) = (x.to_i64(), y.to_i64());
            HostData::I64(select(&take, &ix, &iy, &x, &y))
        };
        let elem = if float { Elem::Float } else { x.elem };
        return Ok(vec![Value::Host(HostTensor { shape, data, elem })]);
    }
    if shape.contains(&0) {
        return Ok(vec![super::shape::empty(shape)]);
    }
    ctx.check_rank("output", &shape)?;
    let full = storage_shape(&shape);
    let cond = if ctx.is_host(0) {
        let c = ctx.host(0)?;
        let bits: Vec<bool> = c.to_f32().iter().map(|&v| v != 0.0).collect();
        Tensor::<B, MAX_RANK, Bool>::from_data(
            TensorData::new(bits, storage_shape(&c.shape)),
            ctx.device,
        )
    } else {
        ctx.float(0)?.into_storage().not_equal_elem(0.0)
    };
    let x = ctx.float(1)?.into_storage().expand(full);
    let y: Storage<B> = ctx.float(2)?.into_storage().expand(full);
    let out = y.mask_where(cond.expand(full), x);
    Ok(vec![Value::Device(DynTensor::from_storage(
        out,
        shape.len(),
    ))])
}

/// `take[k] ? x[ix[k]] : y[iy[k]]` for every k.
fn select<T: Copy>(take: &[bool], ix: &[usize], iy: &[usize], x: &[T], y: &[T]) -> Vec<T> {
    take.iter()
        .enumerate()
        .map(|(k, &t)| if t { x[ix[k]] } else { y[iy[k]] })
        .collect()
}

/// The numpy broadcast of two shapes, or None when they are incompatible.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| -> usize {
        let pad = rank - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The broadcast of `a` and `b`, checked against the memory budget.
pub(super) fn check_broadcast<B: Backend>(
    ctx: &Ctx<B>,
    a: &[usize],
    b: &[usize],
) -> Result<Vec<usize>> {
    let shape = broadcast_shape(a, b)
        .ok_or_else(|| ctx.error(format!("shapes {a:?} and {b:?} do not broadcast")))?;
    // [2^20, 1] + [1, 2^20] is legal and 4 TiB: checked before it is made.
    ctx.fits("broadcast output", &shape, 8)?;
    Ok(shape)
}

/// For each element of the broadcast shape `shape` (row-major), the flat index of the element of
/// an operand of shape `s` that it reads.
pub(super) fn broadcast_sources(shape: &[usize], s: &[usize]) -> Vec<usize> {
    let pad = shape.len() - s.len();
    // The operand's stride along each axis of `shape`: 0 where it is broadcast.
    let mut strides = vec![0; shape.len()];
    let mut stride = 1;
    for k in (0..s.len()).rev() {
        if s[k] != 1 {
            strides[pad + k] = stride;
        }
        stride *= s[k];
    }
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut coord = vec![0; shape.len()];
    let mut at = 0;
    for _ in 0..n {
        out.push(at);
        // Step the coordinate like an odometer, moving the source index along.
        for d in (0..shape.len()).rev() {
            coord[d] += 1;
            at += strides[d];
            if coord[d] < shape[d] {
                break;
            }
            at -= strides[d] * shape[d];
            coord[d] = 0;
        }
    }
    out
}

/// Host values widened to f64 (integers exactly up to 2^53).
fn wide(t: &HostTensor) -> Vec<f64> {
    match t.data.wide() {
        Wide::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Wide::I64(v) => v.iter().map(|&x| x as f64).collect(),
    }
}

/// Numpy-broadcast `op` on host tensors (shape subgraphs, folded constants): in floats when
/// either input is float, else in integers.
fn host_binary<B: Backend>(
    ctx: &Ctx<B>,
    a: &HostTensor,
    b: &HostTensor,
    op: Op,
) -> Result<HostTensor> {
    let shape = check_broadcast(ctx, &a.shape, &b.shape)?;
    let (ia, ib) = (
        broadcast_sources(&shape, &a.shape),
        broadcast_sources(&shape, &b.shape),
    );
    let elem = op.elem(a.elem, b.elem);
    let data = if a.elem == Elem::Float || b.elem == Elem::Float {
        let (x, y) = (wide(a), wide(b));
        let values = ia.iter().zip(&ib).map(|(&i, &j)| op.float(x[i], y[j]));
        if elem == Elem::Float {
            HostData::F32(values.map(|v| v as f32).collect())
        } else {
            HostData::I64(values.map(|v| v as i64).collect())
        }
    } else {
        let (x, y) = (a.to_i64(), b.to_i64());
        HostData::I64(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    op.int(x[i], y[j]).ok_or_else(|| {
                        let (what, sign) = match op {
                            Op::Div => ("division", "/"),
                            _ => ("modulo", "%"),
                        };
                        ctx.error(format!("integer {what} by zero: {} {sign} 0", x[i]))
                    })
                })
                .collect::<Result<_>>()?,
        )
    };
    Ok(HostTensor { shape, data, elem })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_on};
    use crate::network::value::{DynTensor, Elem, HostTensor, Value};

    fn device(v: &[f32], shape: &[usize], on: &burn::DispatchDevice) -> Value {
        Value::Device(DynTensor::from_host(v, shape, on))
    }

    #[test]
    fn where_takes_a_host_mask_broadcasts_and_passes_gradients_to_the_branch_taken() {
        // [2, 1] mask, [1, 3] and [3] branches: ViT exports select between activations with a
        // mask computed on the host.
        let cpu = crate::Device::cpu();
        let on = cpu.autodiff();
        let x = DynTensor::from_host(&[1.0, 2.0, 3.0], &[1, 3], &on).require_grad();
        let y = DynTensor::from_host(&[-1.0, -2.0, -3.0], &[3], &on).require_grad();
        let mask = Value::Host(HostTensor::bool(vec![2, 1], vec![true, false]));
        let inputs = vec![mask, Value::Device(x.clone()), Value::Device(y.clone())];
        let Value::Device(out) = run_on("Where", 16, &[], inputs, &on).unwrap().remove(0) else {
            panic!("float branches give a device tensor");
        };
        assert_eq!(out.dims(), [2, 3]);
        assert_eq!(out.to_vec(), [1.0, 2.0, 3.0, -1.0, -2.0, -3.0]);
        let grads = out.backward();
        assert_eq!(x.grad(&grads).unwrap().to_vec(), [1.0; 3]);
        assert_eq!(y.grad(&grads).unwrap().to_vec(), [1.0; 3]);
    }

    /// A comparison's or a mask's output stays in the autodiff graph, with no gradient through
    /// it: a backward pass from it (the weights tab of such a layer) gives no gradient for the
    /// input, never a panic outside the graph.
    #[test]
    fn masks_on_the_device_stay_in_the_autodiff_graph_without_a_gradient() {
        let on = crate::Device::cpu().autodiff();
        for (op, inputs) in [("Greater", 2), ("And", 2), ("Not", 1), ("IsNaN", 1)] {
            let x = DynTensor::from_host(&[0.5, f32::NAN, -1.0], &[3], &on).require_grad();
            let b = DynTensor::from_host(&[0.0, 0.0, 0.0], &[3], &on);
            let mut args = vec![Value::Device(x.clone()), Value::Device(b)];
            args.truncate(inputs);
            let Value::Device(out) = run_on(op, 13, &[], args, &on).unwrap().remove(0) else {
                panic!("{op}: a device input gives a device mask");
            };
            let grads = out.backward();
            let g = x.grad(&grads).map(|g| g.to_vec());
            assert!(g.as_ref().is_none_or(|g| g == &[0.0; 3]), "{op}: {g:?}");
        }
    }

    #[test]
    fn comparisons_and_logic_on_the_device_are_masks_as_on_the_host() {
        let on = crate::Device::cpu();
        let (a, b) = ([0.0, 1.0, 2.0, -3.0], [1.0, 1.0, 0.0, 0.0]);
        let cases = [
            ("Less", [1.0, 0.0, 0.0, 1.0]),
            ("LessOrEqual", [1.0, 1.0, 0.0, 1.0]),
            ("Greater", [0.0, 0.0, 1.0, 0.0]),
            ("GreaterOrEqual", [0.0, 1.0, 1.0, 0.0]),
            ("And", [0.0, 1.0, 0.0, 0.0]),
            ("Or", [1.0, 1.0, 1.0, 1.0]),
            ("Xor", [1.0, 0.0, 1.0, 1.0]),
        ];
        for (op, want) in cases {
            let inputs = vec![device(&a, &[4], on.burn()), device(&b, &[4], on.burn())];
            let got = run(op, 16, &[], inputs).unwrap().remove(0);
            assert!(matches!(got, Value::Device(_)), "{op}");
            assert_eq!(got.to_host().to_f32(), want, "{op}");
            let host = |v: &[f32]| Value::Host(HostTensor::f32(vec![4], v.to_vec()));
            let Value::Host(h) = run(op, 16, &[], vec![host(&a), host(&b)])
                .unwrap()
                .remove(0)
            else {
                panic!("{op} of host tensors is computed on the host");
            };
            assert_eq!((h.elem, h.to_f32()), (Elem::Bool, want.to_vec()), "{op}");
        }
    }

    #[test]
    fn equal_on_the_device_is_a_mask_that_where_reads() {
        let on = crate::Device::cpu();
        let a = device(&[1.0, 2.0, 3.0, 4.0], &[4], on.burn());
        let b = device(&[3.0], &[1], on.burn());
        let mask = run("Equal", 19, &[], vec![a, b]).unwrap().remove(0);
        assert_eq!(mask.to_host().to_f32(), [0.0, 0.0, 1.0, 0.0]);
        let x = device(&[10.0; 4], &[4], on.burn());
        let y = device(&[20.0; 4], &[4], on.burn());
        let out = run("Where", 16, &[], vec![mask, x, y]).unwrap().remove(0);
        assert_eq!(out.to_host().to_f32(), [20.0, 20.0, 10.0, 20.0]);
    }

    #[test]
    fn a_constant_exponent_is_exact_for_negative_bases() {
        let on = crate::Device::cpu();
        for (e, want) in [(2.0, [4.0, 0.25, 9.0]), (3.0, [-8.0, -0.125, 27.0])] {
            let x = device(&[-2.0, -0.5, 3.0], &[3], on.burn());
            let e = Value::Host(HostTensor::f32(vec![], vec![e]));
            let y = run("Pow", 15, &[], vec![x, e]).unwrap().remove(0);
            assert_eq!(y.to_host().to_f32(), want);
        }
    }

    #[test]
    fn mod_floors_or_truncates_on_the_host_and_the_device_alike() {
        use crate::network::node::Attr;
        let (x, y) = ([-4, 7, 5, 4, -7, 8], [2, -3, 8, -2, 3, 5]);
        let host = |v: &[i64]| Value::Host(HostTensor::i64(vec![v.len()], v.to_vec()));
        let on = crate::Device::cpu();
        // A [2, 3] dividend against a [3] divisor broadcast over it, on the device.
        let fx: Vec<f32> = x.iter().map(|&v| v as f32 + 0.5).collect();
        let fy: Vec<f32> = y[..3].iter().map(|&v| v as f32).collect();
        for (fmod, ints, floats) in [
            (0, [0, -2, 5, 0, 2, 3], [0.5, -1.5, 5.5, 0.5, -0.5, 0.5]),
            (1, [0, 1, 5, 0, -1, 3], [-1.5, 1.5, 5.5, 0.5, -0.5, 0.5]),
        ] {
            let attrs = [("fmod", Attr::Int(fmod))];
            let Value::Host(z) = run("Mod", 13, &attrs, vec![host(&x), host(&y)])
                .unwrap()
                .remove(0)
            else {
                panic!("Mod of host integers is computed on the host");
            };
            assert_eq!(
                (z.elem, z.to_i64()),
                (Elem::Int, ints.to_vec()),
                "fmod {fmod}"
            );
            let (a, b) = (
                device(&fx, &[2, 3], on.burn()),
                device(&fy, &[3], on.burn()),
            );
            let z = run("Mod", 13, &attrs, vec![a, b]).unwrap().remove(0);
            assert_eq!(z.dims(), [2, 3]);
            assert_eq!(z.to_host().to_f32(), floats, "fmod {fmod}");
        }
        // No overflow at the edge of i64.
        let z = run("Mod", 13, &[], vec![host(&[i64::MIN]), host(&[-1])]).unwrap();
        assert_eq!(z[0].to_host().to_i64(), [0]);
    }

    #[test]
    fn integer_modulo_by_zero_is_an_error_naming_the_node() {
        use crate::network::node::Attr;
        for fmod in [0, 1] {
            let a = Value::Host(HostTensor::i64(vec![2], vec![56, 3]));
            let b = Value::Host(HostTensor::i64(vec![2], vec![7, 0]));
            let err = run("Mod", 13, &[("fmod", Attr::Int(fmod))], vec![a, b])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("node_under_test") && err.contains("modulo by zero: 3 % 0"),
                "{err}"
            );
        }
    }

    #[test]
    fn host_integers_stay_host_integers() {
        let a = Value::Host(HostTensor::i64(vec![3], vec![4, -7, 9]));
        let b = Value::Host(HostTensor::i64(vec![1], vec![5]));
        for (op, want) in [
            ("Max", [5, 5, 9]),
            ("Min", [4, -7, 5]),
            ("Pow", [1024, -16807, 59049]),
        ] {
            let Value::Host(y) = run(op, 13, &[], vec![a.clone(), b.clone()])
                .unwrap()
                .remove(0)
            else {
                panic!("{op} of host tensors is computed on the host");
            };
            assert_eq!((y.elem, y.to_i64()), (Elem::Int, want.to_vec()), "{op}");
        }
        let Value::Host(eq) = run("Equal", 19, &[], vec![a, b]).unwrap().remove(0) else {
            panic!("Equal of host tensors is computed on the host");
        };
        assert_eq!((eq.elem, eq.to_i64()), (Elem::Bool, vec![0, 0, 0]));
    }
}
