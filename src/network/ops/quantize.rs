//! QuantizeLinear and DequantizeLinear, the Q/DQ pairs of a quantized model in ONNX's QDQ
//! format (what onnxruntime's `quantize_static`, PyTorch's quantization export and TensorRT's
//! tools write), and DynamicQuantizeLinear (onnxruntime's `quantize_dynamic`). The integer ops
//! of the other formats run as these around a float op (network/lower.rs).
//!
//! Quantized values are integers, held as floats on the device (8- and 16-bit integers are exact
//! in f32) and as i64 on the host, or 8- and 4-bit floats (float8 quantization), held as the f32
//! values they stand for on both (network/minifloat.rs). Weights are stored quantized with a DequantizeLinear each:
//! those fold into float constants when the network loads, so a convolution's weights tab shows
//! the dequantized weights the model computes with. Activations pass a QuantizeLinear and a
//! DequantizeLinear on every evaluation, with the values onnxruntime computes.
//!
//! The gradient through QuantizeLinear is the straight-through estimator that quantization-aware
//! training uses (PyTorch's `FakeQuantize`): rounding passes the gradient as if it were the
//! identity, and the clamp to the type's range stops it outside that range. Rounding's own
//! gradient is zero everywhere, so without this no feature visualization or attribution could
//! see through a quantized layer.

use burn::prelude::Backend;

use super::{Back, Ctx, Slot, Value};
use crate::error::Result;
use crate::network::minifloat::{self, Format};
use crate::network::value::{type_name, DynTensor, HostData, HostTensor, Storage};

/// ONNX element type codes this runtime quantizes to, with their ranges.
fn integer_range(code: i64) -> Option<(f32, f32)> {
    Some(match code {
        2 => (0.0, 255.0),        // UINT8
        3 => (-128.0, 127.0),     // INT8
        4 => (0.0, 65535.0),      // UINT16
        5 => (-32768.0, 32767.0), // INT16
        21 => (0.0, 15.0),        // UINT4
        22 => (-8.0, 7.0),        // INT4
        _ => return None,
    })
}

/// How a scale (and zero point) maps onto the input: one value, one per index along `axis`, or
/// one per block of `block` indices along `axis` (opset 21's blocked quantization, where the
/// scale has the input's rank).
#[derive(Clone, Debug)]
struct Layout {
    dims: Vec<usize>,
    axis: usize,
    block: usize,
    /// The scale's shape.
    param: Vec<usize>,
}

impl Layout {
    fn of<B: Backend>(ctx: &Ctx<B>, dims: &[usize]) -> Result<Self> {
        let param = ctx.dims(1)?;
        let count: usize = param.iter().product();
        // One value may be a scalar beside a `[1]` (onnxruntime writes both); more must match.
        if ctx.has(2) {
            let zero = ctx.dims(2)?;
            if zero != param && (count != 1 || zero.iter().product::<usize>() != 1) {
                return Err(ctx.error(format!(
                    "zero point {zero:?} does not have the scale's shape {param:?}"
                )));
            }
        }
        let block = usize::try_from(ctx.node.int("block_size", 0)?)
            .map_err(|_| ctx.error("block_size is negative"))?;
        if count == 1 && block == 0 {
            return Ok(Layout {
                dims: dims.to_vec(),
                axis: 0,
                block: 0,
                param,
            });
        }
        if dims.is_empty() {
            return Err(ctx.error(format!(
                "scale {param:?} has more than one value for a scalar input"
            )));
        }
        let axis = ctx.axis(ctx.node.int("axis", 1)?, dims.len())?;
        if block == 0 {
            if param.len() != 1 || param[0] != dims[axis] {
                return Err(ctx.error(format!(
                    "scale {param:?} must be one value or one for each of the input's {} \
                     indices along axis {axis} (input {dims:?})",
                    dims[axis]
                )));
            }
        } else {
            let mut want = dims.to_vec();
            want[axis] = dims[axis].div_ceil(block);
            if param != want {
                return Err(ctx.error(format!(
                    "scale {param:?} must be {want:?} for blocks of {block} along axis {axis} \
                     of input {dims:?}"
                )));
            }
        }
        Ok(Layout {
            dims: dims.to_vec(),
            axis,
            block,
            param,
        })
    }

    fn scalar(&self) -> bool {
        self.param.iter().product::<usize>() == 1 && self.block == 0
    }

