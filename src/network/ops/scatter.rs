//! ScatterND: a copy of `data` whose slices at index tuples are replaced by, or combined with,
//! `updates`; GatherND, which reads the slices at index tuples; and ScatterElements and
//! GatherElements, their single-element kin along one axis.
//!
//! Every index tuple is checked against the data's shape (negative indices count from the end)
//! before anything is written. Host data with host updates (masks built from constants, as in
//! Swin's shifted windows) is scattered on the host in its own type; otherwise the data is viewed
//! as rows (the axes the tuples index) times slices and scattered on the device with burn's
//! `scatter_nd`, so gradients reach both the data and the updates.

use burn::prelude::Backend;
use std::collections::HashMap;

use burn::tensor::IndexingUpdateOp;

use super::binary::Op;
use super::shape::{empty, index_tensor};
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{DynTensor, HostData, HostTensor, Wide};

/// How an update meets the value it lands on (`reduction`, opset 16 on).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    fn of<B: Backend>(ctx: &Ctx<B>) -> Result<Self> {
        Ok(match ctx.node.string("reduction", "none")?.as_str() {
            "none" => Reduction::None,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" => Reduction::Max,
            "min" => Reduction::Min,
            other => {
                return Err(ctx.error(format!(
                    "reduction {other:?} is not one of none, add, mul, max and min"
                )))
            }
        })
    }

    /// The binary op that combines the current value with an update; None replaces it.
    fn op(self) -> Option<Op> {
        match self {
            Reduction::None => None,
            Reduction::Add => Some(Op::Add),
            Reduction::Mul => Some(Op::Mul),
            Reduction::Max => Some(Op::Max),
            Reduction::Min => Some(Op::Min),
        }
    }

    fn burn(self) -> IndexingUpdateOp {
        match self {
            Reduction::None => IndexingUpdateOp::Assign,
            Reduction::Add => IndexingUpdateOp::Add,
            Reduction::Mul => IndexingUpdateOp::Mul,
            Reduction::Max => IndexingUpdateOp::Max,
            Reduction::Min => IndexingUpdateOp::Min,
        }
    }

    /// The updates (by number) in rounds in which no row occurs twice, in order: burn's
    /// `scatter_nd` leaves duplicate indices undefined except for Add, which accumulates them.
    /// A row's j-th update goes to round j. Replacing keeps only each row's last update (ONNX
    /// leaves duplicates undefined there; its reference applies the updates in order).
    fn rounds(self, targets: &[usize]) -> Vec<Vec<usize>> {
        match self {
            Reduction::Add => vec![(0..targets.len()).collect()],
            Reduction::None => {
                let last: HashMap<usize, usize> =
                    targets.iter().enumerate().map(|(u, &r)| (r, u)).collect();
                vec![(0..targets.len())
                    .filter(|u| last[&targets[*u]] == *u)
                    .collect()]
            }
            Reduction::Mul | Reduction::Max | Reduction::Min => {
                let mut seen: HashMap<usize, usize> = HashMap::new();
                let mut rounds: Vec<Vec<usize>> = Vec::new();
                for (u, &r) in targets.iter().enumerate() {
                    let j = seen.entry(r).or_insert(0);
                    if *j == rounds.len() {
                        rounds.push(Vec::new());
                    }
                    rounds[*j].push(u);
                    *j += 1;
                }
                rounds
            }
        }
    }
}

/// The data seen as `rows × slice` (the axes the index tuples address, then the rest), and the
/// row each update lands on.
struct Layout {
    dims: Vec<usize>,
    rows: usize,
    slice: usize,
    targets: Vec<usize>,
}

