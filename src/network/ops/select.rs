//! Ops that pick positions by value along an axis: ArgMax, ArgMin, TopK and Hardmax, as
//! classification heads, detection heads and exported post-processing use them.
//!
//! The positions are found on the host (a device input is read back once): they are integers,
//! with no gradient, and the ties and NaNs follow the ONNX reference exactly, which a device
//! `argmax` does not promise. TopK's values are then picked from the input where it lives, so on
//! the device they keep their gradient.

use std::cmp::Ordering;

use burn::prelude::Backend;

use super::scatter::pick;
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{HostData, HostTensor, Wide};

/// An axis of a shape seen as `[outer, n, inner]`: element `(o, i, j)` sits at
/// `(o · n + i) · inner + j`.
#[derive(Clone, Copy)]
struct Lanes {
    outer: usize,
    n: usize,
    inner: usize,
}

impl Lanes {
    fn of(dims: &[usize], axis: usize) -> Self {
        Lanes {
            outer: dims[..axis].iter().product(),
            n: dims[axis],
            inner: dims[axis + 1..].iter().product(),
        }
    }

    /// The flat positions of lane `(o, j)`, in order along the axis.
    fn lane(self, o: usize, j: usize) -> impl Iterator<Item = usize> {
        (0..self.n).map(move |i| (o * self.n + i) * self.inner + j)
    }

    /// Every lane, as `(o, j)`, in row-major order of the output.
    fn each(self) -> impl Iterator<Item = (usize, usize)> {
        (0..self.outer).flat_map(move |o| (0..self.inner).map(move |j| (o, j)))
    }
}

/// Compares the values at two flat positions of `h` as numpy sorts them: NaN above every
/// number, integers exactly.
fn comparer(h: &HostTensor) -> Box<dyn Fn(usize, usize) -> Ordering + '_> {
    match h.data.wide() {
        Wide::F32(v) => Box::new(move |a, b| match (v[a].is_nan(), v[b].is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => v[a].partial_cmp(&v[b]).expect("neither is NaN"),
        }),
        Wide::I64(v) => Box::new(move |a, b| v[a].cmp(&v[b])),
    }
}

/// The first greatest (`wins` = Greater) or least value of a non-empty `lane` of flat positions
/// of `h`, or the last with `last`: its index along the lane and its flat position. NaN wins
/// either way, the first one, as in numpy's argmax and argmin.
fn best(
    mut lane: impl Iterator<Item = usize>,
    h: &HostTensor,
    cmp: &dyn Fn(usize, usize) -> Ordering,
    wins: Ordering,
    last: bool,
) -> (usize, usize) {
    let nan_at = |p: usize| matches!(&h.data, HostData::F32(v) if v[p].is_nan());
    let mut at = lane.next().expect("the lane is not empty");
    let mut best = 0;
    for (i, p) in lane.enumerate() {
        if nan_at(at) {
            break;
        }
        let c = if nan_at(p) { wins } else { cmp(p, at) };
        if c == wins || (last && c == Ordering::Equal) {
            (best, at) = (i + 1, p);
        }
    }
    (best, at)
}

/// Input 0's shape, checked so that every product of its sizes fits (an empty tensor may name
/// huge ones), which [`Lanes`] takes.
fn checked_dims<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<usize>> {
    let dims = ctx.dims(0)?;
    crate::budget::elements(&dims).map_err(|e| ctx.error(e))?;
    Ok(dims)
}

/// Input 0's shape and its `axis` attribute (default `default`), normalized.
fn axis_of<B: Backend>(ctx: &Ctx<B>, default: i64) -> Result<(Vec<usize>, usize)> {
    let dims = checked_dims(ctx)?;
    if dims.is_empty() {
        return Err(ctx.error("input is a scalar, which has no axis to pick along"));
    }
    let axis = ctx.axis(ctx.node.int("axis", default)?, dims.len())?;
    Ok((dims, axis))
}

/// ArgMax (opsets 1–13).
pub fn argmax<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    arg(ctx, Ordering::Greater)
}

/// ArgMin (opsets 1–13).
pub fn argmin<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    arg(ctx, Ordering::Less)
}

