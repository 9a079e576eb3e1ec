//! Image parameterizations: what the optimizer actually changes.
//!
//! [`FftImage`] (Lucid's `fft_image` + `to_valid_rgb`): a spectrum scaled by 1/frequency, turned
//! into pixels by an inverse real 2-D DFT, colour-decorrelated with Lucid's colour correlation
//! matrix when there are 3 channels, and squashed to [0, 1] with a sigmoid. [`PixelImage`]:
//! free pixels through a sigmoid. Both hold one image per batch item.
//!
//! # Shapes
//! spectrum: `[2, N, C, H, W/2+1]` (real, imaginary) · image: `[N, C, H, W]`

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use burn::tensor::TensorData;
use burn::Dispatch;
use rand::rngs::StdRng;
use rand::Rng;

/// Lucid's square root of the ImageNet colour correlation matrix (rows: R, G, B).
const COLOR_CORRELATION_SVD_SQRT: [[f32; 3]; 3] =
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

/// `n` normal draws with standard deviation `std` (Box–Muller), from a seeded generator so the
/// start point depends on the seed alone.
pub(crate) fn normal(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.random::<f32>().max(f32::MIN_POSITIVE), rng.random());
            std * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// A parameterization maps its trainable tensor to images in [0, 1].
pub trait Param<B: Backend = Dispatch> {
    /// The trainable tensor (a leaf; its gradient is read after `backward`).
    fn tensor(&self) -> &Tensor<B, 5>;
    /// Replaces the trainable tensor (after an optimizer step).
    fn set_tensor(&mut self, t: Tensor<B, 5>);
    /// The images `[N, C, H, W]` in [0, 1].
    fn image(&self) -> Tensor<B, 4>;
    /// Images `..at` and `at..` as two independent parameterizations (fresh, untracked leaves):
    /// together, the same images as this one.
    fn split(&self, at: usize) -> [Box<dyn Param<B> + Send>; 2];
}

/// Images `start..start + len` of a `[_, N, ...]` tensor as a fresh, untracked, contiguous leaf.
fn batch_part<B: Backend>(t: &Tensor<B, 5>, start: usize, len: usize) -> Tensor<B, 5> {
    Tensor::from_data(t.clone().narrow(1, start, len).into_data(), &t.device())
}

/// Mixes channels with Lucid's normalized colour correlation (3 channels), or leaves them.
fn decorrelate<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    if c != 3 {
        return x;
    }
    let norm = (0..3)
        .map(|j| {
            (0..3)
                .map(|i| COLOR_CORRELATION_SVD_SQRT[i][j].powi(2))
                .sum::<f32>()
                .sqrt()
        })
        .fold(0.0f32, f32::max);
    let m: Vec<f32> = COLOR_CORRELATION_SVD_SQRT
        .iter()
        .flatten()
        .map(|v| v / norm)
        .collect();
    let m = Tensor::<B, 2>::from_data(TensorData::new(m, [3, 3]), &x.device());
    // rgb[o] = Σ_i M[o, i] x[i], one [3, 3] × [3, H·W] product per image: no transposed copies.
    m.unsqueeze::<3>()
        .expand([n, 3, 3])
        .matmul(x.reshape([n, 3, h * w]))
        .reshape([n, c, h, w])
}

/// How much faster the spectrum's constant term (each image's mean brightness per channel)
/// moves than Lucid's 1/frequency scaling gives it. With Lucid's scaling one Adam step moves the
/// mean pre-sigmoid value by at most a quarter of the learning rate, a quarter of a free pixel's
/// pace: a unit whose best input is (nearly) uniform, such as a first-layer filter whose taps sum
/// below zero (best input: black), ended 512 steps at a mean pixel of 0.07, and below the best
/// of the Fashion-MNIST test images (10 of 32 units of zoo:fashion's conv1). With 4 the mean
/// moves at a pixel's pace; every other frequency keeps Lucid's scale.
const DC_BOOST: f32 = 4.0;

/// An FFT-parameterized image batch (Lucid's default).
pub struct FftImage<B: Backend = Dispatch> {
    spectrum: Tensor<B, 5>,
    /// Inverse-DFT matrices: along W (cos, sin) `[W/2+1, W]` with the Hermitian weights and the
    /// frequency scaling folded in per row; along H (cos, sin) `[H, H]`.
    w_cos: Tensor<B, 2>,
    w_sin: Tensor<B, 2>,
    h_cos: Tensor<B, 2>,
    h_sin: Tensor<B, 2>,
    /// 1 / max(frequency, 1/max(H, W)) for both halves of every spectrum, `[2, N, C, H, W/2+1]`
    /// (a full-size factor: one contiguous product instead of two broadcasts).
    scale: Tensor<B, 5>,
    shape: [usize; 4],
}

