//! The built-in models' ONNX files, compiled into the crate. A leaf: `Model::zoo` reads them
//! here, and the zoo's constructors (`zoo::fashion`) build on `Model`.

/// The built-in models' names (`zoo:NAME` on the command line).
pub const NAMES: &[&str] = &["fashion"];

/// A CNN trained here on Fashion-MNIST (`microscope train-fashion`): input `[N, 1, 28, 28]`
/// pixels in [0, 1]; ReLU conv layers `conv1`, `conv2`, `conv3`; output node `logits`.
const FASHION: &[u8] = include_bytes!("fashion.onnx");

/// The canonical name and ONNX bytes of a built-in model.
pub(crate) fn bytes(name: &str) -> Option<(&'static str, &'static [u8])> {
    match name {
        "fashion" => Some(("fashion", FASHION)),
        _ => None,
    }
}
