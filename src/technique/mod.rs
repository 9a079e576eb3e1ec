//! Techniques for looking inside a network, after Lucid's `optvis`: objectives, image
//! parameterizations, transforms, and the render loop, composed into [`FeatureVis`].

pub mod attribution;
pub mod cache;
pub mod caricature;
pub mod dataset_examples;
pub mod deepdream;
pub mod feature_vis;
pub mod input_attribution;
pub mod objective;
pub mod param;
pub mod render;
pub mod transform;
pub mod weights;

pub use caricature::Caricature;
pub use dataset_examples::DatasetExamples;
pub use feature_vis::{FeatureVis, UnitObjective, Visualization};
pub use input_attribution::InputAttribution;
pub use objective::Objective;
pub use render::{ParamKind, Progress};
