//! Operator implementations, one file per family, found through [`lookup`].
//!
//! Every operator is a plain function `fn(&Ctx<B>) -> Result<Vec<Value<B>>>`, generic over the
//! backend ([`Back`]) and instantiated for each by [`OPS`]. It reads its inputs through [`Ctx`],
//! either as device tensors ([`Ctx::float`]) or as host tensors ([`Ctx::host`]), and returns one
//! value per node output. Shape arithmetic stays on the host.

mod binary;
mod conv;
mod deform;
mod einsum;
mod elementwise;
pub(crate) use elementwise::pass_gradient_through;
mod expand;
mod fourier;
mod grid;
mod linear;
pub(crate) mod max_pool_cpu;
pub(crate) mod norm;
mod pool;
mod quantize;
mod recurrent;
mod reduce;
pub mod resample;
mod resize;
mod scatter;
mod select;
mod shape;
mod structured;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::Dispatch;
use burn_flex::Flex;

use super::node::Node;
use super::value::{Constant, DynTensor, HostTensor, Value, MAX_RANK};
use crate::device::Device;
use crate::error::Result;
use max_pool_cpu::Geometry;
use norm::Lrn;
use resample::Taps;

/// The signature every operator implements.
pub type OpFn<B = Dispatch> = fn(&Ctx<B>) -> Result<Vec<Value<B>>>;

/// One input of a node during evaluation.
#[derive(Clone, Debug)]
pub struct Slot<B: Backend = Dispatch> {
    pub host: Option<HostTensor>,
    pub device: Option<DynTensor<B>>,
}

impl<B: Backend> From<Value<B>> for Slot<B> {
    fn from(v: Value<B>) -> Self {
        match v {
            Value::Device(t) => Slot {
                host: None,
                device: Some(t),
            },
            Value::Host(h) => Slot {
                host: Some(h),
                device: None,
            },
        }
    }
}

impl<B: Backend> Slot<B> {
    /// The value, preferring the device copy.
    pub fn into_value(self) -> Value<B> {
        match (self.device, self.host) {
            (Some(t), _) => Value::Device(t),
            (None, Some(h)) => Value::Host(h),
            (None, None) => unreachable!("slots hold a value"),
        }
    }
}

/// What an operator sees: its node (attributes, name) and its inputs.
pub struct Ctx<'a, B: Backend = Dispatch> {
    pub node: &'a Node,
    pub inputs: Vec<Option<Slot<B>>>,
    /// Where new tensors are created (the autodiff device during gradient runs).
    pub device: &'a B::Device,
    /// The node is on a linearized path (Circuits' expanded weights) and runs itself, having no
    /// stand-in that makes all its outputs: MaxPool whose Indices are read gives average
    /// pooling's values, MaxUnpool spreads each value evenly over its window, and DeformConv
    /// leaves its mask out.
    pub linearized: bool,
}

