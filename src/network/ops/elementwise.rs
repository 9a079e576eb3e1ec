//! Elementwise operators of one input: activations and unary math. (Those of several inputs,
//! with broadcasting, are in `binary.rs`.)

use burn::prelude::Backend;
use burn::tensor::activation;

use super::{Back, Ctx, Value};
use crate::error::Result;
use crate::network::value::{DynTensor, Elem, HostTensor, Storage};

fn unary<B: Backend>(
    ctx: &Ctx<B>,
    f: impl FnOnce(Storage<B>) -> Storage<B>,
) -> Result<Vec<Value<B>>> {
    Ok(vec![Value::Device(ctx.float(0)?.map(f))])
}

/// A unary op that is also defined on integers: a host integer tensor (shape arithmetic) stays an
/// integer tensor on the host.
fn unary_int<B: Backend>(
    ctx: &Ctx<B>,
    f: impl FnOnce(Storage<B>) -> Storage<B>,
    int: fn(i64) -> i64,
) -> Result<Vec<Value<B>>> {
    if ctx.is_host(0) {
        let h = ctx.host(0)?;
        if h.elem == Elem::Int {
            let data = h.to_i64().into_iter().map(int).collect();
            return Ok(vec![Value::Host(HostTensor::i64(h.shape, data))]);
        }
    }
    unary(ctx, f)
}

/// The output `y` of a node that cuts its input `x` off ([`OpSpec::cuts_off`](super::OpSpec)),
/// with the identity's gradient instead of its own: `x + detached(y - x)`, the same value as `y`.
/// Lucid's "redirected" ReLU passes only the gradient that pushes a dead input up, and only for
/// images whose gradient would otherwise be zero; that needs the incoming gradient's sign, and
/// burn's autodiff has no custom backward for the dispatch backend. Every backward pass is linear
/// in the incoming gradient, so no forward-only expression can choose by its sign: this passes
/// all of it, for the few first steps that feature visualization uses it.
pub(crate) fn pass_gradient_through<B: Backend>(
    ctx: &Ctx<B>,
    mut outs: Vec<Value<B>>,
) -> Result<Vec<Value<B>>> {
    if let Some(Value::Device(y)) = outs.first() {
        let x = ctx.float(0)?;
        if x.dims() == y.dims() {
            let rank = y.rank();
            let (x, y) = (x.into_storage(), y.clone().into_storage());
            let through = x.clone() + (y - x).detach();
            outs[0] = Value::Device(DynTensor::from_storage(through, rank));
        }
    }
    Ok(outs)
}

pub fn relu<B: Back>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| {
        B::rectified(&x).unwrap_or_else(|| activation::relu(x))
    })
}

pub fn leaky_relu<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let alpha = ctx.node.float("alpha", 0.01)?;
    unary(ctx, |x| activation::leaky_relu(x, alpha as f64))
}

pub fn sigmoid<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, activation::sigmoid)
}

pub fn erf<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.erf())
}

pub fn tanh<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.tanh())
}

/// Gelu (opset 20): `x·Φ(x)` with the exact normal CDF (`approximate = "none"`) or its tanh
/// approximation (`"tanh"`).
pub fn gelu<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
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

pub fn sqrt<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.sqrt())
}

pub fn reciprocal<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.recip())
}

pub fn exp<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.exp())
}

pub fn log<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.log())
}

pub fn neg<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary_int(ctx, |x| x.neg(), i64::wrapping_neg)
}

pub fn abs<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary_int(ctx, |x| x.abs(), i64::wrapping_abs)
}

/// Not (opset 1): logical negation. Host booleans (masks built from shapes and constants) stay
/// host booleans; a device boolean is a 0/1 float tensor (see binary.rs). Nonzero reads as true.
pub fn not<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    if ctx.is_host(0) {
        let h = ctx.host(0)?;
        let data = h.to_f32().iter().map(|&v| v == 0.0).collect();
        return Ok(vec![Value::Host(HostTensor::bool(h.shape, data))]);
    }
    unary(ctx, |x| x.equal_elem(0.0).float())
}

pub fn hard_sigmoid<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let alpha = ctx.node.float("alpha", 0.2)?;
    let beta = ctx.node.float("beta", 0.5)?;
    unary(ctx, |x| {
        x.mul_scalar(alpha).add_scalar(beta).clamp(0.0, 1.0)
    })
}

pub fn hard_swish<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| {
        let gate = x.clone().div_scalar(6.0).add_scalar(0.5).clamp(0.0, 1.0);
        x * gate
    })
}

pub fn prelu<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let slope = ctx.float(1)?;
    // The slope broadcasts to the input, never the other way.
    let (xd, sd) = (x.dims(), slope.dims());
    if super::binary::broadcast_shape(&xd, &sd).as_ref() != Some(&xd) {
        return Err(ctx.error(format!(
            "slope {sd:?} does not broadcast to the input {xd:?}"
        )));
    }
    let rank = x.rank();
    let (x, slope) = (x.into_storage(), slope.into_storage());
    let y = x.clone().clamp_min(0.0) + slope * x.clamp_max(0.0);
    Ok(vec![Value::Device(DynTensor::from_storage(y, rank))])
}

pub fn clip<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
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

pub fn identity<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    Ok(vec![ctx.value(0)?])
}

pub fn dropout<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
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

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use crate::network::value::{DynTensor, Elem, HostTensor, Value};

    #[test]
    fn not_keeps_host_booleans_and_reads_device_masks_as_nonzero() {
        let mask = Value::Host(HostTensor::bool(vec![2, 2], vec![true, false, false, true]));
        let Value::Host(y) = run("Not", 1, &[], vec![mask]).unwrap().remove(0) else {
            panic!("Not of a host boolean is computed on the host");
        };
        assert_eq!(
            (y.elem, y.shape.clone(), y.to_i64()),
            (Elem::Bool, vec![2, 2], vec![0, 1, 1, 0])
        );
        let on = crate::Device::cpu();
        let x = DynTensor::from_host(&[1.0, 0.0, 0.0, 1.0], &[4], on.burn());
        let y = run("Not", 1, &[], vec![Value::Device(x)])
            .unwrap()
            .remove(0);
        assert_eq!(y.to_host().to_f32(), [0.0, 1.0, 1.0, 0.0]);
    }
}