/// Checks the shapes and every index tuple.
fn layout<B: Backend>(ctx: &Ctx<B>) -> Result<Layout> {
    let dims = ctx.dims(0)?;
    let index_dims = ctx.dims(1)?;
    let update_dims = ctx.dims(2)?;
    if dims.is_empty() {
        return Err(ctx.error("data must have rank 1 or more, got a scalar"));
    }
    let Some((&k, batch)) = index_dims.split_last() else {
        return Err(ctx.error("indices must have rank 1 or more, got a scalar"));
    };
    if k > dims.len() {
        return Err(ctx.error(format!(
            "indices {index_dims:?} address {k} axes of data {dims:?}, which has {}",
            dims.len()
        )));
    }
    let want: Vec<usize> = batch.iter().chain(&dims[k..]).copied().collect();
    if update_dims != want {
        return Err(ctx.error(format!(
            "updates {update_dims:?} must have shape {want:?}: indices {index_dims:?} without \
             the last axis, then data {dims:?} without its first {k}"
        )));
    }
    // The output is a copy of the data (8 bytes an element on the host).
    ctx.fits("output", &dims, 8)?;
    // Parts of a count that fits do not overflow.
    let rows: usize = dims[..k].iter().product();
    let slice: usize = dims[k..].iter().product();
    let targets = tuple_rows(ctx, &dims, 0, &index_dims)?;
    Ok(Layout {
        dims,
        rows,
        slice,
        targets,
    })
}

/// The row each index tuple of input 1 addresses, tuple by tuple, every tuple checked: rows
/// count over the data's first `b + k` axes, where `b` leading axes are batch axes that the data
/// and the indices share (GatherND's `batch_dims`; 0 for ScatterND) and each tuple indexes the
/// `k` axes after them (negative indices count from the end).
fn tuple_rows<B: Backend>(
    ctx: &Ctx<B>,
    dims: &[usize],
    b: usize,
    index_dims: &[usize],
) -> Result<Vec<usize>> {
    let (&k, tuples) = index_dims.split_last().expect("indices' rank is checked");
    let n = crate::budget::elements(tuples).map_err(|e| ctx.error(format!("indices {e}")))?;
    let indices = ctx.ints(1)?;
    if n.checked_mul(k) != Some(indices.len()) {
        return Err(ctx.error(format!(
            "indices {index_dims:?} hold {} values",
            indices.len()
        )));
    }
    // Tuples per batch element, and rows per batch element; parts of sizes that fit the budget
    // do not overflow.
    let per_batch: usize = tuples[b..].iter().product();
    let indexed = &dims[b..b + k];
    let rows_per_batch: usize = indexed.iter().product();
    (0..n)
        .map(|u| {
            let tuple = &indices[u * k..(u + 1) * k];
            let first = (u / per_batch.max(1)) * rows_per_batch;
            tuple
                .iter()
                .zip(indexed)
                .try_fold(0usize, |row, (&i, &size)| {
                    // A size that fits the budget fits an i64.
                    let s = size as i64;
                    let j = if i < 0 { i.saturating_add(s) } else { i };
                    if !(0..s).contains(&j) {
                        return Err(ctx.error(format!(
                            "index tuple {u} {tuple:?} is out of range for data {dims:?}"
                        )));
                    }
                    Ok(row * size + j as usize)
                })
                .map(|row| first + row)
        })
        .collect()
}

