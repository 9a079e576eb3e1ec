//! Elementwise operators of one input: activations and unary math. (Those of several inputs,
//! with broadcasting, are in `binary.rs`.)

use burn::prelude::Backend;
use burn::tensor::activation;

use super::{Back, Ctx, Value};
use crate::error::Result;
use crate::network::value::{mask_to_float, DynTensor, Elem, HostTensor, Storage, MAX_RANK};

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

pub fn sin<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.sin())
}

pub fn cos<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.cos())
}

pub fn tan<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.tan())
}

pub fn asin<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.asin())
}

pub fn acos<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.acos())
}

pub fn atan<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.atan())
}

pub fn sinh<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.sinh())
}

pub fn cosh<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.cosh())
}

pub fn asinh<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.asinh())
}

pub fn acosh<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.acosh())
}

pub fn atanh<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.atanh())
}

/// Floor, Ceil and Round (half to even, as ONNX and burn both say): host integers are already
/// whole.
pub fn floor<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary_int(ctx, |x| x.floor(), |v| v)
}

pub fn ceil<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary_int(ctx, |x| x.ceil(), |v| v)
}

pub fn round<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary_int(ctx, |x| x.round(), |v| v)
}

pub fn sign<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary_int(ctx, |x| x.sign(), i64::signum)
}

/// `log(1 + exp(x))` as `max(x, 0) + log1p(exp(-|x|))`, which neither overflows nor loses the
/// small values.
fn softplus_of<B: Backend>(x: Storage<B>) -> Storage<B> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}

/// `alpha · (exp(min(x, 0) / scale) − 1)`: the negative side of Elu, Selu and Celu (0 for
/// x ≥ 0, where its gradient is 0 too).
fn exp_below_zero<B: Backend>(x: Storage<B>, alpha: f32, scale: f32) -> Storage<B> {
    x.clamp_max(0.0)
        .div_scalar(scale)
        .exp()
        .sub_scalar(1.0)
        .mul_scalar(alpha)
}

pub fn softplus<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, softplus_of)
}

pub fn softsign<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.clone() / x.abs().add_scalar(1.0))
}

/// Swish (opset 24): `x · sigmoid(alpha · x)`, SiLU at `alpha` 1.
pub fn swish<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let alpha = ctx.node.float("alpha", 1.0)?;
    unary(ctx, |x| {
        x.clone() * activation::sigmoid(x.mul_scalar(alpha))
    })
}

/// Shrink: `x − bias` above `lambd`, `x + bias` below `−lambd`, 0 between (PyTorch's
/// Hardshrink and Softshrink).
pub fn shrink<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let lambd = ctx.node.float("lambd", 0.5)?;
    let bias = ctx.node.float("bias", 0.0)?;
    // PyTorch's shrinks ask the same; a negative one would make the clamp below invalid.
    if !(lambd.is_finite() && lambd >= 0.0) {
        return Err(ctx.error(format!(
            "lambd must be a finite number, 0 or more, not {lambd}"
        )));
    }
    // An infinite one would give NaN (0 · ∞) between the bounds, where Shrink is 0.
    if !bias.is_finite() {
        return Err(ctx.error(format!("bias must be a finite number, not {bias}")));
    }
    // From float ops alone (a comparison's mask is not an autodiff tensor): `s = x − clamp(x,
    // −lambd, lambd)` is `x ∓ lambd` outside the bounds and 0 between, and its sign moves the
    // outside by `lambd − bias`, with no gradient of its own.
    unary(ctx, |x| {
        let s = x.clone() - x.clamp(-lambd, lambd);
        s.clone() + s.sign().mul_scalar(lambd - bias)
    })
}

/// Mish (opset 18): `x · tanh(softplus(x))`.
pub fn mish<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    unary(ctx, |x| x.clone() * softplus_of(x).tanh())
}

pub fn elu<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let alpha = ctx.node.float("alpha", 1.0)?;
    unary(ctx, |x| {
        x.clone().clamp_min(0.0) + exp_below_zero(x, alpha, 1.0)
    })
}

/// Selu: `gamma · elu_alpha(x)`, with ONNX's defaults (the self-normalizing constants).
pub fn selu<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let alpha = ctx.node.float("alpha", 1.673_263_2)?;
    let gamma = ctx.node.float("gamma", 1.050_701)?;
    unary(ctx, |x| {
        (x.clone().clamp_min(0.0) + exp_below_zero(x, alpha, 1.0)).mul_scalar(gamma)
    })
}

/// Celu (opset 12): `max(0, x) + min(0, alpha · (exp(x / alpha) − 1))`.
pub fn celu<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let alpha = ctx.node.float("alpha", 1.0)?;
    if alpha == 0.0 {
        return Err(ctx.error("alpha must not be 0"));
    }
    unary(ctx, |x| {
        x.clone().clamp_min(0.0) + exp_below_zero(x, alpha, alpha)
    })
}

/// ThresholdedRelu: `x` above `alpha`, else 0.
pub fn thresholded_relu<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let alpha = ctx.node.float("alpha", 1.0)?;
    unary(ctx, |x| {
        let off = x.clone().lower_equal_elem(alpha);
        x.mask_fill(off, 0.0)
    })
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
    unary(ctx, |x| mask_to_float(x.clone(), x.equal_elem(0.0)))
}

