//! MaxPool, AveragePool (explicit pads, ceil_mode, count_include_pad, dilations), LpPool and
//! global pools.
//!
//! ONNX output sizes are computed here, the input is padded explicitly to exactly the extent the
//! windows cover, and burn's kernels then run without padding. Average pooling divides a window
//! sum by a window count pooled from a mask, which gives ONNX's count_include_pad semantics in
//! every corner case (asymmetric pads, ceil-mode windows that overhang the padding).

use burn::prelude::*;
use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

use burn::tensor::IndexingUpdateOp;

use super::conv::{lift_2d, lift_tensor_2d, pad_4d, span, squeeze_1d, Window};
use super::max_pool_cpu;
use super::shape::index_tensor;
use super::Back;
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{DynTensor, HostTensor, Storage};

struct Plan {
    win: Window,
    /// Extra padding at the end of each axis so that the last (ceil-mode) window fits.
    extra: Vec<usize>,
    /// The output size of each spatial axis.
    out: Vec<usize>,
}

/// The `kernel_shape` attribute: positive, one size per spatial axis of an input of `dims`.
fn kernel_shape<B: Backend>(ctx: &Ctx<B>, dims: &[usize]) -> Result<Vec<usize>> {
    let shape = ctx
        .node
        .ints("kernel_shape")?
        .ok_or_else(|| ctx.error("kernel_shape is required"))?;
    let kernel: Vec<usize> = shape
        .iter()
        .map(|&k| usize::try_from(k).ok().filter(|&k| k >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| ctx.error(format!("kernel_shape {shape:?} must be positive")))?;
    if kernel.len() + 2 != dims.len() {
        return Err(ctx.error(format!(
            "kernel_shape {kernel:?} does not fit input {dims:?}"
        )));
    }
    Ok(kernel)
}

fn plan<B: Backend>(ctx: &Ctx<B>, dims: &[usize]) -> Result<Plan> {
    let spatial = &dims[2..];
    let kernel = kernel_shape(ctx, dims)?;
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

/// Whether the node's second output (MaxPool's Indices) is wanted.
fn wants_indices<B: Backend>(ctx: &Ctx<B>) -> bool {
    ctx.node.outputs.get(1).is_some_and(|o| !o.is_empty())
}

pub fn max_pool<B: Back>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(ctx.error(format!("input {dims:?} has no spatial axes")));
    }
    let p = plan(ctx, &dims)?;
    let (begin, end) = (lift_2d(&p.win.begin, 0), padded_ends(&p));
    if wants_indices(ctx) {
        let mut outs = max_pool_with_indices(ctx, &x, &p, begin, end)?;
        if ctx.linearized {
            outs[0] = average(ctx)?;
        }
        return Ok(outs);
    }
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
    let (xp, padding, _) = max_pool_input(lift_tensor_2d(&x)?, begin, end);
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

/// What burn's max pooling reads, the padding it adds itself, and where the input starts in
/// the first: burn pads symmetrically by itself (and faster than an explicit pad); other cases
/// are padded here with -inf first.
fn max_pool_input<B: Backend>(
    x4: Tensor<B, 4>,
    begin: [usize; 2],
    end: [usize; 2],
) -> (Tensor<B, 4>, [usize; 2], [usize; 2]) {
    if begin == end {
        (x4, begin, [0, 0])
    } else {
        (pad_4d(x4, begin, end, f32::NEG_INFINITY), [0, 0], begin)
    }
}

/// MaxPool with its Indices output: where in the input each maximum is, as a flat index into
/// the whole input tensor (`((n·C + c)·H + h)·W + w`; with `storage_order` 1, column-major
/// within each plane: `(n·C + c)·H·W + w·H + h`), the first of equal maxima, as ONNX's
/// reference picks. The indices are an integer tensor on the host, where MaxUnpool (or the
/// arithmetic PyTorch's exporter appends) reads them; they carry no gradient.
fn max_pool_with_indices<B: Backend>(
    ctx: &Ctx<B>,
    x: &DynTensor<B>,
    p: &Plan,
    begin: [usize; 2],
    end: [usize; 2],
) -> Result<Vec<Value<B>>> {
    let column_major = match ctx.node.int("storage_order", 0)? {
        0 => false,
        1 => true,
        other => return Err(ctx.error(format!("storage_order {other} is not 0 or 1"))),
    };
    let dims = x.dims();
    let x4 = lift_tensor_2d(x)?;
    let [n, c, h, w] = x4.dims();
    // The kernel's own padding leaves its indices in the input's coordinates; with an explicit
    // pad they index the padded rows, shifted by `begin`.
    let (xp, padding, shift) = max_pool_input(x4, begin, end);
    let width = xp.dims()[3];
    let (y, at) = module::max_pool2d_with_indices(
        xp,
        lift_2d(&p.win.kernel, 1),
        lift_2d(&p.win.strides, 1),
        padding,
        lift_2d(&p.win.dilations, 1),
        false,
    );
    let out = at.dims();
    let per_plane = out[2] * out[3];
    let at = at
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .map_err(|e| ctx.error(format!("reading the pooling indices: {e:?}")))?;
    let indices: Vec<i64> = at
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let plane = (k / per_plane) as i64;
            let (ph, pw) = (i / width as i64, i % width as i64);
            // A window wholly of padding cannot be (it starts inside the input), but a window
            // of -inf inputs ties with its padding: its first input cell is the answer then.
            let row = (ph - shift[0] as i64).clamp(0, h as i64 - 1);
            let col = (pw - shift[1] as i64).clamp(0, w as i64 - 1);
            let within = if column_major {
                col * h as i64 + row
            } else {
                row * w as i64 + col
            };
            plane * (h * w) as i64 + within
        })
        .collect();
    debug_assert_eq!(indices.len(), n * c * per_plane);
    let y = squeeze_1d(DynTensor::new(y), dims.len());
    let shape = y.dims();
    Ok(vec![
        Value::Device(y),
        Value::Host(HostTensor::i64(shape, indices)),
    ])
}