/// GatherND (opsets 11–13; 12 added `batch_dims`): the slices of `data` at the index tuples of
/// `indices`. PyTorch exports `table[:, idx]` (the relative position biases of LeViT,
/// TinyViT, CoAtNet and GCViT) so. Host data is gathered on the host in its own type; device
/// data is viewed as rows times slices and gathered with `select`, so gradients reach it.
pub fn gather_nd<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let index_dims = ctx.dims(1)?;
    let b = usize::try_from(ctx.node.int("batch_dims", 0)?)
        .map_err(|_| ctx.error("batch_dims must be 0 or more"))?;
    let Some(&k) = index_dims.last() else {
        return Err(ctx.error("indices must have rank 1 or more, got a scalar"));
    };
    if b >= dims.len().min(index_dims.len()) {
        return Err(ctx.error(format!(
            "batch_dims {b} must be below the ranks of data {dims:?} and indices {index_dims:?}"
        )));
    }
    if dims[..b] != index_dims[..b] {
        return Err(ctx.error(format!(
            "the first {b} axes of data {dims:?} and indices {index_dims:?} must agree \
             (batch_dims)"
        )));
    }
    if k > dims.len() - b {
        return Err(ctx.error(format!(
            "indices {index_dims:?} address {k} axes of data {dims:?} after {b} batch axes"
        )));
    }
    let out: Vec<usize> = dims[..b]
        .iter()
        .chain(&index_dims[b..index_dims.len() - 1])
        .chain(&dims[b + k..])
        .copied()
        .collect();
    ctx.fits("output", &out, 8)?;
    let rows: usize = dims[..b + k].iter().product();
    let slice: usize = dims[b + k..].iter().product();
    let targets = tuple_rows(ctx, &dims, b, &index_dims)?;
    if ctx.is_host(0) {
        let data = ctx.host(0)?;
        let n = targets.len() * slice;
        let slice = slice.max(1);
        let picks = (0..n).map(|i| targets[i / slice] * slice + i % slice);
        return Ok(vec![Value::Host(host_pick(&data, out, picks))]);
    }
    if out.contains(&0) {
        return Ok(vec![empty(out)]);
    }
    ctx.check_rank("output", &out)?;
    // Device indices are 32-bit (see `index_tensor`).
    if rows > i32::MAX as usize || targets.len() > i32::MAX as usize {
        return Err(ctx.error(format!(
            "{rows} rows and {} index tuples are past the device's 32-bit indices",
            targets.len()
        )));
    }
    let x = ctx.float(0)?.reshape(&[rows, slice]).to_rank::<2>()?;
    let picked = x.select(0, index_tensor(&targets, ctx.device));
    Ok(vec![Value::Device(DynTensor::new(picked).reshape(&out))])
}

/// ScatterND (opsets 11–18): the output is `data` with `updates[u]` written over (or, with a
/// `reduction`, added to, multiplied into, maxed or minned with) the slice at index tuple
/// `indices[u]`.
pub fn scatter_nd<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let reduction = Reduction::of(ctx)?;
    let l = layout(ctx)?;
    scatter_rows(ctx, reduction, l)
}

/// Where ScatterElements and GatherElements read or write: for each element of the indices
/// (input 1), the data's flat element at the same position except on `axis`, where the index
/// says (negative counts from the end). Checks ranks, the indices' shape against the data's,
/// and every index.
fn element_targets<B: Backend>(ctx: &Ctx<B>) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let dims = ctx.dims(0)?;
    let index_dims = ctx.dims(1)?;
    let axis = ctx.axis(ctx.node.int("axis", 0)?, dims.len())?;
    if index_dims.len() != dims.len()
        || index_dims
            .iter()
            .zip(&dims)
            .enumerate()
            .any(|(a, (&i, &d))| a != axis && i > d)
    {
        return Err(ctx.error(format!(
            "indices {index_dims:?} must have the rank of data {dims:?} and be no larger off \
             axis {axis}"
        )));
    }
    ctx.fits("indices", &index_dims, 8)?;
    let indices = ctx.ints(1)?;
    let size = dims[axis] as i64;
    let mut coord = vec![0usize; dims.len()];
    let targets = indices
        .iter()
        .enumerate()
        .map(|(flat, &i)| {
            let mut rem = flat;
            for a in (0..dims.len()).rev() {
                coord[a] = rem % index_dims[a];
                rem /= index_dims[a];
            }
            let j = if i < 0 { i.saturating_add(size) } else { i };
            if !(0..size).contains(&j) {
                return Err(ctx.error(format!(
                    "index {i} is out of range for axis {axis} of data {dims:?}"
                )));
            }
            coord[axis] = j as usize;
            Ok(super::shape::flat_index(&dims, &coord))
        })
        .collect::<Result<_>>()?;
    Ok((dims, index_dims, targets))
}

