//! Normalizations: LRN, BatchNormalization, InstanceNormalization, GroupNormalization,
//! LayerNormalization, LpNormalization, MeanVarianceNormalization, Softmax, LogSoftmax.

use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module;
use burn::tensor::ops::ConvOptions;
use burn::tensor::TensorData;

use super::binary::broadcast_shape;
use super::Back;
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{DynTensor, Storage, MAX_RANK};

/// Reshapes a per-channel vector `[C]` so it broadcasts against an `[N, C, ...]` tensor of `rank`.
/// Input `i`, one value per channel of the input `x` (`[N, C, ...]`), shaped `[C, 1, ...]` to
/// broadcast against it; `what` names it in the error when it has another number of values.
fn per_channel<B: Backend>(
    ctx: &Ctx<B>,
    i: usize,
    what: &str,
    x: &[usize],
) -> Result<DynTensor<B>> {
    let v = ctx.float(i)?;
    let c = x[1];
    if v.num_elements() != c {
        return Err(ctx.error(format!(
            "{what} {:?} does not have one value for each of the input's {c} channels",
            v.dims()
        )));
    }
    let mut shape = vec![c];
    shape.extend(std::iter::repeat_n(1, x.len() - 2));
    Ok(v.reshape(&shape))
}

/// The parameters of an ONNX LRN.
#[derive(Clone, Copy, Debug)]
pub struct Lrn {
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
}

impl Lrn {
    /// The channel window of output channel `c` of `channels`: `c - floor((size-1)/2) ..=
    /// c + ceil((size-1)/2)`, clipped.
    pub(crate) fn window(&self, c: usize, channels: usize) -> std::ops::Range<usize> {
        let before = (self.size - 1) / 2;
        let after = self.size - 1 - before;
        c.saturating_sub(before)..(c + after + 1).min(channels)
    }

    /// The output channels whose window holds input channel `j`.
    pub(crate) fn readers(&self, j: usize, channels: usize) -> std::ops::Range<usize> {
        let before = (self.size - 1) / 2;
        let after = self.size - 1 - before;
        j.saturating_sub(after)..(j + before + 1).min(channels)
    }

    /// `d^-beta`, with square roots for the usual betas (0.75: GoogLeNet, AlexNet, ZFNet) and
    /// `powf` otherwise.
    pub(crate) fn inverse_power(&self, d: f32) -> f32 {
        if self.beta == 0.75 {
            let r = d.sqrt();
            1.0 / (r * r.sqrt())
        } else if self.beta == 0.5 {
            1.0 / d.sqrt()
        } else {
            d.powf(-self.beta)
        }
    }
}

