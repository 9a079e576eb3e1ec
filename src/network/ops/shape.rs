//! Data movement and shape operators. Each works on the device for activations and on the host
//! for shape arithmetic (Shape → Gather → Concat → Reshape chains never touch the device).

use burn::prelude::*;
use burn::tensor::TensorData;

use super::{Back, Ctx, Value};
use crate::error::Result;
use crate::network::minifloat;
use crate::network::node::Attr;
use crate::network::value::{DynTensor, Elem, HostData, HostTensor, Storage, Wide, MAX_RANK};

/// Builds a host tensor of `shape` whose element at each coordinate comes from `src(coord)`:
/// `Some(flat index into t)` or `None` for `fill`.
pub(super) fn host_remap(
    t: &HostTensor,
    shape: Vec<usize>,
    fill: f64,
    src: impl Fn(&[usize]) -> Option<usize>,
) -> HostTensor {
    let n: usize = shape.iter().product();
    let mut coord = vec![0usize; shape.len()];
    let mut idx = Vec::with_capacity(n);
    for flat in 0..n {
        let mut rem = flat;
        for d in (0..shape.len()).rev() {
            coord[d] = rem % shape[d];
            rem /= shape[d];
        }
        idx.push(src(&coord));
    }
    let data = match t.data.wide() {
        Wide::F32(v) => HostData::F32(
            idx.iter()
                .map(|i| i.map_or(fill as f32, |i| v[i]))
                .collect(),
        ),
        Wide::I64(v) => HostData::I64(
            idx.iter()
                .map(|i| i.map_or(fill as i64, |i| v[i]))
                .collect(),
        ),
    };
    HostTensor {
        shape,
        data,
        elem: t.elem,
    }
}

pub(super) fn flat_index(shape: &[usize], coord: &[usize]) -> usize {
    coord.iter().zip(shape).fold(0, |acc, (c, s)| acc * s + c)
}

/// Integer indices as a device tensor for `select`.
pub(super) fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i32> = indices.iter().map(|&i| i as i32).collect();
    Tensor::from_data(TensorData::new(data, [indices.len()]), device)
}

/// Picks `indices` along logical `axis` of a device tensor.
fn select<B: Backend>(
    x: DynTensor<B>,
    axis: usize,
    indices: &[usize],
    device: &B::Device,
) -> DynTensor<B> {
    let a = x.storage_axis(axis);
    let rank = x.rank();
    let idx = index_tensor(indices, device);
    DynTensor::from_storage(x.into_storage().select(a, idx), rank)
}

/// An empty float tensor: kept on the host, since the backend has no zero-size tensors.
pub(super) fn empty<B: Backend>(shape: Vec<usize>) -> Value<B> {
    Value::Host(HostTensor::f32(shape, Vec::new()))
}

fn reshaped<B: Backend>(ctx: &Ctx<B>, i: usize, shape: Vec<usize>) -> Result<Value<B>> {
    Ok(match ctx.value(i)? {
        Value::Host(h) => Value::Host(h.reshaped(shape)),
        Value::Device(_) if shape.contains(&0) => empty(shape),
        Value::Device(t) => {
            ctx.check_rank("output", &shape)?;
            Value::Device(t.reshape(&shape))
        }
    })
}

pub fn flatten<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let axis = ctx.node.int("axis", 1)?;
    let axis = if axis < 0 {
        axis + dims.len() as i64
    } else {
        axis
    };
    if axis < 0 || axis > dims.len() as i64 {
        return Err(ctx.error(format!("axis {axis} is out of range for {dims:?}")));
    }
    let axis = axis as usize;
    let shape = vec![dims[..axis].iter().product(), dims[axis..].iter().product()];
    Ok(vec![reshaped(ctx, 0, shape)?])
}

