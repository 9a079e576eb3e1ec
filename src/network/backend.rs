//! The backends the runtime graph is instantiated on.
//!
//! Everything a user touches runs on burn's `Dispatch`, which picks the CPU or CUDA at run time.
//! burn-dispatch 0.21 keeps its tensors' concrete backend private, so no op of ours can attach
//! its own backward pass to a `Dispatch` tensor: the render loop therefore instantiates the same
//! runtime on a concrete autodiff backend ([`Fast`]), where it can. Each op is still declared
//! once, in [`OPS`](super::ops::OPS); [`kernels!`] instantiates it for every backend here.

use std::sync::OnceLock;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::Dispatch;
use burn_flex::{Flex, FlexDevice};

use super::fast::Lrn;
use super::ops::max_pool_cpu::{self, Geometry};
use super::ops::{OpFn, OpSpec};
use super::value::{DynTensor, HostTensor};
use crate::device::Device;

/// The render loop's backend on the CPU: burn-flex under burn's autodiff, named.
pub type Fast = Autodiff<Flex>;

/// One op's kernel, instantiated for every backend the runtime runs on.
pub struct Kernels {
    pub dispatch: OpFn<Dispatch>,
    pub fast: OpFn<Fast>,
}

/// Instantiates a generic op function for every [`Back`]end.
macro_rules! kernels {
    ($f:path) => {
        $crate::network::backend::Kernels {
            dispatch: $f,
            fast: $f,
        }
    };
}
pub(crate) use kernels;

/// A graph constant (a weight) in the forms the backends read it in.
#[derive(Debug)]
pub struct Constant {
    pub host: Option<HostTensor>,
    /// On the network's `Dispatch` device.
    pub device: Option<DynTensor<Dispatch>>,
    /// A burn-flex copy, made the first time a [`Fast`] run reads the constant.
    pub flex: OnceLock<Option<DynTensor<Flex>>>,
    pub shape: Vec<usize>,
}

impl Clone for Constant {
    fn clone(&self) -> Self {
        Constant {
            host: self.host.clone(),
            device: self.device.clone(),
            flex: OnceLock::new(),
            shape: self.shape.clone(),
        }
    }
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

/// A backend the runtime graph runs on.
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

    /// ONNX LRN of `x` `[N, C, R]` by an op of this backend's own; `None`: the one composed of
    /// burn's ops (ops/norm.rs).
    fn lrn(_x: &Tensor<Self, 3>, _p: Lrn) -> Option<Tensor<Self, 3>> {
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

impl Back for Fast {
    fn kernel(spec: &OpSpec) -> OpFn<Self> {
        spec.kernel.fast
    }

    fn device_of(_: &Device) -> Self::Device {
        FlexDevice
    }

    fn is_cpu(_: &Self::Device) -> bool {
        true
    }

    fn max_pool(x: &Tensor<Self, 4>, g: &Geometry) -> Option<Tensor<Self, 4>> {
        super::fast::max_pool(x, g)
    }

    fn lrn(x: &Tensor<Self, 3>, p: Lrn) -> Option<Tensor<Self, 3>> {
        Some(super::fast::lrn(x.clone(), p))
    }

    fn constant(c: &Constant, _autodiff: bool) -> Option<DynTensor<Self>> {
        let flex = c.flex.get_or_init(|| {
            c.device
                .as_ref()
                .map(|_| c.host().upload_to::<Flex>(&FlexDevice))
        });
        flex.clone().map(DynTensor::<Fast>::from_inner)
    }
}
