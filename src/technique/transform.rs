//! Transformation robustness (Lucid's `transform.py`): random pad, jitter, scale and rotation
//! applied to the image batch before every optimization step.
//!
//! A [`Transform`] is a plain function of the batch and a seeded random generator; a list of
//! them is applied in order. The same random draw applies to every image of the batch.
//!
//! # Shapes
//! `[N, C, H, W]` in, `[N, C, H', W']` out.

use burn::prelude::*;
use burn::tensor::ops::PadMode;
use rand::rngs::StdRng;
use rand::Rng;

use crate::network::ops::resample::{Taps, TAPS};
use crate::network::Back;

/// One transformation of an image batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Pads every side by `n` pixels with the constant `value` (Lucid: 0.5).
    Pad { n: usize, value: f32 },
    /// Crops a random window `n` pixels smaller in each dimension.
    Jitter(usize),
    /// Resizes by a factor picked from the list (bilinear).
    Scale(Vec<f32>),
    /// Rotates by an angle in degrees picked from the list (bilinear, zero fill).
    Rotate(Vec<f32>),
    /// Resizes to exactly `size × size` (bilinear; draws nothing): last, for a network that
    /// only takes its input size (a fully connected layer after a `Flatten`), since the
    /// transforms before change the size.
    Fit(usize),
}

/// Lucid's `standard_transforms` for 128-px renders, with pixel amounts scaled by `size / 128`
/// for smaller images (at 28 px: pad 3, jitter 2, jitter 1):
/// pad 12, jitter 8, scale 0.90–1.10, rotate ±10°, jitter 4.
pub fn standard_transforms(size: usize) -> Vec<Transform> {
    let px = |n: usize| {
        (n.saturating_mul(size) as f32 / 128.0)
            .round()
            .max(1.0)
            .min(n as f32) as usize
    };
    vec![
        Transform::Pad {
            n: px(12),
            value: 0.5,
        },
        Transform::Jitter(px(8)),
        Transform::Scale((0..11).map(|i| 1.0 + (i as f32 - 5.0) / 50.0).collect()),
        Transform::Rotate((-10..=10).map(|d| d as f32).collect()),
        Transform::Jitter(px(4)),
    ]
}

/// Applies `transforms` in order with draws from `rng`. A scale directly followed by a rotation
/// (as in [`standard_transforms`]) is one resampling: the same geometry as two, with half the
/// work and one bilinear blur instead of two. A jitter right after a pad or a resampling is
/// folded into it (an asymmetric pad; a smaller output grid), so that no op reads a cropped,
/// strided view of the batch: the same pixels and the same random draws as one op at a time.
pub fn apply<B: Back>(
    transforms: &[Transform],
    mut x: Tensor<B, 4>,
    rng: &mut StdRng,
) -> Tensor<B, 4> {
    let mut rest = transforms;
    while let Some((t, after)) = rest.split_first() {
        rest = after;
        x = match t {
            Transform::Pad { n, value } => {
                let [_, _, h, w] = x.dims();
                let (p, v) = (*n, *value);
                match rest.first() {
                    // Jitter j crops (dy, dx) ∈ [0, j]²: pad p - dy before, p - (j - dy) after.
                    Some(&Transform::Jitter(j)) if j <= p && jitters(j, h + 2 * p, w + 2 * p) => {
                        rest = &rest[1..];
                        let (dy, dx) = (rng.random_range(0..=j), rng.random_range(0..=j));
                        x.pad(
                            (p - dx, p - (j - dx), p - dy, p - (j - dy)),
                            PadMode::Constant(v),
                        )
                    }
                    _ => x.pad((p, p, p, p), PadMode::Constant(v)),
                }
            }
            Transform::Jitter(n) => {
                let [_, _, h, w] = x.dims();
                if !jitters(*n, h, w) {
                    continue;
                }
                let (dy, dx) = (rng.random_range(0..=*n), rng.random_range(0..=*n));
                x.narrow(2, dy, h - n).narrow(3, dx, w - n)
            }
            Transform::Scale(factors) => {
                let s = factors[rng.random_range(0..factors.len())];
                let mut angle = 0.0;
                if let Some((Transform::Rotate(angles), after)) = rest.split_first() {
                    angle = angles[rng.random_range(0..angles.len())];
                    rest = after;
                }
                let crop = crop_after(&mut rest, warped_size(dims2(&x), s), rng);
                warp_cropped(x, s, angle.to_radians(), crop)
            }
            Transform::Fit(size) => {
                let [_, _, h, w] = x.dims();
                if (h, w) == (*size, *size) {
                    continue;
                }
                let options = burn::tensor::ops::InterpolateOptions {
                    mode: burn::tensor::ops::InterpolateMode::Bilinear,
                    align_corners: false,
                };
                burn::tensor::module::interpolate(x, [*size, *size], options)
            }
            Transform::Rotate(angles) => {
                let a = angles[rng.random_range(0..angles.len())];
                let crop = crop_after(&mut rest, warped_size(dims2(&x), 1.0), rng);
                warp_cropped(x, 1.0, a.to_radians(), crop)
            }
        };
    }
    x
}

