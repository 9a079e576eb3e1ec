//! ReduceMean (axes as an attribute before opset 18, as an input from 18 on).

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::DynTensor;

pub fn reduce_mean(ctx: &Ctx) -> Result<Vec<Value>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    let rank = dims.len();
    let axes = if ctx.node.opset >= 18 {
        if ctx.has(1) {
            Some(ctx.ints(1)?)
        } else {
            None
        }
    } else {
        ctx.node.ints("axes")?
    };
    let keep = ctx.node.int("keepdims", 1)? != 0;
    let axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&a| ctx.axis(a, rank))
            .collect::<Result<_>>()?,
        _ if ctx.node.int("noop_with_empty_axes", 0)? != 0 => return Ok(vec![Value::Device(x)]),
        _ => (0..rank).collect(),
    };
    let mut s = x.clone().into_storage();
    for &a in &axes {
        s = s.mean_dim(x.storage_axis(a));
    }
    let y = DynTensor::from_storage(s, rank);
    let out: Vec<usize> = (0..rank)
        .filter(|a| keep || !axes.contains(a))
        .map(|a| if axes.contains(&a) { 1 } else { dims[a] })
        .collect();
    Ok(vec![Value::Device(y.reshape(&out))])
}