pub fn reshape<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let target = if ctx.node.opset < 5 {
        ctx.node.ints("shape")?.unwrap_or_default()
    } else {
        ctx.ints(1)?
    };
    let allow_zero = ctx.node.int("allowzero", 0)? != 0;
    let total: usize = dims.iter().product();
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        shape.push(match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                1
            }
            0 if !allow_zero => *dims
                .get(i)
                .ok_or_else(|| ctx.error(format!("shape {target:?}: no input axis {i} to copy")))?,
            d if d >= 0 => d as usize,
            _ => return Err(ctx.error(format!("invalid target shape {target:?}"))),
        });
    }
    // Sizes from the file: every product of them is checked.
    let product = |dims: &[usize]| {
        dims.iter()
            .try_fold(1usize, |p, &d| p.checked_mul(d))
            .ok_or_else(|| ctx.error(format!("target shape {target:?} overflows")))
    };
    let known = product(&shape)?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(ctx.error(format!("cannot reshape {dims:?} to {target:?}")));
        }
        shape[i] = total / known;
    }
    // Models exported for batch 1 often hard-code it (`[1, 1024]`); when that is the only thing
    // that keeps a batch of N from fitting, the leading 1 stands for the batch.
    let per_item = product(shape.get(1..).unwrap_or_default())?;
    if product(&shape)? != total
        && target.first() == Some(&1)
        && dims
            .first()
            .is_some_and(|&n| n > 1 && n.checked_mul(per_item) == Some(total))
    {
        shape[0] = dims[0];
    }
    if product(&shape)? != total {
        return Err(ctx.error(format!("cannot reshape {dims:?} to {target:?}")));
    }
    Ok(vec![reshaped(ctx, 0, shape)?])
}

pub fn transpose<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let rank = dims.len();
    let perm: Vec<usize> = match ctx.node.ints("perm")? {
        Some(p) => p
            .iter()
            .map(|&a| ctx.axis(a, rank))
            .collect::<Result<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    if perm.len() != rank || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
        return Err(ctx.error(format!("perm {perm:?} is not a permutation of {rank} axes")));
    }
    let out: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    Ok(vec![match ctx.value(0)? {
        Value::Host(h) => Value::Host(host_remap(&h, out, 0.0, |c| {
            let mut src = vec![0; rank];
            for (i, &p) in perm.iter().enumerate() {
                src[p] = c[i];
            }
            Some(flat_index(&dims, &src))
        })),
        Value::Device(t) => Value::Device(permute(t, &perm)),
    }])
}

/// The `blocksize` of DepthToSpace and SpaceToDepth, and the input's `[N, C, H, W]`.
fn blocks<B: Backend>(ctx: &Ctx<B>) -> Result<(usize, [usize; 4])> {
    let b = ctx.node.int("blocksize", 0)?;
    let b = usize::try_from(b)
        .ok()
        .filter(|&b| b >= 1)
        .ok_or_else(|| ctx.error(format!("blocksize {b} must be at least 1")))?;
    let dims = ctx.dims(0)?;
    let nchw: [usize; 4] = dims
        .clone()
        .try_into()
        .map_err(|_| ctx.error(format!("input {dims:?} is not [N, C, H, W]")))?;
    Ok((b, nchw))
}

/// DepthToSpace (opsets 1–13): moves `blocksize²` channels into each `blocksize × blocksize`
/// block of pixels; `mode` DCR (depth, column, row: the default) or CRD (PyTorch's
/// `pixel_shuffle`).
pub fn depth_to_space<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let (b, [n, c, h, w]) = blocks(ctx)?;
    let bb = b.checked_mul(b).filter(|bb| c.is_multiple_of(*bb));
    let Some(bb) = bb else {
        return Err(ctx.error(format!("{c} channels do not split into blocks of {b}×{b}")));
    };
    let out = [n, c / bb, h.saturating_mul(b), w.saturating_mul(b)];
    ctx.fits("output", &out, 4)?;
    let x = ctx.float(0)?;
    let (split, perm) = match ctx.node.string("mode", "DCR")?.as_str() {
        "DCR" => ([n, b, b, c / bb, h, w], [0, 3, 4, 1, 5, 2]),
        "CRD" => ([n, c / bb, b, b, h, w], [0, 1, 4, 2, 5, 3]),
        other => return Err(ctx.error(format!("mode {other:?} is not DCR or CRD"))),
    };
    let y = permute(x.reshape(&split), &perm).reshape(&out);
    Ok(vec![Value::Device(y)])
}

