//! MaxPool, AveragePool (explicit pads, ceil_mode, count_include_pad, dilations) and global pools.
//!
//! ONNX output sizes are computed here, the input is padded explicitly to exactly the extent the
//! windows cover, and burn's kernels then run without padding. Average pooling divides a window
//! sum by a window count pooled from a mask, which gives ONNX's count_include_pad semantics in
//! every corner case (asymmetric pads, ceil-mode windows that overhang the padding).

use burn::prelude::*;
use burn::tensor::module;
use burn::tensor::ops::ConvOptions;

use super::conv::{lift_2d, lift_tensor_2d, pad_4d, span, squeeze_1d, Window};
use super::max_pool_cpu;
use super::Back;
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::DynTensor;

struct Plan {
    win: Window,
    /// Extra padding at the end of each axis so that the last (ceil-mode) window fits.
    extra: Vec<usize>,
    /// The output size of each spatial axis.
    out: Vec<usize>,
}

fn plan<B: Backend>(ctx: &Ctx<B>, dims: &[usize]) -> Result<Plan> {
    let spatial = &dims[2..];
    let shape = ctx
        .node
        .ints("kernel_shape")?
        .ok_or_else(|| ctx.error("kernel_shape is required"))?;
    let kernel: Vec<usize> = shape
        .iter()
        .map(|&k| usize::try_from(k).ok().filter(|&k| k >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| ctx.error(format!("kernel_shape {shape:?} must be positive")))?;
    if kernel.len() != spatial.len() {
        return Err(ctx.error(format!(
            "kernel_shape {kernel:?} does not fit input {dims:?}"
        )));
    }
    if spatial.len() > 2 {
        return Err(ctx.error("3-D pooling is not supported"));
    }
    let mut win = Window::parse(ctx, kernel, spatial)?;
    let ceil = ctx.node.int("ceil_mode", 0)? != 0;
    if ceil {
        // A ceil-mode kernel larger than the padded input still makes one window while it
        // overhangs by less than a stride (ONNX's and PyTorch's output size; Hugging Face's
        // EfficientNet pools 7×7 with a 2560 kernel so). That window sees the whole padded input,
        // and the overhang counts for neither pool: the kernel is cut to the padded input
        // (undilated kernels only, where that leaves exactly one window).
        let padded = win.padded(spatial).map_err(|e| ctx.error(e))?;
        for (i, &padded) in padded.iter().enumerate() {
            let k = win.kernel[i];
            if win.dilations[i] == 1 && k > padded && padded > 0 && k - padded < win.strides[i] {
                win.kernel[i] = padded;
            }
        }
    }
    win.check(ctx, spatial)?;
    let (mut extra, mut outs) = (Vec::new(), Vec::new());
    let padded_sizes = win.padded(spatial).map_err(|e| ctx.error(e))?;
    for (i, (&size, &padded)) in spatial.iter().zip(&padded_sizes).enumerate() {
        let span = span(win.kernel[i], win.dilations[i])
            .ok_or_else(|| ctx.error(format!("kernel {:?} overflows", win.kernel)))?;
        if padded < span {
            return Err(ctx.error(format!(
                "kernel {span} is larger than padded input {padded}"
            )));
        }
        let steps = padded - span;
        let mut out = if ceil {
            steps.div_ceil(win.strides[i])
        } else {
            steps / win.strides[i]
        } + 1;
        // A window must start inside the input or its leading padding.
        if ceil && (out - 1) * win.strides[i] >= size + win.begin[i] {
            out -= 1;
        }
        let covered = (out - 1) * win.strides[i] + span;
        extra.push(covered.saturating_sub(padded));
        outs.push(out);
    }
    Ok(Plan {
        win,
        extra,
        out: outs,
    })
}

fn padded_ends(p: &Plan) -> [usize; 2] {
    let ends: Vec<usize> = p.win.end.iter().zip(&p.extra).map(|(e, x)| e + x).collect();
    lift_2d(&ends, 0)
}

pub fn max_pool<B: Back>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    if ctx.node.outputs.len() > 1 && !ctx.node.outputs[1].is_empty() {
        return Err(ctx.error("the Indices output of MaxPool is not supported"));
    }
    let x = ctx.float(0)?;
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(ctx.error(format!("input {dims:?} has no spatial axes")));
    }
    let p = plan(ctx, &dims)?;
    let (begin, end) = (lift_2d(&p.win.begin, 0), padded_ends(&p));
    if B::is_cpu(ctx.device) {
        let g = max_pool_cpu::Geometry {
            kernel: lift_2d(&p.win.kernel, 1),
            strides: lift_2d(&p.win.strides, 1),
            dilations: lift_2d(&p.win.dilations, 1),
            begin,
            out: lift_2d(&p.out, 1),
        };
        if let Some(y) = B::max_pool(&lift_tensor_2d(&x)?, &g) {
            return Ok(vec![Value::Device(squeeze_1d(
                DynTensor::new(y),
                dims.len(),
            ))]);
        }
    }
    // burn pads symmetrically by itself (and faster than an explicit pad); other cases are
    // padded here with -inf first.
    let (xp, padding) = if begin == end {
        (lift_tensor_2d(&x)?, begin)
    } else {
        (
            pad_4d(lift_tensor_2d(&x)?, begin, end, f32::NEG_INFINITY),
            [0, 0],
        )
    };
    let y = module::max_pool2d(
        xp,
        lift_2d(&p.win.kernel, 1),
        lift_2d(&p.win.strides, 1),
        padding,
        lift_2d(&p.win.dilations, 1),
        false,
    );
    Ok(vec![Value::Device(squeeze_1d(
        DynTensor::new(y),
        dims.len(),
    ))])
}