/// The largest side [`apply`] can give a square `size` × `size` batch: what the network may see
/// (each scale at its largest factor, each jitter as it applies to the size before it).
pub fn largest_size(transforms: &[Transform], size: usize) -> usize {
    transforms.iter().fold(size, |side, t| match t {
        Transform::Pad { n, .. } => side.saturating_add(n.saturating_mul(2)),
        Transform::Jitter(n) if jitters(*n, side, side) => side - n,
        Transform::Jitter(_) | Transform::Rotate(_) => side,
        Transform::Scale(factors) => factors
            .iter()
            .map(|&s| warped_size([side, side], s).0)
            .max()
            .unwrap_or(side),
        Transform::Fit(s) => *s,
    })
}

/// Whether a jitter of `n` changes an `h × w` batch (else it is skipped, drawing nothing).
fn jitters(n: usize, h: usize, w: usize) -> bool {
    n != 0 && n < h.min(w)
}

/// The output size of [`warp`] by `s`.
fn warped_size([h, w]: [usize; 2], s: f32) -> (usize, usize) {
    let size = |v: usize| ((v as f32) * s).round().max(1.0) as usize;
    (size(h), size(w))
}

/// The plane size `[h, w]` of `x`.
fn dims2<B: Backend>(x: &Tensor<B, 4>) -> [usize; 2] {
    let [_, _, h, w] = x.dims();
    [h, w]
}

/// When the next transform is a jitter that applies to an `ho × wo` batch, takes it from `rest`
/// and draws its crop: `(dy, dx, n)`.
fn crop_after(
    rest: &mut &[Transform],
    (ho, wo): (usize, usize),
    rng: &mut StdRng,
) -> Option<(usize, usize, usize)> {
    match rest.first() {
        Some(&Transform::Jitter(n)) if jitters(n, ho, wo) => {
            *rest = &rest[1..];
            let (dy, dx) = (rng.random_range(0..=n), rng.random_range(0..=n));
            Some((dy, dx, n))
        }
        _ => None,
    }
}

/// Scales by `s` (output size rounded) and rotates by `angle` radians about the centre, with
/// bilinear sampling written as four gathers (differentiable, any backend). Outside: zero.
pub fn warp<B: Back>(x: Tensor<B, 4>, s: f32, angle: f32) -> Tensor<B, 4> {
    warp_cropped(x, s, angle, None)
}

/// [`warp`], then a crop of `n` pixels at `(dy, dx)` when `crop` is `Some((dy, dx, n))`: only the
/// kept pixels are sampled, by the backend's own resampling op where it has one
/// ([`Back::resample`]).
fn warp_cropped<B: Back>(
    x: Tensor<B, 4>,
    s: f32,
    angle: f32,
    crop: Option<(usize, usize, usize)>,
) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    match warp_taps([h, w], s, angle, crop) {
        Some(taps) => B::resample(&x, &taps).unwrap_or_else(|| taps.composed(x)),
        None => match crop {
            Some((y_off, x_off, cut)) => x.narrow(2, y_off, h - cut).narrow(3, x_off, w - cut),
            None => x,
        },
    }
}

