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
use burn::tensor::TensorData;
use burn::Dispatch;
use rand::rngs::StdRng;
use rand::Rng;

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
}

/// Lucid's `standard_transforms` for 128-px renders, with pixel amounts scaled by `size / 128`
/// for smaller images (at 28 px: pad 3, jitter 2, jitter 1):
/// pad 12, jitter 8, scale 0.90–1.10, rotate ±10°, jitter 4.
pub fn standard_transforms(size: usize) -> Vec<Transform> {
    let px = |n: usize| ((n * size) as f32 / 128.0).round().max(1.0).min(n as f32) as usize;
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
/// work and one bilinear blur instead of two.
pub fn apply(
    transforms: &[Transform],
    mut x: Tensor<Dispatch, 4>,
    rng: &mut StdRng,
) -> Tensor<Dispatch, 4> {
    let mut rest = transforms;
    while let Some((t, after)) = rest.split_first() {
        rest = after;
        x = match t {
            Transform::Pad { n, value } => x.pad((*n, *n, *n, *n), PadMode::Constant(*value)),
            Transform::Jitter(n) => {
                let [_, _, h, w] = x.dims();
                if *n == 0 || *n >= h.min(w) {
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
                warp(x, s, angle.to_radians())
            }
            Transform::Rotate(angles) => {
                let a = angles[rng.random_range(0..angles.len())];
                warp(x, 1.0, a.to_radians())
            }
        };
    }
    x
}

/// Scales by `s` (output size rounded) and rotates by `angle` radians about the centre, with
/// bilinear sampling written as four gathers (differentiable, any backend). Outside: zero.
pub fn warp(x: Tensor<Dispatch, 4>, s: f32, angle: f32) -> Tensor<Dispatch, 4> {
    let [n, c, h, w] = x.dims();
    let (ho, wo) = (
        ((h as f32) * s).round().max(1.0) as usize,
        ((w as f32) * s).round().max(1.0) as usize,
    );
    if ho == h && wo == w && angle == 0.0 {
        return x;
    }
    let (sin, cos) = angle.sin_cos();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let (oy, ox) = ((ho as f32 - 1.0) / 2.0, (wo as f32 - 1.0) / 2.0);
    // For each output pixel, its four source pixels (flat index) and bilinear weights.
    let mut index = vec![vec![0i32; ho * wo]; 4];
    let mut weight = vec![vec![0.0f32; ho * wo]; 4];
    for y in 0..ho {
        for xo in 0..wo {
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
            for (k, (ky, kx, wk)) in corners.into_iter().enumerate() {
                let (py, px) = (y0 + ky, x0 + kx);
                let inside = py >= 0.0 && px >= 0.0 && py < h as f32 && px < w as f32;
                let o = y * wo + xo;
                if inside {
                    index[k][o] = (py as usize * w + px as usize) as i32;
                    weight[k][o] = wk;
                }
            }
        }
    }
    let device = x.device();
    let flat = x.reshape([n * c, h * w]);
    let mut out: Option<Tensor<Dispatch, 2>> = None;
    for (idx, wts) in index.into_iter().zip(weight) {
        let idx = Tensor::<Dispatch, 1, Int>::from_data(TensorData::new(idx, [ho * wo]), &device);
        let wts = Tensor::<Dispatch, 2>::from_data(TensorData::new(wts, [1, ho * wo]), &device);
        let term = flat.clone().select(1, idx) * wts;
        out = Some(match out {
            None => term,
            Some(acc) => acc + term,
        });
    }
    out.expect("four corners").reshape([n, c, ho, wo])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn standard_transforms_scale_down_for_small_images() {
        assert_eq!(
            standard_transforms(128)[0],
            Transform::Pad { n: 12, value: 0.5 }
        );
        assert_eq!(standard_transforms(28)[1], Transform::Jitter(2));
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
