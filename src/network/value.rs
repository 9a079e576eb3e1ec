//! Runtime values flowing along the graph's edges.
//!
//! Image-sized data lives on the device as [`DynTensor`]: a burn tensor of fixed storage rank
//! [`MAX_RANK`] whose leading axes are 1, plus the logical rank. Left-padding with ones makes
//! numpy broadcasting between different ranks free. Shapes, indices and small constants live on
//! the host as [`HostTensor`], so shape arithmetic never touches (or synchronizes) the device.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use burn::Dispatch;
use burn_flex::Flex;

use std::borrow::Cow;
use std::sync::OnceLock;

use super::units::{Reading, UnitLayout};
use crate::error::{Error, Result};

/// Gradients returned by [`DynTensor::backward`].
pub type Gradients<B = Dispatch> = <B as AutodiffBackend>::Gradients;

/// The highest tensor rank the runtime supports.
pub const MAX_RANK: usize = 6;

/// The storage type of every device tensor.
pub type Storage<B = Dispatch> = Tensor<B, MAX_RANK>;

/// A boolean mask as 0/1 floats, in the autodiff graph of `like` (a tensor of the mask's
/// shape), with no gradient through it. `mask.float()` would do on a plain backend, but under
/// burn-dispatch 0.21 it makes a tensor outside the autodiff graph, and a backward pass from
/// it (the weights of a layer that is a comparison's output) panics. Filling `like` everywhere
/// keeps its kind.
pub(crate) fn mask_to_float<B: Backend>(
    like: Storage<B>,
    mask: Tensor<B, MAX_RANK, burn::tensor::Bool>,
) -> Storage<B> {
    like.mask_fill(mask.clone().bool_not(), 0.0)
        .mask_fill(mask, 1.0)
}

/// A float32 tensor on a device, of any rank up to [`MAX_RANK`].
///
/// The backend is `Dispatch` (picked at run time) everywhere in the notebook API; the render
/// loop instantiates the runtime on a concrete autodiff backend, where ops of our own can define
/// their own backward pass (burn-dispatch 0.21 keeps its tensors' backend private).
#[derive(Clone, Debug)]
pub struct DynTensor<B: Backend = Dispatch> {
    storage: Storage<B>,
    rank: usize,
}

impl<B: Backend> DynTensor<B> {
    /// Wraps a storage tensor whose leading `MAX_RANK - rank` axes are 1.
    pub(crate) fn from_storage(storage: Storage<B>, rank: usize) -> Self {
        debug_assert!(rank <= MAX_RANK);
        Self { storage, rank }
    }

    /// Lifts a burn tensor of rank `D` into a dynamic one.
    pub fn new<const D: usize>(tensor: Tensor<B, D>) -> Self {
        let dims = tensor.dims();
        Self {
            storage: tensor.reshape(storage_shape(&dims)),
            rank: D,
        }
    }

    /// A tensor from host data on a device of backend `B`.
    pub fn from_host_on(data: &[f32], shape: &[usize], device: &B::Device) -> Self {
        Self::from_vec_on(data.to_vec(), shape, device)
    }

    /// [`DynTensor::from_host_on`], taking the values over.
    pub fn from_vec_on(data: Vec<f32>, shape: &[usize], device: &B::Device) -> Self {
        let storage = Storage::<B>::from_data(TensorData::new(data, storage_shape(shape)), device);
        Self {
            storage,
            rank: shape.len(),
        }
    }

    /// A tensor that reads `values` in place, on a CPU device of backend `B` (on another device
    /// its backend copies them there).
    pub fn from_shared_on(values: &SharedF32, shape: &[usize], device: &B::Device) -> Self {
        let bytes = burn::tensor::Bytes::from_shared(
            values.0.clone(),
            burn::tensor::AllocationProperty::Native,
        );
        let data = TensorData::from_bytes(bytes, storage_shape(shape), burn::tensor::DType::F32);
        Self {
            storage: Storage::<B>::from_data(data, device),
            rank: shape.len(),
        }
    }

