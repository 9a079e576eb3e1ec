//! 2-D max pooling on the CPU by our own kernel.
//!
//! burn-flex 0.21 visits every window element in a bounds-checked scalar loop and, under autodiff,
//! always computes argmax indices that way: about a quarter of a GoogLeNet feature-visualization
//! step. Here an output row is the running maximum of kernel-many shifted input rows, a loop the
//! compiler vectorizes, spread over burn's own thread pool. Under autodiff the output is a
//! `gather` of the input at the argmax positions: the same values, and burn's gradient of a gather
//! (a scatter-add) sends each output's gradient to the element that won its window, which is
//! exactly the max pool gradient. Ties go to the first maximum in row-major window order, as in
//! burn's kernel and PyTorch's.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::Dispatch;
use rayon::prelude::*;

use crate::device::is_autodiff;

/// The window geometry of one 2-D max pool; `begin` is the implicit (-inf) padding before each
/// axis, `out` the output size (windows past the end read padding too).
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub begin: [usize; 2],
    pub out: [usize; 2],
}

/// Max-pools `x` (`[N, C, H, W]`, unpadded); `None` when the data is not f32 or some window holds
/// nothing above -inf (the caller then uses burn's kernel, which defines those cases).
pub(super) fn max_pool(x: &Tensor<Dispatch, 4>, g: &Geometry) -> Option<Tensor<Dispatch, 4>> {
    let [n, c, h, w] = x.dims();
    let [oh, ow] = g.out;
    let data = x.to_data();
    let xs = data.as_slice::<f32>().ok()?;
    let (values, argmax) = pool_planes(xs, [h, w], g)?;
    let device = x.device();
    if !is_autodiff(&device) {
        return Some(Tensor::from_data(
            TensorData::new(values, [n, c, oh, ow]),
            &device,
        ));
    }
    let argmax =
        Tensor::<Dispatch, 2, Int>::from_data(TensorData::new(argmax, [n * c, oh * ow]), &device);
    Some(
        x.clone()
            .reshape([n * c, h * w])
            .gather(1, argmax)
            .reshape([n, c, oh, ow]),
    )
}

/// Window maxima and their flat positions (`iy * w + ix`) for every `h × w` plane of `x`.
fn pool_planes(x: &[f32], [h, w]: [usize; 2], g: &Geometry) -> Option<(Vec<f32>, Vec<i32>)> {
    let plane_out = g.out[0] * g.out[1];
    let planes = x.len() / (h * w);
    let mut values = vec![f32::NEG_INFINITY; planes * plane_out];
    let mut argmax = vec![-1i32; planes * plane_out];
    values
        .par_chunks_mut(plane_out)
        .zip(argmax.par_chunks_mut(plane_out))
        .zip(x.par_chunks(h * w))
        .for_each(|((v, a), plane)| pool_plane(plane, [h, w], g, v, a));
    argmax.iter().all(|&i| i >= 0).then_some((values, argmax))
}

/// One plane into `values` (starting at -inf) and `argmax` (starting at -1), compiled for AVX2
/// where the CPU has it: the running maximum and its position over a shifted input row then run
/// 8 lanes at a time.
fn pool_plane(x: &[f32], hw: [usize; 2], g: &Geometry, values: &mut [f32], argmax: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { pool_plane_avx2(x, hw, g, values, argmax) };
    }
    pool_plane_portable(x, hw, g, values, argmax)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pool_plane_avx2(
    x: &[f32],
    hw: [usize; 2],
    g: &Geometry,
    values: &mut [f32],
    argmax: &mut [i32],
) {
    pool_plane_portable(x, hw, g, values, argmax)
}

#[inline(always)]
fn pool_plane_portable(
    x: &[f32],
    [h, w]: [usize; 2],
    g: &Geometry,
    values: &mut [f32],
    argmax: &mut [i32],
) {
    let [oh, ow] = g.out;
    let sw = g.strides[1];
    // With a column stride, each row is first split into its `sw` phases (columns c ≡ p mod sw,
    // in order), so that every kernel column reads a contiguous run.
    let phase_len = w.div_ceil(sw);
    let phased: Vec<f32>;
    let (src, row_len) = if sw == 1 {
        (x, w)
    } else {
        let mut buf = vec![0.0f32; h * sw * phase_len];
        for (row, out) in x.chunks_exact(w).zip(buf.chunks_exact_mut(sw * phase_len)) {
            for (p, phase) in out.chunks_exact_mut(phase_len).enumerate() {
                for (d, &v) in phase.iter_mut().zip(row.iter().skip(p).step_by(sw)) {
                    *d = v;
                }
            }
        }
        phased = buf;
        (&phased[..], sw * phase_len)
    };
    for oy in 0..oh {
        let m = &mut values[oy * ow..(oy + 1) * ow];
        let a = &mut argmax[oy * ow..(oy + 1) * ow];
        for ky in 0..g.kernel[0] {
            let Some(iy) = input_row(g, oy, ky, h) else {
                continue;
            };
            let src = &src[iy * row_len..(iy + 1) * row_len];
            for kx in 0..g.kernel[1] {
                let Some((lo, hi, first)) = valid_columns(g, kx, w) else {
                    continue;
                };
                let start = (first % sw) * phase_len + first / sw;
                let run = &src[start..start + (hi - lo)];
                let base = (iy * w + first) as i32;
                let step = sw as i32;
                for (j, ((&v, mv), av)) in run
                    .iter()
                    .zip(&mut m[lo..hi])
                    .zip(&mut a[lo..hi])
                    .enumerate()
                {
                    let take = v > *mv;
                    *mv = if take { v } else { *mv };
                    *av = if take { base + j as i32 * step } else { *av };
                }
            }
        }
    }
}