impl<B: Backend> Ctx<'_, B> {
    /// Whether optional input `i` is present.
    pub fn has(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(_)))
    }

    fn slot(&self, i: usize) -> Result<&Slot<B>> {
        match self.inputs.get(i) {
            Some(Some(slot)) => Ok(slot),
            _ => Err(self.node.error(format!("missing input {i}"))),
        }
    }

    /// Input `i` as a float tensor on the device.
    pub fn float(&self, i: usize) -> Result<DynTensor<B>> {
        let slot = self.slot(i)?;
        match (&slot.device, &slot.host) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(h)) => {
                // A host value can have any rank (a file's initializer, shape arithmetic).
                self.check_rank(&format!("input {i}"), &h.shape)?;
                Ok(h.upload_to(self.device))
            }
            (None, None) => unreachable!("slots hold a value"),
        }
    }

    /// Input `i` on the host (a device tensor is read back).
    pub fn host(&self, i: usize) -> Result<HostTensor> {
        self.host_ref(i).map(std::borrow::Cow::into_owned)
    }

    /// [`Ctx::host`] without a copy where the input is on the host (a weight folded at load).
    pub fn host_ref(&self, i: usize) -> Result<std::borrow::Cow<'_, HostTensor>> {
        let slot = self.slot(i)?;
        match (&slot.host, &slot.device) {
            (Some(h), _) => Ok(std::borrow::Cow::Borrowed(h)),
            (None, Some(t)) => Ok(std::borrow::Cow::Owned(HostTensor::f32(
                t.dims(),
                t.to_vec(),
            ))),
            (None, None) => unreachable!("slots hold a value"),
        }
    }

    /// Whether input `i` lives on the host only (shape arithmetic).
    pub fn is_host(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(Slot { device: None, .. })))
    }

    /// The shape of input `i`, without reading data.
    pub fn dims(&self, i: usize) -> Result<Vec<usize>> {
        let slot = self.slot(i)?;
        Ok(match (&slot.device, &slot.host) {
            (Some(t), _) => t.dims(),
            (None, Some(h)) => h.shape.clone(),
            (None, None) => unreachable!("slots hold a value"),
        })
    }

    /// Input `i` as a list of integers (shapes, axes, indices).
    pub fn ints(&self, i: usize) -> Result<Vec<i64>> {
        Ok(self.host(i)?.to_i64())
    }

    /// Optional input `i` as one integer (Trilu's `k`, DFT's `dft_length`), named `what` in the
    /// error when it holds another number of values; `None` when absent.
    pub fn optional_int(&self, i: usize, what: &str) -> Result<Option<i64>> {
        if !self.has(i) {
            return Ok(None);
        }
        match self.ints(i)?.as_slice() {
            [v] => Ok(Some(*v)),
            other => Err(self.error(format!(
                "{what} must be one integer, got {} values",
                other.len()
            ))),
        }
    }

    /// Input `i` as it is: on the host if it lives there, else on the device.
    pub fn value(&self, i: usize) -> Result<Value<B>> {
        Ok(self.slot(i)?.clone().into_value())
    }

    /// The number of input slots (present or not).
    pub fn arity(&self) -> usize {
        self.inputs.len()
    }

    /// An error about this node.
    pub fn error(&self, message: impl Into<String>) -> crate::error::Error {
        self.node.error(message)
    }

    /// Checks, before this node makes it, that a tensor of `shape` with `elem_bytes`-byte
    /// elements fits the memory budget (`crate::budget`); its element count. The error names the
    /// node, its op and the size.
    pub fn fits(&self, what: &str, shape: &[usize], elem_bytes: usize) -> Result<usize> {
        crate::budget::fits(shape, elem_bytes).map_err(|e| self.error(format!("{what} {e}")))
    }

    /// Checks that a device tensor of `shape` (`what`) is within the runtime's rank, [`MAX_RANK`].
    pub fn check_rank(&self, what: &str, shape: &[usize]) -> Result<()> {
        if shape.len() > MAX_RANK {
            return Err(self.error(format!(
                "{what} {shape:?} has rank {}, over the runtime's {MAX_RANK}",
                shape.len()
            )));
        }
        Ok(())
    }

    /// Normalizes a possibly negative axis against `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        normalize_axis(axis, rank)
            .ok_or_else(|| self.error(format!("axis {axis} is out of range for rank {rank}")))
    }

    /// The node's `axes` attribute, each normalized against `rank`; every axis unless given.
    pub fn axes_or_all(&self, rank: usize) -> Result<Vec<usize>> {
        match self.node.ints("axes")? {
            Some(axes) => axes.iter().map(|&a| self.axis(a, rank)).collect(),
            None => Ok((0..rank).collect()),
        }
    }
}

pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// The render loop's backend on the CPU: burn-flex under burn's autodiff, named.
pub type Fast = Autodiff<Flex>;

/// The render loop's backend on CUDA: burn-cuda under burn's autodiff, named (network/cuda.rs).
#[cfg(feature = "cuda")]
pub type FastCuda = Autodiff<burn::backend::Cuda>;

/// One op's kernel, instantiated for every backend the runtime runs on.
pub struct Kernels {
    pub dispatch: OpFn<Dispatch>,
    pub fast: OpFn<Fast>,
    #[cfg(feature = "cuda")]
    pub cuda: OpFn<FastCuda>,
}

/// Instantiates a generic op function for every [`Back`]end.
macro_rules! kernels {
    ($f:path) => {
        $crate::network::ops::Kernels {
            dispatch: $f,
            fast: $f,
            #[cfg(feature = "cuda")]
            cuda: $f,
        }
    };
}

