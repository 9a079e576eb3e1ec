//! Techniques for looking inside a network, after Lucid's `optvis`: objectives, image
//! parameterizations, transforms, and the render loop, composed into [`FeatureVis`].

pub mod attention_flow;
pub mod attribution;
pub mod cache;
pub mod caricature;
pub mod dataset_examples;
pub mod deepdream;
pub mod feature_vis;
pub mod input_attribution;
pub mod neuron_groups;
pub mod objective;
pub mod param;
pub mod render;
pub mod transform;
pub mod weights;

pub use caricature::Caricature;
pub use dataset_examples::DatasetExamples;
pub use feature_vis::{FeatureVis, UnitObjective, Visualization};
pub use input_attribution::InputAttribution;
pub use neuron_groups::NeuronGroups;
pub use objective::Objective;
pub use render::{ParamKind, Progress};

use crate::error::{Error, Result};
use crate::network::DynTensor;
use burn::tensor::backend::Backend;

/// `outs`, the outputs of `layers` for a batch of `images` images, checked to keep the batch on
/// their first axis: the techniques read row i of a layer as image i's. A layer that moved its
/// batch elsewhere or broadcast it away (found by fuzzing: a quantized MatMul's scale rewired
/// to a rank-4 bias gave `[1, C, N, F]`) would have them pick rows that are not there.
pub(crate) fn per_image<B: Backend>(
    layers: &[&str],
    outs: Vec<DynTensor<B>>,
    images: usize,
) -> Result<Vec<DynTensor<B>>> {
    for (layer, out) in layers.iter().zip(&outs) {
        let rows = out.dims().first().copied().unwrap_or(1);
        if rows != images {
            return Err(Error::Message(format!(
                "layer {layer:?}: the first axis of its output is {rows} long for {images} \
                 images in; microscope reads a layer's first axis as the batch, and this layer \
                 does not keep the batch there"
            )));
        }
    }
    Ok(outs)
}
