//! Operator implementations, one file per family, found through [`lookup`].
//!
//! Every operator is a plain function `fn(&Ctx) -> Result<Vec<Value>>`. It reads its inputs through
//! [`Ctx`], either as device tensors ([`Ctx::float`]) or as host tensors ([`Ctx::host`]), and returns
//! one value per node output. Shape arithmetic stays on the host.

mod conv;
mod elementwise;
mod linear;
mod max_pool_cpu;
mod norm;
mod pool;
mod reduce;
mod resize;
mod shape;

use burn::DispatchDevice;

use super::node::Node;
use super::value::{DynTensor, HostTensor, Value};
use crate::error::Result;

/// The signature every operator implements.
pub type OpFn = fn(&Ctx) -> Result<Vec<Value>>;

/// One input of a node during evaluation.
#[derive(Clone, Debug, Default)]
pub struct Slot {
    pub host: Option<HostTensor>,
    pub device: Option<DynTensor>,
}

impl From<Value> for Slot {
    fn from(v: Value) -> Self {
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

impl Slot {
    /// The value, preferring the device copy.
    pub fn into_value(self) -> Value {
        match (self.device, self.host) {
            (Some(t), _) => Value::Device(t),
            (None, Some(h)) => Value::Host(h),
            (None, None) => unreachable!("slots hold a value"),
        }
    }
}

/// What an operator sees: its node (attributes, name) and its inputs.
pub struct Ctx<'a> {
    pub node: &'a Node,
    pub inputs: Vec<Option<Slot>>,
    /// Where new tensors are created (the autodiff device during gradient runs).
    pub device: &'a DispatchDevice,
}

impl Ctx<'_> {
    /// Whether optional input `i` is present.
    pub fn has(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(_)))
    }

    fn slot(&self, i: usize) -> Result<&Slot> {
        match self.inputs.get(i) {
            Some(Some(slot)) => Ok(slot),
            _ => Err(self.node.error(format!("missing input {i}"))),
        }
    }

    /// Input `i` as a float tensor on the device.
    pub fn float(&self, i: usize) -> Result<DynTensor> {
        let slot = self.slot(i)?;
        match (&slot.device, &slot.host) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(h)) => Ok(h.upload(self.device)),
            (None, None) => unreachable!("slots hold a value"),
        }
    }

    /// Input `i` on the host (a device tensor is read back).
    pub fn host(&self, i: usize) -> Result<HostTensor> {
        let slot = self.slot(i)?;
        match (&slot.host, &slot.device) {
            (Some(h), _) => Ok(h.clone()),
            (None, Some(t)) => Ok(HostTensor::f32(t.dims(), t.to_vec())),
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

    /// Input `i` as it is: on the host if it lives there, else on the device.
    pub fn value(&self, i: usize) -> Result<Value> {
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

    /// Normalizes a possibly negative axis against `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        normalize_axis(axis, rank)
            .ok_or_else(|| self.error(format!("axis {axis} is out of range for rank {rank}")))
    }
}

pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r.max(1)).contains(&a).then_some(a as usize)
}

/// The implementation of an ONNX op type in the default domain.
pub fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "Conv" => conv::conv,
        "ConvTranspose" => conv::conv_transpose,
        "Relu" => elementwise::relu,
        "LeakyRelu" => elementwise::leaky_relu,
        "PRelu" => elementwise::prelu,
        "Sigmoid" => elementwise::sigmoid,
        "Tanh" => elementwise::tanh,
        "Clip" => elementwise::clip,
        "HardSigmoid" => elementwise::hard_sigmoid,
        "HardSwish" => elementwise::hard_swish,
        "Add" => elementwise::add,
        "Sub" => elementwise::sub,
        "Mul" => elementwise::mul,
        "Div" => elementwise::div,
        "Sum" => elementwise::sum,
        "Mean" => elementwise::mean,
        "Identity" => elementwise::identity,
        "Dropout" => elementwise::dropout,
        "MaxPool" => pool::max_pool,
        "AveragePool" => pool::average_pool,
        "GlobalAveragePool" => pool::global_average_pool,
        "GlobalMaxPool" => pool::global_max_pool,
        "LRN" => norm::lrn,
        "BatchNormalization" => norm::batch_norm,
        "InstanceNormalization" => norm::instance_norm,
        "Softmax" => norm::softmax,
        "Gemm" => linear::gemm,
        "MatMul" => linear::matmul,
        "ReduceMean" => reduce::reduce_mean,
        "Resize" => resize::resize,
        "Upsample" => resize::upsample,
        "Flatten" => shape::flatten,
        "Reshape" => shape::reshape,
        "Transpose" => shape::transpose,
        "Squeeze" => shape::squeeze,
        "Unsqueeze" => shape::unsqueeze,
        "Concat" => shape::concat,
        "Split" => shape::split,
        "Shape" => shape::shape,
        "Gather" => shape::gather,
        "Slice" => shape::slice,
        "Cast" => shape::cast,
        "Constant" => shape::constant,
        "ConstantOfShape" => shape::constant_of_shape,
        "Pad" => shape::pad,
        _ => return None,
    })
}

/// The linear stand-in of a nonlinear op, for linearizing a path (Circuits' expanded weights):
/// activations become the identity and max pooling becomes average pooling.
pub fn linearized(op: &str) -> Option<OpFn> {
    Some(match op {
        "Relu" | "LeakyRelu" | "PRelu" | "Sigmoid" | "Tanh" | "Clip" | "HardSigmoid"
        | "HardSwish" | "LRN" => elementwise::identity,
        "MaxPool" => pool::average_pool,
        _ => return None,
    })
}

/// Every op type [`lookup`] knows, for error messages and `info`.
pub const SUPPORTED: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Div",
    "Dropout",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "InstanceNormalization",
    "LRN",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mean",
    "Mul",
    "PRelu",
    "Pad",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Upsample",
];