/// IsNaN (opsets 9–20): a mask of the NaN values. PyTorch's exporter guards attention's
/// softmax with it (rows that a mask leaves empty). Host floats give host booleans; integers
/// are never NaN.
pub fn is_nan<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    mask_of(ctx, f32::is_nan, |x| x.is_nan())
}

/// IsInf (opsets 10–20): a mask of the infinite values, of either sign unless
/// `detect_negative` or `detect_positive` is 0.
pub fn is_inf<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let negative = ctx.node.int("detect_negative", 1)? != 0;
    let positive = ctx.node.int("detect_positive", 1)? != 0;
    let wanted =
        move |v: f32| (v == f32::INFINITY && positive) || (v == f32::NEG_INFINITY && negative);
    mask_of(ctx, wanted, move |x| {
        let up = x.clone().equal_elem(f32::INFINITY);
        let down = x.equal_elem(f32::NEG_INFINITY);
        match (positive, negative) {
            (true, true) => up.bool_or(down),
            (true, false) => up,
            (false, true) => down,
            (false, false) => up.bool_and(down),
        }
    })
}

/// A mask of the values for which `host` holds (`device` on the device, as 0/1 floats).
fn mask_of<B: Backend>(
    ctx: &Ctx<B>,
    host: impl Fn(f32) -> bool,
    device: impl FnOnce(Storage<B>) -> burn::Tensor<B, MAX_RANK, burn::tensor::Bool>,
) -> Result<Vec<Value<B>>> {
    if ctx.is_host(0) {
        let h = ctx.host(0)?;
        let data = if h.elem == Elem::Float {
            h.to_f32().into_iter().map(host).collect()
        } else {
            vec![false; h.len()]
        };
        return Ok(vec![Value::Host(HostTensor::bool(h.shape, data))]);
    }
    unary(ctx, |x| mask_to_float(x.clone(), device(x)))
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
    use super::super::testing::{run, values_and_gradient};
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, Elem, HostTensor, Value};

    #[test]
    fn smooth_activations_stay_finite_far_out_and_pass_gradients() {
        // Feature visualization pushes activations far: exp(100) overflows a naive softplus.
        let xs = [-100.0, -1.0, 0.0, 1.0, 100.0];
        for op in [
            "Softplus", "Mish", "Swish", "Elu", "Selu", "Celu", "Softsign",
        ] {
            let opset = if op == "Swish" { 24 } else { 18 };
            let (y_values, g) = values_and_gradient(op, opset, &[], &xs, &[xs.len()]);
            assert!(
                y_values.iter().chain(&g).all(|v| v.is_finite()),
                "{op}: {y_values:?} {g:?}"
            );
            // Each rises at 1, and is about x (times Selu's gamma) far above 0.
            assert!(g[3] > 0.0, "{op}: {g:?}");
            let top = if op == "Selu" { 105.07 } else { 100.0 };
            if op != "Softsign" {
                assert!((y_values[4] - top).abs() < 0.01, "{op}: {y_values:?}");
                assert!((g[4] - top / 100.0).abs() < 1e-3, "{op}: {g:?}");
            }
        }
    }

    #[test]
    fn trigonometric_ops_pass_their_derivatives() {
        let ops = [
            "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
        ];
        for op in ops {
            // Inside every op's domain (Acosh's starts at 1).
            let xs: &[f32] = if op == "Acosh" {
                &[1.5, 2.0]
            } else {
                &[-0.4, 0.3]
            };
            let h = 1e-2;
            let up: Vec<f32> = xs.iter().map(|x| x + h).collect();
            let down: Vec<f32> = xs.iter().map(|x| x - h).collect();
            let (fu, fd) = (
                values_and_gradient(op, 22, &[], &up, &[up.len()]).0,
                values_and_gradient(op, 22, &[], &down, &[down.len()]).0,
            );
            let g = values_and_gradient(op, 22, &[], xs, &[xs.len()]).1;
            for i in 0..xs.len() {
                let numeric = (fu[i] - fd[i]) / (2.0 * h);
                assert!(
                    (g[i] - numeric).abs() < 1e-2 * numeric.abs().max(1.0),
                    "{op} at {}: gradient {} against {numeric}",
                    xs[i],
                    g[i]
                );
            }
        }
    }

    #[test]
    fn shrink_is_zero_between_the_bounds_and_passes_gradients_outside() {
        let attrs = [("lambd", Attr::Float(0.5)), ("bias", Attr::Float(0.25))];
        let (y_values, g) =
            values_and_gradient("Shrink", 9, &attrs, &[-1.0, -0.2, 0.0, 0.3, 2.0], &[5]);
        assert_eq!(y_values, [-0.75, 0.0, 0.0, 0.0, 1.75]);
        assert_eq!(g, [1.0, 0.0, 0.0, 0.0, 1.0]);
        let on = crate::Device::cpu();
        let x = DynTensor::from_host(&[1.0], &[1], on.burn());
        for attrs in [
            [("lambd", Attr::Float(-1.0))],
            [("bias", Attr::Float(f32::INFINITY))],
        ] {
            let err = run("Shrink", 9, &attrs, vec![Value::Device(x.clone())]).unwrap_err();
            assert!(err.to_string().contains(attrs[0].0), "{err}");
        }
    }

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
