//! The compute device a network runs on, picked at run time (no backend generics in user code).

use std::sync::OnceLock;

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
        Self::kind_of(&self.inner)
    }

    /// `cpu` or `cuda` for a burn device (where a tensor lives).
    pub fn kind_of(device: &DispatchDevice) -> &'static str {
        match device {
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

/// Whether a burn device is the CPU backend (with or without gradient tracking): where our own
/// CPU kernels may stand in for burn-flex's.
pub(crate) fn is_cpu(device: &DispatchDevice) -> bool {
    match device {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Runs `f` on a thread of microscope's CPU thread pool when `device` computes on the CPU, and
/// right here otherwise.
///
/// burn-flex's kernels split their work over the rayon pool of the thread that calls them. Called
/// from outside any pool (a notebook cell, the CLI, a test), each kernel hands all of its work to
/// the global pool's threads while the calling thread sleeps, and a gradient step runs hundreds of
/// kernels, each paying that hand-over. Called from a thread of the pool, the caller takes its own
/// share and the rest goes to idle siblings. Measured on 2 cores, one GoogLeNet
/// feature-visualization step (benches/feature_vis_step.rs): 225 ms outside, 176 ms inside.
/// Calls nest: from inside the pool, `f` runs directly. The caller's cancel scope
/// ([`crate::interrupt::with_cancel`]) holds inside.
pub(crate) fn on_cpu_pool<R: Send>(device: &DispatchDevice, f: impl FnOnce() -> R + Send) -> R {
    if !is_cpu(device) {
        return f();
    }
    match cpu_pool() {
        Some(pool) => {
            // A widget's cancel flag is thread-local: it goes along.
            let scope = crate::interrupt::scope();
            pool.install(|| crate::interrupt::within(scope, f))
        }
        None => f(),
    }
}

fn cpu_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        // As many threads as rayon's global pool would have (RAYON_NUM_THREADS or the cores).
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("microscope-cpu-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// The threads [`on_cpu_pool`] runs work on when `device` is the CPU; 1 otherwise.
pub(crate) fn cpu_threads(device: &DispatchDevice) -> usize {
    match (is_cpu(device), cpu_pool()) {
        (true, Some(pool)) => pool.current_num_threads(),
        _ => 1,
    }
}
