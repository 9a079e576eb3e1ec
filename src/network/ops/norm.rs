//! Normalizations: LRN, BatchNormalization, InstanceNormalization, Softmax.

use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module;
use burn::tensor::ops::ConvOptions;
use burn::tensor::TensorData;
use burn::Dispatch;

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{DynTensor, Storage};

/// Reshapes a per-channel vector `[C]` so it broadcasts against an `[N, C, ...]` tensor of `rank`.
fn per_channel(v: DynTensor, rank: usize) -> DynTensor {
    let c = v.num_elements();
    let mut shape = vec![c];
    shape.extend(std::iter::repeat_n(1, rank.saturating_sub(2)));
    v.reshape(&shape)
}

pub fn lrn(ctx: &Ctx) -> Result<Vec<Value>> {
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
    let band = Tensor::<Dispatch, 4>::from_data(TensorData::new(band, [c, c, 1, 1]), &device);
    let bias = Tensor::<Dispatch, 1>::from_data(TensorData::new(vec![bias; c], [c]), &device);
    let rest: usize = dims[2..].iter().product();
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

pub fn batch_norm(ctx: &Ctx) -> Result<Vec<Value>> {
    let x = ctx.float(0)?;
    let rank = x.rank();
    if rank < 2 {
        return Err(ctx.error(format!("input {:?} must be [N, C, ...]", x.dims())));
    }
    let eps = ctx.node.float("epsilon", 1e-5)?;
    let training = ctx.node.int("training_mode", 0)? != 0;
    let scale = per_channel(ctx.float(1)?, rank).into_storage();
    let bias = per_channel(ctx.float(2)?, rank).into_storage();
    let running_mean = per_channel(ctx.float(3)?, rank).into_storage();
    let running_var = per_channel(ctx.float(4)?, rank).into_storage();
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
        let blend = |running: Storage, batch: Storage| {
            let s = running.mul_scalar(momentum) + batch.mul_scalar(1.0 - momentum);
            Value::Device(DynTensor::from_storage(s, rank).reshape(&[c]))
        };
        out.push(blend(running_mean, mean));
        out.push(blend(running_var, var));
    }
    Ok(out)
}

fn reduce_mean(mut t: Storage, axes: &[usize]) -> Storage {
    for &a in axes {
        t = t.mean_dim(a);
    }
    t
}

pub fn instance_norm(ctx: &Ctx) -> Result<Vec<Value>> {
    let x = ctx.float(0)?;
    let rank = x.rank();
    if rank < 3 {
        return Err(ctx.error(format!("input {:?} must be [N, C, spatial...]", x.dims())));
    }
    let eps = ctx.node.float("epsilon", 1e-5)?;
    let scale = per_channel(ctx.float(1)?, rank).into_storage();
    let bias = per_channel(ctx.float(2)?, rank).into_storage();
    let axes: Vec<usize> = (2..rank).map(|a| x.storage_axis(a)).collect();
    let xs = x.into_storage();
    let mean = reduce_mean(xs.clone(), &axes);
    let centered = xs - mean;
    let var = reduce_mean(centered.clone().powi_scalar(2), &axes);
    let y = centered / var.add_scalar(eps).sqrt() * scale + bias;
    Ok(vec![Value::Device(DynTensor::from_storage(y, rank))])
}

pub fn softmax(ctx: &Ctx) -> Result<Vec<Value>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    let rank = dims.len();
    if ctx.node.opset < 13 {
        // Older opsets coerce the input to 2-D at `axis` and normalize each row.
        let axis = ctx.axis(ctx.node.int("axis", 1)?, rank)?;
        let rows: usize = dims[..axis].iter().product();
        let cols: usize = dims[axis..].iter().product();
        let y: Tensor<Dispatch, 2> =
            activation::softmax(x.reshape(&[rows, cols]).to_rank::<2>()?, 1);
        return Ok(vec![Value::Device(DynTensor::new(y).reshape(&dims))]);
    }
    let axis = ctx.axis(ctx.node.int("axis", -1)?, rank)?;
    let a = x.storage_axis(axis);
    Ok(vec![Value::Device(x.map(|t| activation::softmax(t, a)))])
}