/// SpaceToDepth (opsets 1–13; `mode` as opset 28 reads it): the inverse of DepthToSpace
/// (TResNet's and YOLOv5's focus stems).
pub fn space_to_depth<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let (b, [n, c, h, w]) = blocks(ctx)?;
    if !h.is_multiple_of(b) || !w.is_multiple_of(b) {
        return Err(ctx.error(format!("{h}×{w} does not split into blocks of {b}×{b}")));
    }
    let out = [n, c.saturating_mul(b).saturating_mul(b), h / b, w / b];
    ctx.fits("output", &out, 4)?;
    let perm = match ctx.node.string("mode", "DCR")?.as_str() {
        "DCR" => [0, 3, 5, 1, 2, 4],
        "CRD" => [0, 1, 3, 5, 2, 4],
        other => return Err(ctx.error(format!("mode {other:?} is not DCR or CRD"))),
    };
    let x = ctx.float(0)?;
    let y = permute(x.reshape(&[n, c, h / b, b, w / b, b]), &perm).reshape(&out);
    Ok(vec![Value::Device(y)])
}

/// Permutes the logical axes of a device tensor: output axis `i` is input axis `perm[i]`.
pub(super) fn permute<B: Backend>(t: DynTensor<B>, perm: &[usize]) -> DynTensor<B> {
    let pad = MAX_RANK - perm.len();
    let mut full: Vec<usize> = (0..pad).collect();
    full.extend(perm.iter().map(|&p| p + pad));
    let full: [usize; MAX_RANK] = full.try_into().expect("a permutation of the logical rank");
    t.map(|s| s.permute(full))
}

fn axes_arg<B: Backend>(ctx: &Ctx<B>, since_input: i64) -> Result<Option<Vec<i64>>> {
    if ctx.node.opset >= since_input {
        if ctx.has(1) {
            Ok(Some(ctx.ints(1)?))
        } else {
            Ok(None)
        }
    } else {
        ctx.node.ints("axes")
    }
}

pub fn squeeze<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let axes: Vec<usize> = match axes_arg(ctx, 13)? {
        Some(a) => a
            .iter()
            .map(|&a| ctx.axis(a, dims.len()))
            .collect::<Result<_>>()?,
        None => (0..dims.len()).filter(|&a| dims[a] == 1).collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| dims[a] != 1) {
        return Err(ctx.error(format!("cannot squeeze axis {a} of size {}", dims[a])));
    }
    let shape = (0..dims.len())
        .filter(|a| !axes.contains(a))
        .map(|a| dims[a])
        .collect();
    Ok(vec![reshaped(ctx, 0, shape)?])
}

pub fn unsqueeze<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let axes = axes_arg(ctx, 13)?.ok_or_else(|| ctx.error("axes are required"))?;
    let rank = dims.len() + axes.len();
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| ctx.axis(a, rank))
        .collect::<Result<_>>()?;
    let mut rest = dims.iter();
    let shape = (0..rank)
        .map(|a| {
            if axes.contains(&a) {
                1
            } else {
                *rest.next().unwrap_or(&1)
            }
        })
        .collect();
    Ok(vec![reshaped(ctx, 0, shape)?])
}

