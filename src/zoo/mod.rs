//! Built-in models. `fashion` works offline: its ONNX file is compiled into the crate
//! ([`files`]). `efficientnet-lite0` is a real ImageNet classifier whose trained weights are
//! downloaded once ([`fetch`]) and written into an ONNX graph at load time ([`efficientnet`]).
//! Both load through the same path as any other model.

pub mod efficientnet;
pub mod fetch;
pub mod files;
pub mod train;

use crate::device::Device;
use crate::error::Result;
use crate::model::Model;

pub use fetch::fetch;
pub use files::NAMES;

/// The built-in Fashion-MNIST CNN, on the CPU.
pub fn fashion() -> Result<Model> {
    Model::zoo("fashion", Device::cpu())
}

/// EfficientNet-Lite0 trained on ImageNet, on the CPU: input `[N, 3, 224, 224]` RGB in [0, 1]
/// (its normalization is inside the graph), output `logits` over the 1,000 ImageNet classes
/// (their names are [`Model::classes`]). Its weights are downloaded once:
/// `microscope zoo fetch efficientnet-lite0`, or [`fetch`]`("efficientnet-lite0")` here.
pub fn efficientnet_lite0() -> Result<Model> {
    Model::zoo(efficientnet::NAME, Device::cpu())
}