pub fn lrn<B: Back>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    let size = ctx.node.int("size", 0)?;
    if size < 1 {
        return Err(ctx.error("attribute size must be a positive int"));
    }
    let size = size as usize;
    let alpha = ctx.node.float("alpha", 1e-4)?;
    let beta = ctx.node.float("beta", 0.75)?;
    let bias = ctx.node.float("bias", 1.0)?;
    if dims.len() < 3 {
        return Err(ctx.error(format!("input {dims:?} must be [N, C, ...]")));
    }
    let c = dims[1];
    let rest: usize = dims[2..].iter().product();
    let p = Lrn {
        size,
        alpha,
        beta,
        bias,
    };
    if let Some(y) = B::lrn(&x.clone().reshape(&[dims[0], c, rest]).to_rank::<3>()?, p) {
        return Ok(vec![Value::Device(DynTensor::new(y).reshape(&dims))]);
    }
    // The sum of squares over a window of channels is a 1×1 convolution with a banded matrix:
    // band[o, i] = 1 when channel i lies in o's window [o - floor((size-1)/2), o + ceil((size-1)/2)].
    // The convolution also applies alpha / size (in the band) and adds bias (as its bias), so
    // that it yields the base of the power directly: two elementwise passes, and their gradients,
    // fewer.
    let before = (size - 1) / 2;
    let after = size - 1 - before;
    let scale = alpha / size as f32;
    let band: Vec<f32> = (0..c * c)
        .map(|k| {
            let (o, i) = (k / c, k % c);
            if i + before >= o && i <= o + after {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let device = x.device();
    let band = Tensor::<B, 4>::from_data(TensorData::new(band, [c, c, 1, 1]), &device);
    let bias = Tensor::<B, 1>::from_data(TensorData::new(vec![bias; c], [c]), &device);
    let sq = x
        .clone()
        .map(|t| t.powi_scalar(2))
        .reshape(&[dims[0], c, 1, rest]);
    let base = module::conv2d(
        sq.to_rank::<4>()?,
        band,
        Some(bias),
        ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    );
    // base^beta as exp(beta · ln base): the gradients of exp and ln are a product and a quotient,
    // where powf's gradient is a second powf (burn's sqrt too), the most expensive elementwise
    // op on the CPU.
    let denom = DynTensor::new(base)
        .reshape(&dims)
        .map(|s| s.log().mul_scalar(beta).exp());
    let rank = dims.len();
    let y = x.into_storage() / denom.into_storage();
    Ok(vec![Value::Device(DynTensor::from_storage(y, rank))])
}

pub fn batch_norm<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let rank = x.rank();
    if rank < 2 {
        return Err(ctx.error(format!("input {:?} must be [N, C, ...]", x.dims())));
    }
    let eps = ctx.node.float("epsilon", 1e-5)?;
    let training = ctx.node.int("training_mode", 0)? != 0;
    let dims = x.dims();
    let scale = per_channel(ctx, 1, "scale", &dims)?.into_storage();
    let bias = per_channel(ctx, 2, "B", &dims)?.into_storage();
    let running_mean = per_channel(ctx, 3, "input_mean", &dims)?.into_storage();
    let running_var = per_channel(ctx, 4, "input_var", &dims)?.into_storage();
    let xs = x.clone().into_storage();
    let (mean, var) = if training {
        let axes: Vec<usize> = (0..rank)
            .filter(|&a| a != 1)
            .map(|a| x.storage_axis(a))
            .collect();
        let mean = reduce_mean(xs.clone(), &axes);
        let var = reduce_mean((xs.clone() - mean.clone()).powi_scalar(2), &axes);
        (mean, var)
    } else {
        (running_mean.clone(), running_var.clone())
    };
    let a = scale / var.clone().add_scalar(eps).sqrt();
    let y = (xs - mean.clone()) * a + bias;
    let mut out = vec![Value::Device(DynTensor::from_storage(y, rank))];
    if training {
        let momentum = ctx.node.float("momentum", 0.9)?;
        let c = x.dims()[1];
        let blend = |running: Storage<B>, batch: Storage<B>| {
            let s = running.mul_scalar(momentum) + batch.mul_scalar(1.0 - momentum);
            Value::Device(DynTensor::from_storage(s, rank).reshape(&[c]))
        };
        out.push(blend(running_mean, mean));
        out.push(blend(running_var, var));
    }
    Ok(out)
}

fn reduce_mean<B: Backend>(mut t: Storage<B>, axes: &[usize]) -> Storage<B> {
    for &a in axes {
        t = t.mean_dim(a);
    }
    t
}

/// The centered input, the mean and the (biased) variance over storage `axes` (which the mean
/// and variance keep as axes of size 1).
fn moments<B: Backend>(x: Storage<B>, axes: &[usize]) -> (Storage<B>, Storage<B>, Storage<B>) {
    let mean = reduce_mean(x.clone(), axes);
    let centered = x - mean.clone();
    let var = reduce_mean(centered.clone().powi_scalar(2), axes);
    (centered, mean, var)
}

pub fn instance_norm<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let rank = x.rank();
    if rank < 3 {
        return Err(ctx.error(format!("input {:?} must be [N, C, spatial...]", x.dims())));
    }
    let eps = ctx.node.float("epsilon", 1e-5)?;
    let dims = x.dims();
    let scale = per_channel(ctx, 1, "scale", &dims)?.into_storage();
    let bias = per_channel(ctx, 2, "B", &dims)?.into_storage();
    let axes: Vec<usize> = (2..rank).map(|a| x.storage_axis(a)).collect();
    let (centered, _, var) = moments(x.into_storage(), &axes);
    let y = centered / var.add_scalar(eps).sqrt() * scale + bias;
    Ok(vec![Value::Device(DynTensor::from_storage(y, rank))])
}

