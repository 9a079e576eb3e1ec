//! DFT: the discrete Fourier transform along one axis, forward or inverse, full or one-sided
//! (PyTorch's exporter writes `torch.fft.rfft2` and `irfft2` so: Fourier-mixing networks such as
//! GFNet and the fast Fourier convolutions of LaMa).
//!
//! The transform is a matrix product: the signal's real and imaginary parts times the cosines
//! and sines of the transform, computed on the host in f64. burn has no FFT, and a product is
//! one kernel with a plain gradient (the transposed product) on every backend. Its cost grows
//! with the square of the length, which for the image sizes these networks see (tens to a few
//! hundred) is a few small matrix products per layer.

use std::f64::consts::TAU;

use burn::prelude::*;
use burn::tensor::TensorData;

use super::shape::permute;
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::DynTensor;

/// What one DFT node computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Complex to complex, `e^{-2πi kn/N}`.
    Forward,
    /// Complex to complex, `e^{2πi kn/N} / N`.
    Inverse,
    /// A one-sided spectrum (`N/2 + 1` frequencies of a real signal's conjugate-symmetric
    /// one) to the real signal of length `N`.
    InverseReal,
}

/// The transform as real matrices `[L, K]` (`L` input positions along the axis, `K` output
/// ones): output real part = `re·rr + im·ir`, imaginary part = `re·ri + im·ii` (the last two
/// `None` for a real output). Input positions past the `N` that the transform reads are rows
/// of zeros, which is how a shorter `dft_length` truncates; a longer one pads with zeros, which
/// add nothing.
struct Matrices {
    rr: Vec<f32>,
    ir: Vec<f32>,
    ri: Option<Vec<f32>>,
    ii: Option<Vec<f32>>,
}

fn matrices(kind: Kind, len: usize, n: usize, outputs: usize) -> Matrices {
    let cells = len * outputs;
    let (mut rr, mut ir) = (vec![0.0; cells], vec![0.0; cells]);
    let complex_out = kind != Kind::InverseReal;
    let (mut ri, mut ii) = if complex_out {
        (vec![0.0; cells], vec![0.0; cells])
    } else {
        (Vec::new(), Vec::new())
    };
    // The input positions the transform reads: signal samples, or one-sided frequencies.
    let read = match kind {
        Kind::InverseReal => len.min(n / 2 + 1),
        _ => len.min(n),
    };
    let scale = match kind {
        Kind::Forward => 1.0,
        _ => 1.0 / n as f64,
    };
    for i in 0..read {
        for o in 0..outputs {
            // (k·n) mod N before the division keeps the angle exact for long transforms.
            let (k, t) = match kind {
                Kind::Forward => (o, i),
                _ => (i, o),
            };
            let turn = ((k as u128 * t as u128) % n as u128) as f64 / n as f64;
            let (sin, cos) = (TAU * turn).sin_cos();
            let at = i * outputs + o;
            match kind {
                // (a + ib)·(cos - i sin)
                Kind::Forward => {
                    rr[at] = cos as f32;
                    ir[at] = sin as f32;
                    ri[at] = -sin as f32;
                    ii[at] = cos as f32;
                }
                // (a + ib)·(cos + i sin) / N
                Kind::Inverse => {
                    rr[at] = (cos * scale) as f32;
                    ir[at] = (-sin * scale) as f32;
                    ri[at] = (sin * scale) as f32;
                    ii[at] = (cos * scale) as f32;
                }
                // Each frequency but 0 and N/2 stands for itself and its conjugate at N - k,
                // whose imaginary parts cancel: twice its real part.
                Kind::InverseReal => {
                    let weight = if k == 0 || 2 * k == n { 1.0 } else { 2.0 };
                    rr[at] = (weight * cos * scale) as f32;
                    ir[at] = (-weight * sin * scale) as f32;
                }
            }
        }
    }
    Matrices {
        rr,
        ir,
        ri: complex_out.then_some(ri),
        ii: complex_out.then_some(ii),
    }
}