/// MaxUnpool: a tensor of zeros of the pooled input's shape with each value of X put back at
/// its index (from MaxPool's Indices; flat over the whole tensor). The shape is `output_shape`
/// where given (that of the tensor MaxPool read, which the pooled sizes alone leave ambiguous),
/// else what kernel, strides and pads give. Every index is checked against it. Indices that
/// repeat (overlapping windows that share a maximum) keep the last value, as ONNX's reference
/// writes them in order. The gradient reaches X.
pub fn max_unpool<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(ctx.error(format!("input {dims:?} has no spatial axes")));
    }
    let spatial = &dims[2..];
    let kernel = kernel_shape(ctx, &dims)?;
    let win = Window::parse(ctx, kernel, spatial)?;
    let inferred: Option<Vec<usize>> = (0..spatial.len())
        .map(|i| {
            (spatial[i].checked_sub(1)?)
                .checked_mul(win.strides[i])?
                .checked_add(win.kernel[i])?
                .checked_sub(win.begin[i] + win.end[i])
        })
        .collect();
    let shape: Vec<usize> = if ctx.has(2) {
        let given = ctx.ints(2)?;
        let shape: Option<Vec<usize>> = given.iter().map(|&d| usize::try_from(d).ok()).collect();
        match shape {
            Some(s) if s.len() == dims.len() && s[..2] == dims[..2] => s,
            _ => {
                return Err(ctx.error(format!(
                    "output_shape {given:?} does not fit input {dims:?}"
                )))
            }
        }
    } else {
        let inferred = inferred.ok_or_else(|| {
            ctx.error(format!(
                "kernel {:?}, strides {:?} and pads leave no output for input {dims:?}",
                win.kernel, win.strides
            ))
        })?;
        dims[..2].iter().copied().chain(inferred).collect()
    };
    let total = ctx.fits("output", &shape, 4)?;
    if ctx.linearized {
        return Ok(vec![Value::Device(spread(ctx, &x, &win, &shape)?)]);
    }
    // Device indices are 32-bit (see `index_tensor`).
    if total > i32::MAX as usize {
        return Err(ctx.error(format!(
            "output {shape:?} is past the device's 32-bit indices"
        )));
    }
    let indices = ctx.host(1)?;
    if indices.shape != dims {
        return Err(ctx.error(format!(
            "indices {:?} do not match input {dims:?}",
            indices.shape
        )));
    }
    // The last value for each target, in order of targets.
    let mut last = std::collections::BTreeMap::new();
    for (k, &i) in indices.to_i64().iter().enumerate() {
        let at = usize::try_from(i)
            .ok()
            .filter(|&i| i < total)
            .ok_or_else(|| ctx.error(format!("index {i} is outside output {shape:?}")))?;
        last.insert(at, k);
    }
    let (targets, sources): (Vec<usize>, Vec<usize>) = last.into_iter().unzip();
    let zeros = DynTensor::from_vec_on(vec![0.0; total], &[total, 1], ctx.device).to_rank::<2>()?;
    if targets.is_empty() {
        return Ok(vec![Value::Device(DynTensor::new(zeros).reshape(&shape))]);
    }
    let values = x
        .reshape(&[dims.iter().product(), 1])
        .to_rank::<2>()?
        .select(0, index_tensor(&sources, ctx.device));
    let rows = index_tensor(&targets, ctx.device).reshape([targets.len(), 1]);
    let y = zeros.scatter_nd(rows, values, IndexingUpdateOp::Assign);
    Ok(vec![Value::Device(DynTensor::new(y).reshape(&shape))])
}

