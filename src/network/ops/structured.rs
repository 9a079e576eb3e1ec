//! Ops whose output follows a fixed pattern of positions: Trilu (a triangle of the last two
//! axes), EyeLike (a diagonal) and OneHot (one position per index).

use burn::prelude::*;
use burn::tensor::TensorData;

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{storage_shape, Elem, HostData, HostTensor, Wide, MAX_RANK};

/// Whether element (`row`, `col`) of a matrix lies on or above (`upper`) or on or below the
/// diagonal `k` (0 the main one, positive above it).
fn in_triangle(row: usize, col: usize, k: i64, upper: bool) -> bool {
    // Matrix sizes come from tensors that exist, so both fit an i64 with room for k's sign.
    let offset = col as i64 - row as i64;
    if upper {
        offset >= k
    } else {
        offset <= k
    }
}

/// Trilu (opset 14): the upper (`upper` = 1) or lower triangle of each matrix of the last two
/// axes, from diagonal `k` (input 1, 0 unless given) on; the rest zeros. Attention masks are
/// made so. The zeros are set, not multiplied in: a mask of -∞ times 0 would be NaN.
pub fn trilu<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let rank = dims.len();
    if rank < 2 {
        return Err(ctx.error(format!("input {dims:?} is not a matrix or a stack of them")));
    }
    let k = ctx.optional_int(1, "k")?.unwrap_or(0);
    let upper = ctx.node.int("upper", 1)? != 0;
    let (rows, cols) = (dims[rank - 2], dims[rank - 1]);
    if ctx.is_host(0) || dims.contains(&0) {
        let h = ctx.host(0)?;
        let keep = |flat: usize| in_triangle((flat / cols) % rows, flat % cols, k, upper);
        let data = match h.data.wide() {
            Wide::F32(v) => HostData::F32(
                v.iter()
                    .enumerate()
                    .map(|(i, &x)| if keep(i) { x } else { 0.0 })
                    .collect(),
            ),
            Wide::I64(v) => HostData::I64(
                v.iter()
                    .enumerate()
                    .map(|(i, &x)| if keep(i) { x } else { 0 })
                    .collect(),
            ),
        };
        return Ok(vec![Value::Host(HostTensor {
            shape: dims,
            data,
            elem: h.elem,
        })]);
    }
    let off: Vec<bool> = (0..rows * cols)
        .map(|i| !in_triangle(i / cols, i % cols, k, upper))
        .collect();
    let off = Tensor::<B, MAX_RANK, Bool>::from_data(
        TensorData::new(off, storage_shape(&[rows, cols])),
        ctx.device,
    );
    let x = ctx.float(0)?;
    let y = x.map(|s| {
        let off = off.clone().expand(s.shape());
        s.mask_fill(off, 0.0)
    });
    Ok(vec![Value::Device(y)])
}

/// EyeLike (opsets 9–22): a matrix of the input's shape, ones on diagonal `k` (an attribute
/// here, 0 unless given) and zeros elsewhere, of type `dtype` (the input's unless given).
pub fn eye_like<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let [rows, cols] = dims[..] else {
        return Err(ctx.error(format!("input {dims:?} is not a matrix")));
    };
    let k = ctx.node.int("k", 0)?;
    let elem = match ctx.node.attrs.get("dtype") {
        None if ctx.is_host(0) => ctx.host_ref(0)?.elem,
        None => Elem::Float,
        Some(_) => {
            let code = ctx.node.int("dtype", 1)?;
            Elem::of_onnx(code)
                .ok_or_else(|| ctx.error(format!("data type {code} is not supported")))?
        }
    };
    let n = ctx.fits("output", &dims, 8)?;
    let ones = (0..n).map(|i| (i % cols) as i64 - (i / cols) as i64 == k);
    debug_assert_eq!(n, rows * cols);
    Ok(vec![Value::Host(match elem {
        Elem::Float => HostTensor::f32(dims, ones.map(f32::from).collect::<Vec<_>>()),
        Elem::Int => HostTensor::i64(dims, ones.map(i64::from).collect()),
        Elem::Bool => HostTensor::bool(dims, ones.collect()),
    })])
}

