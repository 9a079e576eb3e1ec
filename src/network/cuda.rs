//! The render loop's backend on a CUDA device ([`FastCuda`]: burn's autodiff over burn-cuda),
//! named rather than reached through `Dispatch`, so that ops of our own can attach their own
//! backward passes (burn-dispatch 0.21 keeps its tensors' backend private, see [`Back`]).
//!
//! What differs from `Dispatch` on the same device: the warp's resampling
//! ([`resample::gathered`]), whose backward pass is a gather where burn composes scatter-adds
//! (2.5 ms a call on an H200, 20 of a 66 ms GoogLeNet step: issue 20). Everything else is burn's
//! own kernels, as through `Dispatch`: the CPU kernels of network/fast.rs do not apply here.

use burn::backend::cuda::CudaDevice;
use burn::backend::Cuda;
use burn::prelude::*;
use burn::DispatchDevice;

use super::ops::resample::{self, Taps};
use super::ops::{Back, FastCuda, OpFn, OpSpec};
use super::value::{Constant, DynTensor};
use crate::device::Device;

/// The CUDA device a `Dispatch` device names; the default one for any other (only a CUDA
/// network's render runs on [`FastCuda`], technique/render.rs).
fn cuda_device(device: &DispatchDevice) -> CudaDevice {
    match device {
        DispatchDevice::Cuda(d) => d.clone(),
        _ => CudaDevice::default(),
    }
}

impl Back for FastCuda {
    fn kernel(spec: &OpSpec) -> OpFn<Self> {
        spec.kernel.cuda
    }

    fn device_of(device: &Device) -> Self::Device {
        cuda_device(device.burn())
    }

    fn is_cpu(_: &Self::Device) -> bool {
        false
    }

    fn resample(x: &Tensor<Self, 4>, taps: &Taps) -> Option<Tensor<Self, 4>> {
        // An empty tensor is left to the composed ops.
        (x.dims().iter().product::<usize>() > 0).then(|| resample::gathered(x, taps))
    }

    fn constant(c: &Constant, _autodiff: bool) -> Option<DynTensor<Self>> {
        // Uploaded once from the host copy, onto the device the `Dispatch` copy lives on: the
        // `Dispatch` tensor's burn-cuda tensor inside is private.
        let cuda = c.cuda.get_or_init(|| {
            c.device
                .as_ref()
                .map(|d| c.host().into_device::<Cuda>(&cuda_device(&d.device())))
        });
        cuda.clone().map(DynTensor::<FastCuda>::from_inner)
    }
}