/// MaxUnpool's linear stand-in: each value spread evenly over its window (the transpose of
/// average pooling, and where the value lands on average when its maximum is anywhere in the
/// window), the pads cut off, into `shape` (cut, or zeros after).
fn spread<B: Backend>(
    ctx: &Ctx<B>,
    x: &DynTensor<B>,
    win: &Window,
    shape: &[usize],
) -> Result<DynTensor<B>> {
    let x4 = lift_tensor_2d(x)?;
    let [_, c, _, _] = x4.dims();
    let k = lift_2d(&win.kernel, 1);
    let weight = Tensor::<B, 4>::full([c, 1, k[0], k[1]], 1.0 / (k[0] * k[1]) as f32, ctx.device);
    let opts = ConvTransposeOptions::new(lift_2d(&win.strides, 1), [0, 0], [0, 0], [1, 1], c);
    let y = module::conv_transpose2d(x4, weight, None, opts);
    let [n, _, h, w] = y.dims();
    let begin = lift_2d(&win.begin, 0);
    let want = lift_2d(&shape[2..], 1);
    let (h, w) = (h.saturating_sub(begin[0]), w.saturating_sub(begin[1]));
    let y = y
        .narrow(2, begin[0], h.min(want[0]))
        .narrow(3, begin[1], w.min(want[1]));
    let y = pad_4d(
        y,
        [0, 0],
        [want[0] - h.min(want[0]), want[1] - w.min(want[1])],
        0.0,
    );
    debug_assert_eq!(y.dims(), [n, c, want[0], want[1]]);
    Ok(squeeze_1d(DynTensor::new(y), shape.len()))
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
    if wants_indices(ctx) {
        return Err(ctx.error("AveragePool has no second output (MaxPool's Indices)"));
    }
    Ok(vec![average(ctx)?])
}

/// Average pooling of input 0 with the node's geometry (AveragePool, and MaxPool's linear
/// stand-in).
fn average<B: Backend>(ctx: &Ctx<B>) -> Result<Value<B>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
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
    Ok(Value::Device(squeeze_1d(DynTensor::new(y), dims.len())))
}

/// LpPool's and GlobalLpPool's `p` (opset 2 on: an int, 2 unless given), at least 1.
fn lp_exponent<B: Backend>(ctx: &Ctx<B>) -> Result<i32> {
    let p = ctx.node.int("p", 2)?;
    i32::try_from(p)
        .ok()
        .filter(|&p| p >= 1)
        .ok_or_else(|| ctx.error(format!("p = {p} must be a positive integer")))
}

