//! `Images`: a captioned strip of images (a feature visualization's results, dataset crops,
//! filters), what a `Visualization` displays as; saved as PNG files with their provenance.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::image::pngs;
use super::unit_view::Picture;
use crate::device::Device;
use crate::error::Result;
use crate::network::DynTensor;
use crate::provenance::Provenance;
use crate::technique::Visualization;

/// A titled row of captioned images, drawn at `size` px.
#[derive(Clone, Debug, Serialize)]
pub struct Images {
    pub title: String,
    pub pictures: Vec<Picture>,
    pub size: usize,
    /// What made the images: from a tensor alone, only the version and backend (attach more
    /// with [`Images::with_provenance`]).
    pub provenance: Provenance,
}

impl Images {
    /// Every image of a `[N, C, H, W]` tensor in [0, 1] (see [`pngs`] for other ranks), captioned
    /// by `captions` (by index when there are fewer captions than images).
    pub fn from_tensor(title: &str, images: &DynTensor, captions: &[String]) -> Images {
        let pictures = pngs(images)
            .into_iter()
            .enumerate()
            .map(|(i, src)| Picture {
                src,
                caption: captions.get(i).cloned().unwrap_or_else(|| format!("#{i}")),
            })
            .collect();
        Images {
            title: title.to_string(),
            pictures,
            size: 128,
            provenance: Provenance::without_model(Device::kind_of(&images.device())),
        }
    }

    /// The images with `provenance` (say, `Provenance::of(&model)` and the technique that made
    /// them).
    pub fn with_provenance(mut self, provenance: Provenance) -> Images {
        self.provenance = provenance;
        self
    }

    /// Saves the images as PNG, the provenance embedded in each file (an iTXt chunk,
    /// `microscope-provenance`). `path` an existing directory: one file per image, named after
    /// the title and caption; otherwise one file at `path`, the images side by side. Returns
    /// the files written; an error names the file.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let named: Vec<(&str, String)> = self
            .pictures
            .iter()
            .map(|p| (p.src.as_str(), format!("{} {}", self.title, p.caption)))
            .collect();
        super::export::save_pngs(&named, &self.provenance, path.as_ref())
    }

    /// Draws the images at `size` px.
    pub fn size(mut self, size: usize) -> Images {
        self.size = size;
        self
    }

    pub fn summary(&self) -> String {
        let captions: Vec<&str> = self.pictures.iter().map(|p| p.caption.as_str()).collect();
        format!(
            "{}: {} images ({})\n",
            self.title,
            self.pictures.len(),
            captions.join(", ")
        )
    }
}

impl Visualization {
    /// The images with each unit and its activation as the caption (for a free objective,
    /// its value).
    pub fn images(&self) -> Images {
        if self.units.is_empty() {
            let captions: Vec<String> =
                self.activations.iter().map(|a| format!("{a:.3}")).collect();
            return Images::from_tensor(
                &format!("feature visualization of {}", self.objective),
                &self.images,
                &captions,
            );
        }
        let captions: Vec<String> = self
            .units
            .iter()
            .zip(&self.activations)
            .map(|(u, a)| format!("{}:{u} · {a:.3}", self.layer))
            .collect();
        Images::from_tensor(
            &format!("feature visualization of {}", self.layer),
            &self.images,
            &captions,
        )
        .with_provenance(self.provenance.clone())
    }

    /// Saves the images as PNG with their provenance ([`Images::save_png`]).
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        self.images().save_png(path)
    }

    /// Rich display in evcxr-based notebooks.
    pub fn evcxr_display(&self) {
        super::evcxr_print(&self.images());
    }
}