impl<B: Backend> FftImage<B> {
    /// A random spectrum (normal, std 0.01) for `n` images of `c × h × w`.
    pub fn new(shape: [usize; 4], rng: &mut StdRng, device: &B::Device) -> Self {
        let [n, c, h, w] = shape;
        let wf = w / 2 + 1;
        let values = normal(rng, 2 * n * c * h * wf, 0.01);
        let spectrum = Tensor::<B, 5>::from_data(TensorData::new(values, [2, n, c, h, wf]), device);
        let tau = std::f32::consts::TAU;
        let mut w_cos = Vec::with_capacity(wf * w);
        let mut w_sin = Vec::with_capacity(wf * w);
        for v in 0..wf {
            // irfft counts the conjugate half: every column but DC (and Nyquist, for even W) twice.
            let weight = if v == 0 || (w % 2 == 0 && v == w / 2) {
                1.0
            } else {
                2.0
            };
            for x in 0..w {
                let a = tau * (v * x) as f32 / w as f32;
                w_cos.push(weight * a.cos());
                w_sin.push(weight * a.sin());
            }
        }
        // Lucid: irfft2 with 1/√(HW) normalization, then divided by 4; folded in here.
        let norm = ((h * w) as f32).sqrt() * 4.0;
        let mut h_cos = Vec::with_capacity(h * h);
        let mut h_sin = Vec::with_capacity(h * h);
        for y in 0..h {
            for u in 0..h {
                let a = tau * (u * y) as f32 / h as f32;
                h_cos.push(a.cos() / norm);
                h_sin.push(a.sin() / norm);
            }
        }
        let floor = 1.0 / h.max(w) as f32;
        let mut scale = Vec::with_capacity(h * wf);
        for u in 0..h {
            // numpy fftfreq: 0, 1, ..., then negative frequencies.
            let fy = if u <= h / 2 {
                u as f32
            } else {
                u as f32 - h as f32
            } / h as f32;
            for v in 0..wf {
                let fx = v as f32 / w as f32;
                let boost = if u == 0 && v == 0 { DC_BOOST } else { 1.0 };
                scale.push(boost / (fy * fy + fx * fx).sqrt().max(floor));
            }
        }
        let scale: Vec<f32> = scale
            .iter()
            .copied()
            .cycle()
            .take(2 * n * c * h * wf)
            .collect();
        let t = |data: Vec<f32>, s: [usize; 2]| {
            Tensor::<B, 2>::from_data(TensorData::new(data, s), device)
        };
        Self {
            spectrum,
            w_cos: t(w_cos, [wf, w]),
            w_sin: t(w_sin, [wf, w]),
            h_cos: t(h_cos, [h, h]),
            h_sin: t(h_sin, [h, h]),
            scale: Tensor::from_data(TensorData::new(scale, [2, n, c, h, wf]), device),
            shape,
        }
    }

    /// The unconstrained image before colour mixing and the sigmoid, `[N, C, H, W]`.
    fn pixels(&self) -> Tensor<B, 4> {
        let [n, c, h, w] = self.shape;
        let wf = w / 2 + 1;
        let scaled = self.spectrum.clone() * self.scale.clone();
        // Along W: Y = S · e^{+iθ}, as [N·C·H, wf] × [wf, W].
        let re = scaled.clone().narrow(0, 0, 1).reshape([n * c * h, wf]);
        let im = scaled.narrow(0, 1, 1).reshape([n * c * h, wf]);
        let yr = re.clone().matmul(self.w_cos.clone()) - im.clone().matmul(self.w_sin.clone());
        let yi = re.matmul(self.w_sin.clone()) + im.matmul(self.w_cos.clone());
        // Along H: x = Re(Σ_u Y[u] e^{+iφ}), as [H, H] × [N·C, H, W] per image.
        let yr = yr.reshape([n * c, h, w]);
        let yi = yi.reshape([n * c, h, w]);
        let hc = self.h_cos.clone().unsqueeze::<3>().expand([n * c, h, h]);
        let hs = self.h_sin.clone().unsqueeze::<3>().expand([n * c, h, h]);
        let x = hc.matmul(yr) - hs.matmul(yi);
        x.reshape([n, c, h, w])
    }
}

impl<B: Backend> Param<B> for FftImage<B> {
    fn tensor(&self) -> &Tensor<B, 5> {
        &self.spectrum
    }

    fn set_tensor(&mut self, t: Tensor<B, 5>) {
        self.spectrum = t;
    }

    fn image(&self) -> Tensor<B, 4> {
        sigmoid(decorrelate(self.pixels()))
    }