/// A backend the runtime graph runs on.
///
/// Everything a user touches runs on burn's `Dispatch`, which picks the CPU or CUDA at run time.
/// burn-dispatch 0.21 keeps its tensors' concrete backend private, so no op of ours can attach
/// its own backward pass to a `Dispatch` tensor: the render loop therefore instantiates the same
/// runtime on a concrete autodiff backend where it can: [`Fast`] on the CPU (network/fast.rs)
/// and, in builds with CUDA, `FastCuda` on a CUDA device (network/cuda.rs). Each op is still
/// declared once, in [`OPS`]; [`kernels!`] instantiates it for every backend.
pub trait Back: Backend {
    /// This backend's instance of an op.
    fn kernel(spec: &OpSpec) -> OpFn<Self>;

    /// Where new tensors go when no fed value says (the network's device, as this backend
    /// names it).
    fn device_of(device: &Device) -> Self::Device;

    /// Constant `c` as a device tensor of this backend, untracked (an autodiff constant when
    /// `autodiff`); `None` for constants that live on the host only.
    fn constant(c: &Constant, autodiff: bool) -> Option<DynTensor<Self>>;

    /// Whether `device` computes on the CPU, where our own CPU kernels may stand in for the
    /// backend's.
    fn is_cpu(device: &Self::Device) -> bool;

    /// 2-D max pooling by our CPU kernel; `None` where it does not apply (see
    /// [`max_pool_cpu::max_pool`]).
    fn max_pool(x: &Tensor<Self, 4>, g: &Geometry) -> Option<Tensor<Self, 4>> {
        max_pool_cpu::max_pool(x, g)
    }

    /// 2-D convolution by an op of this backend's own; `None`: burn's `conv2d`.
    fn convolution(
        _x: &Tensor<Self, 4>,
        _w: &Tensor<Self, 4>,
        _bias: Option<&Tensor<Self, 1>>,
        _o: &burn::tensor::ops::ConvOptions<2>,
    ) -> Option<Tensor<Self, 4>> {
        None
    }

    /// ONNX LRN of `x` `[N, C, R]` by an op of this backend's own; `None`: the one composed of
    /// burn's ops (ops/norm.rs).
    fn lrn(_x: &Tensor<Self, 3>, _p: Lrn) -> Option<Tensor<Self, 3>> {
        None
    }

    /// ReLU of `x` by an op of this backend's own; `None`: burn's `relu`. (Not `relu`: that
    /// name is burn's own backend op.)
    fn rectified(_x: &Tensor<Self, MAX_RANK>) -> Option<Tensor<Self, MAX_RANK>> {
        None
    }

    /// `x` `[N, C, H, W]` resampled by `taps` (the render loop's scale and rotation) by an op
    /// whose gradient is a gather ([`resample::gathered`]); `None`: [`Taps::composed`], whose
    /// gradient burn composes of scatter-adds. The CPU keeps the default: there burn-flex's
    /// `select` made the gathered op ~50× slower than the composed one (8×3×144² → 128², forward
    /// and backward: 72 ms against 1.5 ms, dev profile); it is meant for GPU backends, where a
    /// gather is one kernel and scatter-adds are atomics.
    fn resample(_x: &Tensor<Self, 4>, _taps: &Taps) -> Option<Tensor<Self, 4>> {
        None
    }
}

impl Back for Dispatch {
    fn kernel(spec: &OpSpec) -> OpFn<Self> {
        spec.kernel.dispatch
    }

    fn device_of(device: &Device) -> Self::Device {
        device.burn().clone()
    }

    fn is_cpu(device: &Self::Device) -> bool {
        crate::device::is_cpu(device)
    }

    fn constant(c: &Constant, autodiff: bool) -> Option<DynTensor<Self>> {
        let d = c.device.as_ref()?;
        Some(if autodiff {
            DynTensor::<Dispatch>::from_inner(d.clone())
        } else {
            d.clone()
        })
    }
}