    /// The index into the scale of each element of the input, in row-major order (computed as
    /// read: a list of them would take twice the input's memory).
    fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        let n: usize = self.dims.iter().product();
        let (inner, along) = match self.scalar() {
            true => (1, 1),
            false => (
                self.dims[self.axis + 1..].iter().product::<usize>(),
                self.dims[self.axis],
            ),
        };
        (0..n).map(move |k| {
            if self.scalar() {
                return 0;
            }
            let i = (k / inner) % along;
            match i.checked_div(self.block) {
                None => i,
                // Blocked: the scale has the input's shape with the axis divided into blocks.
                Some(block) => {
                    (k / (inner * along) * self.param[self.axis] + block) * inner + k % inner
                }
            }
        })
    }

    /// A parameter as a device tensor that broadcasts against the input.
    fn broadcast<B: Backend>(&self, ctx: &Ctx<B>, i: usize) -> Result<DynTensor<B>> {
        if self.block == 0 {
            // One value per index along the axis: `[C, 1, …]` after the axis.
            let mut shape = vec![self.dims[self.axis]];
            shape.extend(std::iter::repeat_n(1, self.dims.len() - self.axis - 1));
            return Ok(ctx.float(i)?.reshape(&shape));
        }
        ctx.fits("the expanded scale", &self.dims, 4)?;
        let values = ctx.host(i)?.to_f32();
        let full: Vec<f32> = self.indices().map(|k| values[k]).collect();
        Ok(DynTensor::from_host_on(&full, &self.dims, ctx.device))
    }
}

/// A scale or zero point, as it meets the input on the device.
enum Param<B: Backend> {
    /// One value, on the host: a scalar op.
    Scalar(f32),
    /// A tensor that broadcasts against the input.
    Tensor(Storage<B>),
}

impl<B: Backend> Param<B> {
    fn divide(self, x: Storage<B>) -> Storage<B> {
        match self {
            Param::Scalar(v) => x.div_scalar(v),
            Param::Tensor(t) => x / t,
        }
    }

    fn multiply(self, x: Storage<B>) -> Storage<B> {
        match self {
            Param::Scalar(v) => x.mul_scalar(v),
            Param::Tensor(t) => x * t,
        }
    }

    fn add(self, x: Storage<B>) -> Storage<B> {
        match self {
            Param::Scalar(v) => x.add_scalar(v),
            Param::Tensor(t) => x + t,
        }
    }

    fn subtract_from(self, x: Storage<B>) -> Storage<B> {
        match self {
            Param::Scalar(v) => x.sub_scalar(v),
            Param::Tensor(t) => x - t,
        }
    }
}

impl Layout {
    /// Parameter input `i` on the device side: a scalar with a host copy (a constant's) stays a
    /// number; one only on the device (DynamicQuantizeLinear's) is used where it is, without
    /// reading it back.
    fn param<B: Backend>(&self, ctx: &Ctx<B>, i: usize) -> Result<Param<B>> {
        let on_host = matches!(ctx.inputs.get(i), Some(Some(Slot { host: Some(_), .. })));
        Ok(match (self.scalar(), on_host) {
            (true, true) => Param::Scalar(ctx.host(i)?.to_f32()[0]),
            (true, false) => Param::Tensor(ctx.float(i)?.reshape(&[]).into_storage()),
            (false, _) => Param::Tensor(self.broadcast(ctx, i)?.into_storage()),
        })
    }
}

/// `round(u)` (half to even) with the identity's gradient: quantization-aware training's
/// straight-through estimator.
fn straight_through_round<B: Backend>(u: Storage<B>) -> Storage<B> {
    u.clone() + (u.clone().round() - u).detach()
}