pub fn concat<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let n = ctx.arity();
    let first = ctx.dims(0)?;
    let rank = first.len();
    let axis = ctx.axis(ctx.node.int("axis", 0)?, rank)?;
    let mut all_dims = Vec::with_capacity(n);
    for i in 0..n {
        let d = ctx.dims(i)?;
        let fits = d.len() == rank && (0..rank).all(|a| a == axis || d[a] == first[a]);
        if !fits {
            return Err(ctx.error(format!(
                "input {i} {d:?} does not fit {first:?} along axis {axis}"
            )));
        }
        all_dims.push(d);
    }
    let mut out = first.clone();
    out[axis] = all_dims
        .iter()
        .try_fold(0usize, |sum, d| sum.checked_add(d[axis]))
        .ok_or_else(|| ctx.error("the inputs' sizes along the axis overflow"))?;
    ctx.fits("output", &out, 8)?;
    if (0..n).all(|i| ctx.is_host(i)) {
        let parts: Vec<HostTensor> = (0..n).map(|i| ctx.host(i)).collect::<Result<_>>()?;
        let elem = if parts.iter().any(|p| p.elem == Elem::Float) {
            Elem::Float
        } else {
            parts[0].elem
        };
        let outer: usize = first[..axis].iter().product();
        // Each part converted once (converting it per outer row made large host concats
        // quadratic).
        let (floats, ints): (Vec<Vec<f32>>, Vec<Vec<i64>>) = match elem {
            Elem::Float => (parts.iter().map(HostTensor::to_f32).collect(), Vec::new()),
            _ => (Vec::new(), parts.iter().map(HostTensor::to_i64).collect()),
        };
        let mut f = Vec::new();
        let mut g = Vec::new();
        for o in 0..outer {
            for (k, p) in parts.iter().enumerate() {
                let chunk: usize = p.shape[axis..].iter().product();
                let range = o * chunk..(o + 1) * chunk;
                match elem {
                    Elem::Float => f.extend_from_slice(&floats[k][range]),
                    _ => g.extend_from_slice(&ints[k][range]),
                }
            }
        }
        let data = if elem == Elem::Float {
            HostData::F32(f)
        } else {
            HostData::I64(g)
        };
        return Ok(vec![Value::Host(HostTensor {
            shape: out,
            data,
            elem,
        })]);
    }
    let parts: Vec<DynTensor<B>> = (0..n).map(|i| ctx.float(i)).collect::<Result<_>>()?;
    let a = parts[0].storage_axis(axis);
    let y = Storage::cat(parts.into_iter().map(DynTensor::into_storage).collect(), a);
    Ok(vec![Value::Device(DynTensor::from_storage(y, rank))])
}

pub fn split<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let dims = x.dims();
    let axis = ctx.axis(ctx.node.int("axis", 0)?, dims.len())?;
    let outputs = ctx.node.outputs.len();
    let size = dims[axis];
    let given = |s: Vec<i64>| -> Result<Vec<usize>> {
        s.iter()
            .map(|&v| usize::try_from(v).ok())
            .collect::<Option<_>>()
            .ok_or_else(|| ctx.error(format!("split {s:?} has a negative size")))
    };
    let sizes: Vec<usize> = match (ctx.node.opset >= 13 && ctx.has(1), ctx.node.ints("split")?) {
        (true, _) => given(ctx.ints(1)?)?,
        (false, Some(s)) if ctx.node.opset < 13 => given(s)?,
        _ => {
            // num_outputs names the node's outputs, which the file lists: checked against them
            // before it sizes anything.
            if ctx.node.opset >= 18 && ctx.node.has_attr("num_outputs") {
                let k = ctx.node.int("num_outputs", 1)?;
                if usize::try_from(k).ok() != Some(outputs) {
                    return Err(ctx.error(format!(
                        "num_outputs {k} differs from the node's {outputs} outputs"
                    )));
                }
            }
            if outputs == 0 {
                return Err(ctx.error("a Split needs at least one output"));
            }
            let chunk = size.div_ceil(outputs);
            (0..outputs)
                .map(|i| chunk.min(size.saturating_sub(i * chunk)))
                .collect()
        }
    };
    let covered = sizes.iter().try_fold(0usize, |sum, &s| sum.checked_add(s));
    if covered != Some(size) || sizes.len() != outputs {
        return Err(ctx.error(format!(
            "split {sizes:?} does not cover axis {axis} of {dims:?} in {outputs} parts"
        )));
    }
    let a = x.storage_axis(axis);
    let mut start = 0;
    let mut out = Vec::new();
    for s in sizes {
        if s == 0 {
            let mut shape = dims.clone();
            shape[axis] = 0;
            out.push(empty(shape));
            continue;
        }
        out.push(Value::Device(DynTensor::from_storage(
            x.storage().clone().narrow(a, start, s),
            dims.len(),
        )));
        start += s;
    }
    Ok(out)
}

