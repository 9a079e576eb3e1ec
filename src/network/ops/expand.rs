//! Expand, Tile and Range: ops whose output size comes from data (a shape, repeat counts, a
//! range's bounds), so each output passes checked arithmetic and the memory budget before it is
//! made. Expand and Tile work on the device for activations and on the host for shape
//! arithmetic; Range makes index-like vectors, on the host.

use super::binary::broadcast_shape;
use super::shape::{empty, flat_index, host_remap};
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{storage_shape, DynTensor, HostTensor};
use burn::prelude::Backend;

/// Input `i` as a list of sizes (non-negative).
fn sizes<B: Backend>(ctx: &Ctx<B>, i: usize, what: &str) -> Result<Vec<usize>> {
    let v = ctx.ints(i)?;
    v.iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| ctx.error(format!("{what} {v:?}: {d} is negative")))
        })
        .collect()
}

/// Expand (opsets 8–13): broadcasts the input against a shape (numpy rules in both directions:
/// a 1 in the shape keeps the input's size).
pub fn expand<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let shape = sizes(ctx, 1, "shape")?;
    let out = broadcast_shape(&dims, &shape).ok_or_else(|| {
        ctx.error(format!(
            "input {dims:?} does not broadcast to shape {shape:?}"
        ))
    })?;
    ctx.fits("output", &out, 8)?;
    let pad = out.len() - dims.len();
    Ok(vec![match ctx.value(0)? {
        Value::Host(h) => Value::Host(host_remap(&h, out, 0.0, |c| {
            let src: Vec<usize> = (0..dims.len())
                .map(|k| if dims[k] == 1 { 0 } else { c[pad + k] })
                .collect();
            Some(flat_index(&dims, &src))
        })),
        Value::Device(_) if out.contains(&0) => empty(out),
        Value::Device(t) => {
            ctx.check_rank("output", &out)?;
            let y = t.into_storage().expand(storage_shape(&out));
            Value::Device(DynTensor::from_storage(y, out.len()))
        }
    }])
}

/// Tile (opsets 6–13): repeats the input `repeats[i]` times along each axis i.
pub fn tile<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let repeats = sizes(ctx, 1, "repeats")?;
    if repeats.len() != dims.len() {
        return Err(ctx.error(format!(
            "repeats {repeats:?} needs one count for each of the input's {} axes",
            dims.len()
        )));
    }
    let out: Vec<usize> = dims
        .iter()
        .zip(&repeats)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect::<Option<_>>()
        .ok_or_else(|| ctx.error(format!("repeats {repeats:?} of {dims:?} overflow")))?;
    ctx.fits("output", &out, 8)?;
    Ok(vec![match ctx.value(0)? {
        Value::Host(h) => Value::Host(host_remap(&h, out, 0.0, |c| {
            let src: Vec<usize> = c.iter().zip(&dims).map(|(&i, &d)| i % d).collect();
            Some(flat_index(&dims, &src))
        })),
        Value::Device(_) if out.contains(&0) => empty(out),
        Value::Device(t) => {
            let rank = t.rank();
            let y = t.into_storage().repeat(&storage_shape(&repeats));
            Value::Device(DynTensor::from_storage(y, rank))
        }
    }])
}

