//! ONNX's 8- and 4-bit float types (FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ,
//! FLOAT4E2M1): the element types of float8 (and NVFP4-style float4) quantized models, as
//! onnxruntime's quantizer and NVIDIA's TensorRT Model Optimizer write them.
//!
//! The runtime holds their values as f32, which represents every one of them exactly; what a
//! type changes is where values round to. Decoding a stored byte and rounding to the type are
//! written here: `half` covers only the 16-bit types, and no maintained crate covers the FNUZ
//! variants and float4 as ONNX defines them (the `float8` crate has the two OCP types only).
//! Each format is one row of [`FORMATS`]; the rounding on the device mirrors the host's, and
//! the tests hold both to the table's own decoded values.

use burn::prelude::Backend;
use burn::tensor::Tensor;

/// What a format's bit patterns beyond the finite values mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Specials {
    /// E4M3FN: no infinity; `S.1111.111` is NaN.
    Nan,
    /// E5M2 (IEEE-like): exponent all ones is ±infinity (mantissa 0) or NaN.
    InfinityAndNan,
    /// FNUZ: no infinity and no negative zero; the negative-zero pattern `1.000…` is NaN.
    UnsignedZeroNan,
    /// FLOAT4E2M1: every pattern is a finite value.
    None,
}

/// A small float format: sign, `exponent` bits with `bias`, `mantissa` bits.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    /// The ONNX data type code.
    pub code: i64,
    pub name: &'static str,
    exponent: u32,
    mantissa: u32,
    bias: i32,
    /// The largest finite value.
    pub max: f32,
    specials: Specials,
}

/// The formats, one row each.
pub const FORMATS: [Format; 5] = [
    Format {
        code: 17,
        name: "FLOAT8E4M3FN",
        exponent: 4,
        mantissa: 3,
        bias: 7,
        max: 448.0,
        specials: Specials::Nan,
    },
    Format {
        code: 18,
        name: "FLOAT8E4M3FNUZ",
        exponent: 4,
        mantissa: 3,
        bias: 8,
        max: 240.0,
        specials: Specials::UnsignedZeroNan,
    },
    Format {
        code: 19,
        name: "FLOAT8E5M2",
        exponent: 5,
        mantissa: 2,
        bias: 15,
        max: 57344.0,
        specials: Specials::InfinityAndNan,
    },
    Format {
        code: 20,
        name: "FLOAT8E5M2FNUZ",
        exponent: 5,
        mantissa: 2,
        bias: 16,
        max: 57344.0,
        specials: Specials::UnsignedZeroNan,
    },
    Format {
        code: 23,
        name: "FLOAT4E2M1",
        exponent: 2,
        mantissa: 1,
        bias: 1,
        max: 6.0,
        specials: Specials::None,
    },
];

/// The format of ONNX data type `code`, if it is one of [`FORMATS`].
pub fn format(code: i64) -> Option<&'static Format> {
    FORMATS.iter().find(|f| f.code == code)
}

/// 2^k, exactly, for the exponents these formats reach (well inside f32's normal range).
fn pow2(k: i32) -> f32 {
    debug_assert!((-126..=127).contains(&k));
    f32::from_bits(((k + 127) as u32) << 23)
}

impl Format {
    /// Bits per value.
    pub fn bits(&self) -> u32 {
        1 + self.exponent + self.mantissa
    }

    /// The exponent of the smallest normal value; below it, values are spaced as subnormals.
    fn min_exponent(&self) -> i32 {
        1 - self.bias
    }

    /// The exponent of the largest finite value.
    fn max_exponent(&self) -> i32 {
        (self.max.to_bits() >> 23) as i32 - 127
    }

    /// The value a stored pattern (its low [`Format::bits`] bits) stands for.
    pub fn decode(&self, bits: u8) -> f32 {
        let width = self.bits();
        let bits = u32::from(bits) & ((1 << width) - 1);
        let sign = bits >> (width - 1);
        let exponent = (bits >> self.mantissa) & ((1 << self.exponent) - 1);
        let mantissa = bits & ((1 << self.mantissa) - 1);
        let all_ones = (1 << self.exponent) - 1;
        match self.specials {
            Specials::Nan if exponent == all_ones && mantissa == (1 << self.mantissa) - 1 => {
                return f32::NAN
            }
            Specials::InfinityAndNan if exponent == all_ones => {
                return match (mantissa, sign) {
                    (0, 0) => f32::INFINITY,
                    (0, _) => f32::NEG_INFINITY,
                    _ => f32::NAN,
                };
            }
            Specials::UnsignedZeroNan if bits == 1 << (width - 1) => return f32::NAN,
            _ => {}
        }
        let fraction = mantissa as f32 / (1 << self.mantissa) as f32;
        let magnitude = if exponent == 0 {
            fraction * pow2(self.min_exponent())
        } else {
            (1.0 + fraction) * pow2(exponent as i32 - self.bias)
        };
        if sign == 1 {
            -magnitude
        } else {
            magnitude
        }
    }

