//! microscope: look inside vision neural networks.
//!
//! Data flows one way through the module tree:
//! [`import`] (ONNX files) → [`network`] (one runtime graph type on burn) → [`technique`]s →
//! [`widget`]s (self-contained HTML).

pub mod atlas;
pub mod budget;
pub mod data;
pub mod device;
pub mod digest;
pub mod error;
pub mod import;
pub mod interrupt;
pub mod model;
pub mod network;
pub mod npy;
pub mod optim;
pub mod paths;
pub mod provenance;
pub mod technique;
pub mod widget;
pub mod zoo;

pub use device::Device;
pub use error::{Error, Result};
pub use model::Model;
pub use network::{DynTensor, Network};

/// What notebooks and examples import.
pub mod prelude {
    pub use crate::data::{Dataset, Split};
    pub use crate::device::Device;
    pub use crate::error::{Error, Result};
    pub use crate::model::{Layer, Model, Unit};
    pub use crate::network::{DynTensor, Network};
    pub use crate::provenance::Provenance;
    pub use crate::technique::{
        Caricature, FeatureVis, InputAttribution, NeuronGroups, Objective, UnitObjective,
    };
    pub use crate::technique::{DatasetExamples, ParamKind};
    pub use crate::widget::DebugDisplay as _;
    pub use crate::widget::{
        display, Gallery, GalleryOptions, Images, LayerGraph, UnitView, ViewOptions, Widget,
    };
    pub use crate::zoo;
}
