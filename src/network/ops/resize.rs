//! Resize (opsets 10–19) and Upsample (7–9), every mode as a separable linear map.
//!
//! For each resized axis the host builds an interpolation matrix `M[out, in]` that encodes the
//! coordinate transformation, the interpolation (nearest, linear, cubic, antialiased) and the
//! edge rule; the device then applies it as one matrix product per axis. The result is exact for
//! every ONNX mode and differentiable.

use burn::prelude::*;

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::DynTensor;

struct Mode {
    interp: String,
    coord: String,
    nearest: String,
    cubic_a: f32,
    exclude_outside: bool,
    antialias: bool,
    extrapolation: f32,
}

/// Source coordinate of output position `i` along an axis. As in the ONNX reference, the output
/// length in the formulas is `scale * len_in` (a float), not the rounded integer length.
fn source_coord(
    m: &Mode,
    i: usize,
    len_in: usize,
    len_out: usize,
    scale: f32,
    roi: (f32, f32),
) -> f32 {
    let (i, li) = (i as f32, len_in as f32);
    let lo = scale * li;
    match m.coord.as_str() {
        "asymmetric" => i / scale,
        "align_corners" => {
            if lo == 1.0 {
                0.0
            } else {
                i * (li - 1.0) / (lo - 1.0)
            }
        }
        "pytorch_half_pixel" => {
            if lo == 1.0 {
                -0.5
            } else {
                (i + 0.5) / scale - 0.5
            }
        }
        "half_pixel_symmetric" => {
            let adjustment = len_out as f32 / lo;
            let center = li / 2.0;
            center * (1.0 - adjustment) + (i + 0.5) / scale - 0.5
        }
        "tf_crop_and_resize" => {
            let (start, end) = roi;
            let x = if lo == 1.0 {
                (end - start) * (li - 1.0) / 2.0
            } else {
                i * (end - start) * (li - 1.0) / (lo - 1.0)
            };
            x + start * (li - 1.0)
        }
        _ => (i + 0.5) / scale - 0.5, // half_pixel
    }
}

fn cubic_weight(d: f32, a: f32) -> f32 {
    let d = d.abs();
    if d <= 1.0 {
        ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    } else if d < 2.0 {
        ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    } else {
        0.0
    }
}

/// Row `i` of the interpolation matrix, plus whether the position is extrapolated.
fn row(m: &Mode, x: f32, len_in: usize, scale: f32) -> (Vec<f32>, bool) {
    let n = len_in as i64;
    let mut w = vec![0.0f32; len_in];
    if m.coord == "tf_crop_and_resize" && (x < 0.0 || x > (n - 1) as f32) {
        return (w, true);
    }
    if m.interp == "nearest" {
        let j = match m.nearest.as_str() {
            "floor" => x.floor(),
            "ceil" => x.ceil(),
            "round_prefer_ceil" => (x + 0.5).floor(),
            _ => {
                if x.fract() == 0.5 {
                    x.floor()
                } else {
                    x.round()
                }
            } // round_prefer_floor
        } as i64;
        w[j.clamp(0, n - 1) as usize] = 1.0;
        return (w, false);
    }
    // Linear and cubic: a kernel over neighbours, widened by 1/scale when antialiasing a shrink.
    let stretch = if m.antialias && scale < 1.0 {
        scale
    } else {
        1.0
    };
    let (radius, kernel): (f32, Box<dyn Fn(f32) -> f32>) = if m.interp == "cubic" {
        let a = m.cubic_a;
        (2.0, Box::new(move |d| cubic_weight(d, a)))
    } else {
        (1.0, Box::new(|d: f32| (1.0 - d.abs()).max(0.0)))
    };
    let support = radius / stretch;
    let lo = (x - support).floor() as i64;
    let hi = (x + support).ceil() as i64;
    let mut taps: Vec<(i64, f32)> = (lo..=hi)
        .map(|j| (j, kernel((j as f32 - x) * stretch)))
        .filter(|t| t.1 != 0.0)
        .collect();
    // Antialiasing kernels are normalized over all taps; exclude_outside then drops the taps
    // outside the input and renormalizes; any remaining outside tap takes the edge value.
    if m.antialias {
        let total: f32 = taps.iter().map(|t| t.1).sum();
        taps.iter_mut().for_each(|t| t.1 /= total);
    }
    if m.exclude_outside {
        taps.retain(|t| (0..n).contains(&t.0));
        let total: f32 = taps.iter().map(|t| t.1).sum();
        taps.iter_mut().for_each(|t| t.1 /= total);
    }
    for (j, k) in taps {
        w[j.clamp(0, n - 1) as usize] += k;
    }
    (w, false)
}