/// What a QuantizeLinear rounds to.
enum Output {
    /// An integer type's range.
    Integer(f32, f32),
    /// A small float type (float8 and float4 quantization), saturating or not (`saturate`).
    Float(&'static Format, bool),
}

/// The output type of a QuantizeLinear: its `output_dtype` (the importer sets it from the zero
/// point's declared type where the file leaves it out), else ONNX's default, UINT8.
fn output_type<B: Backend>(ctx: &Ctx<B>) -> Result<Output> {
    let code = match ctx.node.int("output_dtype", 0)? {
        0 if ctx.has(2) => {
            return Err(ctx.error(format!(
                "the element type of its zero point {:?} is not declared in the file (by an \
                 initializer, a Constant or a graph input), so the integer range is unknown",
                ctx.node.inputs[2]
            )))
        }
        0 => 2,
        code => code,
    };
    if let Some(format) = minifloat::format(code) {
        return Ok(Output::Float(format, ctx.node.int("saturate", 1)? != 0));
    }
    let (lo, hi) = integer_range(code).ok_or_else(|| {
        ctx.error(format!(
            "quantizing to {} is not supported (UINT4, INT4, UINT8, INT8, UINT16, INT16, \
             FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ and FLOAT4E2M1 are)",
            type_name(code as i32)
        ))
    })?;
    Ok(Output::Integer(lo, hi))
}

/// `y = saturate(round(x / scale) + zero_point)`, rounding half to even; to a float type,
/// `y = round(x / scale + zero_point)` to the type's nearest value, saturating unless
/// `saturate` is 0.
pub fn quantize_linear<B: Back>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let output = output_type(ctx)?;
    let layout = Layout::of(ctx, &ctx.dims(0)?)?;
    if ctx.is_host(0) {
        let x = ctx.host(0)?.to_f32();
        let (scale, zero) = host_params(ctx)?;
        ctx.fits("the output", &layout.dims, 8)?;
        let dims = layout.dims.clone();
        let y = layout.indices().zip(x);
        return Ok(vec![Value::Host(match output {
            Output::Integer(lo, hi) => HostTensor::i64(
                dims,
                y.map(|(k, x)| ((x / scale[k]).round_ties_even() + zero[k]).clamp(lo, hi) as i64)
                    .collect(),
            ),
            Output::Float(format, saturate) => HostTensor::f32(
                dims,
                y.map(|(k, x)| format.round(x / scale[k] + zero[k], saturate))
                    .collect(),
            ),
        })]);
    }
    let x = ctx.float(0)?;
    let rank = x.rank();
    let u = layout.param(ctx, 1)?.divide(x.into_storage());
    let y = match output {
        Output::Integer(lo, hi) => match ctx.has(2) {
            true => layout.param(ctx, 2)?.add(straight_through_round(u)),
            false => straight_through_round(u),
        }
        .clamp(lo, hi),
        Output::Float(format, saturate) => {
            let u = match ctx.has(2) {
                true => layout.param(ctx, 2)?.add(u),
                false => u,
            };
            straight_through_float(format, u, saturate)
        }
    };
    Ok(vec![Value::Device(DynTensor::from_storage(y, rank))])
}

/// `u` rounded to a small float type, with the straight-through gradient: the identity within
/// the type's range, zero beyond it (where it saturates). On the CPU the rounding is one pass
/// over the values on the host ([`Format::round_on_host`]).
pub(crate) fn straight_through_float<B: Back>(
    format: &Format,
    u: Storage<B>,
    saturate: bool,
) -> Storage<B> {
    // NaN's place holds 0, so that what it rounds to comes out (float4 has no NaN).
    let nan = u.clone().is_nan();
    let inside = u.clone().clamp(-format.max, format.max).mask_fill(nan, 0.0);
    let rounded = match B::is_cpu(&u.device()) {
        true => format.round_on_host(u, saturate),
        false => format.round_tensor(u, saturate),
    };
    inside.clone() + (rounded - inside).detach()
}

/// `y = (x - zero_point) * scale`.
pub fn dequantize_linear<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let layout = Layout::of(ctx, &ctx.dims(0)?)?;
    if ctx.is_host(0) {
        // A quantized weight: folded into a float constant when the network loads.
        let x = ctx.host_ref(0)?;
        let (scale, zero) = host_params(ctx)?;
        ctx.fits("the output", &layout.dims, 4)?;
        let k = layout.indices();
        let y = match &x.data {
            HostData::F32(x) => k.zip(x).map(|(k, &x)| (x - zero[k]) * scale[k]).collect(),
            HostData::I64(x) => k
                .zip(x)
                .map(|(k, &x)| (x as f32 - zero[k]) * scale[k])
                .collect(),
            HostData::I8(x) => k
                .zip(x)
                .map(|(k, &x)| (f32::from(x) - zero[k]) * scale[k])
                .collect(),
            HostData::U8(x) => k
                .zip(x)
                .map(|(k, &x)| (f32::from(x) - zero[k]) * scale[k])
                .collect(),
        };
        return Ok(vec![Value::Host(HostTensor::f32(layout.dims, y))]);
    }
    let x = ctx.float(0)?;
    let rank = x.rank();
    let mut y = x.into_storage();
    if ctx.has(2) {
        y = layout.param(ctx, 2)?.subtract_from(y);
    }
    let y = layout.param(ctx, 1)?.multiply(y);
    Ok(vec![Value::Device(DynTensor::from_storage(y, rank))])
}