    /// The logical shape.
    pub fn dims(&self) -> Vec<usize> {
        self.storage.dims()[MAX_RANK - self.rank..].to_vec()
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn device(&self) -> B::Device {
        self.storage.device()
    }

    pub(crate) fn storage(&self) -> &Storage<B> {
        &self.storage
    }

    pub(crate) fn into_storage(self) -> Storage<B> {
        self.storage
    }

    /// The storage axis of logical axis `axis` (already normalized).
    pub(crate) fn storage_axis(&self, axis: usize) -> usize {
        MAX_RANK - self.rank + axis
    }

    /// Converts to a burn tensor of rank `D`; fails unless the logical rank is exactly `D`.
    pub fn to_rank<const D: usize>(&self) -> Result<Tensor<B, D>> {
        if self.rank != D {
            return Err(Error::Message(format!(
                "expected a rank-{D} tensor, got shape {:?}",
                self.dims()
            )));
        }
        let dims: [usize; D] = self.dims().try_into().expect("rank checked");
        if dims.contains(&0) {
            // burn's reshape reads a 0 as "this axis as it was", so an empty tensor is made anew.
            return Ok(Tensor::empty(dims, &self.storage.device()));
        }
        Ok(self.storage.clone().reshape(dims))
    }

    /// Reshapes to another logical shape with the same number of elements.
    pub(crate) fn reshape(self, shape: &[usize]) -> Self {
        let storage = if shape.contains(&0) {
            // As in `to_rank`: burn's reshape reads a 0 as "this axis as it was".
            Tensor::empty(storage_shape(shape), &self.storage.device())
        } else {
            self.storage.reshape(storage_shape(shape))
        };
        Self {
            storage,
            rank: shape.len(),
        }
    }

    /// Applies an elementwise function to the storage.
    /// `n` copies along the leading axis (a batch of `n` from one image's value).
    pub(crate) fn repeat_leading(&self, n: usize) -> Self {
        if n == 1 {
            return self.clone();
        }
        let axis = self.storage_axis(0);
        self.clone().map(|s| s.repeat_dim(axis, n))
    }

    pub(crate) fn map(self, f: impl FnOnce(Storage<B>) -> Storage<B>) -> Self {
        Self {
            storage: f(self.storage),
            rank: self.rank,
        }
    }

    /// Copies the values to the host (synchronizes the device).
    pub fn to_vec(&self) -> Vec<f32> {
        self.storage
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("float tensor converts to f32")
    }

    /// Views an activation as `[N, C, H, W]`, the shape the techniques read units from, as
    /// [`UnitLayout`] declares: `[N, C]` becomes `[N, C, 1, 1]` and tokens `[N, T, C]` become
    /// `[N, C, T, 1]`.
    pub fn to_nchw(self) -> Result<Tensor<B, 4>> {
        let d = self.dims();
        match UnitLayout::of(&d) {
            Some(UnitLayout::Maps) => self.to_rank::<4>(),
            Some(UnitLayout::Features) => {
                self.to_rank::<2>().map(|t| t.reshape([d[0], d[1], 1, 1]))
            }
            Some(UnitLayout::Tokens) => self
                .to_rank::<3>()
                .map(|t| t.swap_dims(1, 2).reshape([d[0], d[2], d[1], 1])),
            None => Err(Error::Message(format!(
                "activation of shape {d:?} is not [N, C, H, W], [N, C] or tokens [N, T, C]"
            ))),
        }
    }

    /// The units' maps, `[N, C, H, W]` as [`DynTensor::to_nchw`] views them, read as
    /// `reading` says ([`Reading::span`]): a softmax over a unit's own map by its
    /// concentration, `p² · span`.
    pub fn to_unit_maps(self, reading: Reading) -> Result<Tensor<B, 4>> {
        let span = reading.span(&self.dims());
        let maps = self.to_nchw()?;
        Ok(match span {
            Some(span) => maps.powi_scalar(2).mul_scalar(span as f32),
            None => maps,
        })
    }

    /// Marks the tensor as a leaf whose gradient should be computed.
    pub fn require_grad(self) -> Self {
        self.map(|s| s.require_grad())
    }

    pub fn num_elements(&self) -> usize {
        self.dims().iter().product()
    }
}

impl DynTensor<Dispatch> {
    /// A tensor from host data.
    pub fn from_host(data: &[f32], shape: &[usize], device: &burn::DispatchDevice) -> Self {
        Self::from_host_on(data, shape, device)
    }