/// MeanVarianceNormalization (opsets 9–13): `(x - mean) / (std + 1e-9)` over `axes` (`[0, 2,
/// 3]` unless given: per channel over the batch and the image), Caffe's MVN layer. The variance
/// is held at the smallest normal float or above before its root, so a constant input gives
/// zeros with a finite gradient (the root's gradient at 0 is infinite).
pub fn mean_variance_norm<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let rank = x.rank();
    let given = ctx.node.ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]);
    let mut axes = Vec::with_capacity(given.len());
    for &a in &given {
        let a = ctx.axis(a, rank)?;
        if axes.contains(&a) {
            return Err(ctx.error(format!("axes {given:?} name axis {a} twice")));
        }
        axes.push(a);
    }
    let axes: Vec<usize> = axes.into_iter().map(|a| x.storage_axis(a)).collect();
    let (centered, _, var) = moments(x.into_storage(), &axes);
    let std = var.clamp_min(f32::MIN_POSITIVE).sqrt().add_scalar(1e-9);
    Ok(vec![Value::Device(DynTensor::from_storage(
        centered / std,
        rank,
    ))])
}

/// GroupNormalization (opsets 18–21): the channels in `num_groups` groups, each normalized over
/// its channels and the spatial axes, then scaled and shifted: by one value per group in opset 18
/// (the version the standard deprecated), per channel from 21 on (as PyTorch's GroupNorm).
pub fn group_norm<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(ctx.error(format!("input {dims:?} must be [N, C, ...]")));
    }
    let (n, c) = (dims[0], dims[1]);
    let groups = ctx.node.int("num_groups", 0)?;
    let g = usize::try_from(groups)
        .ok()
        .filter(|&g| g > 0 && c % g == 0)
        .ok_or_else(|| {
            ctx.error(format!(
                "num_groups {groups} does not divide the input's {c} channels"
            ))
        })?;
    let eps = ctx.node.float("epsilon", 1e-5)?;
    // Opset 18: one scale and bias per group, shaped to broadcast against `[N, G, rest]`; from
    // 21 on, per channel against the input.
    let per_group = ctx.node.opset < 21;
    let affine = |i: usize, what: &str| -> Result<Storage<B>> {
        if !per_group {
            return Ok(per_channel(ctx, i, what, &dims)?.into_storage());
        }
        let v = ctx.float(i)?;
        if v.num_elements() != g {
            return Err(ctx.error(format!(
                "{what} {:?} does not have one value for each of the {g} groups (opset 18)",
                v.dims()
            )));
        }
        Ok(v.reshape(&[g, 1]).into_storage())
    };
    let (scale, bias) = (affine(1, "scale")?, affine(2, "bias")?);
    let rest: usize = dims[1..].iter().product::<usize>() / g;
    if n * rest == 0 {
        return Ok(vec![Value::Device(x)]);
    }
    // [N, G, everything else]: the statistics run over the last axis.
    let grouped = x.reshape(&[n, g, rest]);
    let axes = [grouped.storage_axis(2)];
    let (centered, _, var) = moments(grouped.into_storage(), &axes);
    let y = centered / var.add_scalar(eps).sqrt();
    let y = if per_group {
        DynTensor::from_storage(y * scale + bias, 3).reshape(&dims)
    } else {
        let y = DynTensor::from_storage(y, 3).reshape(&dims).into_storage();
        DynTensor::from_storage(y * scale + bias, dims.len())
    };
    Ok(vec![Value::Device(y)])
}