/// Resizes logical axis `axis` of `x` to `len_out`.
fn resize_axis<B: Backend>(
    x: DynTensor<B>,
    axis: usize,
    len_out: usize,
    scale: f32,
    roi: (f32, f32),
    m: &Mode,
) -> DynTensor<B> {
    let dims = x.dims();
    let len_in = dims[axis];
    let mut matrix = Vec::with_capacity(len_in * len_out); // [in, out]
    let mut outside = vec![0.0f32; len_out];
    let mut rows = Vec::with_capacity(len_out);
    for (i, out) in outside.iter_mut().enumerate() {
        let (w, ext) = row(
            m,
            source_coord(m, i, len_in, len_out, scale, roi),
            len_in,
            scale,
        );
        *out = if ext { 1.0 } else { 0.0 };
        rows.push(w);
    }
    for j in 0..len_in {
        for r in &rows {
            matrix.push(r[j]);
        }
    }
    let device = x.device();
    let rank = dims.len();
    let a = x.storage_axis(axis);
    let last = crate::network::value::MAX_RANK - 1;
    let moved = x.into_storage().swap_dims(a, last);
    let moved_dims = moved.dims();
    let rest: usize = moved_dims[..last].iter().product();
    let flat: Tensor<B, 2> = moved.reshape([rest, len_in]);
    let mt = Tensor::<B, 2>::from_data(
        burn::tensor::TensorData::new(matrix, [len_in, len_out]),
        &device,
    );
    let mut y = flat.matmul(mt);
    if outside.iter().any(|&o| o != 0.0) {
        let e = Tensor::<B, 2>::from_data(
            burn::tensor::TensorData::new(outside, [1, len_out]),
            &device,
        );
        y = y + e.mul_scalar(m.extrapolation);
    }
    let mut back = moved_dims;
    back[last] = len_out;
    let y = y.reshape(back).swap_dims(a, last);
    DynTensor::from_storage(y, rank)
}

