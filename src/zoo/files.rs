//! The built-in models' ONNX bytes: compiled into the crate, or built from downloaded weights.
//! `Model::zoo` reads them here, and the zoo's constructors (`zoo::fashion`) build on `Model`;
//! nothing here imports `Model`.

use std::borrow::Cow;

use crate::error::Result;

/// The built-in models' names (`zoo:NAME` on the command line).
pub const NAMES: &[&str] = &["fashion", super::efficientnet::NAME];

/// A CNN trained here on Fashion-MNIST (`microscope train-fashion`): input `[N, 1, 28, 28]`
/// pixels in [0, 1]; ReLU conv layers `conv1`, `conv2`, `conv3`; output node `logits`.
const FASHION: &[u8] = include_bytes!("fashion.onnx");

/// A built-in model's canonical name and its ONNX bytes.
pub(crate) type Named = (&'static str, Cow<'static, [u8]>);

/// The canonical name and ONNX bytes of a built-in model: compiled in, or built from fetched
/// weights (`None` for no such model).
pub(crate) fn bytes(name: &str) -> Option<Result<Named>> {
    match name {
        "fashion" => Some(Ok(("fashion", Cow::Borrowed(FASHION)))),
        super::efficientnet::NAME => Some(
            super::efficientnet::onnx_bytes()
                .map(|bytes| (super::efficientnet::NAME, Cow::Owned(bytes))),
        ),
        _ => None,
    }
}