/// DynamicQuantizeLinear: `x` as UINT8, with the scale and zero point that map
/// `[min(x, 0), max(x, 0)]` onto `[0, 255]` (onnxruntime's `quantize_dynamic` puts one before
/// each MatMulInteger and ConvInteger). The scale and zero point carry no gradient, so the
/// gradient through the quantized matrix product is the float one's.
pub fn dynamic_quantize_linear<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    if dims.contains(&0) {
        return Err(ctx.error(format!("input {dims:?} is empty")));
    }
    if ctx.is_host(0) {
        let x = ctx.host(0)?.to_f32();
        let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
        let hi = x.iter().fold(0.0f32, |m, &v| m.max(v));
        let scale = (hi - lo) / 255.0;
        let safe = scale.max(f32::MIN_POSITIVE);
        let zero = (-lo / safe).round_ties_even().clamp(0.0, 255.0);
        ctx.fits("the output", &dims, 8)?;
        let y = x
            .iter()
            .map(|&v| ((v / safe).round_ties_even() + zero).clamp(0.0, 255.0) as i64)
            .collect();
        return Ok(vec![
            Value::Host(HostTensor::i64(dims, y)),
            Value::Host(HostTensor::f32(vec![], vec![scale])),
            Value::Host(HostTensor::i64(vec![], vec![zero as i64])),
        ]);
    }
    let x = ctx.float(0)?;
    let rank = x.rank();
    let x = x.into_storage();
    let whole = |t: burn::tensor::Tensor<B, 1>| t.reshape([1; crate::network::MAX_RANK]);
    let lo = whole(x.clone().detach().min()).clamp_max(0.0);
    let hi = whole(x.clone().detach().max()).clamp_min(0.0);
    let scale = (hi - lo.clone()).div_scalar(255.0);
    let safe = scale.clone().clamp_min(f32::MIN_POSITIVE);
    let zero = (lo.neg() / safe.clone()).round().clamp(0.0, 255.0);
    let y = (straight_through_round(x / safe) + zero.clone()).clamp(0.0, 255.0);
    Ok(vec![
        Value::Device(DynTensor::from_storage(y, rank)),
        Value::Device(DynTensor::from_storage(scale, 0)),
        Value::Device(DynTensor::from_storage(zero, 0)),
    ])
}