/// The input row that kernel row `ky` of output row `oy` reads, if it is not padding.
fn input_row(g: &Geometry, oy: usize, ky: usize, h: usize) -> Option<usize> {
    (oy * g.strides[0] + ky * g.dilations[0])
        .checked_sub(g.begin[0])
        .filter(|&iy| iy < h)
}

/// For kernel column `kx`: the output columns `lo..hi` whose input column `ox * sw + off` lies
/// inside the row, and the input column of `lo`.
fn valid_columns(g: &Geometry, kx: usize, w: usize) -> Option<(usize, usize, usize)> {
    let sw = g.strides[1];
    let off = (kx * g.dilations[1]) as isize - g.begin[1] as isize;
    let lo = if off < 0 {
        off.unsigned_abs().div_ceil(sw)
    } else {
        0
    };
    let hi = match w as isize - off {
        lim if lim <= 0 => 0,
        lim => ((lim as usize - 1) / sw + 1).min(g.out[1]),
    };
    (lo < hi).then(|| (lo, hi, ((lo * sw) as isize + off) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one window at a time: the first maximum in row-major window order.
    fn reference(x: &[f32], [h, w]: [usize; 2], g: &Geometry) -> (Vec<f32>, Vec<i32>) {
        let (mut vals, mut idx) = (Vec::new(), Vec::new());
        for oy in 0..g.out[0] {
            for ox in 0..g.out[1] {
                let (mut best, mut at) = (f32::NEG_INFINITY, -1i32);
                for ky in 0..g.kernel[0] {
                    for kx in 0..g.kernel[1] {
                        let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize
                            - g.begin[0] as isize;
                        let ix = (ox * g.strides[1] + kx * g.dilations[1]) as isize
                            - g.begin[1] as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = x[iy as usize * w + ix as usize];
                        if v > best {
                            (best, at) = (v, (iy as usize * w + ix as usize) as i32);
                        }
                    }
                }
                vals.push(best);
                idx.push(at);
            }
        }
        (vals, idx)
    }

    #[test]
    fn matches_the_definition_for_strides_pads_dilations_and_ties() {
        // Values drawn from a small set so that windows often tie.
        let (h, w) = (9, 11);
        let x: Vec<f32> = (0..2 * h * w).map(|i| ((i * 7919) % 13) as f32).collect();
        for (kernel, strides, dilations, begin) in [
            ([3, 3], [1, 1], [1, 1], [1, 1]),
            ([3, 3], [2, 2], [1, 1], [0, 0]),
            ([2, 3], [2, 3], [1, 1], [1, 0]),
            ([3, 2], [1, 2], [2, 2], [2, 1]),
            ([1, 1], [3, 2], [1, 1], [0, 0]),
        ] {
            let out = [0, 1].map(|i| {
                let size = [h, w][i];
                let span = (kernel[i] - 1) * dilations[i] + 1;
                (size + 2 * begin[i] - span) / strides[i] + 1
            });
            let g = Geometry {
                kernel,
                strides,
                dilations,
                begin,
                out,
            };
            let (vals, idx) = pool_planes(&x, [h, w], &g).expect("every window is finite");
            let plane = h * w;
            for p in 0..2 {
                let (rv, ri) = reference(&x[p * plane..(p + 1) * plane], [h, w], &g);
                let n = out[0] * out[1];
                assert_eq!(&vals[p * n..(p + 1) * n], &rv[..], "{g:?}");
                assert_eq!(&idx[p * n..(p + 1) * n], &ri[..], "{g:?}");
            }
        }
    }

    #[test]
    fn a_window_of_only_minus_infinity_is_left_to_burn() {
        let x = [f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY, 2.0];
        let g = Geometry {
            kernel: [1, 1],
            strides: [1, 1],
            dilations: [1, 1],
            begin: [0, 0],
            out: [2, 2],
        };
        assert!(pool_planes(&x, [2, 2], &g).is_none());
    }
}