/// OneHot (opsets 9–11): for each index (input 0) a new axis (`axis`, the last unless given)
/// of `depth` (input 1) values, `values[1]` at the index and `values[0]` elsewhere (input 2).
/// A negative index counts from the end (11); one outside `-depth..depth` gives no on value.
/// The output is on the host, of the values' type: indices carry no gradient.
pub fn one_hot<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let indices = ctx.host(0)?;
    let depth = match ctx.host(1)?.to_f32().as_slice() {
        [d] if d.is_finite() && *d >= 1.0 => *d as i64,
        [d] => return Err(ctx.error(format!("depth {d} must be a positive integer"))),
        other => return Err(ctx.error(format!("depth must be one value, got {}", other.len()))),
    };
    let values = ctx.host(2)?;
    if values.len() != 2 {
        return Err(ctx.error(format!(
            "values {:?} must be two values, [off, on]",
            values.shape
        )));
    }
    let rank = indices.shape.len() + 1;
    let axis = ctx.axis(ctx.node.int("axis", -1)?, rank)?;
    let depth_size = usize::try_from(depth)
        .map_err(|_| ctx.error(format!("depth {depth} does not fit this machine")))?;
    let mut shape = indices.shape.clone();
    shape.insert(axis, depth_size);
    let n = ctx.fits("output", &shape, 8)?;
    // The output, as [outer, depth, inner] around the new axis; the indices are [outer, inner].
    let inner: usize = indices.shape[axis..].iter().product();
    let hot: Vec<i64> = indices.to_i64();
    let on = |flat: usize| {
        let (outer, rest) = (flat / (depth_size * inner), flat % (depth_size * inner));
        let (d, j) = (rest / inner, rest % inner);
        let i = hot[outer * inner + j];
        let i = if i < 0 { i.checked_add(depth) } else { Some(i) };
        i == Some(d as i64)
    };
    let data = match values.data.wide() {
        Wide::F32(v) => HostData::F32((0..n).map(|f| v[usize::from(on(f))]).collect()),
        Wide::I64(v) => HostData::I64((0..n).map(|f| v[usize::from(on(f))]).collect()),
    };
    Ok(vec![Value::Host(HostTensor {
        shape,
        data,
        elem: values.elem,
    })])
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use crate::network::value::{DynTensor, HostTensor, Value};

    fn floats(v: &Value) -> Vec<f32> {
        match v {
            Value::Device(t) => t.to_vec(),
            Value::Host(h) => h.to_f32(),
        }
    }

    #[test]
    fn trilu_of_an_attention_mask_of_minus_infinity_keeps_zeros_below_the_diagonal() {
        let inf = f32::NEG_INFINITY;
        let x = vec![inf; 9];
        for input in [
            Value::Host(HostTensor::f32(vec![3, 3], x.clone())),
            Value::Device(DynTensor::from_host_on(
                &x,
                &[3, 3],
                crate::Device::cpu().burn(),
            )),
        ] {
            let k = Value::Host(HostTensor::i64(vec![], vec![1]));
            let y = run("Trilu", 14, &[], vec![input, k]).unwrap();
            assert_eq!(floats(&y[0]), [0.0, inf, inf, 0.0, 0.0, inf, 0.0, 0.0, 0.0]);
        }
    }

    #[test]
    fn eye_like_and_one_hot_refuse_what_has_no_such_shape() {
        let vector = Value::Host(HostTensor::f32(vec![3], vec![0.0; 3]));
        let e = run("EyeLike", 22, &[], vec![vector]).unwrap_err();
        assert!(e.to_string().contains("not a matrix"), "{e}");
        let indices = || Value::Host(HostTensor::i64(vec![2], vec![0, 1]));
        let values = Value::Host(HostTensor::f32(vec![2], vec![0.0, 1.0]));
        for (depth, said) in [(0.0, "positive"), (f32::NAN, "positive")] {
            let depth = Value::Host(HostTensor::f32(vec![], vec![depth]));
            let e = run("OneHot", 11, &[], vec![indices(), depth, values.clone()]).unwrap_err();
            assert!(e.to_string().contains(said), "{e}");
        }
        let huge = Value::Host(HostTensor::i64(vec![], vec![1 << 40]));
        let e = run("OneHot", 11, &[], vec![indices(), huge, values]).unwrap_err();
        assert!(e.to_string().contains("output"), "{e}");
    }
}
