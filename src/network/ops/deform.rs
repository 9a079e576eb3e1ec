//! DeformConv (opsets 19 and 22): a convolution whose every tap reads the input at its own
//! learned offset (deformable convolution, DCN; with a mask, DCNv2), as torchvision's
//! `deform_conv2d` exports it.
//!
//! Each tap samples the input bilinearly at its point, a pixel outside the input reading 0 (the
//! ONNX reference's GridSample with zeros padding at pixel coordinates). As in GridSample
//! (grid.rs), which pixels a point reads is integer work done on the host from the offsets'
//! values, and the weights of those pixels are computed on the device from the offsets
//! themselves, so the output's gradient reaches the input, the offsets (and the convolution
//! that made them), the mask and the weights. The sampled taps then meet the weights as one
//! matrix product per group.

use burn::prelude::*;
use burn::tensor::TensorData;

use super::conv::Window;
use super::shape::index_tensor;
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::DynTensor;

/// The corners a point reads, as (row step, column step), in the order of their weights below.
const CORNERS: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// DeformConv: X `[N, C, H, W]`, W `[M, C/group, kH, kW]`, offset `[N, offset_group·kH·kW·2,
/// oH, oW]` (per tap a (row, column) offset), optional bias `[M]` and mask `[N,
/// offset_group·kH·kW, oH, oW]`; strides, pads, dilations as Conv's. 1-D and 3-D inputs are
/// refused.
pub fn deform_conv<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let xd = ctx.dims(0)?;
    let wd = ctx.dims(1)?;
    let od = ctx.dims(2)?;
    let [n, c, h, w] = xd[..] else {
        return Err(ctx.error(format!(
            "input {xd:?} is not an image batch [N, C, H, W]: only 2-D deformable convolution \
             is supported"
        )));
    };
    let [m, cg, kh, kw] = wd[..] else {
        return Err(ctx.error(format!("weight {wd:?} is not [M, C/group, kH, kW]")));
    };
    let positive = |name: &str| -> Result<usize> {
        let v = ctx.node.int(name, 1)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v >= 1)
            .ok_or_else(|| ctx.error(format!("{name} {v} must be at least 1")))
    };
    let (group, og) = (positive("group")?, positive("offset_group")?);
    if cg.checked_mul(group) != Some(c) || m % group != 0 || c % og != 0 {
        return Err(ctx.error(format!(
            "input {xd:?} and weight {wd:?} do not fit group {group} and offset_group {og}"
        )));
    }
    if let Some(k) = ctx.node.ints("kernel_shape")? {
        if k != [kh as i64, kw as i64] {
            return Err(ctx.error(format!("kernel_shape {k:?} is not the weight's {wd:?}")));
        }
    }
    let win = Window::read(ctx, vec![kh, kw], &[h, w])?;
    let out: Vec<usize> = (0..2)
        .map(|i| {
            let span = (win.kernel[i] - 1) * win.dilations[i] + 1;
            let padded = [h, w][i] + win.begin[i] + win.end[i];
            padded
                .checked_sub(span)
                .map(|s| s / win.strides[i] + 1)
                .ok_or_else(|| ctx.error(format!("kernel {wd:?} is larger than input {xd:?}")))
        })
        .collect::<Result<_>>()?;
    let (oh, ow) = (out[0], out[1]);
    let k = kh * kw;
    if od != [n, og * k * 2, oh, ow] {
        return Err(ctx.error(format!(
            "offset {od:?} is not [{n}, {}, {oh}, {ow}] (offset_group · kH · kW · 2 per output \
             position)",
            og * k * 2
        )));
    }
    if ctx.has(4) && ctx.dims(4)? != [n, og * k, oh, ow] {
        return Err(ctx.error(format!(
            "mask {:?} is not [{n}, {}, {oh}, {ow}]",
            ctx.dims(4)?,
            og * k
        )));
    }
    if ctx.has(3) && ctx.dims(3)? != [m] {
        return Err(ctx.error(format!("bias {:?} is not [{m}]", ctx.dims(3)?)));
    }
    let p = oh * ow;
    ctx.fits("output", &[n, m, oh, ow], 4)?;
    // The gathered corners, before they are weighed and summed, are the largest tensor here.
    ctx.fits("sampled taps", &[n, k * 4, p, c], 4)?;
    let taps = n * k * 4 * p;
    if n * h * w > i32::MAX as usize || taps > i32::MAX as usize {
        return Err(ctx.error(format!(
            "input {xd:?} and offset {od:?} are past the device's 32-bit indices"
        )));
    }
    if n * m * p == 0 || c == 0 {
        return Ok(vec![super::shape::empty(vec![n, m, oh, ow])]);
    }

    // On the host: for each tap's point, the corners it reads (flat pixel indices, 0 where the
    // corner is outside), whether each is inside, and the shift that makes the point's fraction
    // past its first corner from its offset (`fraction = offset + shift`).
    let offsets = ctx.host(2)?.to_f32();
    let mut shift = vec![0.0f32; offsets.len()];
    // [n, og, k, 4, p]
    let mut inside = vec![0.0f32; n * og * k * 4 * p];
    let mut index = vec![vec![0usize; taps]; og];
    for b in 0..n {
        for g in 0..og {
            for (tap, (i, j)) in (0..kh)
                .flat_map(|i| (0..kw).map(move |j| (i, j)))
                .enumerate()
            {
                for (q, (y, x)) in (0..oh)
                    .flat_map(|y| (0..ow).map(move |x| (y, x)))
                    .enumerate()
                {
                    let base = [
                        (y * win.strides[0] + i * win.dilations[0]) as f64 - win.begin[0] as f64,
                        (x * win.strides[1] + j * win.dilations[1]) as f64 - win.begin[1] as f64,
                    ];
                    let at = |axis: usize| (((b * og + g) * k + tap) * 2 + axis) * p + q;
                    let point = [0, 1].map(|a| base[a] + f64::from(offsets[at(a)]));
                    // A point at least a pixel outside reads nothing (nor does a NaN one, whose
                    // weights are NaN as the reference's are).
                    let first = [0, 1].map(|a| {
                        let size = [h, w][a] as f64;
                        (point[a] > -1.0 && point[a] < size).then(|| point[a].floor())
                    });
                    // Outside, the fraction is 0 (its weights finite, times 0 for no corner)
                    // however far the offset goes.
                    for a in 0..2 {
                        shift[at(a)] = first[a].map_or(-offsets[at(a)], |f| (base[a] - f) as f32);
                    }
                    let (Some(r), Some(s)) = (first[0], first[1]) else {
                        continue;
                    };
                    for (corner, (dy, dx)) in CORNERS.iter().enumerate() {
                        let (row, col) = (r as i64 + *dy as i64, s as i64 + *dx as i64);
                        if (0..h as i64).contains(&row) && (0..w as i64).contains(&col) {
                            let t = ((b * k + tap) * 4 + corner) * p + q;
                            index[g][t] = (b * h + row as usize) * w + col as usize;
                            inside[(((b * og + g) * k + tap) * 4 + corner) * p + q] = 1.0;
                        }
                    }
                }
            }
        }
    }

    let device = ctx.device;
    let upload = |v: Vec<f32>, shape: [usize; 5]| {
        Tensor::<B, 5>::from_data(TensorData::new(v, shape), device)
    };
    // Fractions past the first corner, rows and columns: [n, og, k, 1, p] each.
    let fraction =
        ctx.float(2)?.reshape(&[n, og, k, 2, p]).to_rank::<5>()? + upload(shift, [n, og, k, 2, p]);
    let (fy, fx) = (fraction.clone().narrow(3, 0, 1), fraction.narrow(3, 1, 1));
    let (gy, gx) = (
        fy.clone().neg().add_scalar(1.0),
        fx.clone().neg().add_scalar(1.0),
    );
    let mut weights = Tensor::cat(
        vec![
            gy.clone() * gx.clone(),
            gy * fx.clone(),
            fy.clone() * gx,
            fy * fx,
        ],
        3,
    ) * upload(inside, [n, og, k, 4, p]);
    // On a linearized path (Circuits' expanded weights) the mask, a gate that is usually a
    // sigmoid, would be its linear stand-in's value at rest, 0, and hide every weight: it counts
    // as 1 there, as if the convolution were not modulated.
    if ctx.has(4) && !ctx.linearized {
        weights = weights * ctx.float(4)?.reshape(&[n, og, k, 1, p]).to_rank::<5>()?;
    }
    let pixels = ctx
        .float(0)?
        .to_rank::<4>()?
        .permute([0, 2, 3, 1])
        .reshape([n * h * w, c]);
    let per_offset_group = c / og;
    // Each offset group's channels sampled at its points, weighed and summed over the corners:
    // [n, k, p, C/og], then all channels, [n, p, k, C].
    let sampled: Vec<Tensor<B, 4>> = index
        .iter()
        .enumerate()
        .map(|(g, index)| {
            let corners = pixels
                .clone()
                .narrow(1, g * per_offset_group, per_offset_group)
                .select(0, index_tensor(index, device))
                .reshape([n, k, 4, p, per_offset_group]);
            let weights = weights.clone().narrow(1, g, 1).reshape([n, k, 4, p, 1]);
            (corners * weights)
                .sum_dim(2)
                .reshape([n, k, p, per_offset_group])
        })
        .collect();
    let columns = Tensor::cat(sampled, 3).permute([0, 2, 1, 3]);
    // Per group: [n·p, k·C/group] times the weight as [k·C/group, M/group].
    let per_group = m / group;
    let weight = ctx.float(1)?.to_rank::<4>()?;
    let y: Vec<Tensor<B, 2>> = (0..group)
        .map(|g| {
            let cols = columns
                .clone()
                .narrow(3, g * cg, cg)
                .reshape([n * p, k * cg]);
            let wg = weight
                .clone()
                .narrow(0, g * per_group, per_group)
                .reshape([per_group, cg, k])
                .permute([2, 1, 0])
                .reshape([k * cg, per_group]);
            cols.matmul(wg)
        })
        .collect();
    let mut y = Tensor::cat(y, 1)
        .reshape([n, oh, ow, m])
        .permute([0, 3, 1, 2]);
    if ctx.has(3) {
        y = y + ctx.float(3)?.reshape(&[1, m, 1, 1]).to_rank::<4>()?;
    }
    Ok(vec![Value::Device(DynTensor::new(y))])
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use crate::network::value::{DynTensor, Value};

    fn floats(v: &[f32], shape: &[usize]) -> Value {
        Value::Device(DynTensor::from_host(v, shape, crate::Device::cpu().burn()))
    }

    /// A 1×1 kernel reads the input at its offset: itself at 0, the bilinear mix between
    /// pixels, 0 outside however far (not NaN); a wrong offset shape is an error naming the node.
    #[test]
    fn taps_read_bilinearly_at_their_offsets_and_nothing_outside() {
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let run_with = |offsets: Vec<f32>| {
            let inputs = vec![
                floats(&x, &[1, 1, 3, 4]),
                floats(&[1.0], &[1, 1, 1, 1]),
                floats(&offsets, &[1, 2, 3, 4]),
            ];
            run("DeformConv", 19, &[], inputs).map(|y| y[0].to_host().to_f32())
        };
        assert_eq!(run_with(vec![0.0; 24]).unwrap(), x);
        // Pixel (1, 1) read half a row down and a quarter column right: 5 + 0.5·4 + 0.25.
        let mut offsets = vec![0.0; 24];
        offsets[5] = 0.5;
        offsets[12 + 5] = 0.25;
        assert_eq!(run_with(offsets).unwrap()[5], 7.25);
        for far in [1e20, -1e20, 4.0] {
            assert_eq!(run_with(vec![far; 24]).unwrap(), [0.0; 12], "{far}");
        }
        let err = run(
            "DeformConv",
            19,
            &[],
            vec![
                floats(&x, &[1, 1, 3, 4]),
                floats(&[1.0], &[1, 1, 1, 1]),
                floats(&[0.0; 12], &[1, 1, 3, 4]),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("node_under_test") && err.contains("offset"),
            "{err}"
        );
    }
}