pub fn shape<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(ctx.node.int("start", 0)?);
    let end = clamp(ctx.node.int("end", r)?);
    let vals: Vec<i64> = dims[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(vec![Value::Host(HostTensor::i64(vec![vals.len()], vals))])
}

/// Size (opsets 1–21): the number of elements, a host scalar.
pub fn size<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let n = crate::budget::elements(&ctx.dims(0)?).map_err(|e| ctx.error(e.to_string()))?;
    Ok(vec![Value::Host(HostTensor::i64(vec![], vec![n as i64]))])
}

pub fn gather<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let axis = ctx.axis(ctx.node.int("axis", 0)?, dims.len())?;
    let indices = ctx.host(1)?;
    let size = dims[axis] as i64;
    let idx: Vec<usize> = indices
        .to_i64()
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + size } else { i };
            (0..size)
                .contains(&j)
                .then_some(j as usize)
                .ok_or_else(|| ctx.error(format!("index {i} is out of range for axis size {size}")))
        })
        .collect::<Result<_>>()?;
    let mut out: Vec<usize> = dims[..axis].to_vec();
    out.extend(&indices.shape);
    out.extend(&dims[axis + 1..]);
    ctx.fits("output", &out, 4)?;
    let ir = indices.shape.len();
    Ok(vec![match ctx.value(0)? {
        Value::Host(h) => Value::Host(host_remap(&h, out, 0.0, |c| {
            let flat_idx = flat_index(&indices.shape, &c[axis..axis + ir]);
            let mut src: Vec<usize> = c[..axis].to_vec();
            src.push(idx[flat_idx]);
            src.extend(&c[axis + ir..]);
            Some(flat_index(&dims, &src))
        })),
        Value::Device(t) => {
            // The indices' axes replace one: a rank-4 input and rank-4 indices make rank 7.
            ctx.check_rank("output", &out)?;
            let picked = select(t, axis, &idx, ctx.device);
            Value::Device(picked.reshape(&out))
        }
    }])
}