/// `|x|^p`, the terms of an Lp pool.
fn lp_terms<B: Backend, const D: usize>(x: Tensor<B, D>, p: i32) -> Tensor<B, D> {
    match p {
        1 => x.abs(),
        2 => x.clone() * x,
        p => x.abs().powi_scalar(p),
    }
}

/// `s^(1/p)` of a sum of Lp terms. The root's gradient at 0 is infinite, which a window of
/// zeros (after a ReLU, in the padding) would turn into NaN for every pixel upstream: the sum is
/// held at the smallest normal float or above, which moves a zero output by 1e-19 at p = 2 and
/// gives it no gradient, as a subgradient of the norm at 0 may.
fn lp_root<B: Backend, const D: usize>(s: Tensor<B, D>, p: i32) -> Tensor<B, D> {
    match p {
        1 => s,
        2 => s.clamp_min(f32::MIN_POSITIVE).sqrt(),
        p => s.clamp_min(f32::MIN_POSITIVE).powf_scalar(1.0 / p as f32),
    }
}

/// LpPool (opsets 2–22): the p-norm of each window, `(Σ |x|^p)^(1/p)`, with MaxPool's geometry
/// (pads, auto_pad, strides; dilations and ceil_mode from 18). Padding adds zeros, which add
/// nothing to a norm.
pub fn lp_pool<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(ctx.error(format!("input {dims:?} has no spatial axes")));
    }
    let p = lp_exponent(ctx)?;
    let plan = plan(ctx, &dims)?;
    let x4 = lp_terms(lift_tensor_2d(&x)?, p);
    let (begin, end) = (lift_2d(&plan.win.begin, 0), padded_ends(&plan));
    let sum = window_sum(pad_4d(x4, begin, end, 0.0), &plan);
    let y = lp_root(sum, p);
    Ok(vec![Value::Device(squeeze_1d(
        DynTensor::new(y),
        dims.len(),
    ))])
}

/// GlobalLpPool (opsets 2–22): the p-norm of each channel over all its spatial axes.
pub fn global_lp_pool<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let p = lp_exponent(ctx)?;
    let terms = ctx.float(0)?.map(|s| lp_terms(s, p));
    let sum = over_space(ctx, terms, |s, a| s.sum_dim(a))?;
    Ok(vec![Value::Device(sum.map(|s| lp_root(s, p)))])
}

/// `x` (`[N, C, spatial...]`) reduced by `reduce` along each spatial axis (a storage axis),
/// which it keeps as size 1.
fn over_space<B: Backend>(
    ctx: &Ctx<B>,
    x: DynTensor<B>,
    reduce: impl Fn(Storage<B>, usize) -> Storage<B>,
) -> Result<DynTensor<B>> {
    let rank = x.rank();
    if rank < 3 {
        return Err(ctx.error(format!("input {:?} has no spatial axes", x.dims())));
    }
    let axes: Vec<usize> = (2..rank).map(|a| x.storage_axis(a)).collect();
    Ok(x.map(|s| axes.into_iter().fold(s, &reduce)))
}

pub fn global_average_pool<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let y = over_space(ctx, ctx.float(0)?, |s, a| s.mean_dim(a))?;
    Ok(vec![Value::Device(y)])
}