/// The scale and the zero point (zeros where absent) on the host.
fn host_params<B: Backend>(ctx: &Ctx<B>) -> Result<(Vec<f32>, Vec<f32>)> {
    let scale = ctx.host(1)?.to_f32();
    let zero = if ctx.has(2) {
        ctx.host(2)?.to_f32()
    } else {
        vec![0.0; scale.len()]
    };
    Ok((scale, zero))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_on};
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, HostTensor, Value};

    fn scalar(v: f32) -> Value {
        Value::Host(HostTensor::f32(vec![], vec![v]))
    }

    fn zero_point(v: i64) -> Value {
        Value::Host(HostTensor::i64(vec![], vec![v]))
    }

    /// On the device, a Q/DQ pair gives ONNX's values (ties to even, saturated at the type's
    /// range) and the straight-through gradient: 1 inside the range, 0 where it saturates.
    #[test]
    fn a_pair_on_the_device_rounds_saturates_and_passes_the_gradient_straight_through() {
        let on = crate::Device::cpu().autodiff();
        let xs = [-1.0, 0.25, 0.75, 1.25, 30.0, 200.0];
        let x = DynTensor::from_host(&xs, &[6], &on).require_grad();
        // INT8, scale 0.5, zero point 1: x / 0.5 rounds to -2, 0 (0.5 to even), 2 (1.5), 2
        // (2.5), 60, 400 → 127.
        let int8 = [("output_dtype", Attr::Int(3))];
        let inputs = vec![Value::Device(x.clone()), scalar(0.5), zero_point(1)];
        let q = run_on("QuantizeLinear", 21, &int8, inputs, &on)
            .unwrap()
            .remove(0);
        assert_eq!(q.to_host().to_f32(), [-1.0, 1.0, 3.0, 3.0, 61.0, 127.0]);
        let inputs = vec![q, scalar(0.5), zero_point(1)];
        let Value::Device(y) = run_on("DequantizeLinear", 21, &[], inputs, &on)
            .unwrap()
            .remove(0)
        else {
            panic!("a device input gives a device output");
        };
        assert_eq!(y.to_vec(), [-1.0, 0.0, 1.0, 1.0, 30.0, 63.0]);
        let grads = y.backward();
        assert_eq!(
            x.grad(&grads).unwrap().to_vec(),
            [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
        );
    }

    /// To FLOAT8E4M3FN (3 mantissa bits), x / scale rounds to the nearest float8, ties to even,
    /// and saturates at 448 (or, with `saturate` 0, becomes NaN); the gradient passes straight
    /// through inside the range. On the host the same values come out.
    #[test]
    fn float8_quantization_rounds_to_the_type_and_passes_the_gradient_straight_through() {
        let on = crate::Device::cpu().autodiff();
        // x / 0.5: 2.25 is a float8 (1.001b × 2); 2.375 is halfway between 2.25 and 2.5
        // (1.010b × 2), whose last bit is even; 17 is halfway between 16 and 18 (the step is 2
        // from 16 to 32), and 16 is even; 0.001 is nearer 2^-9, the smallest subnormal, than 0;
        // ±600 is beyond 448.
        let xs = [1.125, 1.1875, 8.5, 0.0005, 300.0, -300.0];
        let want = [2.25, 2.5, 16.0, 0.001953125, 448.0, -448.0];
        let float8 = [("output_dtype", Attr::Int(17))];
        let x = DynTensor::from_host(&xs, &[6], &on).require_grad();
        let inputs = vec![Value::Device(x.clone()), scalar(0.5)];
        let Value::Device(q) = run_on("QuantizeLinear", 21, &float8, inputs, &on)
            .unwrap()
            .remove(0)
        else {
            panic!("a device input gives a device output");
        };
        assert_eq!(q.to_vec(), want);
        let grads = q.backward();
        assert_eq!(
            x.grad(&grads).unwrap().to_vec(),
            [2.0, 2.0, 2.0, 2.0, 0.0, 0.0]
        );
        let host = Value::Host(HostTensor::f32(vec![6], xs.to_vec()));
        let q = run("QuantizeLinear", 21, &float8, vec![host, scalar(0.5)])
            .unwrap()
            .remove(0);
        assert_eq!(q.to_host().to_f32(), want);
        let unsaturated = [("output_dtype", Attr::Int(17)), ("saturate", Attr::Int(0))];
        let host = Value::Host(HostTensor::f32(vec![2], vec![1.0, 300.0]));
        let q = run("QuantizeLinear", 21, &unsaturated, vec![host, scalar(0.5)])
            .unwrap()
            .remove(0)
            .to_host()
            .to_f32();
        assert!(q[0] == 2.0 && q[1].is_nan(), "{q:?}");
    }

    /// Host inputs (a quantized weight) are computed on the host, per channel along `axis`, and
    /// UINT8 is the type where neither zero point nor `output_dtype` says.
    #[test]
    fn per_channel_on_the_host_and_uint8_by_default() {
        let w = Value::Host(HostTensor::i64(vec![2, 2], vec![-3, 4, 10, 20]));
        let scale = Value::Host(HostTensor::f32(vec![2], vec![0.5, 0.25]));
        let zero = Value::Host(HostTensor::i64(vec![2], vec![1, 0]));
        let axis = [("axis", Attr::Int(0))];
        let Value::Host(h) = run("DequantizeLinear", 13, &axis, vec![w, scale, zero])
            .unwrap()
            .remove(0)
        else {
            panic!("host inputs give a host output");
        };
        assert_eq!(h.to_f32(), [-2.0, 1.5, 2.5, 5.0]);
        let x = Value::Host(HostTensor::f32(vec![3], vec![-4.0, 2.0, 999.0]));
        let q = run("QuantizeLinear", 13, &[], vec![x, scalar(2.0)])
            .unwrap()
            .remove(0);
        assert_eq!(q.to_host().to_i64(), [0, 1, 255]);
    }

    #[test]
    fn unsupported_types_and_shapes_are_errors_naming_them() {
        let x = || Value::Host(HostTensor::f32(vec![2, 3], vec![0.0; 6]));
        let int2 = [("output_dtype", Attr::Int(26))];
        let e = run("QuantizeLinear", 25, &int2, vec![x(), scalar(1.0)]).unwrap_err();
        assert!(e.to_string().contains("INT2 is not supported"), "{e}");
        let scale = Value::Host(HostTensor::f32(vec![2], vec![1.0, 1.0]));
        let e = run("DequantizeLinear", 13, &[], vec![x(), scale]).unwrap_err();
        assert!(
            e.to_string().contains("one for each of the input's 3"),
            "{e}"
        );
    }
}