/// Range (opsets 11–27): `start, start + delta, …` up to `limit` (exclusive), in the inputs'
/// type.
pub fn range<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let scalar = |i: usize, what: &str| -> Result<HostTensor> {
        let t = ctx.host(i)?;
        if t.len() != 1 {
            return Err(ctx.error(format!("{what} must be a scalar, got shape {:?}", t.shape)));
        }
        Ok(t)
    };
    let (start, limit, delta) = (
        scalar(0, "start")?,
        scalar(1, "limit")?,
        scalar(2, "delta")?,
    );
    let float = [&start, &limit, &delta]
        .iter()
        .any(|t| t.elem == crate::network::value::Elem::Float);
    if float {
        let [s, l, d] = [&start, &limit, &delta].map(|t| f64::from(t.to_f32()[0]));
        // max(ceil((limit - start) / delta), 0); NaN (a zero or non-finite step) is refused.
        let n = ((l - s) / d).ceil().max(0.0);
        if !n.is_finite() || d == 0.0 {
            return Err(ctx.error(format!("range({s}, {l}, {d}) has no finite length")));
        }
        // `as` saturates, and the budget refuses a saturated length.
        let n = ctx.fits("output", &[n as usize], 8)?;
        let values = (0..n).map(|i| (s + i as f64 * d) as f32).collect();
        return Ok(vec![Value::Host(HostTensor::f32(vec![n], values))]);
    }
    let [s, l, d] = [&start, &limit, &delta].map(|t| i128::from(t.to_i64()[0]));
    if d == 0 {
        return Err(ctx.error("delta must not be 0"));
    }
    // ceil((l - s) / d) in i128, which no i64 bounds overflow.
    let span = l - s;
    let n = (span / d + i128::from(span % d != 0 && (span < 0) == (d < 0))).max(0);
    let n = ctx.fits("output", &[usize::try_from(n).unwrap_or(usize::MAX)], 8)?;
    let values = (0..n).map(|i| (s + i as i128 * d) as i64).collect();
    Ok(vec![Value::Host(HostTensor::i64(vec![n], values))])
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use crate::network::value::{DynTensor, Elem, HostTensor, Value};

    fn ints(v: &[i64]) -> Value {
        Value::Host(HostTensor::i64(vec![v.len()], v.to_vec()))
    }

    fn scalar(v: f32) -> Value {
        Value::Host(HostTensor::f32(vec![], vec![v]))
    }

    #[test]
    fn sizes_from_data_are_checked_before_anything_is_made() {
        let on = crate::Device::cpu();
        let x = || Value::Device(DynTensor::from_host(&[1.0, 2.0], &[2, 1], on.burn()));
        let big = 1i64 << 40;
        let cases = [
            ("Expand", vec![x(), ints(&[2, big])], "memory budget"),
            ("Expand", vec![x(), ints(&[2, -3])], "negative"),
            ("Expand", vec![x(), ints(&[3, 1])], "does not broadcast"),
            ("Tile", vec![x(), ints(&[big, 1])], "memory budget"),
            (
                "Tile",
                vec![x(), ints(&[i64::MAX, 2])],
                "more elements than can be addressed",
            ),
            ("Tile", vec![x(), ints(&[2])], "one count for each"),
            (
                "Range",
                vec![scalar(0.0), scalar(1e30), scalar(1e-30)],
                "addressed",
            ),
            (
                "Range",
                vec![scalar(0.0), scalar(1.0), scalar(0.0)],
                "no finite length",
            ),
            (
                "Range",
                vec![ints(&[i64::MIN]), ints(&[i64::MAX]), ints(&[1])],
                "addressed",
            ),
            (
                "Range",
                vec![ints(&[0]), ints(&[big]), ints(&[1])],
                "memory budget",
            ),
            (
                "Range",
                vec![ints(&[0]), ints(&[5]), ints(&[0])],
                "must not be 0",
            ),
        ];
        for (op, inputs, why) in cases {
            let err = run(op, 13, &[], inputs).unwrap_err().to_string();
            assert!(
                err.contains("node_under_test") && err.contains(why),
                "{op}: {err}"
            );
        }
    }

    #[test]
    fn shape_arithmetic_stays_on_the_host_in_integers() {
        let shape = Value::Host(HostTensor::i64(vec![2, 1], vec![7, 8]));
        let Value::Host(y) = run("Expand", 13, &[], vec![shape.clone(), ints(&[2, 3])])
            .unwrap()
            .remove(0)
        else {
            panic!("a host input expands on the host");
        };
        assert_eq!(
            (y.elem, y.shape.clone(), y.to_i64()),
            (Elem::Int, vec![2, 3], vec![7, 7, 7, 8, 8, 8])
        );
        let Value::Host(y) = run("Tile", 13, &[], vec![shape, ints(&[2, 2])])
            .unwrap()
            .remove(0)
        else {
            panic!("a host input tiles on the host");
        };
        assert_eq!(y.to_i64(), [7, 7, 8, 8, 7, 7, 8, 8]);
        let Value::Host(r) = run("Range", 11, &[], vec![ints(&[10]), ints(&[4]), ints(&[-3])])
            .unwrap()
            .remove(0)
        else {
            panic!("Range is computed on the host");
        };
        assert_eq!((r.elem, r.to_i64()), (Elem::Int, vec![10, 7]));
    }
}