pub fn global_max_pool<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let y = over_space(ctx, ctx.float(0)?, |s, a| s.max_dim(a))?;
    Ok(vec![Value::Device(y)])
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, values_and_gradient};
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, HostTensor, Value};

    #[test]
    fn lp_pools_of_zeros_are_zero_with_a_finite_gradient_and_others_the_norms() {
        // Two 2×2 windows: zeros (a ReLU's output), and 3, 4, 0, 0.
        let xs = [0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
        let attrs = [
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("strides", Attr::Ints(vec![2, 2])),
        ];
        let (y, g) = values_and_gradient("LpPool", 18, &attrs, &xs, &[1, 1, 2, 4]);
        assert!(y[0].abs() < 1e-18 && (y[1] - 5.0).abs() < 1e-6, "{y:?}");
        // d‖x‖/dx = x / ‖x‖; none through the zeros.
        assert_eq!(g, [0.0, 0.0, 0.6, 0.8, 0.0, 0.0, 0.0, 0.0]);
        // GlobalLpPool p = 3 of channel [1, -2] and of a channel of zeros.
        let xs = [1.0, -2.0, 0.0, 0.0];
        let attrs = [("p", Attr::Int(3))];
        let (y, g) = values_and_gradient("GlobalLpPool", 2, &attrs, &xs, &[1, 2, 1, 2]);
        let norm = 9f32.cbrt();
        assert!((y[0] - norm).abs() < 1e-5 && y[1].abs() < 1e-12, "{y:?}");
        // d/dx (Σ|x|³)^(1/3) = x·|x| / y².
        let want = [1.0 / (norm * norm), -4.0 / (norm * norm), 0.0, 0.0];
        for (g, w) in g.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g} against {w}");
        }
        for p in [0, -1, 1 << 40] {
            let x = Value::Host(HostTensor::f32(vec![1, 1, 2, 2], vec![1.0; 4]));
            let e = run("GlobalLpPool", 2, &[("p", Attr::Int(p))], vec![x]).unwrap_err();
            assert!(e.to_string().contains("positive integer"), "{e}");
        }
    }

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

    /// A model file's indices and output_shape are data: each is checked, and the error names
    /// the node.
    #[test]
    fn max_unpool_checks_its_indices_and_output_shape() {
        let on = crate::Device::cpu();
        let x = || Value::Device(DynTensor::from_host(&[1.0, 2.0], &[1, 1, 1, 2], on.burn()));
        let at =
            |v: &[i64], shape: &[usize]| Value::Host(HostTensor::i64(shape.to_vec(), v.to_vec()));
        let size = |v: &[i64]| Value::Host(HostTensor::i64(vec![v.len()], v.to_vec()));
        let attrs = [
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("strides", Attr::Ints(vec![2, 2])),
        ];
        let ok = run(
            "MaxUnpool",
            11,
            &attrs,
            vec![x(), at(&[5, 2], &[1, 1, 1, 2])],
        )
        .unwrap();
        assert_eq!(ok[0].dims(), [1, 1, 2, 4]);
        assert_eq!(
            ok[0].to_host().to_f32(),
            [0.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0]
        );
        let cases = [
            (vec![x(), at(&[0, 8], &[1, 1, 1, 2])], "index 8 is outside"),
            (
                vec![x(), at(&[-1, 0], &[1, 1, 1, 2])],
                "index -1 is outside",
            ),
            (vec![x(), at(&[0], &[1, 1, 1, 1])], "do not match input"),
            (
                vec![x(), at(&[0, 1], &[1, 1, 1, 2]), size(&[1, 2, 2, 4])],
                "does not fit input",
            ),
            (
                vec![x(), at(&[0, 1], &[1, 1, 1, 2]), size(&[1, 1, -2, 4])],
                "does not fit input",
            ),
            (
                vec![
                    x(),
                    at(&[0, 1], &[1, 1, 1, 2]),
                    size(&[1, 1, 1 << 40, 1 << 40]),
                ],
                "output",
            ),
        ];
        for (inputs, why) in cases {
            let err = run("MaxUnpool", 11, &attrs, inputs)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("node_under_test") && err.contains(why),
                "{why}: {err}"
            );
        }
        // AveragePool, MaxPool's linear stand-in, has no indices to give.
        let node = super::super::Node {
            name: "pool".into(),
            op: "MaxPool".into(),
            domain: String::new(),
            opset: 11,
            inputs: vec!["x".into()],
            outputs: vec!["y".into(), "where".into()],
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            source_name: String::new(),
        };
        let x4 = Value::Device(DynTensor::from_host(&[0.0; 16], &[1, 1, 4, 4], on.burn()));
        let ctx = super::super::Ctx {
            node: &node,
            inputs: vec![Some(x4.into())],
            device: on.burn(),
            linearized: false,
        };
        let err = super::average_pool(&ctx).unwrap_err().to_string();
        assert!(err.contains("no second output"), "{err}");
        let both = super::max_pool(&ctx).unwrap();
        assert_eq!(both[1].to_host().to_i64(), [0, 2, 8, 10]);
    }
}
