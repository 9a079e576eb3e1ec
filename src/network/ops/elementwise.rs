//! Elementwise operators: activations, arithmetic with numpy broadcasting, variadic Sum/Mean.

use burn::tensor::activation;

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{DynTensor, Elem, HostData, HostTensor, Storage};

fn unary(ctx: &Ctx, f: impl FnOnce(Storage) -> Storage) -> Result<Vec<Value>> {
    Ok(vec![Value::Device(ctx.float(0)?.map(f))])
}

/// A unary op that is also defined on integers: a host integer tensor (shape arithmetic) stays an
/// integer tensor on the host.
fn unary_int(
    ctx: &Ctx,
    f: impl FnOnce(Storage) -> Storage,
    int: fn(i64) -> i64,
) -> Result<Vec<Value>> {
    if ctx.is_host(0) {
        let h = ctx.host(0)?;
        if h.elem == Elem::Int {
            let data = h.to_i64().into_iter().map(int).collect();
            return Ok(vec![Value::Host(HostTensor::i64(h.shape, data))]);
        }
    }
    unary(ctx, f)
}

pub fn relu(ctx: &Ctx) -> Result<Vec<Value>> {
    unary(ctx, activation::relu)
}

pub fn leaky_relu(ctx: &Ctx) -> Result<Vec<Value>> {
    let alpha = ctx.node.float("alpha", 0.01)?;
    unary(ctx, |x| activation::leaky_relu(x, alpha as f64))
}

pub fn sigmoid(ctx: &Ctx) -> Result<Vec<Value>> {
    unary(ctx, activation::sigmoid)
}

pub fn erf(ctx: &Ctx) -> Result<Vec<Value>> {
    unary(ctx, |x| x.erf())
}

pub fn tanh(ctx: &Ctx) -> Result<Vec<Value>> {
    unary(ctx, |x| x.tanh())
}