    fn split(&self, at: usize) -> [Box<dyn Param<B> + Send>; 2] {
        let [n, c, h, w] = self.shape;
        let part = |start: usize, len: usize| -> Box<dyn Param<B> + Send> {
            Box::new(FftImage {
                spectrum: batch_part(&self.spectrum, start, len),
                w_cos: self.w_cos.clone(),
                w_sin: self.w_sin.clone(),
                h_cos: self.h_cos.clone(),
                h_sin: self.h_sin.clone(),
                scale: batch_part(&self.scale, start, len),
                shape: [len, c, h, w],
            })
        };
        [part(0, at), part(at, n - at)]
    }
}

/// Free pixels (normal, std 0.01) through colour mixing and a sigmoid.
pub struct PixelImage<B: Backend = Dispatch> {
    pixels: Tensor<B, 5>,
    shape: [usize; 4],
}

impl<B: Backend> PixelImage<B> {
    pub fn new(shape: [usize; 4], rng: &mut StdRng, device: &B::Device) -> Self {
        let [n, c, h, w] = shape;
        let values = normal(rng, n * c * h * w, 0.01);
        let pixels = Tensor::from_data(TensorData::new(values, [1, n, c, h, w]), device);
        Self { pixels, shape }
    }
}

impl<B: Backend> Param<B> for PixelImage<B> {
    fn tensor(&self) -> &Tensor<B, 5> {
        &self.pixels
    }

    fn set_tensor(&mut self, t: Tensor<B, 5>) {
        self.pixels = t;
    }

    fn image(&self) -> Tensor<B, 4> {
        sigmoid(decorrelate(self.pixels.clone().reshape(self.shape)))
    }

    fn split(&self, at: usize) -> [Box<dyn Param<B> + Send>; 2] {
        let [n, c, h, w] = self.shape;
        let part = |start: usize, len: usize| -> Box<dyn Param<B> + Send> {
            Box::new(PixelImage {
                pixels: batch_part(&self.pixels, start, len),
                shape: [len, c, h, w],
            })
        };
        [part(0, at), part(at, n - at)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Colour mixing multiplies every pixel's RGB by Lucid's normalized matrix.
    #[test]
    fn decorrelate_mixes_each_pixel_by_the_normalized_matrix() {
        let device = crate::Device::cpu().burn().clone();
        let (n, h, w) = (2, 3, 5);
        let x: Vec<f32> = (0..n * 3 * h * w)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let t = Tensor::<Dispatch, 4>::from_data(TensorData::new(x.clone(), [n, 3, h, w]), &device);
        let y: Vec<f32> = decorrelate(t).into_data().to_vec().unwrap();
        let m = COLOR_CORRELATION_SVD_SQRT;
        let norm = (0..3)
            .map(|j| (0..3).map(|i| m[i][j] * m[i][j]).sum::<f32>().sqrt())
            .fold(0.0f32, f32::max);
        for b in 0..n {
            for p in 0..h * w {
                for o in 0..3 {
                    let want: f32 = (0..3)
                        .map(|i| m[o][i] / norm * x[(b * 3 + i) * h * w + p])
                        .sum();
                    let got = y[(b * 3 + o) * h * w + p];
                    assert!((got - want).abs() < 1e-5, "image {b} pixel {p} channel {o}");
                }
            }
        }
    }

    /// The inverse DFT reproduces a known cosine: a single real coefficient at (u, v) gives
    /// cos(2π(uy/H + vx/W)) scaled as Lucid scales it.
    #[test]
    fn inverse_dft_of_a_single_frequency_is_a_cosine() {
        let device = crate::Device::cpu().burn().clone();
        let (h, w) = (8, 8);
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let mut p = FftImage::<Dispatch>::new([1, 1, h, w], &mut rng, &device);
        let wf = w / 2 + 1;
        let mut spec = vec![0.0f32; 2 * h * wf];
        spec[wf + 2] = 1.0; // u = 1, v = 2
        p.set_tensor(Tensor::from_data(
            TensorData::new(spec, [2, 1, 1, h, wf]),
            &device,
        ));
        let x: Vec<f32> = p.pixels().into_data().to_vec().unwrap();
        let freq = ((1.0f32 / 8.0).powi(2) + (2.0f32 / 8.0).powi(2)).sqrt();
        for y in 0..h {
            for xx in 0..w {
                let a = std::f32::consts::TAU * (y as f32 / 8.0 + 2.0 * xx as f32 / 8.0);
                let want = 2.0 * a.cos() / freq / (8.0 * 4.0);
                assert!(
                    (x[y * w + xx] - want).abs() < 1e-4,
                    "({y},{xx}): {} vs {want}",
                    x[y * w + xx]
                );
            }
        }
    }
}