/// LpNormalization (opsets 1–22): `x` divided by its L1 or L2 norm (`p`) along `axis`. A lane
/// of zeros stays zeros, with a finite gradient (the reference would divide 0 by 0).
pub fn lp_norm<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let rank = x.rank();
    if rank == 0 {
        return Err(ctx.error("input is a scalar, which has no axis to normalize along"));
    }
    let axis = x.storage_axis(ctx.axis(ctx.node.int("axis", -1)?, rank)?);
    let s = x.into_storage();
    let norm = match ctx.node.int("p", 2)? {
        1 => s.clone().abs().sum_dim(axis).clamp_min(f32::MIN_POSITIVE),
        2 => (s.clone().powi_scalar(2).sum_dim(axis) + f32::MIN_POSITIVE).sqrt(),
        p => return Err(ctx.error(format!("p = {p} is not 1 or 2"))),
    };
    Ok(vec![Value::Device(DynTensor::from_storage(s / norm, rank))])
}

/// LayerNormalization (opset 17): normalizes over the axes from `axis` on, then scales and
/// shifts by Scale and B (which broadcast against those axes). The optional outputs Mean and
/// InvStdDev have the input's shape with those axes of size 1.
pub fn layer_norm<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    let rank = dims.len();
    let axis = ctx.axis(ctx.node.int("axis", -1)?, rank)?;
    let eps = ctx.node.float("epsilon", 1e-5)?;
    let normalized = &dims[axis..];
    let affine = |i: usize, what: &str| -> Result<Storage<B>> {
        let t = ctx.float(i)?;
        if broadcast_shape(normalized, &t.dims()).as_deref() != Some(normalized) {
            return Err(ctx.error(format!(
                "{what} {:?} does not broadcast to the normalized axes {normalized:?}",
                t.dims()
            )));
        }
        Ok(t.into_storage())
    };
    let scale = affine(1, "Scale")?;
    let bias = if ctx.has(2) {
        Some(affine(2, "B")?)
    } else {
        None
    };
    let axes: Vec<usize> = (axis..rank).map(|a| x.storage_axis(a)).collect();
    let (centered, mean, var) = moments(x.into_storage(), &axes);
    let inv_std = var.add_scalar(eps).sqrt().recip();
    let mut y = centered * inv_std.clone() * scale;
    if let Some(b) = bias {
        y = y + b;
    }
    let outputs = [y, mean, inv_std];
    Ok(outputs
        .into_iter()
        .take(ctx.node.outputs.len().max(1))
        .map(|s| Value::Device(DynTensor::from_storage(s, rank)))
        .collect())
}

pub fn softmax<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    normalize_exp(ctx, activation::softmax)
}

pub fn log_softmax<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    normalize_exp(ctx, activation::log_softmax)
}