/// ScatterElements (opsets 11–18; 16 added `reduction`, 18 max and min): a copy of `data`
/// whose elements at `indices` along `axis` are replaced by, or combined with, `updates`.
/// PyTorch exports `select_scatter` and `scatter_` so (ConViT's relative positions). It is
/// ScatterND over the data seen as rows of one element. Also Scatter (opsets 9–10), its name
/// before 11, which PyTorch's exporter wrote at those opsets.
pub fn scatter_elements<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let reduction = Reduction::of(ctx)?;
    let (dims, index_dims, targets) = element_targets(ctx)?;
    let update_dims = ctx.dims(2)?;
    if update_dims != index_dims {
        return Err(ctx.error(format!(
            "updates {update_dims:?} must have the shape of indices {index_dims:?}"
        )));
    }
    ctx.fits("output", &dims, 8)?;
    let rows = dims.iter().product();
    let l = Layout {
        dims,
        rows,
        slice: 1,
        targets,
    };
    scatter_rows(ctx, reduction, l)
}

/// GatherElements (opsets 11–13): the elements of `data` at `indices` along `axis`, in the
/// indices' shape. On the device, a `select` from the flattened data, so gradients reach it.
pub fn gather_elements<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let (_, index_dims, targets) = element_targets(ctx)?;
    Ok(vec![pick(ctx, index_dims, &targets)?])
}

/// The elements of input 0 at the flat positions `targets`, as `shape`: on the host in its type
/// if it lives there, else a `select` from the flattened device tensor, so that gradients reach
/// it (GatherElements, TopK's values).
pub(super) fn pick<B: Backend>(
    ctx: &Ctx<B>,
    shape: Vec<usize>,
    targets: &[usize],
) -> Result<Value<B>> {
    if ctx.is_host(0) {
        let data = ctx.host(0)?;
        return Ok(Value::Host(host_pick(
            &data,
            shape,
            targets.iter().copied(),
        )));
    }
    if shape.contains(&0) {
        return Ok(empty(shape));
    }
    let x = ctx.float(0)?;
    let total = x.num_elements();
    // Device indices are 32-bit (see `index_tensor`).
    if total > i32::MAX as usize {
        return Err(ctx.error(format!(
            "data of {total} elements is past the device's 32-bit indices"
        )));
    }
    let picked = x
        .reshape(&[total])
        .to_rank::<1>()?
        .select(0, index_tensor(targets, ctx.device));
    Ok(Value::Device(DynTensor::new(picked).reshape(&shape)))
}

/// The elements of host tensor `data` at the flat positions `picks`, in its type, as `shape`.
fn host_pick(
    data: &HostTensor,
    shape: Vec<usize>,
    picks: impl Iterator<Item = usize>,
) -> HostTensor {
    let values = match data.data.wide() {
        Wide::F32(v) => HostData::F32(picks.map(|p| v[p]).collect()),
        Wide::I64(v) => HostData::I64(picks.map(|p| v[p]).collect()),
    };
    HostTensor {
        shape,
        data: values,
        elem: data.elem,
    }
}

/// Writes the updates (input 2) into the rows of the data (input 0) that `l` says, with
/// `reduction`: ScatterND's slices, or ScatterElements' single elements.
fn scatter_rows<B: Backend>(
    ctx: &Ctx<B>,
    reduction: Reduction,
    l: Layout,
) -> Result<Vec<Value<B>>> {
    if l.targets.is_empty() || l.rows * l.slice == 0 {
        return Ok(vec![ctx.value(0)?]);
    }
    if ctx.is_host(0) && ctx.is_host(2) {
        let (data, updates) = (ctx.host(0)?, ctx.host(2)?);
        let op = reduction.op();
        let out = match data.data.wide() {
            Wide::F32(v) => HostData::F32(scatter_host(v, &updates.to_f32(), &l, |o, u| {
                op.map_or(u, |op| op.float(f64::from(o), f64::from(u)) as f32)
            })),
            // Add, Mul, Max and Min never fail on integers (only division does).
            Wide::I64(v) => HostData::I64(scatter_host(&v, &updates.to_i64(), &l, |o, u| {
                op.and_then(|op| op.int(o, u)).unwrap_or(u)
            })),
        };
        return Ok(vec![Value::Host(HostTensor {
            shape: l.dims,
            data: out,
            elem: data.elem,
        })]);
    }
    let n = l.targets.len();
    // Device indices are 32-bit (see `index_tensor`).
    if l.rows > i32::MAX as usize || n > i32::MAX as usize {
        return Err(ctx.error(format!(
            "{} rows and {n} updates are past the device's 32-bit indices",
            l.rows
        )));
    }
    let mut x = ctx.float(0)?.reshape(&[l.rows, l.slice]).to_rank::<2>()?;
    let u = ctx.float(2)?.reshape(&[n, l.slice]).to_rank::<2>()?;
    for round in reduction.rounds(&l.targets) {
        let rows: Vec<usize> = round.iter().map(|&i| l.targets[i]).collect();
        let rows = index_tensor(&rows, ctx.device).reshape([round.len(), 1]);
        let values = if round.len() == n {
            u.clone()
        } else {
            u.clone().select(0, index_tensor(&round, ctx.device))
        };
        x = x.scatter_nd(rows, values, reduction.burn());
    }
    Ok(vec![Value::Device(DynTensor::new(x).reshape(&l.dims))])
}

