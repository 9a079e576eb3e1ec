//! Built-in models that work offline: their ONNX files are compiled into the crate and load
//! through the same path as any other model.

pub mod train;

use crate::device::Device;
use crate::error::Result;
use crate::model::Model;

/// The built-in models' names (`zoo:NAME` on the command line).
pub const NAMES: &[&str] = &["fashion"];

/// A CNN trained here on Fashion-MNIST (`microscope train-fashion`): input `[N, 1, 28, 28]`
/// pixels in [0, 1]; ReLU conv layers `conv1`, `conv2`, `conv3`; output node `logits`.
const FASHION: &[u8] = include_bytes!("fashion.onnx");

/// The built-in Fashion-MNIST CNN, on the CPU.
pub fn fashion() -> Result<Model> {
    Model::zoo("fashion", Device::cpu())
}

/// The canonical name and ONNX bytes of a built-in model.
pub(crate) fn bytes(name: &str) -> Option<(&'static str, &'static [u8])> {
    match name {
        "fashion" => Some(("fashion", FASHION)),
        _ => None,
    }
}