/// The bilinear taps of [`warp_cropped`] on `[h, w]` planes; `None` when it samples nothing (no
/// scale, no rotation: at most a crop).
fn warp_taps(
    [h, w]: [usize; 2],
    s: f32,
    angle: f32,
    crop: Option<(usize, usize, usize)>,
) -> Option<Taps> {
    let (ho, wo) = warped_size([h, w], s);
    let (y_off, x_off, cut) = crop.unwrap_or((0, 0, 0));
    if ho == h && wo == w && angle == 0.0 {
        return None;
    }
    let (hk, wk) = (ho - cut, wo - cut);
    let (sin, cos) = angle.sin_cos();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let (oy, ox) = ((ho as f32 - 1.0) / 2.0, (wo as f32 - 1.0) / 2.0);
    // For each kept output pixel, its four source pixels (flat index) and bilinear weights.
    let mut index = vec![0i32; hk * wk * TAPS];
    let mut weight = vec![0.0f32; hk * wk * TAPS];
    for yk in 0..hk {
        for xk in 0..wk {
            let (y, xo) = (yk + y_off, xk + x_off);
            let (dy, dx) = ((y as f32 - oy) / s, (xo as f32 - ox) / s);
            let sy = cy + cos * dy - sin * dx;
            let sx = cx + sin * dy + cos * dx;
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let corners = [
                (0.0, 0.0, (1.0 - fy) * (1.0 - fx)),
                (0.0, 1.0, (1.0 - fy) * fx),
                (1.0, 0.0, fy * (1.0 - fx)),
                (1.0, 1.0, fy * fx),
            ];
            for (k, (ky, kx, wt)) in corners.into_iter().enumerate() {
                let (py, px) = (y0 + ky, x0 + kx);
                let inside = py >= 0.0 && px >= 0.0 && py < h as f32 && px < w as f32;
                let at = (yk * wk + xk) * TAPS + k;
                if inside {
                    index[at] = (py as usize * w + px as usize) as i32;
                    weight[at] = wt;
                }
            }
        }
    }
    Some(Taps {
        input: [h, w],
        output: [hk, wk],
        index,
        weight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn::Dispatch;
    use rand::SeedableRng;

    #[test]
    fn standard_transforms_scale_down_for_small_images() {
        assert_eq!(
            standard_transforms(128)[0],
            Transform::Pad { n: 12, value: 0.5 }
        );
        assert_eq!(standard_transforms(28)[1], Transform::Jitter(2));
    }

    /// `largest_size` is the largest side `apply` gives, over enough draws to meet every
    /// scale: for the standard transforms at three sizes, and for a list with a jitter too large
    /// to apply and a final `Fit`.
    #[test]
    fn largest_size_is_the_largest_side_apply_gives() {
        let device = crate::Device::cpu().burn().clone();
        let lists = [
            (standard_transforms(128), 128),
            (standard_transforms(64), 64),
            (standard_transforms(28), 28),
            (
                vec![
                    Transform::Jitter(40),
                    Transform::Scale(vec![0.5, 1.5]),
                    Transform::Rotate(vec![5.0]),
                ],
                32,
            ),
            (
                vec![Transform::Pad { n: 4, value: 0.5 }, Transform::Fit(20)],
                32,
            ),
        ];
        for (transforms, size) in lists {
            let x = Tensor::<Dispatch, 4>::zeros([1, 1, size, size], &device);
            let mut rng = StdRng::seed_from_u64(7);
            let seen = (0..120)
                .map(|_| {
                    let [_, _, h, w] = apply(&transforms, x.clone(), &mut rng).dims();
                    h.max(w)
                })
                .max();
            assert_eq!(
                seen,
                Some(largest_size(&transforms, size)),
                "{transforms:?}"
            );
        }
    }

    #[test]
    fn quarter_turn_permutes_pixels() {
        let device = crate::Device::cpu().burn().clone();
        let data: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let x = Tensor::<Dispatch, 4>::from_data(TensorData::new(data, [1, 1, 3, 3]), &device);
        let y: Vec<f32> = warp(x, 1.0, std::f32::consts::FRAC_PI_2)
            .into_data()
            .to_vec()
            .unwrap();
        // Output (y, x) samples source (cy + (x - cx)·(-1)... ) : a 90° rotation of the grid.
        let mut sorted = y.clone();
        sorted.sort_by(f32::total_cmp);
        assert!(
            sorted
                .iter()
                .zip(0..9)
                .all(|(a, b)| (a - b as f32).abs() < 1e-4),
            "{y:?}"
        );
        assert!((y[4] - 4.0).abs() < 1e-5, "centre stays");
    }

    /// The resampling op meant for GPU backends (gradient: a gather by the transposed taps), run
    /// over the CPU's backend, gives the values and the gradient of burn's composed ops
    /// (gradient: scatter-adds), for scales up and down, rotations, crops and planes that are
    /// not square.
    #[test]
    fn gathered_resampling_gives_the_composed_values_and_gradient() {
        use crate::network::ops::resample::gathered;
        use crate::network::Fast;
        use burn::tensor::Distribution;
        let device = Default::default();
        let cases = [
            (1.1, 10.0, None),
            (0.9, -7.0, Some((3, 2, 4))),
            (1.4, 0.0, None),
            (0.5, 30.0, Some((0, 1, 1))),
            (1.0, 90.0, None),
        ];
        for (s, degrees, crop) in cases {
            let shape = [2, 3, 23, 19];
            let x0 = Tensor::<Fast, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let taps = warp_taps([23, 19], s, f32::to_radians(degrees), crop).unwrap();
            let [ho, wo] = taps.output;
            let r = Tensor::<Fast, 4>::random([2, 3, ho, wo], Distribution::Default, &device);
            let run = |gather: bool| {
                let x = x0.clone().detach().require_grad();
                let y = match gather {
                    true => gathered(&x, &taps),
                    false => taps.composed(x.clone()),
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let g = x.grad(&grads).unwrap();
                (
                    y.into_data().to_vec::<f32>().unwrap(),
                    g.into_data().to_vec::<f32>().unwrap(),
                )
            };
            let ((y1, g1), (y2, g2)) = (run(true), run(false));
            let most = |a: &[f32], b: &[f32]| {
                assert_eq!(a.len(), b.len());
                a.iter()
                    .zip(b)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max)
            };
            let (dy, dg) = (most(&y1, &y2), most(&g1, &g2));
            assert!(
                dy < 1e-5 && dg < 1e-5,
                "scale {s}, {degrees}°, {crop:?}: |Δy| {dy}, |Δgrad| {dg}"
            );
            assert!(g2.iter().any(|v| *v != 0.0));
        }
    }

    #[test]
    fn scale_then_rotate_is_one_resampling_with_the_same_geometry() {
        // Bilinear sampling reproduces a linear ramp exactly, so one resampling and two agree
        // wherever neither samples the zero fill outside.
        let device = crate::Device::cpu().burn().clone();
        let (h, w) = (40, 40);
        let ramp: Vec<f32> = (0..h * w)
            .map(|i| 0.3 * (i / w) as f32 + 0.7 * (i % w) as f32)
            .collect();
        let x = Tensor::<Dispatch, 4>::from_data(TensorData::new(ramp, [1, 1, h, w]), &device);
        let transforms = [Transform::Scale(vec![1.1]), Transform::Rotate(vec![10.0])];
        let mut rng = StdRng::seed_from_u64(0);
        let once = apply(&transforms, x.clone(), &mut rng);
        let twice = warp(warp(x, 1.1, 0.0), 1.0, 10f32.to_radians());
        assert_eq!(once.dims(), [1, 1, 44, 44]);
        assert_eq!(once.dims(), twice.dims());
        let (a, b): (Vec<f32>, Vec<f32>) = (
            once.into_data().to_vec().unwrap(),
            twice.into_data().to_vec().unwrap(),
        );
        for y in 8..36 {
            for x in 8..36 {
                let i = y * 44 + x;
                assert!(
                    (a[i] - b[i]).abs() < 1e-3,
                    "({y}, {x}): {} vs {}",
                    a[i],
                    b[i]
                );
            }
        }
    }

    /// One transform at a time (a scale still takes its rotation along), so nothing is folded.
    fn apply_one_by_one(
        transforms: &[Transform],
        mut x: Tensor<Dispatch, 4>,
        rng: &mut StdRng,
    ) -> Tensor<Dispatch, 4> {
        let mut i = 0;
        while i < transforms.len() {
            let take = match (&transforms[i], transforms.get(i + 1)) {
                (Transform::Scale(_), Some(Transform::Rotate(_))) => 2,
                _ => 1,
            };
            x = apply(&transforms[i..i + take], x, rng);
            i += take;
        }
        x
    }

    #[test]
    fn folded_jitters_give_the_same_pixels_as_one_op_at_a_time() {
        let device = crate::Device::cpu().burn().clone();
        let (n, c, h, w) = (2, 3, 40, 36);
        let data: Vec<f32> = (0..n * c * h * w)
            .map(|i| (i as f32 * 0.731).sin())
            .collect();
        let x = Tensor::<Dispatch, 4>::from_data(TensorData::new(data, [n, c, h, w]), &device);
        let cases = [
            standard_transforms(40),
            vec![Transform::Rotate(vec![7.0]), Transform::Jitter(3)],
            vec![
                Transform::Pad { n: 4, value: 0.5 },
                Transform::Jitter(4),
                Transform::Scale(vec![1.0]),
                Transform::Jitter(2),
            ],
        ];
        for (case, transforms) in cases.iter().enumerate() {
            for seed in 0..4 {
                let mut r1 = StdRng::seed_from_u64(seed);
                let mut r2 = StdRng::seed_from_u64(seed);
                let fused = apply(transforms, x.clone(), &mut r1);
                let steps = apply_one_by_one(transforms, x.clone(), &mut r2);
                assert_eq!(fused.dims(), steps.dims(), "case {case} seed {seed}");
                let (a, b): (Vec<f32>, Vec<f32>) = (
                    fused.into_data().to_vec().unwrap(),
                    steps.into_data().to_vec().unwrap(),
                );
                let worst = a
                    .iter()
                    .zip(&b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0, f32::max);
                assert!(worst < 1e-6, "case {case} seed {seed}: differs by {worst}");
                // Both drew the same numbers.
                assert_eq!(
                    r1.random::<u64>(),
                    r2.random::<u64>(),
                    "case {case} seed {seed}"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_transform() {
        let device = crate::Device::cpu().burn().clone();
        let x = Tensor::<Dispatch, 4>::ones([1, 1, 28, 28], &device);
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            apply(&standard_transforms(28), x.clone(), &mut rng).dims()
        };
        assert_eq!(run(3), run(3));
    }
}