    /// These plain-device values as a fresh leaf of an autodiff graph (for `require_grad`).
    pub fn detached(&self) -> Self {
        self.clone().map(Storage::from_inner)
    }
}

impl<B: AutodiffBackend> DynTensor<B> {
    /// The gradient of this (tracked) tensor after `backward`, on the plain device.
    pub fn grad(&self, grads: &Gradients<B>) -> Option<DynTensor<B::InnerBackend>> {
        self.storage
            .grad(grads)
            .map(|g| DynTensor::from_storage(g, self.rank))
    }

    /// The same values as an autodiff constant: usable in a tracked graph, but no gradient is
    /// computed for it.
    pub fn from_inner(inner: DynTensor<B::InnerBackend>) -> Self {
        DynTensor::from_storage(Storage::<B>::from_inner(inner.storage), inner.rank)
    }

    /// The values without gradient tracking.
    pub fn inner(self) -> DynTensor<B::InnerBackend> {
        DynTensor::from_storage(self.storage.inner(), self.rank)
    }

    /// Back-propagates from this tensor (summed if it is not a scalar).
    pub fn backward(&self) -> Gradients<B> {
        self.storage.clone().sum().backward()
    }
}

/// The storage shape of a logical shape: left-padded with ones.
pub(crate) fn storage_shape(shape: &[usize]) -> [usize; MAX_RANK] {
    assert!(shape.len() <= MAX_RANK, "rank {} > {MAX_RANK}", shape.len());
    let mut out = [1; MAX_RANK];
    out[MAX_RANK - shape.len()..].copy_from_slice(shape);
    out
}

/// The element kind of a host tensor, as ONNX types collapse onto it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    Float,
    Int,
    Bool,
}

impl Elem {
    /// The element kind ONNX data type `code` collapses to, or None if unsupported.
    pub fn of_onnx(code: i64) -> Option<Elem> {
        match code {
            1 | 10 | 11 | 16..=20 | 23 => Some(Elem::Float),
            2..=7 | 12 | 13 => Some(Elem::Int),
            9 => Some(Elem::Bool),
            _ => None,
        }
    }
}

/// ONNX's name for a data type code.
pub fn type_name(code: i32) -> String {
    let name = match code {
        1 => "FLOAT",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        10 => "FLOAT16",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        16 => "BFLOAT16",
        17 => "FLOAT8E4M3FN",
        18 => "FLOAT8E4M3FNUZ",
        19 => "FLOAT8E5M2",
        20 => "FLOAT8E5M2FNUZ",
        21 => "UINT4",
        22 => "INT4",
        23 => "FLOAT4E2M1",
        24 => "FLOAT8E8M0",
        25 => "UINT2",
        26 => "INT2",
        _ => return format!("#{code}"),
    };
    name.to_string()
}

/// Data held on the host: float32 for float types, i64 for integer and bool types, and one
/// byte for 8-bit integers as a file stores them (and 4-bit ones, unpacked). The bytes are for quantized weights: an int8
/// VGG-19 held as i64 takes 1.1 GB on its way to the dequantized 0.55 GB, as bytes 0.14 GB.
/// Host arithmetic reads values through [`HostData::wide`], so only loading and
/// `DequantizeLinear` see the byte forms.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