fn run<B: Backend>(
    ctx: &Ctx<B>,
    m: Mode,
    scales: Option<Vec<f32>>,
    sizes: Option<Vec<i64>>,
    roi: Vec<f32>,
) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    let rank = dims.len();
    let axes = ctx.axes_or_all(rank)?;
    let mut out = dims.clone();
    let mut scale = vec![1.0f32; rank];
    match (scales, sizes) {
        (Some(s), _) if !s.is_empty() => {
            if s.len() != axes.len() {
                return Err(ctx.error(format!("{} scales for {} axes", s.len(), axes.len())));
            }
            for (k, &a) in axes.iter().enumerate() {
                if !(s[k].is_finite() && s[k] > 0.0) {
                    return Err(ctx.error(format!(
                        "scale {} for axis {a} is not a positive number",
                        s[k]
                    )));
                }
                scale[a] = s[k];
                out[a] = (dims[a] as f64 * s[k] as f64).floor() as usize;
            }
        }
        (_, Some(z)) if !z.is_empty() => {
            if z.len() != axes.len() {
                return Err(ctx.error(format!("{} sizes for {} axes", z.len(), axes.len())));
            }
            let policy = ctx.node.string("keep_aspect_ratio_policy", "stretch")?;
            let ratios: Vec<f32> = axes
                .iter()
                .enumerate()
                .map(|(k, &a)| z[k] as f32 / dims[a] as f32)
                .collect();
            let common = match policy.as_str() {
                "not_larger" => ratios.iter().copied().fold(f32::INFINITY, f32::min),
                "not_smaller" => ratios.iter().copied().fold(0.0, f32::max),
                _ => f32::NAN,
            };
            if let Some(bad) = z.iter().find(|&&n| n < 0) {
                return Err(ctx.error(format!("size {bad} is negative")));
            }
            for (k, &a) in axes.iter().enumerate() {
                if common.is_nan() {
                    scale[a] = ratios[k];
                    out[a] = z[k] as usize;
                } else {
                    scale[a] = common;
                    out[a] = (dims[a] as f32 * common + 0.5).floor() as usize;
                }
            }
        }
        _ => return Err(ctx.error("one of scales or sizes is required")),
    }
    // The axes are resized one at a time: every intermediate is within the larger of the input
    // and output size on each axis.
    let largest: Vec<usize> = (0..rank).map(|a| out[a].max(dims[a])).collect();
    ctx.fits("resized tensor", &largest, 4)?;
    let mut y = x;
    for a in 0..rank {
        let roi_a = match axes.iter().position(|&b| b == a) {
            Some(k) if roi.len() == 2 * axes.len() => (roi[k], roi[axes.len() + k]),
            _ => (0.0, 1.0),
        };
        let identity = out[a] == dims[a] && scale[a] == 1.0 && m.coord != "tf_crop_and_resize";
        if !identity {
            if out[a] == 0 {
                return Err(ctx.error(format!("axis {a} would be resized to 0")));
            }
            y = resize_axis(y, a, out[a], scale[a], roi_a, &m);
        }
    }
    Ok(vec![Value::Device(y)])
}

pub fn resize<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let node = ctx.node;
    let opset = node.opset;
    let mut mode = Mode {
        interp: node.string("mode", "nearest")?,
        coord: node.string(
            "coordinate_transformation_mode",
            if opset < 11 {
                "asymmetric"
            } else {
                "half_pixel"
            },
        )?,
        nearest: node.string(
            "nearest_mode",
            if opset < 11 {
                "floor"
            } else {
                "round_prefer_floor"
            },
        )?,
        cubic_a: node.float("cubic_coeff_a", -0.75)?,
        exclude_outside: node.int("exclude_outside", 0)? != 0,
        antialias: node.int("antialias", 0)? != 0,
        extrapolation: node.float("extrapolation_value", 0.0)?,
    };
    if mode.interp == "bilinear" {
        mode.interp = "linear".into();
    }
    let opt_f = |i: usize| -> Result<Option<Vec<f32>>> {
        if ctx.has(i) {
            Ok(Some(ctx.host(i)?.to_f32()))
        } else {
            Ok(None)
        }
    };
    let (roi, scales, sizes) = if opset < 11 {
        (vec![], opt_f(1)?, None)
    } else {
        let sizes = if ctx.has(3) { Some(ctx.ints(3)?) } else { None };
        (opt_f(1)?.unwrap_or_default(), opt_f(2)?, sizes)
    };
    run(ctx, mode, scales, sizes, roi)
}

pub fn upsample<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let node = ctx.node;
    let scales = if ctx.has(1) {
        ctx.host(1)?.to_f32()
    } else {
        node.floats("scales")?.unwrap_or_default()
    };
    let mode = Mode {
        interp: node
            .string("mode", "nearest")?
            .replace("bilinear", "linear"),
        coord: "asymmetric".into(),
        nearest: "floor".into(),
        cubic_a: -0.75,
        exclude_outside: false,
        antialias: false,
        extrapolation: 0.0,
    };
    run(ctx, mode, Some(scales), None, vec![])
}
