//! GridSample (opsets 16–22) and AffineGrid (opset 20): sampling an image at the points of a
//! grid, as spatial transformer networks and deformable attention do.
//!
//! Each output pixel of GridSample is a weighted sum of `k × k` input pixels (`k` = 1 nearest,
//! 2 linear, 4 cubic). Which pixels is integer work and is done on the host from the grid's
//! values, with the ONNX reference's rules for padding and edges; the weights are polynomials of
//! each point's fraction past its first tap, and that fraction is computed on the device as an
//! affine function of the grid, `slope · g + offset`. So the output's gradient reaches both the
//! image (through burn's `select`) and the grid, as it does in PyTorch: a spatial transformer's
//! localization network gets a gradient when feature visualization optimizes its input.

use burn::prelude::*;
use burn::tensor::TensorData;

use super::shape::{empty, index_tensor};
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{DynTensor, HostTensor};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Interp {
    Nearest,
    Linear,
    Cubic,
}

impl Interp {
    /// Taps per axis.
    fn taps(self) -> usize {
        match self {
            Interp::Nearest => 1,
            Interp::Linear => 2,
            Interp::Cubic => 4,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

/// One grid point along one axis of `d` pixels: the fraction past the first tap as
/// `slope · g + offset` of the normalized coordinate `g`, and the pixel each tap reads (`None`:
/// outside the image with zeros padding, where it reads 0).
#[derive(Debug, PartialEq)]
struct AxisTaps {
    slope: f64,
    offset: f64,
    pixels: [Option<usize>; 4],
}

/// Reflects `x` into `[lo, hi]` by its nearest border, again and again; the value and its
/// derivative (±1, or 0 where the range is a point).
fn reflect(x: f64, lo: f64, hi: f64) -> (f64, f64) {
    let range = hi - lo;
    if range <= 0.0 {
        return (lo, 0.0);
    }
    let fold = |dx: f64, from: f64, to: f64, toward: f64| {
        let times = (dx / range).floor();
        // Clamped: for a huge `dx` the product is inexact and the rest may fall outside.
        let r = (dx - times * range).clamp(0.0, range);
        if times % 2.0 == 0.0 {
            (from + toward * r, -1.0)
        } else {
            (to - toward * r, 1.0)
        }
    };
    if x < lo {
        fold(lo - x, lo, hi, 1.0)
    } else if x > hi {
        fold(x - hi, hi, lo, -1.0)
    } else {
        (x, 1.0)
    }
}

/// The pixel that tap position `i` reads on an axis of `d` pixels, as the reference's
/// `_pixel_at_array` says: zeros padding reads nothing outside, border the nearest edge pixel,
/// reflection the pixel mirrored into the image.
fn pixel(i: f64, d: usize, padding: Padding, lo: f64, hi: f64) -> Option<usize> {
    let last = (d - 1) as f64;
    let at = match padding {
        Padding::Zeros => return (0.0..=last).contains(&i).then_some(i as usize),
        Padding::Border => i.clamp(0.0, last),
        Padding::Reflection => reflect(i, lo, hi).0.trunc().clamp(0.0, last),
    };
    // NaN (from a NaN grid) casts to 0: a pixel, never a panic.
    Some(at as usize)
}

/// The taps of normalized coordinate `g` on an axis of `d ≥ 1` pixels (the reference's
/// `_gs_denormalize`, the padding rule for points outside, and the taps around the point).
fn axis_taps(g: f64, d: usize, interp: Interp, padding: Padding, align: bool) -> AxisTaps {
    let df = d as f64;
    let (lo, hi) = if align {
        (0.0, df - 1.0)
    } else {
        (-0.5, df - 0.5)
    };
    // x = scale · g + (d − 1) / 2: align_corners maps ±1 to the corner pixels' centres, else to
    // the image's edges.
    let scale = if align { (df - 1.0) / 2.0 } else { df / 2.0 };
    let mut x = scale * g + (df - 1.0) / 2.0;
    let mut slope = scale;
    if interp == Interp::Nearest {
        // Half to even, as PyTorch and the reference round.
        x = x.round_ties_even();
        slope = 0.0;
    }
    if x < lo || x > hi {
        match padding {
            Padding::Zeros => {}
            // Cubic taps are clamped one by one, not the point: PyTorch and onnxruntime do
            // so (the ONNX reference clamps the point too, and differs from both there).
            Padding::Border if interp == Interp::Cubic => {}
            Padding::Border => {
                x = x.clamp(0.0, df - 1.0);
                slope = 0.0;
            }
            Padding::Reflection => {
                let (r, s) = reflect(x, lo, hi);
                x = r;
                slope *= s;
            }
        }
    }
    let base = x.floor();
    let first = if interp == Interp::Cubic {
        base - 1.0
    } else {
        base
    };
    let mut pixels = [None; 4];
    for (k, p) in pixels.iter_mut().enumerate().take(interp.taps()) {
        *p = pixel(first + k as f64, d, padding, lo, hi);
    }
    AxisTaps {
        slope,
        offset: x - slope * g - base,
        pixels,
    }
}

/// The weights of the taps for fractions `t` `[n, p, 1]`, along the last axis: `[n, p, k]`.
fn weights<B: Backend>(t: Tensor<B, 3>, interp: Interp) -> Tensor<B, 3> {
    match interp {
        Interp::Nearest => t.zeros_like().add_scalar(1.0),
        Interp::Linear => Tensor::cat(vec![t.clone().neg().add_scalar(1.0), t], 2),
        Interp::Cubic => {
            // Keys' cubic convolution with a = −0.75, PyTorch's and the reference's: the two
            // outer taps at distance 1 + t and 2 − t, the inner ones at t and 1 − t.
            const A: f64 = -0.75;
            let near = |s: Tensor<B, 3>| {
                ((s.clone().mul_scalar(A + 2.0).sub_scalar(A + 3.0)) * s.clone() * s)
                    .add_scalar(1.0)
            };
            let far = |s: Tensor<B, 3>| {
                ((s.clone().mul_scalar(A).sub_scalar(5.0 * A) * s.clone()).add_scalar(8.0 * A) * s)
                    .sub_scalar(4.0 * A)
            };
            let one_minus = t.clone().neg().add_scalar(1.0);
            Tensor::cat(
                vec![
                    far(t.clone().add_scalar(1.0)),
                    near(t.clone()),
                    near(one_minus.clone()),
                    far(one_minus.add_scalar(1.0)),
                ],
                2,
            )
        }
    }
}

/// GridSample (opsets 16–22): input 0 `[N, C, H, W]` sampled at grid (input 1) `[N, Ho, Wo, 2]`
/// of normalized `(x, y)` points, `mode` nearest, (bi)linear or (bi)cubic, `padding_mode` zeros,
/// border or reflection, `align_corners`. Opset 20's volumes (5-D inputs) are refused.
pub fn grid_sample<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let xd = ctx.dims(0)?;
    let gd = ctx.dims(1)?;
    let [n, c, h, w] = xd[..] else {
        return Err(ctx.error(format!(
            "input {xd:?} is not an image batch [N, C, H, W]: only 2-D sampling is supported"
        )));
    };
    let [gn, ho, wo, 2] = gd[..] else {
        return Err(ctx.error(format!("grid {gd:?} is not [N, H_out, W_out, 2]")));
    };
    if gn != n {
        return Err(ctx.error(format!("grid {gd:?} and input {xd:?} differ in batch size")));
    }
    let interp = match ctx.node.string("mode", "linear")?.as_str() {
        "nearest" => Interp::Nearest,
        "linear" | "bilinear" => Interp::Linear,
        "cubic" | "bicubic" => Interp::Cubic,
        other => return Err(ctx.error(format!("mode {other:?} is not nearest, linear or cubic"))),
    };
    let padding = match ctx.node.string("padding_mode", "zeros")?.as_str() {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        other => {
            return Err(ctx.error(format!(
                "padding_mode {other:?} is not zeros, border or reflection"
            )))
        }
    };
    let align = ctx.node.int("align_corners", 0)? != 0;
    // Checked first: an empty input may name sizes whose product overflows.
    ctx.fits("output", &[n, c, ho, wo], 4)?;
    let p = ho * wo;
    if n * c * p == 0 {
        return Ok(vec![empty(vec![n, c, ho, wo])]);
    }
    if h * w == 0 {
        return Err(ctx.error(format!("input {xd:?} has no pixels to sample")));
    }
    let k = interp.taps();
    // The gathered taps, before they are summed, are the largest tensor made here.
    ctx.fits("sampled taps", &[n, p, k * k, c], 4)?;
    if n * h * w > i32::MAX as usize {
        return Err(ctx.error(format!(
            "input {xd:?} has more pixels than the device's 32-bit indices reach"
        )));
    }
    let grid = ctx.host(1)?.to_f32();
    let mut slope = vec![0.0f32; n * p * 2];
    let mut offset = vec![0.0f32; n * p * 2];
    let mut valid = [vec![0.0f32; n * p * k], vec![0.0f32; n * p * k]];
    let mut index = vec![0usize; n * p * k * k];
    for b in 0..n {
        for q in 0..p {
            let at = b * p + q;
            // Grid points are (x, y): x runs along W, y along H.
            let [tx, ty] = [(0, w), (1, h)].map(|(a, d)| {
                let t = axis_taps(f64::from(grid[at * 2 + a]), d, interp, padding, align);
                slope[at * 2 + a] = t.slope as f32;
                offset[at * 2 + a] = t.offset as f32;
                for (j, px) in t.pixels[..k].iter().enumerate() {
                    valid[a][at * k + j] = if px.is_some() { 1.0 } else { 0.0 };
                }
                t.pixels
            });
            for (ky, row) in ty[..k].iter().enumerate() {
                for (kx, col) in tx[..k].iter().enumerate() {
                    index[(at * k + ky) * k + kx] =
                        b * h * w + row.unwrap_or(0) * w + col.unwrap_or(0);
                }
            }
        }
    }
    let device = ctx.device;
    let upload = |v: Vec<f32>, shape: [usize; 3]| {
        Tensor::<B, 3>::from_data(TensorData::new(v, shape), device)
    };
    let g = ctx.float(1)?.reshape(&[n, p, 2]).to_rank::<3>()?;
    let t = g * upload(slope, [n, p, 2]) + upload(offset, [n, p, 2]);
    let [valid_x, valid_y] = valid;
    let wx = weights(t.clone().narrow(2, 0, 1), interp) * upload(valid_x, [n, p, k]);
    let wy = weights(t.narrow(2, 1, 1), interp) * upload(valid_y, [n, p, k]);
    let tap_weights =
        (wy.reshape([n, p, k, 1]) * wx.reshape([n, p, 1, k])).reshape([n, p * k * k, 1]);
    let pixels = ctx
        .float(0)?
        .to_rank::<4>()?
        .permute([0, 2, 3, 1])
        .reshape([n * h * w, c]);
    let sampled = (pixels
        .select(0, index_tensor(&index, device))
        .reshape([n, p * k * k, c])
        * tap_weights)
        .reshape([n, p, k * k, c])
        .sum_dim(2)
        .reshape([n, ho, wo, c])
        .permute([0, 3, 1, 2]);
    Ok(vec![Value::Device(DynTensor::new(sampled))])
}

/// AffineGrid (opset 20): the grid `[N, H, W, 2]` of the points `θ · (x, y, 1)` for the
/// normalized centres `(x, y)` of an output of `size` `[N, C, H, W]`, θ `[N, 2, 3]`: what
/// GridSample reads in a spatial transformer. Computed on the device as one matrix product, so
/// θ gets its gradient. Volumes (θ `[N, 3, 4]`) are refused.
pub fn affine_grid<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let size = ctx.ints(1)?;
    let [n, _, h, w] = size[..] else {
        return Err(ctx.error(format!(
            "size {size:?} is not [N, C, H, W]: only 2-D grids are supported"
        )));
    };
    let [n, h, w] = [n, h, w].map(|v| usize::try_from(v).ok());
    let (Some(n), Some(h), Some(w)) = (n, h, w) else {
        return Err(ctx.error(format!("size {size:?} has a negative dimension")));
    };
    let td = ctx.dims(0)?;
    if td != [n, 2, 3] {
        return Err(ctx.error(format!("theta {td:?} is not [{n}, 2, 3] for size {size:?}")));
    }
    ctx.fits("grid", &[n, h, w, 2], 4)?;
    if n * h * w == 0 {
        return Ok(vec![empty(vec![n, h, w, 2])]);
    }
    let align = ctx.node.int("align_corners", 0)? != 0;
    // The normalized centre of pixel i of d, in [-1, 1].
    let centre = |i: usize, d: usize| -> f32 {
        let (i, d) = (i as f64, d as f64);
        (if align {
            if d > 1.0 {
                -1.0 + 2.0 * i / (d - 1.0)
            } else {
                -1.0
            }
        } else {
            (2.0 * i + 1.0) / d - 1.0
        }) as f32
    };
    let mut base = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            base.extend([centre(x, w), centre(y, h), 1.0]);
        }
    }
    let base = HostTensor::f32(vec![1, h * w, 3], base)
        .upload_to::<B>(ctx.device)
        .to_rank::<3>()?
        .expand([n, h * w, 3]);
    let theta = ctx.float(0)?.to_rank::<3>()?;
    let grid = base.matmul(theta.swap_dims(1, 2)).reshape([n, h, w, 2]);
    Ok(vec![Value::Device(DynTensor::new(grid))])
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_on};
    use super::{axis_taps, reflect, Interp, Padding};
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, HostTensor, Value};

    #[test]
    fn reflection_folds_back_and_forth() {
        assert_eq!(reflect(-1.0, -0.5, 3.5), (0.0, -1.0));
        assert_eq!(reflect(4.0, -0.5, 3.5), (3.0, -1.0));
        assert_eq!(reflect(8.0, -0.5, 3.5), (0.0, 1.0));
        assert_eq!(reflect(2.0, 0.0, 0.0), (0.0, 0.0));
        let (v, _) = reflect(f64::NAN, 0.0, 3.0);
        assert!(v.is_nan());
        let (v, _) = reflect(1e300, 0.0, 3.0);
        assert!((0.0..=3.0).contains(&v));
    }

    #[test]
    fn taps_follow_the_padding_rule() {
        // The point left of the image: x = -0.75 on 4 pixels without align_corners.
        let g = -1.125;
        let z = axis_taps(g, 4, Interp::Linear, Padding::Zeros, false);
        assert_eq!(z.pixels[..2], [None, Some(0)]);
        assert!((z.slope * g + z.offset - 0.25).abs() < 1e-12, "{z:?}");
        let b = axis_taps(g, 4, Interp::Linear, Padding::Border, false);
        assert_eq!(
            (b.slope, b.pixels[..2].to_vec()),
            (0.0, vec![Some(0), Some(1)])
        );
        let r = axis_taps(g, 4, Interp::Cubic, Padding::Reflection, false);
        assert_eq!(r.slope, -2.0);
        assert_eq!(r.pixels, [Some(1), Some(0), Some(0), Some(1)]);
        for huge in [f64::NAN, f64::INFINITY, -1e300] {
            for padding in [Padding::Zeros, Padding::Border, Padding::Reflection] {
                axis_taps(huge, 3, Interp::Cubic, padding, true);
            }
        }
    }

    #[test]
    fn a_spatial_transformer_passes_gradients_to_image_and_theta() {
        let ad = crate::Device::cpu().autodiff();
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let x = DynTensor::from_host(&x, &[1, 1, 4, 4], &ad).require_grad();
        // Scaled by 0.9 and shifted half a pixel right, over a ramp that rises to the right;
        // border padding, so that no point near the edge reads zeros.
        let theta =
            DynTensor::from_host(&[0.9, 0.0, 0.25, 0.0, 0.9, 0.0], &[1, 2, 3], &ad).require_grad();
        for mode in ["nearest", "linear", "cubic"] {
            // Made anew for each backward pass, which consumes burn's graph.
            let size = Value::Host(HostTensor::i64(vec![4], vec![1, 1, 4, 4]));
            let grid = run_on(
                "AffineGrid",
                20,
                &[],
                vec![Value::Device(theta.clone()), size],
                &ad,
            )
            .unwrap()
            .remove(0);
            let attrs = [
                ("mode", Attr::String(mode.into())),
                ("padding_mode", Attr::String("border".into())),
            ];
            let Value::Device(y) = run_on(
                "GridSample",
                20,
                &attrs,
                vec![Value::Device(x.clone()), grid.clone()],
                &ad,
            )
            .unwrap()
            .remove(0) else {
                panic!("device data is sampled on the device");
            };
            assert_eq!(y.dims(), [1, 1, 4, 4]);
            let grads = y.backward();
            let gx = x.grad(&grads).unwrap().to_vec();
            assert!(gx.iter().sum::<f32>() > 1.0, "{mode}: {gx:?}");
            let gt = theta.grad(&grads).map(|g| g.to_vec());
            if mode == "nearest" {
                assert!(
                    gt.as_ref().is_none_or(|g| g.iter().all(|&v| v == 0.0)),
                    "{gt:?}"
                );
            } else {
                // Moving right raises the values inside the image, and leaves the border's.
                let gt = gt.unwrap();
                assert!(gt[2] > 0.0, "{mode}: {gt:?}");
            }
        }
        let err = run(
            "GridSample",
            20,
            &[],
            vec![
                Value::Device(DynTensor::from_host(
                    &[0.0; 8],
                    &[1, 1, 2, 2, 2],
                    crate::Device::cpu().burn(),
                )),
                Value::Host(HostTensor::f32(vec![1, 1, 1, 1, 3], vec![0.0; 3])),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("only 2-D"), "{err}");
    }
}