/// Host values in a type host arithmetic runs in: floats as they are, integers as i64 (the
/// byte forms widened into a copy).
pub enum Wide<'a> {
    F32(&'a [f32]),
    I64(Cow<'a, [i64]>),
}

impl HostData {
    pub fn wide(&self) -> Wide<'_> {
        match self {
            HostData::F32(v) => Wide::F32(v),
            HostData::I64(v) => Wide::I64(Cow::Borrowed(v)),
            HostData::I8(v) => Wide::I64(v.iter().map(|&x| i64::from(x)).collect()),
            HostData::U8(v) => Wide::I64(v.iter().map(|&x| i64::from(x)).collect()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::I64(v) => v.len(),
            HostData::I8(v) => v.len(),
            HostData::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (integers converted), handed over where they already are.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            HostData::F32(v) => v,
            HostData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
            HostData::I8(v) => v.into_iter().map(f32::from).collect(),
            HostData::U8(v) => v.into_iter().map(f32::from).collect(),
        }
    }
}

/// A small tensor kept on the host (shapes, indices, constants, folded subgraphs).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
    pub elem: Elem,
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            shape,
            data: HostData::F32(data),
            elem: Elem::Float,
        }
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        Self {
            shape,
            data: HostData::I64(data),
            elem: Elem::Int,
        }
    }

    pub fn bool(shape: Vec<usize>, data: Vec<bool>) -> Self {
        Self {
            shape,
            data: HostData::I64(data.into_iter().map(i64::from).collect()),
            elem: Elem::Bool,
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            HostData::I8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            HostData::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        }
    }

    /// The values as i64 (floats truncated toward zero, as ONNX Cast does).
    pub fn to_i64(&self) -> Vec<i64> {
        match self.data.wide() {
            Wide::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Wide::I64(v) => v.into_owned(),
        }
    }

    /// Uploads to a device as a float tensor.
    pub fn upload(&self, device: &burn::DispatchDevice) -> DynTensor {
        self.upload_to(device)
    }

    /// Uploads to a device of backend `B` as a float tensor.
    pub fn upload_to<B: Backend>(&self, device: &B::Device) -> DynTensor<B> {
        DynTensor::from_vec_on(self.to_f32(), &self.shape, device)
    }

    /// [`HostTensor::upload_to`], handing float values over rather than copying them: a
    /// weight is not held twice on its way to the device.
    pub fn into_device<B: Backend>(self, device: &B::Device) -> DynTensor<B> {
        DynTensor::from_vec_on(self.data.into_f32(), &self.shape, device)
    }

    /// Same data, another shape.
    pub fn reshaped(&self, shape: Vec<usize>) -> Self {
        Self {
            shape,
            data: self.data.clone(),
            elem: self.elem,
        }
    }
}

/// A value on an edge of the graph.
// With the `cuda` feature burn's dispatch tensor inside `DynTensor` grows to 360 bytes. Nearly
// every value is a `Device` one, so boxing it would add an allocation to each op for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Value<B: Backend = Dispatch> {
    Device(DynTensor<B>),
    Host(HostTensor),
}

impl<B: Backend> Value<B> {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Value::Device(t) => t.dims(),
            Value::Host(h) => h.shape.clone(),
        }
    }

    /// The value as a host tensor (reads a device tensor back).
    pub fn to_host(&self) -> HostTensor {
        match self {
            Value::Host(h) => h.clone(),
            Value::Device(t) => HostTensor::f32(t.dims(), t.to_vec()),
        }
    }

    /// [`Value::to_host`], without a copy of a host value.
    pub fn into_host(self) -> HostTensor {
        match self {
            Value::Host(h) => h,
            Value::Device(t) => HostTensor::f32(t.dims(), t.to_vec()),
        }
    }

    /// Item `k` of the leading axis, kept as an axis of 1 (a device tensor stays on the autodiff
    /// graph). The leading axis must be longer than `k`.
    pub(crate) fn item(&self, k: usize) -> Self {
        match self {
            Value::Device(t) => {
                Value::Device(t.clone().map(|s| s.narrow(MAX_RANK - t.rank(), k, 1)))
            }
            Value::Host(h) => {
                let per = h.shape[1..].iter().product::<usize>();
                let range = k * per..(k + 1) * per;
                let mut shape = h.shape.clone();
                shape[0] = 1;
                let data = match &h.data {
                    HostData::F32(v) => HostData::F32(v[range].to_vec()),
                    HostData::I64(v) => HostData::I64(v[range].to_vec()),
                    HostData::I8(v) => HostData::I8(v[range].to_vec()),
                    HostData::U8(v) => HostData::U8(v[range].to_vec()),
                };
                Value::Host(HostTensor {
                    shape,
                    data,
                    elem: h.elem,
                })
            }
        }
    }

    /// Joins values along their leading axis (all of the same shape past it, at least one): the
    /// inverse of [`Value::item`]. Host values are joined on the host unless some are on the
    /// device, where all go then.
    pub(crate) fn join(items: Vec<Self>, device: &B::Device) -> Self {
        if items.iter().all(|v| matches!(v, Value::Host(_))) {
            let hosts: Vec<HostTensor> = items.into_iter().map(|v| v.to_host()).collect();
            let mut shape = hosts[0].shape.clone();
            shape[0] = hosts.iter().map(|h| h.shape[0]).sum();
            let data = match hosts[0].data {
                HostData::F32(_) => HostData::F32(hosts.iter().flat_map(|h| h.to_f32()).collect()),
                _ => HostData::I64(hosts.iter().flat_map(|h| h.to_i64()).collect()),
            };
            return Value::Host(HostTensor {
                shape,
                data,
                elem: hosts[0].elem,
            });
        }
        let tensors: Vec<DynTensor<B>> = items
            .into_iter()
            .map(|v| match v {
                Value::Device(t) => t,
                Value::Host(h) => h.upload_to(device),
            })
            .collect();
        let rank = tensors[0].rank();
        let storage = Tensor::cat(
            tensors.into_iter().map(DynTensor::into_storage).collect(),
            MAX_RANK - rank,
        );
        Value::Device(DynTensor::from_storage(storage, rank))
    }
}