/// One ONNX op (default domain) this runtime implements. [`OPS`] is the only list of them:
/// loading, linearizing, naming, `microscope info --ops` and the conformance fixtures
/// (tests/run.sh reads `info --ops`) all derive from it.
pub struct OpSpec {
    /// The ONNX op type; its specification is at [`OpSpec::spec_url`].
    pub name: &'static str,
    pub kernel: Kernels,
    /// The op (of this table) a path being linearized (Circuits' expanded weights) runs
    /// instead: activations become `Identity` and max and Lp pooling `AveragePool`. `None`: the
    /// op itself.
    pub linear: Option<&'static str>,
    /// An activation: a node of it named after nothing of its own is named after the node it
    /// follows (`conv1/relu`).
    pub activation: bool,
    /// An activation that cuts its input off (ReLU below 0, Clip outside its bounds), where no
    /// gradient passes. Feature visualization's first steps let the gradient through it
    /// ([`Network::forward_redirected`](crate::network::Network::forward_redirected)), so a
    /// unit behind units that are off for the start image still gets a gradient.
    pub cuts_off: bool,
    /// Its output is its input's values again, in another shape or order or copied (Flatten,
    /// Transpose, Expand, ...), not new ones: an atlas leaves its layer out unless asked, as
    /// its units are another layer's.
    pub rearranges: bool,
    /// Its first output holds units where [`UnitLayout`](crate::network::UnitLayout) reads them
    /// from its shape. Not so for the recurrent layers: their Y is `[steps, directions, batch,
    /// hidden]` (or `[batch, steps, directions, hidden]`), and the Transpose and Reshape that
    /// follow it make the token layer `[N, T, C]` a user views.
    pub units: bool,
    /// The versions of the op (ONNX opsets, from its version history in the onnx package) whose
    /// semantics the kernel implements, e.g. `7–14` for Add: numpy broadcasting, which came with
    /// 7. The conformance tests run the onnx package's node tests of each op.
    pub opsets: &'static str,
}

impl OpSpec {
    /// The op's page in the ONNX operator documentation.
    pub fn spec_url(&self) -> String {
        format!("https://onnx.ai/onnx/operators/onnx__{}.html", self.name)
    }
}

