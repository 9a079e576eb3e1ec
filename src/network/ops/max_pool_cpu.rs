//! 2-D max pooling on the CPU by our own kernel.
//!
//! burn-flex 0.21 visits every window element in a bounds-checked scalar loop and, under autodiff,
//! always computes argmax indices that way: about a quarter of a GoogLeNet feature-visualization
//! step. Here the pooling is separable (a row pass over the whole padded plane, then a column
//! pass at the outputs), both loops the compiler vectorizes, one plane per task on the rayon
//! pool of the calling thread. Under autodiff the output is a `gather` of the input at the argmax
//! positions: the same values, and burn's gradient of a gather (a scatter-add) sends each output's
//! gradient to the element that won its window, which is exactly the max pool gradient. Ties go
//! to the first maximum in row-major window order, as in burn's kernel and PyTorch's.

use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

/// The window geometry of one 2-D max pool; `begin` is the implicit (-inf) padding before each
/// axis, `out` the output size (windows past the end read padding too).
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub begin: [usize; 2],
    pub out: [usize; 2],
}

/// Max-pools `x` (`[N, C, H, W]`, unpadded); `None` when the data is not f32 or some window holds
/// nothing above -inf (the caller then uses burn's kernel, which defines those cases).
pub(crate) fn max_pool<B: Backend>(x: &Tensor<B, 4>, g: &Geometry) -> Option<Tensor<B, 4>> {
    let [n, c, h, w] = x.dims();
    let [oh, ow] = g.out;
    let data = x.to_data();
    let xs = data.as_slice::<f32>().ok()?;
    let (values, argmax) = pool_planes(xs, [h, w], g)?;
    let device = x.device();
    if !B::ad_enabled(&device) {
        return Some(Tensor::from_data(
            TensorData::new(values, [n, c, oh, ow]),
            &device,
        ));
    }
    let argmax = Tensor::<B, 2, Int>::from_data(TensorData::new(argmax, [n * c, oh * ow]), &device);
    Some(
        x.clone()
            .reshape([n * c, h * w])
            .gather(1, argmax)
            .reshape([n, c, oh, ow]),
    )
}

/// Window maxima and their flat positions (`iy * w + ix`) for every `h × w` plane of `x`.
pub(crate) fn pool_planes(
    x: &[f32],
    [h, w]: [usize; 2],
    g: &Geometry,
) -> Option<(Vec<f32>, Vec<i32>)> {
    let pad = Padded::new([h, w], g);
    let plane_out = g.out[0] * g.out[1];
    let planes = x.len() / (h * w);
    let mut values = vec![f32::NEG_INFINITY; planes * plane_out];
    let mut argmax = vec![-1i32; planes * plane_out];
    values
        .par_chunks_mut(plane_out)
        .zip(argmax.par_chunks_mut(plane_out))
        .zip(x.par_chunks(h * w))
        .for_each_init(
            || Scratch::new(&pad),
            |scratch, ((v, a), plane)| pool_plane(plane, &pad, g, scratch, v, a),
        );
    argmax.iter().all(|&i| i >= 0).then_some((values, argmax))
}

/// A plane inside its -inf padding: every window then lies wholly inside, and both passes run
/// over long contiguous runs. `index` holds each cell's flat input position (-1 in the padding)
/// and is the same for every plane.
struct Padded {
    h: usize,
    w: usize,
    /// Padded height and width.
    hp: usize,
    wp: usize,
    top: usize,
    left: usize,
    index: Vec<i32>,
}

impl Padded {
    fn new([h, w]: [usize; 2], g: &Geometry) -> Self {
        let span = |i: usize| (g.kernel[i] - 1) * g.dilations[i] + 1;
        // Enough rows and columns for the last window, and at least the input.
        let hp = ((g.out[0] - 1) * g.strides[0] + span(0)).max(g.begin[0] + h);
        let wp = ((g.out[1] - 1) * g.strides[1] + span(1)).max(g.begin[1] + w);
        let (top, left) = (g.begin[0], g.begin[1]);
        let mut index = vec![-1i32; hp * wp];
        for iy in 0..h {
            for ix in 0..w {
                index[(iy + top) * wp + ix + left] = (iy * w + ix) as i32;
            }
        }
        Self {
            h,
            w,
            hp,
            wp,
            top,
            left,
            index,
        }
    }
}

/// Per-thread buffers: the padded plane and the row-pass maxima with their positions.
struct Scratch {
    plane: Vec<f32>,
    row_max: Vec<f32>,
    row_arg: Vec<i32>,
}

impl Scratch {
    fn new(p: &Padded) -> Self {
        let n = p.hp * p.wp;
        Self {
            plane: vec![f32::NEG_INFINITY; n],
            row_max: vec![0.0; n],
            row_arg: vec![0; n],
        }
    }
}