/// f32 values in a reference-counted buffer that tensors of several CPU backends read in place
/// (burn's shared bytes; a tensor that writes to them copies them first). A weight read through
/// burn's `Dispatch` and through the render backend on burn-flex was held twice, as burn-dispatch
/// 0.21 does not hand out the burn-flex tensor inside its own: VGG-19 took 1.1 GB for its 0.55
/// GB of weights once it had rendered.
#[derive(Clone, Debug)]
pub struct SharedF32(bytes::Bytes);

impl SharedF32 {
    pub fn new(values: Vec<f32>) -> Self {
        /// Lends the vector's memory as bytes, and frees it with the last reference.
        struct Owner(Vec<f32>);
        impl AsRef<[u8]> for Owner {
            fn as_ref(&self) -> &[u8] {
                bytemuck::cast_slice(&self.0)
            }
        }
        SharedF32(bytes::Bytes::from_owner(Owner(values)))
    }

    /// The values, in place.
    pub fn values(&self) -> &[f32] {
        bytemuck::cast_slice(&self.0)
    }
}

/// A graph constant (a weight) in the forms the backends read it in.
#[derive(Debug)]
pub struct Constant {
    pub host: Option<HostTensor>,
    /// On the network's `Dispatch` device.
    pub device: Option<DynTensor<Dispatch>>,
    /// A burn-flex tensor, made the first time a run on the CPU render backend (`Fast`) reads
    /// the constant: over `shared` where there is one, else a copy.
    pub flex: OnceLock<Option<DynTensor<Flex>>>,
    /// A large weight's values on the CPU, which `device` and `flex` both read in place.
    pub shared: Option<SharedF32>,
    /// A burn-cuda copy, made the first time a run on the CUDA render backend (`FastCuda`)
    /// reads the constant.
    #[cfg(feature = "cuda")]
    pub cuda: OnceLock<Option<DynTensor<burn::backend::Cuda>>>,
    pub shape: Vec<usize>,
}

impl Constant {
    /// The values on the host (a device-only constant is read back).
    pub fn host(&self) -> HostTensor {
        match (&self.host, &self.device) {
            (Some(h), _) => h.clone(),
            (None, Some(d)) => HostTensor::f32(d.dims(), d.to_vec()),
            (None, None) => unreachable!("a constant has a value"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tensors_keep_their_shape_through_to_rank_and_reshape() {
        let device = crate::Device::cpu().burn().clone();
        let empty = DynTensor::from_host(&[], &[1, 1, 0, 3], &device);
        assert_eq!(empty.to_rank::<4>().unwrap().dims(), [1, 1, 0, 3]);
        let flat = empty.reshape(&[0]);
        assert_eq!(flat.dims(), [0]);
        assert_eq!(flat.to_rank::<1>().unwrap().dims(), [0]);
    }
}
