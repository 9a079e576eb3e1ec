//! The compute device a network runs on, picked at run time (no backend generics in user code).

use burn::DispatchDevice;

use crate::error::{Error, Result};

/// A CPU (burn-flex) or CUDA device. Gradient runs use [`Device::autodiff`] of the same device.
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    inner: DispatchDevice,
}

impl Device {
    /// The CPU backend (burn-flex, multi-threaded).
    pub fn cpu() -> Self {
        Self {
            inner: DispatchDevice::Flex(burn_flex::FlexDevice),
        }
    }

    /// CUDA device `index`; needs a build with the `cuda` feature.
    pub fn cuda(index: usize) -> Result<Self> {
        #[cfg(feature = "cuda")]
        {
            Ok(Self {
                inner: DispatchDevice::Cuda(burn::backend::cuda::CudaDevice::new(index)),
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(Error::Device {
                device: format!("cuda:{index}"),
                message: "this build has no CUDA support; rebuild with `--features cuda`".into(),
            })
        }
    }

    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(spec: &str) -> Result<Self> {
        match spec {
            "cpu" => Ok(Self::cpu()),
            "cuda" => Self::cuda(0),
            s => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Self::cuda(n),
                None => Err(Error::Device {
                    device: spec.into(),
                    message: "expected cpu, cuda or cuda:N".into(),
                }),
            },
        }
    }

    /// `cpu` or `cuda`: part of cache keys and reports.
    pub fn kind(&self) -> &'static str {
        match &self.inner {
            #[cfg(feature = "cuda")]
            DispatchDevice::Cuda(_) => "cuda",
            _ => "cpu",
        }
    }

    /// The plain (inference) burn device.
    pub fn burn(&self) -> &DispatchDevice {
        &self.inner
    }

    /// The same device with gradient tracking, for optimizing inputs.
    pub fn autodiff(&self) -> DispatchDevice {
        DispatchDevice::autodiff(self.inner.clone())
    }
}

impl Default for Device {
    fn default() -> Self {
        Self::cpu()
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            #[cfg(feature = "cuda")]
            DispatchDevice::Cuda(d) => write!(f, "cuda:{}", d.index),
            _ => f.write_str("cpu"),
        }
    }
}

/// Whether a burn device tracks gradients.
pub(crate) fn is_autodiff(device: &DispatchDevice) -> bool {
    matches!(device, DispatchDevice::Autodiff(_))
}