/// Softmax or LogSoftmax (`f`, on one storage axis) with the axis semantics of the node's opset.
fn normalize_exp<B: Backend>(
    ctx: &Ctx<B>,
    f: fn(Storage<B>, usize) -> Storage<B>,
) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    let rank = dims.len();
    if ctx.node.opset < 13 {
        // Older opsets coerce the input to 2-D at `axis` and normalize each row.
        let axis = ctx.axis(ctx.node.int("axis", 1)?, rank)?;
        let rows: usize = dims[..axis].iter().product();
        let cols: usize = dims[axis..].iter().product();
        let y = x
            .reshape(&[rows, cols])
            .map(|t| f(t, MAX_RANK - 1))
            .reshape(&dims);
        return Ok(vec![Value::Device(y)]);
    }
    let axis = ctx.axis(ctx.node.int("axis", -1)?, rank)?;
    let a = x.storage_axis(axis);
    Ok(vec![Value::Device(x.map(|t| f(t, a)))])
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, values_and_gradient};
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, Value};

    #[test]
    fn mean_variance_normalization_of_a_constant_channel_is_zeros_with_a_finite_gradient() {
        // Channel 0 is constant, channel 1 is [1, 3] (mean 2, standard deviation 1).
        let xs = [5.0, 5.0, 1.0, 3.0];
        let (y, g) = values_and_gradient("MeanVarianceNormalization", 13, &[], &xs, &[1, 2, 1, 2]);
        assert_eq!(y[..2], [0.0, 0.0]);
        assert!(
            (y[2] + 1.0).abs() < 1e-6 && (y[3] - 1.0).abs() < 1e-6,
            "{y:?}"
        );
        // The outputs of a channel sum to 0 whatever its values: no gradient of their sum.
        assert!(g.iter().all(|g| g.abs() < 1e-5), "{g:?}");
        let attrs = [("axes", Attr::Ints(vec![1, -3]))];
        let x = Value::Device(DynTensor::from_host(
            &xs,
            &[1, 2, 1, 2],
            crate::Device::cpu().burn(),
        ));
        let e = run("MeanVarianceNormalization", 13, &attrs, vec![x]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn group_norm_scales_per_group_in_opset_18_and_per_channel_from_21() {
        // One image, 4 channels of 2 pixels, 2 groups: group 0 is [0, 1, 2, 3], group 1 is
        // [4, 4, 8, 8] (mean 6, variance 4).
        let on = crate::Device::cpu();
        let x = || {
            let v = [0.0, 1.0, 2.0, 3.0, 4.0, 4.0, 8.0, 8.0];
            Value::Device(DynTensor::from_host(&v, &[1, 4, 1, 2], on.burn()))
        };
        let vec = |v: &[f32]| Value::Device(DynTensor::from_host(v, &[v.len()], on.burn()));
        let attrs = [("num_groups", Attr::Int(2)), ("epsilon", Attr::Float(0.0))];
        let norm0: Vec<f32> = [-1.5f32, -0.5, 0.5, 1.5]
            .iter()
            .map(|v| v / 1.25f32.sqrt())
            .collect();
        let norm1 = [-1.0, -1.0, 1.0, 1.0];
        let close = |got: Vec<f32>, want: Vec<f32>| {
            assert!(
                got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
                "{got:?} vs {want:?}"
            );
        };
        let per_group = run(
            "GroupNormalization",
            18,
            &attrs,
            vec![x(), vec(&[2.0, 3.0]), vec(&[0.0, 1.0])],
        )
        .unwrap();
        let want: Vec<f32> = norm0
            .iter()
            .map(|v| 2.0 * v)
            .chain(norm1.iter().map(|v| 3.0 * v + 1.0))
            .collect();
        close(per_group[0].to_host().to_f32(), want);
        let scale = [1.0, 2.0, 3.0, 4.0];
        let per_channel = run(
            "GroupNormalization",
            21,
            &attrs,
            vec![x(), vec(&scale), vec(&[0.0; 4])],
        )
        .unwrap();
        let want: Vec<f32> = norm0
            .iter()
            .chain(&norm1)
            .enumerate()
            .map(|(i, v)| scale[i / 2] * v)
            .collect();
        close(per_channel[0].to_host().to_f32(), want);
        let err = run(
            "GroupNormalization",
            21,
            &[("num_groups", Attr::Int(3))],
            vec![x(), vec(&scale), vec(&[0.0; 4])],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not divide"), "{err}");
    }

    /// Softmax and LogSoftmax of `[[0, 1, 2], [3, 4, 5]]` at axis 0 in `opset`.
    fn at_axis_0(op: &str, opset: i64) -> Vec<f32> {
        let on = crate::Device::cpu();
        let x = DynTensor::from_host(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 3], on.burn());
        let attrs = [("axis", Attr::Int(0))];
        let y = run(op, opset, &attrs, vec![Value::Device(x)]).unwrap();
        y[0].to_host().to_f32()
    }

    #[test]
    fn softmax_axis_follows_the_opset() {
        // Before 13: the input is coerced to 2-D at the axis, [1, 6], and normalized as one row.
        let total: f32 = (0..6).map(|i| (i as f32).exp()).sum();
        let flat: Vec<f32> = (0..6).map(|i| (i as f32).exp() / total).collect();
        // From 13: each column is normalized on its own.
        let col = 1.0 / (1.0 + 3f32.exp());
        let columns = [col, col, col, 1.0 - col, 1.0 - col, 1.0 - col];
        for (opset, want) in [(11, &flat[..]), (13, &columns[..])] {
            for (op, log) in [("Softmax", false), ("LogSoftmax", true)] {
                let got = at_axis_0(op, opset);
                for (g, w) in got.iter().zip(want) {
                    let w = if log { w.ln() } else { *w };
                    assert!((g - w).abs() < 1e-5, "{op} opset {opset}: {got:?}");
                }
            }
        }
    }
}