/// Gelu (opset 20): `x·Φ(x)` with the exact normal CDF (`approximate = "none"`) or its tanh
/// approximation (`"tanh"`).
pub fn gelu(ctx: &Ctx) -> Result<Vec<Value>> {
    match ctx.node.string("approximate", "none")?.as_str() {
        // Φ(x) = (1 + erf(x / √2)) / 2
        "none" => unary(ctx, |x| {
            let cdf = x
                .clone()
                .div_scalar(std::f32::consts::SQRT_2)
                .erf()
                .add_scalar(1.0)
                .mul_scalar(0.5);
            x * cdf
        }),
        // Φ(x) ≈ (1 + tanh(√(2/π) · (x + 0.044715 x³))) / 2
        "tanh" => unary(ctx, |x| {
            let scale = (2.0 / std::f32::consts::PI).sqrt();
            let inner =
                (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar(scale);
            x * inner.tanh().add_scalar(1.0).mul_scalar(0.5)
        }),
        other => Err(ctx.error(format!(
            "approximate {other:?} is not one of Gelu's \"none\" and \"tanh\""
        ))),
    }
}

pub fn sqrt(ctx: &Ctx) -> Result<Vec<Value>> {
    unary(ctx, |x| x.sqrt())
}

pub fn reciprocal(ctx: &Ctx) -> Result<Vec<Value>> {
    unary(ctx, |x| x.recip())
}

pub fn exp(ctx: &Ctx) -> Result<Vec<Value>> {
    unary(ctx, |x| x.exp())
}

pub fn log(ctx: &Ctx) -> Result<Vec<Value>> {
    unary(ctx, |x| x.log())
}

pub fn neg(ctx: &Ctx) -> Result<Vec<Value>> {
    unary_int(ctx, |x| x.neg(), i64::wrapping_neg)
}

pub fn abs(ctx: &Ctx) -> Result<Vec<Value>> {
    unary_int(ctx, |x| x.abs(), i64::wrapping_abs)
}

pub fn hard_sigmoid(ctx: &Ctx) -> Result<Vec<Value>> {
    let alpha = ctx.node.float("alpha", 0.2)?;
    let beta = ctx.node.float("beta", 0.5)?;
    unary(ctx, |x| {
        x.mul_scalar(alpha).add_scalar(beta).clamp(0.0, 1.0)
    })
}

pub fn hard_swish(ctx: &Ctx) -> Result<Vec<Value>> {
    unary(ctx, |x| {
        let gate = x.clone().div_scalar(6.0).add_scalar(0.5).clamp(0.0, 1.0);
        x * gate
    })
}

pub fn prelu(ctx: &Ctx) -> Result<Vec<Value>> {
    let x = ctx.float(0)?;
    let slope = ctx.float(1)?;
    let rank = x.rank().max(slope.rank());
    let (x, slope) = (x.into_storage(), slope.into_storage());
    let y = x.clone().clamp_min(0.0) + slope * x.clamp_max(0.0);
    Ok(vec![Value::Device(DynTensor::from_storage(y, rank))])
}

pub fn clip(ctx: &Ctx) -> Result<Vec<Value>> {
    let (min, max) = if ctx.node.opset < 11 {
        (
            ctx.node.float("min", f32::NEG_INFINITY)?,
            ctx.node.float("max", f32::INFINITY)?,
        )
    } else {
        let bound = |i: usize, default: f32| -> Result<f32> {
            if ctx.has(i) {
                ctx.host(i)?
                    .to_f32()
                    .first()
                    .copied()
                    .ok_or_else(|| ctx.error("empty clip bound"))
            } else {
                Ok(default)
            }
        };
        (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
    };
    // ONNX: when min > max every element becomes max.
    unary(ctx, |x| {
        let x = if min.is_finite() { x.clamp_min(min) } else { x };
        if max.is_finite() {
            x.clamp_max(max)
        } else {
            x
        }
    })
}

pub fn identity(ctx: &Ctx) -> Result<Vec<Value>> {
    Ok(vec![ctx.value(0)?])
}

pub fn dropout(ctx: &Ctx) -> Result<Vec<Value>> {
    let training = ctx.has(2) && ctx.ints(2)?.first().copied().unwrap_or(0) != 0;
    let ratio = if ctx.has(1) {
        ctx.host(1)?.to_f32().first().copied().unwrap_or(0.5)
    } else {
        ctx.node.float("ratio", 0.5)?
    };
    if training && ratio > 0.0 {
        return Err(ctx.error("training-mode Dropout is not supported (inference runtime)"));
    }
    let x = ctx.value(0)?;
    let mut out = vec![x.clone()];
    if ctx.node.outputs.len() > 1 {
        let dims = x.dims();
        let n = dims.iter().product();
        out.push(Value::Host(HostTensor::bool(dims, vec![true; n])));
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

fn binary(ctx: &Ctx, op: Arith) -> Result<Vec<Value>> {
    if ctx.is_host(0) && ctx.is_host(1) {
        let (a, b) = (ctx.host(0)?, ctx.host(1)?);
        return Ok(vec![Value::Host(host_binary(ctx, &a, &b, op)?)]);
    }
    let (a, b) = (ctx.float(0)?, ctx.float(1)?);
    check_broadcast(ctx, &a.dims(), &b.dims())?;
    Ok(vec![Value::Device(device_binary(a, b, op))])
}

fn device_binary(a: DynTensor, b: DynTensor, op: Arith) -> DynTensor {
    let rank = a.rank().max(b.rank());
    let (a, b) = (a.into_storage(), b.into_storage());
    let y = match op {
        Arith::Add => a + b,
        Arith::Sub => a - b,
        Arith::Mul => a * b,
        Arith::Div => a / b,
    };
    DynTensor::from_storage(y, rank)
}

pub fn add(ctx: &Ctx) -> Result<Vec<Value>> {
    binary(ctx, Arith::Add)
}

pub fn sub(ctx: &Ctx) -> Result<Vec<Value>> {
    binary(ctx, Arith::Sub)
}

pub fn mul(ctx: &Ctx) -> Result<Vec<Value>> {
    binary(ctx, Arith::Mul)
}

pub fn div(ctx: &Ctx) -> Result<Vec<Value>> {
    binary(ctx, Arith::Div)
}

fn variadic(ctx: &Ctx) -> Result<DynTensor> {
    let mut acc = ctx.float(0)?;
    for i in 1..ctx.arity() {
        let next = ctx.float(i)?;
        check_broadcast(ctx, &acc.dims(), &next.dims())?;
        acc = device_binary(acc, next, Arith::Add);
    }
    Ok(acc)
}

pub fn sum(ctx: &Ctx) -> Result<Vec<Value>> {
    Ok(vec![Value::Device(variadic(ctx)?)])
}

pub fn mean(ctx: &Ctx) -> Result<Vec<Value>> {
    let n = ctx.arity() as f32;
    Ok(vec![Value::Device(variadic(ctx)?.map(|t| t.div_scalar(n)))])
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

fn check_broadcast(ctx: &Ctx, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let shape = broadcast_shape(a, b)
        .ok_or_else(|| ctx.error(format!("shapes {a:?} and {b:?} do not broadcast")))?;
    // [2^20, 1] + [1, 2^20] is legal and 4 TiB: checked before it is made.
    ctx.fits("broadcast output", &shape, 8)?;
    Ok(shape)
}

/// Numpy-broadcast arithmetic on host tensors (used by shape subgraphs).
fn host_binary(ctx: &Ctx, a: &HostTensor, b: &HostTensor, op: Arith) -> Result<HostTensor> {
    let shape = check_broadcast(ctx, &a.shape, &b.shape)?;
    let n: usize = shape.iter().product();
    let index = |s: &[usize], flat: usize| -> usize {
        // Map a flat index of the broadcast shape onto a (possibly smaller) operand.
        let pad = shape.len() - s.len();
        let (mut rem, mut idx, mut stride) = (flat, 0, 1);
        for d in (0..shape.len()).rev() {
            let coord = rem % shape[d];
            rem /= shape[d];
            if d >= pad {
                let size = s[d - pad];
                if size != 1 {
                    idx += coord * stride;
                }
                stride *= size;
            }
        }
        idx
    };
    if a.elem == Elem::Float || b.elem == Elem::Float {
        let (x, y) = (a.to_f32(), b.to_f32());
        let data = (0..n)
            .map(|i| {
                let (p, q) = (x[index(&a.shape, i)], y[index(&b.shape, i)]);
                match op {
                    Arith::Add => p + q,
                    Arith::Sub => p - q,
                    Arith::Mul => p * q,
                    Arith::Div => p / q,
                }
            })
            .collect();
        return Ok(HostTensor::f32(shape, data));
    }
    let (x, y) = (a.to_i64(), b.to_i64());
    let mut data = Vec::with_capacity(n);
    for i in 0..n {
        let (p, q) = (x[index(&a.shape, i)], y[index(&b.shape, i)]);
        data.push(match op {
            Arith::Add => p.wrapping_add(q),
            Arith::Sub => p.wrapping_sub(q),
            Arith::Mul => p.wrapping_mul(q),
            Arith::Div => p
                .checked_div(q)
                .ok_or_else(|| ctx.error("integer division by zero"))?,
        });
    }
    Ok(HostTensor {
        shape,
        data: HostData::I64(data),
        elem: Elem::Int,
    })
}