/// Resolves ONNX Slice bounds for one axis into the list of picked indices.
fn slice_indices(start: i64, end: i64, step: i64, dim: usize) -> Vec<usize> {
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v + d } else { v };
    let (s, e) = (norm(start), norm(end));
    let mut out = Vec::new();
    if step > 0 {
        let (mut i, e) = (s.clamp(0, d), e.clamp(0, d));
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else {
        let (mut i, e) = (s.clamp(-1, d - 1), e.clamp(-1, d - 1));
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    out
}

pub fn slice<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let rank = dims.len();
    let (starts, ends, axes, steps) = if ctx.node.opset < 10 {
        let get = |n: &str| ctx.node.ints(n);
        (
            get("starts")?.unwrap_or_default(),
            get("ends")?.unwrap_or_default(),
            get("axes")?,
            None,
        )
    } else {
        let opt = |i: usize| -> Result<Option<Vec<i64>>> {
            if ctx.has(i) {
                Ok(Some(ctx.ints(i)?))
            } else {
                Ok(None)
            }
        };
        (ctx.ints(1)?, ctx.ints(2)?, opt(3)?, opt(4)?)
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| ctx.axis(a, rank))
            .collect::<Result<_>>()?,
        None if starts.len() > rank => {
            return Err(ctx.error(format!(
                "{} starts for an input of rank {rank}",
                starts.len()
            )))
        }
        None => (0..starts.len()).collect(),
    };
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(ctx.error("starts, ends, axes and steps differ in length"));
    }
    if steps.contains(&0) {
        return Err(ctx.error("slice step cannot be 0"));
    }
    // One index per position along each axis (an empty input may still declare a huge axis).
    for &d in &dims {
        ctx.fits("index list", &[d], 8)?;
    }
    let mut picks: Vec<Vec<usize>> = dims.iter().map(|&d| (0..d).collect()).collect();
    for i in 0..starts.len() {
        picks[axes[i]] = slice_indices(starts[i], ends[i], steps[i], dims[axes[i]]);
    }
    let out: Vec<usize> = picks.iter().map(Vec::len).collect();
    ctx.fits("output", &out, 8)?;
    Ok(vec![match ctx.value(0)? {
        Value::Host(h) => Value::Host(host_remap(&h, out, 0.0, |c| {
            let src: Vec<usize> = c.iter().enumerate().map(|(a, &i)| picks[a][i]).collect();
            Some(flat_index(&dims, &src))
        })),
        Value::Device(_) if out.contains(&0) => empty(out),
        Value::Device(mut t) => {
            for (a, p) in picks.iter().enumerate() {
                let contiguous = p.windows(2).all(|w| w[1] == w[0] + 1);
                if p.len() == dims[a] && contiguous {
                    continue;
                }
                t = if contiguous {
                    let ax = t.storage_axis(a);
                    let r = t.rank();
                    DynTensor::from_storage(t.into_storage().narrow(ax, p[0], p.len()), r)
                } else {
                    select(t, a, p, ctx.device)
                };
            }
            Value::Device(t)
        }
    }])
}

pub fn cast<B: Back>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let to = ctx.node.int("to", 1)?;
    let elem = Elem::of_onnx(to)
        .ok_or_else(|| ctx.error(format!("cast to data type {to} is not supported")))?;
    cast_to(ctx, elem, Some(to))
}

/// CastLike (opsets 15–25): input 0 cast to the type of input 1. The importer gives the node
/// that type as a `to` attribute where the file declares it (an initializer, a graph input,
/// value_info, a Constant, a Cast), so it casts exactly as Cast does, rounding to an 8- or 4-bit
/// float target. Otherwise it casts to the type the runtime keeps the target in: floats (f32),
/// integers or booleans.
pub fn cast_like<B: Back>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    if ctx.node.attrs.contains_key("to") {
        return cast(ctx);
    }
    let elem = if ctx.is_host(1) {
        ctx.host_ref(1)?.elem
    } else {
        Elem::Float
    };
    cast_to(ctx, elem, None)
}

/// Input 0 as `elem`; `to` the ONNX type code where the node names it (Cast).
fn cast_to<B: Back>(ctx: &Ctx<B>, elem: Elem, to: Option<i64>) -> Result<Vec<Value<B>>> {
    // To an 8- or 4-bit float: the values round to the type's, the gradient passes straight
    // through.
    if let Some(format) = to.and_then(minifloat::format) {
        let saturate = ctx.node.int("saturate", 1)? != 0;
        if !ctx.is_host(0) {
            let x = ctx.float(0)?;
            let rank = x.rank();
            let y = super::quantize::straight_through_float(format, x.into_storage(), saturate);
            return Ok(vec![Value::Device(DynTensor::from_storage(y, rank))]);
        }
        let h = ctx.host(0)?;
        let y = h
            .to_f32()
            .iter()
            .map(|&v| format.round(v, saturate))
            .collect();
        return Ok(vec![Value::Host(HostTensor::f32(h.shape.clone(), y))]);
    }
    if elem == Elem::Float && !ctx.is_host(0) {
        return Ok(vec![Value::Device(ctx.float(0)?)]);
    }
    let h = ctx.host(0)?;
    let out = match elem {
        Elem::Float => HostTensor::f32(h.shape.clone(), h.to_f32()),
        Elem::Int => HostTensor::i64(h.shape.clone(), h.to_i64()),
        Elem::Bool => HostTensor::bool(
            h.shape.clone(),
            h.to_f32().iter().map(|&v| v != 0.0).collect(),
        ),
    };
    Ok(vec![Value::Host(out)])
}