/// Every op this runtime implements, by name.
#[rustfmt::skip]
pub static OPS: &[OpSpec] = &[
    OpSpec { name: "Abs", kernel: kernels!(elementwise::abs), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Acos", kernel: kernels!(elementwise::acos), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–22" },
    OpSpec { name: "Acosh", kernel: kernels!(elementwise::acosh), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–22" },
    OpSpec { name: "Add", kernel: kernels!(binary::add), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–14" },
    OpSpec { name: "AffineGrid", kernel: kernels!(grid::affine_grid), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "20" },
    OpSpec { name: "And", kernel: kernels!(binary::and), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7" },
    OpSpec { name: "ArgMax", kernel: kernels!(select::argmax), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "ArgMin", kernel: kernels!(select::argmin), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Asin", kernel: kernels!(elementwise::asin), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–22" },
    OpSpec { name: "Asinh", kernel: kernels!(elementwise::asinh), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–22" },
    OpSpec { name: "Atan", kernel: kernels!(elementwise::atan), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–22" },
    OpSpec { name: "Atanh", kernel: kernels!(elementwise::atanh), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–22" },
    OpSpec { name: "AveragePool", kernel: kernels!(pool::average_pool), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "BatchNormalization", kernel: kernels!(norm::batch_norm), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–15" },
    OpSpec { name: "Cast", kernel: kernels!(shape::cast), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "6–25" },
    OpSpec { name: "CastLike", kernel: kernels!(shape::cast_like), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "15–25" },
    OpSpec { name: "Ceil", kernel: kernels!(elementwise::ceil), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "6–13" },
    OpSpec { name: "Celu", kernel: kernels!(elementwise::celu), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "12" },
    OpSpec { name: "CenterCropPad", kernel: kernels!(shape::center_crop_pad), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "18" },
    OpSpec { name: "Clip", kernel: kernels!(elementwise::clip), linear: Some("Identity"), activation: true, cuts_off: true, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Col2Im", kernel: kernels!(conv::col2im), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "18" },
    OpSpec { name: "Concat", kernel: kernels!(shape::concat), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "4–13" },
    OpSpec { name: "Constant", kernel: kernels!(shape::constant), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–25" },
    OpSpec { name: "ConstantOfShape", kernel: kernels!(shape::constant_of_shape), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–25" },
    OpSpec { name: "Conv", kernel: kernels!(conv::conv), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "ConvTranspose", kernel: kernels!(conv::conv_transpose), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "Cos", kernel: kernels!(elementwise::cos), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–22" },
    OpSpec { name: "Cosh", kernel: kernels!(elementwise::cosh), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–22" },
    OpSpec { name: "CumSum", kernel: kernels!(reduce::cumsum), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "11–14" },
    OpSpec { name: "DFT", kernel: kernels!(fourier::dft), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "17–20" },
    OpSpec { name: "DeformConv", kernel: kernels!(deform::deform_conv), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "19–22" },
    OpSpec { name: "DepthToSpace", kernel: kernels!(shape::depth_to_space), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "1–13" },
    OpSpec { name: "DequantizeLinear", kernel: kernels!(quantize::dequantize_linear), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "10–28" },
    OpSpec { name: "Div", kernel: kernels!(binary::div), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–14" },
    OpSpec { name: "Dropout", kernel: kernels!(elementwise::dropout), linear: None, activation: true, cuts_off: false, rearranges: true, units: true, opsets: "1–22" },
    OpSpec { name: "DynamicQuantizeLinear", kernel: kernels!(quantize::dynamic_quantize_linear), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "11" },
    OpSpec { name: "Einsum", kernel: kernels!(einsum::einsum), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "12–28" },
    OpSpec { name: "Elu", kernel: kernels!(elementwise::elu), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "6–22" },
    OpSpec { name: "Equal", kernel: kernels!(binary::equal), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–19" },
    OpSpec { name: "Erf", kernel: kernels!(elementwise::erf), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–13" },
    OpSpec { name: "Exp", kernel: kernels!(elementwise::exp), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Expand", kernel: kernels!(expand::expand), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "8–13" },
    OpSpec { name: "EyeLike", kernel: kernels!(structured::eye_like), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–22" },
    OpSpec { name: "Flatten", kernel: kernels!(shape::flatten), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "1–25" },
    OpSpec { name: "Floor", kernel: kernels!(elementwise::floor), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "6–13" },
    OpSpec { name: "GRU", kernel: kernels!(recurrent::gru), linear: None, activation: false, cuts_off: false, rearranges: false, units: false, opsets: "7–22" },
    OpSpec { name: "Gather", kernel: kernels!(shape::gather), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "GatherElements", kernel: kernels!(scatter::gather_elements), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "11–13" },
    OpSpec { name: "GatherND", kernel: kernels!(scatter::gather_nd), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "11–13" },
    OpSpec { name: "Gelu", kernel: kernels!(elementwise::gelu), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "20" },
    OpSpec { name: "Gemm", kernel: kernels!(linear::gemm), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "GlobalAveragePool", kernel: kernels!(pool::global_average_pool), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "GlobalLpPool", kernel: kernels!(pool::global_lp_pool), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "2–22" },
    OpSpec { name: "GlobalMaxPool", kernel: kernels!(pool::global_max_pool), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "Greater", kernel: kernels!(binary::greater), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–13" },
    OpSpec { name: "GreaterOrEqual", kernel: kernels!(binary::greater_or_equal), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "12–16" },
    OpSpec { name: "GridSample", kernel: kernels!(grid::grid_sample), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "16–22" },
    OpSpec { name: "GroupNormalization", kernel: kernels!(norm::group_norm), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "18–21" },
    OpSpec { name: "HardSigmoid", kernel: kernels!(elementwise::hard_sigmoid), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "HardSwish", kernel: kernels!(elementwise::hard_swish), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "14–22" },
    OpSpec { name: "Hardmax", kernel: kernels!(select::hardmax), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Identity", kernel: kernels!(elementwise::identity), linear: None, activation: true, cuts_off: false, rearranges: true, units: true, opsets: "1–25" },
    OpSpec { name: "InstanceNormalization", kernel: kernels!(norm::instance_norm), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "IsInf", kernel: kernels!(elementwise::is_inf), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "10–20" },
    OpSpec { name: "IsNaN", kernel: kernels!(elementwise::is_nan), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–20" },
    OpSpec { name: "LRN", kernel: kernels!(norm::lrn), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "LSTM", kernel: kernels!(recurrent::lstm), linear: None, activation: false, cuts_off: false, rearranges: false, units: false, opsets: "7–22" },
    OpSpec { name: "LayerNormalization", kernel: kernels!(norm::layer_norm), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "17" },
    OpSpec { name: "LeakyRelu", kernel: kernels!(elementwise::leaky_relu), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "1–16" },
    OpSpec { name: "Less", kernel: kernels!(binary::less), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–13" },
    OpSpec { name: "LessOrEqual", kernel: kernels!(binary::less_or_equal), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "12–16" },
    OpSpec { name: "Log", kernel: kernels!(elementwise::log), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "LogSoftmax", kernel: kernels!(norm::log_softmax), linear: None, activation: true, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "LpNormalization", kernel: kernels!(norm::lp_norm), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "LpPool", kernel: kernels!(pool::lp_pool), linear: Some("AveragePool"), activation: false, cuts_off: false, rearranges: false, units: true, opsets: "2–22" },
    OpSpec { name: "MatMul", kernel: kernels!(linear::matmul), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Max", kernel: kernels!(binary::max), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "8–13" },
    OpSpec { name: "MaxPool", kernel: kernels!(pool::max_pool), linear: Some("AveragePool"), activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "MaxUnpool", kernel: kernels!(pool::max_unpool), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "9–22" },
    OpSpec { name: "Mean", kernel: kernels!(binary::mean), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "MeanVarianceNormalization", kernel: kernels!(norm::mean_variance_norm), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–13" },
    OpSpec { name: "Min", kernel: kernels!(binary::min), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "8–13" },
    OpSpec { name: "Mish", kernel: kernels!(elementwise::mish), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "18–22" },
    OpSpec { name: "Mod", kernel: kernels!(binary::mod_), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "10–28" },
    OpSpec { name: "Mul", kernel: kernels!(binary::mul), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–14" },
    OpSpec { name: "Neg", kernel: kernels!(elementwise::neg), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Not", kernel: kernels!(elementwise::not), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1" },
    OpSpec { name: "OneHot", kernel: kernels!(structured::one_hot), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–11" },
    OpSpec { name: "Or", kernel: kernels!(binary::or), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7" },
    OpSpec { name: "PRelu", kernel: kernels!(elementwise::prelu), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "7–16" },
    OpSpec { name: "Pad", kernel: kernels!(shape::pad), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "2–25" },
    OpSpec { name: "Pow", kernel: kernels!(binary::pow), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–15" },
    OpSpec { name: "QuantizeLinear", kernel: kernels!(quantize::quantize_linear), linear: None, activation: false, cuts_off: true, rearranges: false, units: true, opsets: "10–28" },
    OpSpec { name: "RNN", kernel: kernels!(recurrent::rnn), linear: None, activation: false, cuts_off: false, rearranges: false, units: false, opsets: "7–22" },
    OpSpec { name: "Range", kernel: kernels!(expand::range), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "11–27" },
    OpSpec { name: "Reciprocal", kernel: kernels!(elementwise::reciprocal), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "ReduceL1", kernel: kernels!(reduce::reduce_l1), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–18" },
    OpSpec { name: "ReduceL2", kernel: kernels!(reduce::reduce_l2), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–18" },
    OpSpec { name: "ReduceLogSum", kernel: kernels!(reduce::reduce_log_sum), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–18" },
    OpSpec { name: "ReduceLogSumExp", kernel: kernels!(reduce::reduce_log_sum_exp), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–18" },
    OpSpec { name: "ReduceMax", kernel: kernels!(reduce::reduce_max), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–20" },
    OpSpec { name: "ReduceMean", kernel: kernels!(reduce::reduce_mean), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–18" },
    OpSpec { name: "ReduceMin", kernel: kernels!(reduce::reduce_min), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–20" },
    OpSpec { name: "ReduceProd", kernel: kernels!(reduce::reduce_prod), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–18" },
    OpSpec { name: "ReduceSum", kernel: kernels!(reduce::reduce_sum), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "ReduceSumSquare", kernel: kernels!(reduce::reduce_sum_square), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–18" },
    OpSpec { name: "Relu", kernel: kernels!(elementwise::relu), linear: Some("Identity"), activation: true, cuts_off: true, rearranges: false, units: true, opsets: "1–14" },
    OpSpec { name: "Reshape", kernel: kernels!(shape::reshape), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "1–25" },
    OpSpec { name: "Resize", kernel: kernels!(resize::resize), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "10–19" },
    OpSpec { name: "Round", kernel: kernels!(elementwise::round), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "11–22" },
    OpSpec { name: "Scatter", kernel: kernels!(scatter::scatter_elements), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–10" },
    OpSpec { name: "ScatterElements", kernel: kernels!(scatter::scatter_elements), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "11–18" },
    OpSpec { name: "ScatterND", kernel: kernels!(scatter::scatter_nd), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "11–18" },
    OpSpec { name: "Selu", kernel: kernels!(elementwise::selu), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "6–22" },
    OpSpec { name: "Shape", kernel: kernels!(shape::shape), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–25" },
    OpSpec { name: "Shrink", kernel: kernels!(elementwise::shrink), linear: Some("Identity"), activation: true, cuts_off: true, rearranges: false, units: true, opsets: "9" },
    OpSpec { name: "Sigmoid", kernel: kernels!(elementwise::sigmoid), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Sign", kernel: kernels!(elementwise::sign), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–13" },
    OpSpec { name: "Sin", kernel: kernels!(elementwise::sin), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–22" },
    OpSpec { name: "Sinh", kernel: kernels!(elementwise::sinh), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–22" },
    OpSpec { name: "Size", kernel: kernels!(shape::size), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–21" },
    OpSpec { name: "Slice", kernel: kernels!(shape::slice), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Softmax", kernel: kernels!(norm::softmax), linear: None, activation: true, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Softplus", kernel: kernels!(elementwise::softplus), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "Softsign", kernel: kernels!(elementwise::softsign), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "1–22" },
    OpSpec { name: "SpaceToDepth", kernel: kernels!(shape::space_to_depth), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "1–13" },
    OpSpec { name: "Split", kernel: kernels!(shape::split), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "2–18" },
    OpSpec { name: "Sqrt", kernel: kernels!(elementwise::sqrt), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Squeeze", kernel: kernels!(shape::squeeze), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "1–25" },
    OpSpec { name: "Sub", kernel: kernels!(binary::sub), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–14" },
    OpSpec { name: "Sum", kernel: kernels!(binary::sum), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "Swish", kernel: kernels!(elementwise::swish), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "24" },
    OpSpec { name: "Tan", kernel: kernels!(elementwise::tan), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–22" },
    OpSpec { name: "Tanh", kernel: kernels!(elementwise::tanh), linear: Some("Identity"), activation: true, cuts_off: false, rearranges: false, units: true, opsets: "1–13" },
    OpSpec { name: "ThresholdedRelu", kernel: kernels!(elementwise::thresholded_relu), linear: Some("Identity"), activation: true, cuts_off: true, rearranges: false, units: true, opsets: "10–22" },
    OpSpec { name: "Tile", kernel: kernels!(expand::tile), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "6–13" },
    OpSpec { name: "TopK", kernel: kernels!(select::topk), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "1–11" },
    OpSpec { name: "Transpose", kernel: kernels!(shape::transpose), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "1–25" },
    OpSpec { name: "Trilu", kernel: kernels!(structured::trilu), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "14" },
    OpSpec { name: "Unsqueeze", kernel: kernels!(shape::unsqueeze), linear: None, activation: false, cuts_off: false, rearranges: true, units: true, opsets: "1–25" },
    OpSpec { name: "Upsample", kernel: kernels!(resize::upsample), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7–9" },
    OpSpec { name: "Where", kernel: kernels!(binary::where_), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "9–16" },
    OpSpec { name: "Xor", kernel: kernels!(binary::xor), linear: None, activation: false, cuts_off: false, rearranges: false, units: true, opsets: "7" },
];

/// The spec of op type `op`, if this runtime implements it.
pub fn spec(op: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|s| s.name == op)
}

/// The implementation of an ONNX op type in the default domain, on backend `B`.
pub fn lookup<B: Back>(op: &str) -> Option<OpFn<B>> {
    spec(op).map(B::kernel)
}

/// The linear stand-in of a nonlinear op, for linearizing a path (Circuits' expanded weights).
pub fn linearized<B: Back>(op: &str) -> Option<OpFn<B>> {
    spec(op).and_then(|s| s.linear).and_then(lookup::<B>)
}

/// Whether `op` cuts its input off (see [`OpSpec::cuts_off`]).
pub fn cuts_off(op: &str) -> bool {
    spec(op).is_some_and(|s| s.cuts_off)
}

/// Whether input `input` of an `op` node passes on the values of what it reads, rather than
/// only where values go or come from: not a Shape's or Size's input (its size alone), nor the
/// indices of a gather or scatter, nor a MaxUnpool's indices and size. Indices computed from
/// an image (MaxPool's) depend on it, but carry no gradient and no unit's values.
pub fn reads_values(op: &str, input: usize) -> bool {
    match op {
        "Shape" | "Size" => false,
        "Gather" | "GatherElements" | "GatherND" | "ScatterND" | "ScatterElements" | "Scatter" => {
            input != 1
        }
        "MaxUnpool" => input == 0,
        _ => true,
    }
}

/// Whether output `output` of an `op` node holds values rather than indices (MaxPool's and
/// TopK's second outputs); see [`reads_values`].
pub fn gives_values(op: &str, output: usize) -> bool {
    !(matches!(op, "MaxPool" | "TopK") && output == 1)
}

/// Whether the output of an `op` node holds units (see [`OpSpec::units`]); ops outside the
/// table are refused at load, and graph inputs hold units.
pub fn has_units(op: &str) -> bool {
    spec(op).is_none_or(|s| s.units)
}

/// Whether `op` is an activation (see [`OpSpec::activation`]).
pub fn is_activation(op: &str) -> bool {
    spec(op).is_some_and(|s| s.activation)
}

/// Runs one op on given values, for the per-op tests in each family's file.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;

    use super::{lookup, Ctx, Node, Value};
    use crate::error::Result;
    use crate::network::node::Attr;
    use crate::network::value::DynTensor;

    /// Evaluates a node `op` (opset `opset`, node name `node_under_test`) with `attrs` on
    /// `inputs`, creating tensors on `device`.
    pub fn run_on(
        op: &str,
        opset: i64,
        attrs: &[(&str, Attr)],
        inputs: Vec<Value>,
        device: &burn::DispatchDevice,
    ) -> Result<Vec<Value>> {
        let node = Node {
            name: "node_under_test".into(),
            op: op.into(),
            domain: String::new(),
            opset,
            inputs: (0..inputs.len()).map(|i| format!("in{i}")).collect(),
            outputs: vec!["out".into()],
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            source_name: String::new(),
        };
        let ctx = Ctx {
            node: &node,
            inputs: inputs.into_iter().map(|v| Some(v.into())).collect(),
            device,
            linearized: false,
        };
        lookup::<burn::Dispatch>(op).expect("an op of the table")(&ctx)
    }

    /// `op` of `xs`, shaped `shape`, on the CPU's autodiff backend: its values, and the gradient
    /// of their sum.
    pub fn values_and_gradient(
        op: &str,
        opset: i64,
        attrs: &[(&str, Attr)],
        xs: &[f32],
        shape: &[usize],
    ) -> (Vec<f32>, Vec<f32>) {
        let ad = crate::Device::cpu().autodiff();
        let x = DynTensor::from_host(xs, shape, &ad).require_grad();
        let Value::Device(y) = run_on(op, opset, attrs, vec![Value::Device(x.clone())], &ad)
            .unwrap()
            .remove(0)
        else {
            panic!("{op} runs on the device");
        };
        (y.to_vec(), x.grad(&y.backward()).unwrap().to_vec())
    }

    /// [`run_on`] on the CPU.
    pub fn run(
        op: &str,
        opset: i64,
        attrs: &[(&str, Attr)],
        inputs: Vec<Value>,
    ) -> Result<Vec<Value>> {
        run_on(op, opset, attrs, inputs, crate::Device::cpu().burn())
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn op_names_are_unique_and_sorted_and_stand_ins_are_ops_of_the_table() {
        for pair in OPS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} then {}",
                pair[0].name,
                pair[1].name
            );
        }
        for op in OPS {
            if let Some(l) = op.linear {
                let stand_in = spec(l).unwrap_or_else(|| panic!("{}: no op {l}", op.name));
                assert!(stand_in.linear.is_none(), "{}: {l} is not linear", op.name);
            }
        }
    }
}