/// Sums every window of `x` (already padded) with the plan's geometry.
fn window_sum<B: Backend>(x: Tensor<B, 4>, p: &Plan) -> Tensor<B, 4> {
    let kernel = lift_2d(&p.win.kernel, 1);
    let strides = lift_2d(&p.win.strides, 1);
    let dilations = lift_2d(&p.win.dilations, 1);
    if dilations == [1, 1] {
        let k = (kernel[0] * kernel[1]) as f32;
        module::avg_pool2d(x, kernel, strides, [0, 0], true, false).mul_scalar(k)
    } else {
        let [_, c, _, _] = x.dims();
        let ones = Tensor::<B, 4>::ones([c, 1, kernel[0], kernel[1]], &x.device());
        module::conv2d(
            x,
            ones,
            None,
            ConvOptions::new(strides, [0, 0], dilations, c),
        )
    }
}

pub fn average_pool<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(ctx.error(format!("input {dims:?} has no spatial axes")));
    }
    let p = plan(ctx, &dims)?;
    let include_pad = ctx.node.int("count_include_pad", 0)? != 0;
    let x4 = lift_tensor_2d(&x)?;
    let [_, _, h, w] = x4.dims();
    let (begin, end) = (lift_2d(&p.win.begin, 0), padded_ends(&p));
    let sum = window_sum(pad_4d(x4, begin, end, 0.0), &p);
    // Count the cells each window covers: input cells, plus explicit pads when included.
    let device = x.device();
    let mask = if include_pad {
        // Declared pads count; the ceil-mode overhang beyond them does not.
        let declared_end = lift_2d(&p.win.end, 0);
        let ones = Tensor::<B, 4>::ones(
            [
                1,
                1,
                h + begin[0] + declared_end[0],
                w + begin[1] + declared_end[1],
            ],
            &device,
        );
        let overhang = [end[0] - declared_end[0], end[1] - declared_end[1]];
        pad_4d(ones, [0, 0], overhang, 0.0)
    } else {
        pad_4d(Tensor::<B, 4>::ones([1, 1, h, w], &device), begin, end, 0.0)
    };
    let count = window_sum(mask, &p);
    let y = sum / count;
    Ok(vec![Value::Device(squeeze_1d(
        DynTensor::new(y),
        dims.len(),
    ))])
}

fn global<B: Backend>(ctx: &Ctx<B>, max: bool) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let rank = x.rank();
    if rank < 3 {
        return Err(ctx.error(format!("input {:?} has no spatial axes", x.dims())));
    }
    let mut s = x.clone().into_storage();
    for axis in 2..rank {
        let a = x.storage_axis(axis);
        s = if max { s.max_dim(a) } else { s.mean_dim(a) };
    }
    Ok(vec![Value::Device(DynTensor::from_storage(s, rank))])
}

pub fn global_average_pool<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    global(ctx, false)
}

pub fn global_max_pool<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    global(ctx, true)
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, Value};

    #[test]
    fn a_ceil_mode_kernel_past_the_input_makes_one_window_of_all_of_it() {
        // As onnxruntime computes them: a 3×3 input under an 8×8 kernel with stride 8.
        let on = crate::Device::cpu();
        let x = || {
            let v: Vec<f32> = (0..9).map(|v| v as f32).collect();
            Value::Device(DynTensor::from_host(&v, &[1, 1, 3, 3], on.burn()))
        };
        let ints = |v: &[i64]| Attr::Ints(v.to_vec());
        let base = [
            ("kernel_shape", ints(&[8, 8])),
            ("strides", ints(&[8, 8])),
            ("ceil_mode", Attr::Int(1)),
        ];
        let padded = [
            ("pads", ints(&[1, 1, 1, 1])),
            ("count_include_pad", Attr::Int(1)),
        ];
        let cases = [
            ("AveragePool", base.to_vec(), 4.0_f32),
            (
                "AveragePool",
                [&base[..], &padded[..]].concat(),
                36.0 / 25.0,
            ),
            ("MaxPool", base.to_vec(), 8.0),
        ];
        for (op, attrs, want) in cases {
            let y = run(op, 18, &attrs, vec![x()]).unwrap().remove(0);
            assert_eq!(y.dims(), [1, 1, 1, 1], "{op}");
            let got = y.to_host().to_f32()[0];
            assert!((got - want).abs() < 1e-6, "{op} {attrs:?}: {got}");
        }
        // Overhanging by a stride or more makes no window: an error naming the node.
        let mut far = base.to_vec();
        far[1] = ("strides", ints(&[5, 5]));
        let err = run("AveragePool", 18, &far, vec![x()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node_under_test") && err.contains("kernel"),
            "{err}"
        );
    }
}