/// The position along `axis` of each lane's greatest (`wins` = Greater) or least value:
/// the first one, or the last with `select_last_index` (opset 12). NaN wins either way, as in
/// numpy. `keepdims` keeps the axis as size 1.
fn arg<B: Backend>(ctx: &Ctx<B>, wins: Ordering) -> Result<Vec<Value<B>>> {
    let (dims, axis) = axis_of(ctx, 0)?;
    let lanes = Lanes::of(&dims, axis);
    if lanes.n == 0 && lanes.outer * lanes.inner > 0 {
        return Err(ctx.error(format!(
            "axis {axis} of input {dims:?} is empty: there is no position to pick"
        )));
    }
    let keep = ctx.node.int("keepdims", 1)? != 0;
    let last = ctx.node.int("select_last_index", 0)? != 0;
    let h = ctx.host(0)?;
    let cmp = comparer(&h);
    let picked: Vec<i64> = lanes
        .each()
        .map(|(o, j)| best(lanes.lane(o, j), &h, &cmp, wins, last).0 as i64)
        .collect();
    let shape: Vec<usize> = (0..dims.len())
        .filter_map(|a| match (a == axis, keep) {
            (false, _) => Some(dims[a]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Ok(vec![Value::Host(HostTensor::i64(shape, picked))])
}

/// TopK (opsets 1–11): the `k` greatest (or, with `largest` = 0, least) values along `axis` and
/// their positions, greatest first (least first), ties in order of position. K is an attribute
/// before opset 10 and input 1 from it on. Always sorted, which `sorted` = 0 allows.
pub fn topk<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let (dims, axis) = axis_of(ctx, -1)?;
    let k = if ctx.node.opset < 10 {
        ctx.node.int("k", -1)?
    } else {
        match ctx.ints(1)?.as_slice() {
            [k] => *k,
            other => {
                return Err(ctx.error(format!("K must be one integer, got {} values", other.len())))
            }
        }
    };
    let n = dims[axis];
    let k = usize::try_from(k).ok().filter(|&k| k <= n).ok_or_else(|| {
        ctx.error(format!(
            "K = {k} is not within 0..={n}, the size of axis {axis}"
        ))
    })?;
    let largest = ctx.node.int("largest", 1)? != 0;
    let mut shape = dims.clone();
    shape[axis] = k;
    ctx.fits("values", &shape, 4)?;
    let lanes = Lanes::of(&dims, axis);
    let h = ctx.host(0)?;
    let cmp = comparer(&h);
    // Output element (o, r, j), row-major: the r-th pick of lane (o, j).
    let mut picks = vec![0usize; lanes.outer * k * lanes.inner];
    let mut positions = vec![0i64; picks.len()];
    for (o, j) in lanes.each() {
        let mut lane: Vec<(usize, usize)> = lanes.lane(o, j).enumerate().collect();
        // A stable sort keeps equal values in order of position.
        lane.sort_by(|a, b| {
            let c = cmp(a.1, b.1);
            if largest {
                c.reverse()
            } else {
                c
            }
        });
        for (r, &(i, p)) in lane.iter().take(k).enumerate() {
            let at = (o * k + r) * lanes.inner + j;
            picks[at] = p;
            positions[at] = i as i64;
        }
    }
    let indices = Value::Host(HostTensor::i64(shape.clone(), positions));
    // Picked from the input where it lives: on the device the values keep their gradient.
    let values = pick(ctx, shape, &picks)?;
    Ok(vec![values, indices])
}

/// Hardmax (opsets 1–13): 1 at the first greatest value of each lane, 0 elsewhere. From opset 13
/// the lanes run along `axis` (default -1); before, the input is read as a matrix whose rows are
/// everything from `axis` (default 1) on.
pub fn hardmax<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = checked_dims(ctx)?;
    let rank = dims.len();
    if rank == 0 {
        return Err(ctx.error("input is a scalar, which has no axis"));
    }
    let lanes = if ctx.node.opset >= 13 {
        Lanes::of(&dims, ctx.axis(ctx.node.int("axis", -1)?, rank)?)
    } else {
        // `axis` may equal the rank here: every row is one element.
        let a = ctx.node.int("axis", 1)?;
        let a = usize::try_from(if a < 0 { a + rank as i64 } else { a })
            .ok()
            .filter(|&a| a <= rank)
            .ok_or_else(|| ctx.error(format!("axis {a} is out of range for rank {rank}")))?;
        Lanes {
            outer: dims[..a].iter().product(),
            n: dims[a..].iter().product(),
            inner: 1,
        }
    };
    let h = ctx.host(0)?;
    let cmp = comparer(&h);
    let mut out = vec![0.0f32; h.len()];
    if lanes.n > 0 {
        for (o, j) in lanes.each() {
            let (_, at) = best(lanes.lane(o, j), &h, &cmp, Ordering::Greater, false);
            out[at] = 1.0;
        }
    }
    let y = HostTensor::f32(dims, out);
    Ok(vec![if ctx.is_host(0) {
        Value::Host(y)
    } else {
        Value::Device(y.upload_to(ctx.device))
    }])
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_on};
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, Elem, HostTensor, Value};

    fn floats(shape: &[usize], v: &[f32]) -> Value {
        Value::Device(DynTensor::from_host(v, shape, crate::Device::cpu().burn()))
    }

    #[test]
    fn argmax_and_argmin_break_ties_either_way_and_nan_wins() {
        let x = || floats(&[2, 3], &[1.0, 5.0, 5.0, f32::NAN, 2.0, f32::NAN]);
        let pick = |op: &str, last: i64| {
            let attrs = [
                ("axis", Attr::Int(1)),
                ("keepdims", Attr::Int(0)),
                ("select_last_index", Attr::Int(last)),
            ];
            let Value::Host(h) = run(op, 13, &attrs, vec![x()]).unwrap().remove(0) else {
                panic!("positions are host integers");
            };
            assert_eq!((h.elem, h.shape.clone()), (Elem::Int, vec![2]));
            h.to_i64()
        };
        assert_eq!(pick("ArgMax", 0), [1, 0]);
        assert_eq!(pick("ArgMax", 1), [2, 0]);
        assert_eq!(pick("ArgMin", 0), [0, 0]);
        let empty = floats(&[2, 0], &[]);
        let err = run("ArgMax", 13, &[("axis", Attr::Int(1))], vec![empty])
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn topk_sorts_stably_keeps_the_gradient_and_checks_k() {
        let ad = crate::Device::cpu().autodiff();
        let x = DynTensor::from_host(&[3.0, 1.0, 3.0, 2.0, 0.0, 4.0], &[2, 3], &ad).require_grad();
        let k = || Value::Host(HostTensor::i64(vec![1], vec![2]));
        let mut out = run_on("TopK", 11, &[], vec![Value::Device(x.clone()), k()], &ad).unwrap();
        let Value::Host(idx) = out.remove(1) else {
            panic!("positions are host integers");
        };
        assert_eq!(idx.to_i64(), [0, 2, 2, 0]);
        let Value::Device(v) = out.remove(0) else {
            panic!("device values stay on the device");
        };
        assert_eq!(v.to_vec(), [3.0, 3.0, 4.0, 2.0]);
        let g = x.grad(&v.backward()).unwrap().to_vec();
        assert_eq!(g, [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
        let smallest = [("largest", Attr::Int(0))];
        let x = Value::Host(HostTensor::i64(vec![4], vec![5, -1, 7, -1]));
        let out = run("TopK", 11, &smallest, vec![x.clone(), k()]).unwrap();
        assert_eq!(out[0].to_host().to_i64(), [-1, -1]);
        assert_eq!(out[1].to_host().to_i64(), [1, 3]);
        let five = Value::Host(HostTensor::i64(vec![1], vec![5]));
        let err = run("TopK", 11, &[], vec![x, five]).unwrap_err().to_string();
        assert!(err.contains("K = 5") && err.contains("TopK"), "{err}");
    }

    #[test]
    fn hardmax_marks_the_first_greatest_value() {
        let x = || floats(&[2, 3], &[1.0, 5.0, 5.0, 0.0, -1.0, -2.0]);
        let y = run("Hardmax", 13, &[], vec![x()]).unwrap().remove(0);
        assert_eq!(y.to_host().to_f32(), [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
        // Before opset 13 with axis 0, the whole tensor is one row.
        let y = run("Hardmax", 11, &[("axis", Attr::Int(0))], vec![x()])
            .unwrap()
            .remove(0);
        assert_eq!(y.to_host().to_f32(), [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