/// Applies the updates in order on the host: `out[row] = f(out[row], update)`, slice by slice.
fn scatter_host<T: Copy>(data: &[T], updates: &[T], l: &Layout, f: impl Fn(T, T) -> T) -> Vec<T> {
    let mut out = data.to_vec();
    for (u, &row) in l.targets.iter().enumerate() {
        let dst = &mut out[row * l.slice..(row + 1) * l.slice];
        let src = &updates[u * l.slice..(u + 1) * l.slice];
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = f(*o, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_on};
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, Elem, HostTensor, Value};

    fn ints(shape: &[usize], v: &[i64]) -> Value {
        Value::Host(HostTensor::i64(shape.to_vec(), v.to_vec()))
    }

    fn floats(shape: &[usize], v: &[f32]) -> Value {
        Value::Host(HostTensor::f32(shape.to_vec(), v.to_vec()))
    }

    #[test]
    fn every_index_is_checked_and_errors_name_the_node() {
        let data = || ints(&[2, 3], &[0; 6]);
        let cases = [
            (ints(&[1, 2], &[2, 0]), ints(&[1], &[9]), "out of range"),
            (ints(&[1, 2], &[0, -4]), ints(&[1], &[9]), "out of range"),
            (
                ints(&[1, 2], &[0, i64::MIN]),
                ints(&[1], &[9]),
                "out of range",
            ),
            (
                ints(&[1, 3], &[0, 0, 0]),
                ints(&[1], &[9]),
                "address 3 axes",
            ),
            (
                ints(&[1, 1], &[0]),
                ints(&[1, 2], &[9, 9]),
                "must have shape [1, 3]",
            ),
            (ints(&[], &[0]), ints(&[], &[9]), "rank 1 or more"),
        ];
        for (indices, updates, why) in cases {
            let err = run("ScatterND", 18, &[], vec![data(), indices, updates])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("node_under_test") && err.contains(why),
                "{err}"
            );
        }
        let err = run(
            "ScatterND",
            18,
            &[("reduction", Attr::String("sum".into()))],
            vec![data(), ints(&[1, 2], &[0, 0]), ints(&[1], &[9])],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"sum\""), "{err}");
    }

    #[test]
    fn host_data_stays_on_the_host_in_its_type_and_negative_indices_wrap() {
        // Swin's attention mask: regions of a constant image numbered by slice writes.
        let indices = ints(&[2, 2], &[-1, 0, 0, 2]);
        let Value::Host(y) = run(
            "ScatterND",
            11,
            &[],
            vec![ints(&[2, 3], &[0; 6]), indices, ints(&[2], &[7, 8])],
        )
        .unwrap()
        .remove(0) else {
            panic!("host data and updates are scattered on the host");
        };
        assert_eq!(
            (y.elem, y.shape.clone(), y.to_i64()),
            (Elem::Int, vec![2, 3], vec![0, 0, 8, 7, 0, 0])
        );
        // Reductions apply in order, duplicates included; replacing keeps the last write.
        for (reduction, want) in [
            ("add", [1.0, 9.0, 3.0, 4.0]),
            ("mul", [1.0, 0.0, 3.0, 4.0]),
            ("max", [1.0, 4.0, 3.0, 4.0]),
            ("min", [1.0, 0.0, 3.0, 4.0]),
            ("none", [1.0, 4.0, 3.0, 4.0]),
        ] {
            let y = run(
                "ScatterND",
                18,
                &[("reduction", Attr::String(reduction.into()))],
                vec![
                    floats(&[4], &[1.0, 3.0, 3.0, 4.0]),
                    ints(&[3, 1], &[1, 1, 1]),
                    floats(&[3], &[2.0, 0.0, 4.0]),
                ],
            )
            .unwrap()
            .remove(0);
            assert_eq!(y.to_host().to_f32(), want, "{reduction}");
        }
    }

    #[test]
    fn device_scatters_match_the_host_with_duplicates_and_pass_gradients() {
        let data: Vec<f32> = (0..12).map(|v| v as f32 - 5.0).collect();
        let updates: Vec<f32> = (0..12).map(|v| (v % 5) as f32 - 2.0).collect();
        // Rows 2, 2 (as -1) and 0 of a [3, 4] tensor.
        let indices = ints(&[3, 1], &[2, -1, 0]);
        let on = crate::Device::cpu();
        for reduction in ["none", "add", "mul", "max", "min"] {
            let attrs = [("reduction", Attr::String(reduction.into()))];
            let host = vec![
                floats(&[3, 4], &data),
                indices.clone(),
                floats(&[3, 4], &updates),
            ];
            let host = run("ScatterND", 18, &attrs, host).unwrap().remove(0);
            let d = Value::Device(DynTensor::from_host(&data, &[3, 4], on.burn()));
            let u = Value::Device(DynTensor::from_host(&updates, &[3, 4], on.burn()));
            let Value::Device(dev) = run("ScatterND", 18, &attrs, vec![d, indices.clone(), u])
                .unwrap()
                .remove(0)
            else {
                panic!("device data is scattered on the device");
            };
            assert_eq!(dev.dims(), [3, 4]);
            assert_eq!(dev.to_vec(), host.to_host().to_f32(), "{reduction}");
        }
        // Rows written twice (2 = -1) with mul on the device: both factors apply, as on the host.
        let attrs = [("reduction", Attr::String("mul".into()))];
        let d = Value::Device(DynTensor::from_host(&[1.0, 2.0, 3.0], &[3], on.burn()));
        let u = Value::Device(DynTensor::from_host(&[5.0, 7.0], &[2], on.burn()));
        let y = run("ScatterND", 18, &attrs, vec![d, ints(&[2, 1], &[2, -1]), u]);
        assert_eq!(y.unwrap()[0].to_host().to_f32(), [1.0, 2.0, 105.0]);
        // Gradients: the replaced row's go to the updates, the others' to the data.
        let ad = crate::Device::cpu().autodiff();
        let x = DynTensor::from_host(&data, &[3, 4], &ad).require_grad();
        let u = DynTensor::from_host(&updates[..4], &[1, 4], &ad).require_grad();
        let inputs = vec![
            Value::Device(x.clone()),
            ints(&[1, 1], &[1]),
            Value::Device(u.clone()),
        ];
        let Value::Device(y) = run_on("ScatterND", 16, &[], inputs, &ad).unwrap().remove(0) else {
            panic!("device data is scattered on the device");
        };
        let grads = y.backward();
        let mut want = [1.0; 12];
        want[4..8].fill(0.0);
        assert_eq!(x.grad(&grads).unwrap().to_vec(), want);
        assert_eq!(u.grad(&grads).unwrap().to_vec(), [1.0; 4]);
    }

    #[test]
    fn gather_nd_reads_batched_tuples_on_host_and_device_and_passes_gradients() {
        // data [2, 3, 2], batch_dims 1, indices [2, 2, 1]: batch b's tuples pick rows of data[b].
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let indices = ints(&[2, 2, 1], &[2, 0, -1, 1]);
        let attrs = [("batch_dims", Attr::Int(1))];
        let want = [4.0, 5.0, 0.0, 1.0, 10.0, 11.0, 8.0, 9.0];
        let host = run(
            "GatherND",
            13,
            &attrs,
            vec![floats(&[2, 3, 2], &data), indices.clone()],
        )
        .unwrap()
        .remove(0);
        let Value::Host(host) = host else {
            panic!("host data is gathered on the host");
        };
        assert_eq!(
            (host.shape.clone(), host.to_f32()),
            (vec![2, 2, 2], want.to_vec())
        );
        // Host integers keep their type.
        let Value::Host(i) = run(
            "GatherND",
            13,
            &attrs,
            vec![ints(&[2, 3, 2], &[7; 12]), indices.clone()],
        )
        .unwrap()
        .remove(0) else {
            panic!("host data is gathered on the host");
        };
        assert_eq!(i.elem, Elem::Int);
        // On the device, with gradients: row 2 of batch 1 is read twice.
        let ad = crate::Device::cpu().autodiff();
        let x = DynTensor::from_host(&data, &[2, 3, 2], &ad).require_grad();
        let twice = ints(&[2, 2, 1], &[2, 0, 2, 2]);
        let Value::Device(y) = run_on(
            "GatherND",
            13,
            &attrs,
            vec![Value::Device(x.clone()), twice],
            &ad,
        )
        .unwrap()
        .remove(0) else {
            panic!("device data is gathered on the device");
        };
        assert_eq!(y.dims(), [2, 2, 2]);
        let grads = y.backward();
        let g = x.grad(&grads).unwrap().to_vec();
        assert_eq!(
            g,
            [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0]
        );
        // Bad tuples and batch axes are errors that name the node.
        let cases = [
            (ints(&[2, 1, 1], &[3, 0]), &attrs[..], "out of range"),
            (ints(&[3, 1, 1], &[0, 0, 0]), &attrs[..], "must agree"),
            (ints(&[2, 1, 3], &[0; 6]), &attrs[..], "address 3 axes"),
            (
                ints(&[2], &[0, 0]),
                &attrs[..],
                "batch_dims 1 must be below",
            ),
        ];
        for (indices, attrs, why) in cases {
            let err = run(
                "GatherND",
                13,
                attrs,
                vec![floats(&[2, 3, 2], &data), indices],
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("node_under_test") && err.contains(why),
                "{err}"
            );
        }
    }

    #[test]
    fn element_ops_pick_along_an_axis_check_every_index_and_pass_gradients() {
        // GatherElements along axis 1 of [2, 3]: out[i][j] = data[i][idx[i][j]].
        let ad = crate::Device::cpu().autodiff();
        let x = DynTensor::from_host(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &ad).require_grad();
        let idx = ints(&[2, 2], &[2, 2, -3, 1]);
        let axis = [("axis", Attr::Int(1))];
        let Value::Device(y) = run_on(
            "GatherElements",
            13,
            &axis,
            vec![Value::Device(x.clone()), idx.clone()],
            &ad,
        )
        .unwrap()
        .remove(0) else {
            panic!("device data is gathered on the device");
        };
        assert_eq!(y.to_vec(), [3.0, 3.0, 4.0, 5.0]);
        let g = x.grad(&y.backward()).unwrap().to_vec();
        assert_eq!(g, [0.0, 0.0, 2.0, 1.0, 1.0, 0.0]);
        // ScatterElements of host integers (ConViT's position table) stays on the host.
        let Value::Host(h) = run(
            "ScatterElements",
            18,
            &axis,
            vec![
                ints(&[2, 3], &[0; 6]),
                ints(&[2, 1], &[2, 0]),
                ints(&[2, 1], &[7, 8]),
            ],
        )
        .unwrap()
        .remove(0) else {
            panic!("host data is scattered on the host");
        };
        assert_eq!((h.elem, h.to_i64()), (Elem::Int, vec![0, 0, 7, 8, 0, 0]));
        let bad = [
            (ints(&[2, 1], &[3, 0]), "out of range"),
            (ints(&[3, 1], &[0, 0, 0]), "no larger"),
            (ints(&[2], &[0, 0]), "rank"),
        ];
        for (indices, why) in bad {
            let err = run(
                "GatherElements",
                13,
                &axis,
                vec![floats(&[2, 3], &[0.0; 6]), indices],
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("node_under_test") && err.contains(why),
                "{err}"
            );
        }
    }
}