/// DFT (opsets 17–20): input `[..., L, ..., 1 or 2]`, real or complex (real and imaginary parts
/// on the last axis), transformed along `axis` (an attribute with 1 as default before opset 20,
/// then input 2 with -2). `inverse` and `onesided` choose the transform: forward (one-sided: the
/// first `N/2 + 1` frequencies), inverse, or with both a one-sided spectrum back to a real
/// signal. `dft_length` (input 1) is N: the signal cut or padded with zeros to it; unless given
/// L, or `2·(L - 1)` for a one-sided inverse.
pub fn dft<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    let rank = dims.len();
    let parts = dims.last().copied().unwrap_or(0);
    if rank < 2 || !(1..=2).contains(&parts) {
        return Err(ctx.error(format!(
            "input {dims:?} must end in an axis of 1 (real) or 2 (complex) values"
        )));
    }
    let axis = if ctx.node.opset >= 20 {
        ctx.optional_int(2, "axis")?.unwrap_or(-2)
    } else {
        ctx.node.int("axis", 1)?
    };
    let axis = ctx.axis(axis, rank)?;
    if axis == rank - 1 {
        return Err(ctx.error("the last axis holds real and imaginary parts, not a signal"));
    }
    let inverse = ctx.node.int("inverse", 0)? != 0;
    let onesided = ctx.node.int("onesided", 0)? != 0;
    let kind = match (inverse, onesided) {
        (false, _) => Kind::Forward,
        (true, false) => Kind::Inverse,
        (true, true) => Kind::InverseReal,
    };
    let len = dims[axis];
    let n = match ctx.optional_int(1, "dft_length")? {
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| ctx.error(format!("dft_length {n} must be positive")))?,
        None if kind == Kind::InverseReal => 2 * len.saturating_sub(1),
        None => len,
    };
    if n == 0 {
        return Err(ctx.error(format!(
            "a one-sided inverse of {len} frequencies has no signal length (give dft_length)"
        )));
    }
    let outputs = match (kind, onesided) {
        (Kind::Forward, true) => n / 2 + 1,
        _ => n,
    };
    // Its four real matrices.
    ctx.fits("DFT matrix", &[4, len, outputs], 4)?;
    let mut out_dims = dims.clone();
    out_dims[axis] = outputs;
    out_dims[rank - 1] = if kind == Kind::InverseReal { 1 } else { 2 };
    ctx.fits("output", &out_dims, 4)?;
    if dims.contains(&0) {
        return Err(ctx.error(format!("input {dims:?} is empty")));
    }

    // The signal axis next to the parts, the rest in front: [M, L, parts].
    let mut perm: Vec<usize> = (0..rank - 1).filter(|&a| a != axis).collect();
    perm.extend([axis, rank - 1]);
    let moved: Vec<usize> = perm.iter().map(|&a| dims[a]).collect();
    let m: usize = moved[..rank - 2].iter().product();
    let t: Tensor<B, 3> = permute(x, &perm).reshape(&[m, len, parts]).to_rank()?;
    let re = t.clone().narrow(2, 0, 1).reshape([m, len]);
    let im = (parts == 2).then(|| t.narrow(2, 1, 1).reshape([m, len]));
    let w = matrices(kind, len, n, outputs);
    let device = ctx.device;
    let mat = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [len, outputs]), device);
    let part = |r: Vec<f32>, i: Vec<f32>| {
        let y = re.clone().matmul(mat(r));
        match &im {
            Some(im) => y + im.clone().matmul(mat(i)),
            None => y,
        }
    };
    let real = part(w.rr, w.ir);
    let y = match (w.ri, w.ii) {
        (Some(ri), Some(ii)) => Tensor::stack::<3>(vec![real, part(ri, ii)], 2),
        _ => real.unsqueeze_dim::<3>(2),
    };
    // Back to the input's order of axes.
    let mut shape: Vec<usize> = moved[..rank - 2].to_vec();
    shape.extend([outputs, out_dims[rank - 1]]);
    let mut inverse_perm = vec![0; rank];
    for (i, &p) in perm.iter().enumerate() {
        inverse_perm[p] = i;
    }
    let y = permute(DynTensor::new(y).reshape(&shape), &inverse_perm);
    debug_assert_eq!(y.dims(), out_dims);
    Ok(vec![Value::Device(y)])
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, values_and_gradient};
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, HostTensor, Value};

    fn signal(values: &[f32], shape: &[usize]) -> Value {
        Value::Device(DynTensor::from_host(
            values,
            shape,
            crate::Device::cpu().burn(),
        ))
    }

    fn values(v: &Value) -> Vec<f32> {
        match v {
            Value::Device(t) => t.to_vec(),
            Value::Host(h) => h.to_f32(),
        }
    }

    #[test]
    fn a_one_sided_spectrum_inverts_to_its_signal_of_odd_or_even_length() {
        for n in [7usize, 8] {
            let xs: Vec<f32> = (0..n).map(|i| ((i * 5 % 7) as f32) - 2.5).collect();
            let axis = Value::Host(HostTensor::i64(vec![], vec![1]));
            let length = Value::Host(HostTensor::i64(vec![], vec![n as i64]));
            let rfft = [("onesided", Attr::Int(1))];
            let spectrum = run(
                "DFT",
                20,
                &rfft,
                vec![signal(&xs, &[1, n, 1]), length.clone(), axis.clone()],
            )
            .unwrap()
            .remove(0);
            assert_eq!(spectrum.dims(), [1, n / 2 + 1, 2]);
            // The mean is the first frequency's real part over N.
            let mean = xs.iter().sum::<f32>() / n as f32;
            assert!((values(&spectrum)[0] / n as f32 - mean).abs() < 1e-5);
            let back = [("onesided", Attr::Int(1)), ("inverse", Attr::Int(1))];
            let y = run("DFT", 20, &back, vec![spectrum, length, axis])
                .unwrap()
                .remove(0);
            assert_eq!(y.dims(), [1, n, 1]);
            for (y, x) in values(&y).iter().zip(&xs) {
                assert!((y - x).abs() < 1e-5, "{y} against {x}");
            }
        }
    }

    #[test]
    fn a_two_dimensional_spectrum_inverts_and_the_gradient_is_the_transposed_transform() {
        // rfft2 and irfft2 as PyTorch's exporter writes them: one-sided along the width, full
        // along the height, then back in the opposite order.
        let xs: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32) - 5.0).collect();
        let dft = |x: Value, axis: i64, n: i64, attrs: &[(&str, Attr)]| {
            let length = Value::Host(HostTensor::i64(vec![], vec![n]));
            let axis = Value::Host(HostTensor::i64(vec![], vec![axis]));
            run("DFT", 20, attrs, vec![x, length, axis])
                .unwrap()
                .remove(0)
        };
        let (one, inv) = (("onesided", Attr::Int(1)), ("inverse", Attr::Int(1)));
        let half = dft(signal(&xs, &[1, 4, 6, 1]), 2, 6, std::slice::from_ref(&one));
        let spectrum = dft(half, 1, 4, &[]);
        assert_eq!(spectrum.dims(), [1, 4, 4, 2]);
        let half = dft(spectrum, 1, 4, std::slice::from_ref(&inv));
        let y = dft(half, 2, 6, &[one, inv]);
        assert_eq!(y.dims(), [1, 4, 6, 1]);
        for (y, x) in values(&y).iter().zip(&xs) {
            assert!((y - x).abs() < 1e-4, "{y} against {x}");
        }
        // The sum of a full spectrum's parts: Σ_k cos(2πkn/N) - sin(2πkn/N), which is N for
        // n = 0 and 0 for every other n.
        let xs = [0.5, -1.0, 2.0, 0.25, 3.0];
        let (_, g) = values_and_gradient("DFT", 17, &[], &xs, &[1, 5, 1]);
        for (n, g) in g.iter().enumerate() {
            let want = if n == 0 { 5.0 } else { 0.0 };
            assert!((g - want).abs() < 1e-5, "{g} at {n}");
        }
    }

    #[test]
    fn the_parts_axis_and_lengths_are_checked() {
        let x = || signal(&[1.0; 12], &[1, 4, 3]);
        let e = run("DFT", 17, &[], vec![x()]).unwrap_err();
        assert!(e.to_string().contains("1 (real) or 2 (complex)"), "{e}");
        let x = || signal(&[1.0; 4], &[1, 4, 1]);
        let e = run("DFT", 17, &[("axis", Attr::Int(2))], vec![x()]).unwrap_err();
        assert!(e.to_string().contains("real and imaginary"), "{e}");
        for n in [0, -3, 1 << 40] {
            let n = Value::Host(HostTensor::i64(vec![], vec![n]));
            let e = run("DFT", 17, &[], vec![x(), n]).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("positive") || e.contains("DFT matrix"), "{e}");
        }
        let one = signal(&[1.0, 0.0], &[1, 1, 2]);
        let back = [("onesided", Attr::Int(1)), ("inverse", Attr::Int(1))];
        let e = run("DFT", 17, &back, vec![one]).unwrap_err();
        assert!(e.to_string().contains("give dft_length"), "{e}");
    }
}
