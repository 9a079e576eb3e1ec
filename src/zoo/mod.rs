//! Built-in models that work offline: their ONNX files are compiled into the crate
//! ([`files`]) and load through the same path as any other model.

pub mod files;
pub mod train;

use crate::device::Device;
use crate::error::Result;
use crate::model::Model;

pub use files::NAMES;

/// The built-in Fashion-MNIST CNN, on the CPU.
pub fn fashion() -> Result<Model> {
    Model::zoo("fashion", Device::cpu())
}