/// One plane into `values` (starting at -inf) and `argmax` (starting at -1), compiled for AVX2
/// where the CPU has it.
fn pool_plane(
    x: &[f32],
    p: &Padded,
    g: &Geometry,
    s: &mut Scratch,
    values: &mut [f32],
    argmax: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { pool_plane_avx2(x, p, g, s, values, argmax) };
    }
    pool_plane_portable(x, p, g, s, values, argmax)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pool_plane_avx2(
    x: &[f32],
    p: &Padded,
    g: &Geometry,
    s: &mut Scratch,
    values: &mut [f32],
    argmax: &mut [i32],
) {
    pool_plane_portable(x, p, g, s, values, argmax)
}

/// Separable: first the maximum (and its position) of every horizontal run of the kernel's
/// columns, over the whole padded plane as one flat array; then, for each output, the maximum
/// of those over the kernel's rows. Both passes keep the first of equal values (strict `>`), so
/// the winner is the first maximum in row-major window order.
#[inline(always)]
fn pool_plane_portable(
    x: &[f32],
    p: &Padded,
    g: &Geometry,
    s: &mut Scratch,
    values: &mut [f32],
    argmax: &mut [i32],
) {
    let (wp, dw) = (p.wp, g.dilations[1]);
    for (iy, row) in x.chunks_exact(p.w).enumerate().take(p.h) {
        let start = (iy + p.top) * wp + p.left;
        s.plane[start..start + p.w].copy_from_slice(row);
    }
    // Row pass. Positions near a row's end mix in the next row, but no window starts there.
    let n = p.hp * wp - (g.kernel[1] - 1) * dw;
    s.row_max[..n].copy_from_slice(&s.plane[..n]);
    s.row_arg[..n].copy_from_slice(&p.index[..n]);
    for kx in 1..g.kernel[1] {
        let off = kx * dw;
        let (vals, args) = (&s.plane[off..off + n], &p.index[off..off + n]);
        for ((m, a), (&v, &i)) in s.row_max[..n]
            .iter_mut()
            .zip(&mut s.row_arg[..n])
            .zip(vals.iter().zip(args))
        {
            keep_first_max(m, a, v, i);
        }
    }
    // Column pass at the outputs.
    let [oh, ow] = g.out;
    let sw = g.strides[1];
    for oy in 0..oh {
        let m = &mut values[oy * ow..(oy + 1) * ow];
        let a = &mut argmax[oy * ow..(oy + 1) * ow];
        for ky in 0..g.kernel[0] {
            let base = (oy * g.strides[0] + ky * g.dilations[0]) * wp;
            if sw == 1 {
                let (vals, args) = (&s.row_max[base..base + ow], &s.row_arg[base..base + ow]);
                for ((mv, av), (&v, &i)) in
                    m.iter_mut().zip(a.iter_mut()).zip(vals.iter().zip(args))
                {
                    keep_first_max(mv, av, v, i);
                }
            } else {
                for (ox, (mv, av)) in m.iter_mut().zip(a.iter_mut()).enumerate() {
                    let j = base + ox * sw;
                    let (v, i) = (s.row_max[j], s.row_arg[j]);
                    keep_first_max(mv, av, v, i);
                }
            }
        }
    }
}

/// Takes `(v, i)` over `(m, a)` when `v` is strictly greater: the first of equal maxima stays.
/// Branch-free, so that the loops around it vectorize.
#[inline(always)]
fn keep_first_max(m: &mut f32, a: &mut i32, v: f32, i: i32) {
    let take = v > *m;
    *m = if take { v } else { *m };
    *a = if take { i } else { *a };
}

/// The window geometries the tests pool with (kernel, strides, dilations, padding on both sides),
/// and their outputs' size for an `h × w` plane.
#[cfg(test)]
pub(crate) mod test_geometries {
    use super::Geometry;

    /// Kernel, strides, dilations and padding, per axis.
    type Case = ([usize; 2], [usize; 2], [usize; 2], [usize; 2]);

    const CASES: [Case; 5] = [
        ([3, 3], [1, 1], [1, 1], [1, 1]),
        ([3, 3], [2, 2], [1, 1], [0, 0]),
        ([2, 3], [2, 3], [1, 1], [1, 0]),
        ([3, 2], [1, 2], [2, 2], [2, 1]),
        ([1, 1], [3, 2], [1, 1], [0, 0]),
    ];

    pub(crate) fn all([h, w]: [usize; 2]) -> impl Iterator<Item = Geometry> {
        CASES
            .into_iter()
            .map(move |(kernel, strides, dilations, begin)| {
                let out = [0, 1].map(|i| {
                    let span = (kernel[i] - 1) * dilations[i] + 1;
                    ([h, w][i] + 2 * begin[i] - span) / strides[i] + 1
                });
                Geometry {
                    kernel,
                    strides,
                    dilations,
                    begin,
                    out,
                }
            })
    }
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
        for g in super::test_geometries::all([h, w]) {
            let out = g.out;
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