pub fn constant<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let node = ctx.node;
    let value = match node.attrs.iter().next() {
        Some((_, Attr::Tensor(t))) => t.clone(),
        Some((name, Attr::Float(f))) if name == "value_float" => HostTensor::f32(vec![], vec![*f]),
        Some((name, Attr::Floats(f))) if name == "value_floats" => {
            HostTensor::f32(vec![f.len()], f.clone())
        }
        Some((name, Attr::Int(i))) if name == "value_int" => HostTensor::i64(vec![], vec![*i]),
        Some((name, Attr::Ints(i))) if name == "value_ints" => {
            HostTensor::i64(vec![i.len()], i.clone())
        }
        _ => return Err(ctx.error("Constant needs one of value, value_float(s), value_int(s)")),
    };
    Ok(vec![Value::Host(value)])
}

pub fn constant_of_shape<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let shape: Vec<usize> = ctx
        .ints(0)?
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| ctx.error(format!("negative dimension {d}"))))
        .collect::<Result<_>>()?;
    let n = ctx.fits("output", &shape, 8)?;
    let fill = ctx
        .node
        .tensor("value")
        .cloned()
        .unwrap_or_else(|| HostTensor::f32(vec![1], vec![0.0]));
    if fill.len() != 1 {
        return Err(ctx.error("value must hold exactly one element"));
    }
    let out = match fill.data.wide() {
        Wide::F32(v) => HostTensor::f32(shape, vec![v[0]; n]),
        Wide::I64(v) => HostTensor {
            shape,
            data: HostData::I64(vec![v[0]; n]),
            elem: fill.elem,
        },
    };
    Ok(vec![Value::Host(out)])
}

/// Source index along one axis for a padded coordinate, or None for the constant fill.
fn pad_source(mode: &str, i: i64, size: i64) -> Option<usize> {
    if (0..size).contains(&i) {
        return Some(i as usize);
    }
    let j = match mode {
        "edge" => i.clamp(0, size - 1),
        "wrap" => i.rem_euclid(size),
        "reflect" => {
            if size == 1 {
                0
            } else {
                let period = 2 * (size - 1);
                let m = i.rem_euclid(period);
                if m < size {
                    m
                } else {
                    period - m
                }
            }
        }
        _ => return None,
    };
    Some(j as usize)
}

pub fn pad<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let rank = dims.len();
    let mode = ctx.node.string("mode", "constant")?;
    if !["constant", "reflect", "edge", "wrap"].contains(&mode.as_str()) {
        return Err(ctx.error(format!("unknown pad mode {mode}")));
    }
    let (pads, value, axes) = if ctx.node.opset < 11 {
        let pads = ctx
            .node
            .ints("pads")?
            .or(ctx.node.ints("paddings")?)
            .unwrap_or_default();
        (
            pads,
            ctx.node.float("value", 0.0)?,
            (0..rank).collect::<Vec<_>>(),
        )
    } else {
        let value = if ctx.has(2) {
            ctx.host(2)?.to_f32().first().copied().unwrap_or(0.0)
        } else {
            0.0
        };
        let axes = if ctx.has(3) {
            ctx.ints(3)?
                .iter()
                .map(|&a| ctx.axis(a, rank))
                .collect::<Result<_>>()?
        } else {
            (0..rank).collect()
        };
        (ctx.ints(1)?, value, axes)
    };
    let n = axes.len();
    if pads.len() != 2 * n {
        return Err(ctx.error(format!("pads {pads:?} needs {} values", 2 * n)));
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (k, &a) in axes.iter().enumerate() {
        begin[a] = pads[k];
        end[a] = pads[n + k];
    }
    padded(ctx, &mode, &begin, &end, value)
}

