//! Gemm and MatMul (numpy semantics: 1-D operands, broadcast batch axes).

use super::binary::broadcast_shape;
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{storage_shape, DynTensor};
use burn::prelude::Backend;

pub fn gemm<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let node = ctx.node;
    let alpha = node.float("alpha", 1.0)?;
    let beta = node.float("beta", 1.0)?;
    let mut a = ctx
        .float(0)?
        .to_rank::<2>()
        .map_err(|e| ctx.error(format!("A: {e}")))?;
    let mut b = ctx
        .float(1)?
        .to_rank::<2>()
        .map_err(|e| ctx.error(format!("B: {e}")))?;
    if node.int("transA", 0)? != 0 {
        a = a.transpose();
    }
    if node.int("transB", 0)? != 0 {
        b = b.transpose();
    }
    let ([m, k], [k2, n]) = (a.dims(), b.dims());
    if k != k2 {
        return Err(ctx.error(format!("cannot multiply [{m}, {k}] by [{k2}, {n}]")));
    }
    // Two small operands can make a huge product ([2^20, 1] by [1, 2^20]).
    ctx.fits("output", &[m, n], 4)?;
    // burn's tensors are never empty: an empty product stays a shape on the host.
    if m == 0 || n == 0 {
        return Ok(vec![super::shape::empty(vec![m, n])]);
    }
    if k == 0 {
        return Err(ctx.error(format!(
            "cannot multiply [{m}, {k}] by [{k2}, {n}] over an empty axis"
        )));
    }
    let mut y = DynTensor::new(a.matmul(b));
    if alpha != 1.0 {
        y = y.map(|t| t.mul_scalar(alpha));
    }
    if ctx.has(2) {
        let c = ctx.float(2)?;
        if broadcast_shape(&[m, n], &c.dims()).as_deref() != Some(&[m, n][..]) {
            return Err(ctx.error(format!("C {:?} does not broadcast to [{m}, {n}]", c.dims())));
        }
        let c = c.map(|t| t.mul_scalar(beta)).into_storage();
        y = y.map(|t| t + c);
    }
    Ok(vec![Value::Device(y)])
}

pub fn matmul<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let (a, b) = (ctx.float(0)?, ctx.float(1)?);
    let (mut ad, mut bd) = (a.dims(), b.dims());
    if ad.is_empty() || bd.is_empty() {
        return Err(ctx.error("MatMul operands must have rank 1 or more"));
    }
    let (a_vec, b_vec) = (ad.len() == 1, bd.len() == 1);
    if a_vec {
        ad.insert(0, 1);
    }
    if b_vec {
        bd.push(1);
    }
    let (m, k) = (ad[ad.len() - 2], ad[ad.len() - 1]);
    let (k2, n) = (bd[bd.len() - 2], bd[bd.len() - 1]);
    if k != k2 {
        return Err(ctx.error(format!("cannot multiply {:?} by {:?}", a.dims(), b.dims())));
    }
    let batch = broadcast_shape(&ad[..ad.len() - 2], &bd[..bd.len() - 2])
        .ok_or_else(|| ctx.error(format!("batch axes of {ad:?} and {bd:?} do not broadcast")))?;
    let full = |rows: usize, cols: usize| {
        let mut s = batch.clone();
        s.extend([rows, cols]);
        s
    };
    // Broadcast batch axes are materialized, and two small operands can make a huge product.
    for (what, shape) in [
        ("broadcast A", full(m, k)),
        ("broadcast B", full(k, n)),
        ("output", full(m, n)),
    ] {
        ctx.fits(what, &shape, 4)?;
        ctx.check_rank(what, &shape)?;
    }
    let mut out = full(m, n);
    if b_vec {
        out.pop();
    }
    if a_vec {
        out.remove(out.len() - if b_vec { 1 } else { 2 });
    }
    // burn's tensors are never empty: an empty product stays a shape on the host.
    if full(m, k).contains(&0) || full(k, n).contains(&0) {
        if out.contains(&0) {
            return Ok(vec![super::shape::empty(out)]);
        }
        return Err(ctx.error(format!(
            "cannot multiply {:?} by {:?} over an empty axis",
            a.dims(),
            b.dims()
        )));
    }
    let a = a
        .reshape(&ad)
        .into_storage()
        .expand(storage_shape(&full(m, k)));
    let b = b
        .reshape(&bd)
        .into_storage()
        .expand(storage_shape(&full(k, n)));
    let y = DynTensor::from_storage(a.matmul(b), full(m, n).len());
    Ok(vec![Value::Device(y.reshape(&out))])
}