    /// What a value beyond the largest finite one becomes: with `saturate`, the largest
    /// (ONNX's default); without, infinity where the format has one, else NaN. Float4 has
    /// neither, and always saturates.
    fn overflow(&self, saturate: bool) -> f32 {
        match self.specials {
            _ if saturate => self.max,
            Specials::None => self.max,
            Specials::InfinityAndNan => f32::INFINITY,
            _ => f32::NAN,
        }
    }

    /// What NaN becomes: NaN, but in float4, which has none, -0 (the pattern `1000`, as ONNX's
    /// reference, ml_dtypes, converts it; the spec leaves it open).
    fn nan(&self) -> f32 {
        match self.specials {
            Specials::None => -0.0,
            _ => f32::NAN,
        }
    }

    /// `x` rounded to the nearest value of the format, ties to even (ONNX's Cast and
    /// QuantizeLinear), beyond the range as [`Format::overflow`] says. NaN stays NaN (see
    /// [`Format::nan`]).
    pub fn round(&self, x: f32, saturate: bool) -> f32 {
        if x.is_nan() {
            return self.nan();
        }
        let a = x.abs().min(2.0 * self.max);
        let exponent = ((a.to_bits() >> 23) as i32 - 127).clamp(self.min_exponent(), 127);
        let step = pow2(exponent - self.mantissa as i32);
        let mut r = (a / step).round_ties_even() * step;
        if r > self.max {
            r = self.overflow(saturate);
        }
        match self.specials {
            // No negative zero: -0 is 0.
            Specials::UnsignedZeroNan if r == 0.0 => 0.0,
            _ => r.copysign(x),
        }
    }

    /// [`Format::round`] of every element of `x`, a tensor on the CPU, computed on the host in one
    /// parallel pass over its values. [`Format::round_tensor`] makes two passes over the tensor
    /// per power of two in the format (29 for FLOAT8E4M3FN, 59 for FLOAT8E5M2) and five more.
    /// Measured on the float8 Fashion-MNIST CNN (tests/exporters.rs, all 10,000 test images, 2
    /// cores): 76 s through `round_tensor`, 45 s with this; the same model quantized to INT8
    /// takes 20 s. No gradient, as there.
    pub fn round_on_host<B: Backend, const D: usize>(
        &self,
        x: Tensor<B, D>,
        saturate: bool,
    ) -> Tensor<B, D> {
        use rayon::prelude::*;
        if x.dtype() != burn::tensor::DType::F32 {
            return self.round_tensor(x, saturate);
        }
        let device = x.device();
        let data = x.clone().detach().into_data();
        let shape = data.shape.clone();
        let Ok(mut values) = data.into_vec::<f32>() else {
            return self.round_tensor(x, saturate);
        };
        values
            .par_iter_mut()
            .with_min_len(4096)
            .for_each(|v| *v = self.round(*v, saturate));
        Tensor::from_data(burn::tensor::TensorData::new(values, shape), &device)
    }