/// CenterCropPad (opset 18): each of `axes` (all unless given) cut or padded with zeros to the
/// size input 1 gives it, about its center; where the difference is odd, the extra pixel is cut
/// from or added at the end. As Pad with negative pads where it cuts.
pub fn center_crop_pad<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let rank = dims.len();
    let sizes = ctx.ints(1)?;
    let axes = ctx.axes_or_all(rank)?;
    if sizes.len() != axes.len() {
        return Err(ctx.error(format!(
            "shape {sizes:?} needs one size for each of the {} axes",
            axes.len()
        )));
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (&a, &size) in axes.iter().zip(&sizes) {
        let now = i64::try_from(dims[a]).map_err(|_| ctx.error("the input is too large"))?;
        if size < 0 {
            return Err(ctx.error(format!("shape {sizes:?} has a negative size")));
        }
        // Both sizes are in 0..=i64::MAX, so the difference fits. Halved toward zero: the
        // larger half at the end, cut or padded.
        let grow = size - now;
        begin[a] = grow / 2;
        end[a] = grow - begin[a];
    }
    padded(ctx, "constant", &begin, &end, 0.0)
}

/// Input 0 padded by `begin` and `end` along each axis (negative: cut), the new cells filled by
/// `mode`: Pad's modes, `constant` with `value`.
fn padded<B: Backend>(
    ctx: &Ctx<B>,
    mode: &str,
    begin: &[i64],
    end: &[i64],
    value: f32,
) -> Result<Vec<Value<B>>> {
    let dims = ctx.dims(0)?;
    let rank = dims.len();
    let pads = [begin, end].concat();
    let out: Vec<usize> = (0..rank)
        .map(|a| {
            i64::try_from(dims[a])
                .ok()
                .and_then(|d| d.checked_add(begin[a])?.checked_add(end[a]))
                .map(|n| n.max(0) as usize)
                .ok_or_else(|| ctx.error(format!("pads {pads:?} overflow axis {a}")))
        })
        .collect::<Result<_>>()?;
    ctx.fits("output", &out, 8)?;
    for &o in &out {
        // The per-axis source table below (an empty tensor may still be padded far).
        ctx.fits("pad table", &[o], 16)?;
    }
    // Per axis: the source index for every output position (None: constant fill).
    let sources: Vec<Vec<Option<usize>>> = (0..rank)
        .map(|a| {
            (0..out[a] as i64)
                .map(|o| pad_source(mode, o - begin[a], dims[a] as i64))
                .collect()
        })
        .collect();
    if ctx.is_host(0) {
        let h = ctx.host(0)?;
        let y = host_remap(&h, out, value as f64, |c| {
            let src: Option<Vec<usize>> =
                c.iter().enumerate().map(|(a, &i)| sources[a][i]).collect();
            src.map(|s| flat_index(&dims, &s))
        });
        return Ok(vec![Value::Host(y)]);
    }
    let mut t = ctx.float(0)?;
    for a in 0..rank {
        if begin[a] == 0 && end[a] == 0 {
            continue;
        }
        let src = &sources[a];
        let picks: Vec<usize> = src.iter().map(|s| s.unwrap_or(0)).collect();
        t = select(t, a, &picks, ctx.device);
        if src.iter().any(Option::is_none) {
            // Constant mode: overwrite fill positions along this axis. Selected, not blended
            // (`s · keep + value · (1 - keep)`): an infinite value (an attention mask padded
            // with -∞) or an infinite element times 0 is NaN.
            let mut mask_shape = vec![1; rank];
            mask_shape[a] = src.len();
            let fill: Vec<f32> = src
                .iter()
                .map(|s| if s.is_some() { 0.0 } else { 1.0 })
                .collect();
            let fill = DynTensor::from_host_on(&fill, &mask_shape, ctx.device).into_storage();
            t = t.map(|s| {
                let fill = fill.equal_elem(1.0).expand(s.shape());
                s.mask_fill(fill, value)
            });
        }
    }
    Ok(vec![Value::Device(t)])
}
