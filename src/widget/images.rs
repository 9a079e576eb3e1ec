//! `Images`: a captioned strip of images (a feature visualization's results, dataset crops,
//! filters), what a `Visualization` displays as.

use serde::Serialize;

use super::image::pngs;
use super::unit_view::Picture;
use crate::network::DynTensor;
use crate::technique::Visualization;

/// A titled row of captioned images, drawn at `size` px.
#[derive(Clone, Debug, Serialize)]
pub struct Images {
    pub title: String,
    pub pictures: Vec<Picture>,
    pub size: usize,
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
        }
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
    }

    /// Rich display in evcxr-based notebooks.
    pub fn evcxr_display(&self) {
        super::evcxr_print(&self.images());
    }
}