    /// [`Format::round`] on the device, element for element (no gradient: callers pass it
    /// straight through, as quantization-aware training does). The spacing of values doubles
    /// at each power of two, so the step is chosen by comparisons with the format's powers of
    /// two, which are exact, rather than from a logarithm, which is not.
    pub fn round_tensor<B: Backend, const D: usize>(
        &self,
        x: Tensor<B, D>,
        saturate: bool,
    ) -> Tensor<B, D> {
        let x = x.detach();
        let a = x.clone().abs().clamp_max(2.0 * self.max);
        let mantissa = self.mantissa as i32;
        let mut step = a.full_like(pow2(self.min_exponent() - mantissa));
        for k in self.min_exponent() + 1..=self.max_exponent() {
            step = step.mask_fill(a.clone().greater_equal_elem(pow2(k)), pow2(k - mantissa));
        }
        let r = (a / step.clone()).round() * step;
        let over = r.clone().greater_elem(self.max);
        let r = r.mask_fill(over, self.overflow(saturate));
        // sign() is 0 at ±0, which gives 0: FNUZ's only zero, and -0 == 0 elsewhere.
        let r = r * x.clone().sign();
        r.mask_fill(x.is_nan(), self.nan())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pattern's value, in order of value, without NaN and the duplicate zero.
    fn finite_values(f: &Format) -> Vec<f32> {
        let mut v: Vec<f32> = (0..1u16 << f.bits())
            .map(|b| f.decode(b as u8))
            .filter(|v| v.is_finite())
            .collect();
        v.sort_by(f32::total_cmp);
        v.dedup_by(|a, b| a == b);
        v
    }

    #[test]
    fn the_table_decodes_to_the_formats_known_values() {
        let e4m3 = format(17).unwrap();
        assert_eq!(e4m3.decode(0x7e), 448.0);
        assert!(e4m3.decode(0x7f).is_nan() && e4m3.decode(0xff).is_nan());
        assert_eq!(e4m3.decode(0x01), 2f32.powi(-9));
        assert_eq!(e4m3.decode(0xb8), -1.0);
        let e5m2 = format(19).unwrap();
        assert_eq!(e5m2.decode(0x7b), 57344.0);
        assert_eq!(e5m2.decode(0x7c), f32::INFINITY);
        assert_eq!(e5m2.decode(0xfc), f32::NEG_INFINITY);
        assert!(e5m2.decode(0x7d).is_nan());
        assert_eq!(e5m2.decode(0x01), 2f32.powi(-16));
        let fnuz = format(18).unwrap();
        assert!(fnuz.decode(0x80).is_nan());
        assert_eq!(
            (fnuz.decode(0x7f), fnuz.decode(0x01)),
            (240.0, 2f32.powi(-10))
        );
        assert_eq!(format(20).unwrap().decode(0x01), 2f32.powi(-17));
        let fp4 = format(23).unwrap();
        assert_eq!(
            finite_values(fp4),
            [-6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
        );
        for f in &FORMATS {
            let values = finite_values(f);
            assert_eq!(*values.last().unwrap(), f.max, "{}", f.name);
            assert_eq!(2f32.powi(f.max_exponent()), 2f32.powf(f.max.log2().floor()));
        }
    }

    /// Each value rounds to itself; a midpoint between neighbours rounds to the one whose last
    /// mantissa bit is 0; just beside a midpoint, to the nearer; beyond the range, as `saturate`
    /// says. On the host and on the device alike.
    #[test]
    fn rounding_is_to_nearest_ties_to_even_on_the_host_and_the_device() {
        let device = Default::default();
        for f in &FORMATS {
            let values = finite_values(f);
            let mut cases = Vec::new();
            for w in values.windows(2) {
                let (lo, hi) = (w[0], w[1]);
                let mid = (lo + hi) / 2.0;
                // Of two neighbours, the even one has the even pattern.
                let pattern = |v: f32| {
                    (0..1u16 << f.bits())
                        .find(|&b| f.decode(b as u8) == v && (v != 0.0 || b == 0))
                        .unwrap()
                };
                let even = if pattern(lo) % 2 == 0 { lo } else { hi };
                cases.push((lo, lo));
                cases.push((mid, even));
                cases.push((mid.next_down(), lo));
                cases.push((mid.next_up(), hi));
            }
            let (inf, max) = (f.overflow(false), f.max);
            cases.extend([
                (f.max * 1.01, max),
                (-f.max * 1.01, -max),
                (f32::INFINITY, max),
                (1e30, max),
            ]);
            for &(x, want) in &cases {
                assert_eq!(f.round(x, true), want, "{} {x}", f.name);
            }
            let beyond = f.max * 1.2;
            let unsaturated = f.round(beyond, false);
            assert!(
                unsaturated == inf || (unsaturated.is_nan() && inf.is_nan()),
                "{}",
                f.name
            );
            let nan = f.round(f32::NAN, true);
            match f.specials {
                Specials::None => assert!(nan == 0.0 && nan.is_sign_negative()),
                _ => assert!(nan.is_nan(), "{}", f.name),
            }

            let xs: Vec<f32> = cases
                .iter()
                .map(|c| c.0)
                .chain([beyond, -beyond, f32::NAN])
                .collect();
            // The device's rounding, and the CPU's pass over a tensor's values on the host.
            for (saturate, on_host) in [(true, false), (false, false), (true, true), (false, true)]
            {
                let t = Tensor::<burn_flex::Flex, 1>::from_floats(xs.as_slice(), &device);
                let rounded = match on_host {
                    true => f.round_on_host(t, saturate),
                    false => f.round_tensor(t, saturate),
                };
                assert_eq!(rounded.dims(), [xs.len()]);
                let got = rounded.into_data().to_vec::<f32>().unwrap();
                for (&x, g) in xs.iter().zip(got) {
                    let want = f.round(x, saturate);
                    assert!(
                        g == want || (g.is_nan() && want.is_nan()),
                        "{} {x} (on the host: {on_host}): tensor {g}, value {want}",
                        f.name
                    );
                }
            }
        }
    }
}
