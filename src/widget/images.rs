//! `Images`: a captioned strip of images (a feature visualization's results, dataset crops,
//! filters), what a `Visualization` displays as; saved as PNG files with their provenance.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::image::{png, pngs, Planar};
use super::unit_view::Picture;
use crate::device::Device;
use crate::error::Result;
use crate::model::Model;
use crate::network::DynTensor;
use crate::provenance::Provenance;
use crate::technique::input_attribution::upsample;
use crate::technique::neuron_groups::{GroupAttribution, NeuronGroupsResult, Toward, PATH_STEPS};
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

impl NeuronGroupsResult {
    /// The image, captioned with how much of the layer the groups explain, then for each group
    /// (largest first) where it fires, the image dimmed away from its map, captioned with its
    /// share of the activation, and what it responds to, its direction's feature visualization,
    /// captioned with its heaviest units.
    pub fn pictures(&self) -> (Picture, Vec<[Picture; 2]>) {
        let dims = self.image.dims();
        let (channels, height, width) = (dims[1], dims[2], dims[3]);
        let pixels = self.image.to_vec();
        let picture = |data: &[f32]| {
            png(&Planar {
                data,
                channels,
                height,
                width,
            })
        };
        let image = Picture {
            src: picture(&pixels),
            caption: match self.negative >= 0.005 {
                false => format!(
                    "the image · {:.0} % of {} explained",
                    self.explained * 100.0,
                    self.layer
                ),
                true => format!(
                    "the image · {:.0} % of {} explained · {:.0} % below 0, left out",
                    self.explained * 100.0,
                    self.layer,
                    self.negative * 100.0
                ),
            },
        };
        let drawn = pngs(&self.visualization.images);
        let groups = self
            .maps
            .iter()
            .enumerate()
            .map(|(g, map)| {
                // Stretched over the image (each value at its cell's centre), scaled to [0, 1].
                let top = map.iter().copied().fold(0f32, f32::max);
                let weight: Vec<f32> = upsample(map, self.rows, self.cols, height, width)
                    .into_iter()
                    .map(|v| if top > 0.0 { v / top } else { 0.0 })
                    .collect();
                let dimmed: Vec<f32> = pixels
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * (0.15 + 0.85 * weight[i % (height * width)]))
                    .collect();
                let units: Vec<String> =
                    self.top_units(g, 3).iter().map(|u| u.to_string()).collect();
                [
                    Picture {
                        src: picture(&dimmed),
                        caption: format!(
                            "group {} · where · {:.0} %",
                            g + 1,
                            self.shares[g] * 100.0
                        ),
                    },
                    Picture {
                        src: drawn.get(g).cloned().unwrap_or_default(),
                        caption: format!("group {} · what · units {}", g + 1, units.join(", ")),
                    },
                ]
            })
            .collect();
        (image, groups)
    }

    /// [`NeuronGroupsResult::pictures`] in a row: the image, then each group's two.
    pub fn images(&self) -> Images {
        let (image, groups) = self.pictures();
        Images {
            title: format!("neuron groups of {}", self.layer),
            pictures: std::iter::once(image)
                .chain(groups.into_iter().flatten())
                .collect(),
            size: 128,
            provenance: self.provenance.clone(),
        }
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

/// Neuron groups against what they support (the figures of Building Blocks' group attribution):
/// for each of a classifier's top classes on the groups' image, or each group of a later layer,
/// how much each group supports (> 0) or opposes (< 0) it, by integrated gradients at the
/// groups' layer ([`GroupAttribution`]).
#[derive(Clone, Debug, Serialize)]
pub struct GroupSupport {
    pub title: String,
    pub image: Picture,
    /// Each group's two pictures, as [`NeuronGroupsResult::pictures`] draws them.
    pub groups: Vec<[Picture; 2]>,
    /// What they support: the classes, strongest first, or the later groups, largest first.
    pub columns: Vec<SupportColumn>,
    pub provenance: Provenance,
}

/// One column of [`GroupSupport`]: a class, or a group of a later layer.
#[derive(Clone, Debug, Serialize)]
pub struct SupportColumn {
    /// `node:index`, then the class's name where the model has one; or `layer group g`.
    pub label: String,
    /// Its value on the image: the class's score, or the later group's activation.
    pub value: f32,
    /// A later group's two pictures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pictures: Option<[Picture; 2]>,
    /// Each group's contribution.
    pub groups: Vec<f32>,
    /// What the groups leave out ([`crate::technique::neuron_groups::GroupAttribution::rest`]).
    pub rest: f32,
}

impl GroupSupport {
    pub fn summary(&self) -> String {
        let mut text = format!("{}\n", self.title);
        for column in &self.columns {
            let groups: Vec<String> = column
                .groups
                .iter()
                .enumerate()
                .map(|(g, v)| format!("group {} {v:+.2}", g + 1))
                .collect();
            text.push_str(&format!(
                "{} = {:.2}: {}, rest {:+.2}\n",
                column.label,
                column.value,
                groups.join(", "),
                column.rest
            ));
        }
        text
    }
}

impl NeuronGroupsResult {
    /// The groups against the `k` top classes of `node` (a classifier's logits) on their image,
    /// in `model` (the model they were found in): [`NeuronGroupsResult::top_classes`], drawn.
    pub fn classes(&self, model: &Model, node: &str, k: usize) -> Result<GroupSupport> {
        let names = model.classes();
        let columns: Vec<SupportColumn> = self
            .top_classes(model, node, k)?
            .into_iter()
            .map(|s| {
                let label = s.toward.to_string();
                let index = match &s.toward {
                    Toward::Target(t) => Some(t.index()),
                    Toward::Group { .. } => None,
                };
                let label = match names.as_ref().zip(index).and_then(|(n, i)| n.get(i)) {
                    Some(name) => format!("{label} {name}"),
                    None => label,
                };
                column(s, label, None)
            })
            .collect();
        let params = serde_json::json!({ "node": node, "classes": k, "path_steps": PATH_STEPS });
        Ok(self.support_widget(
            format!(
                "neuron groups of {} against the top {} classes of {node}",
                self.layer,
                columns.len()
            ),
            columns,
            &params,
        ))
    }

    /// The groups against `later`'s, the groups of a later layer on the same image, in `model`:
    /// [`NeuronGroupsResult::group_support`], drawn, each later group with its pictures.
    pub fn toward(&self, model: &Model, later: &NeuronGroupsResult) -> Result<GroupSupport> {
        let (_, pictures) = later.pictures();
        let columns = self
            .group_support(model, later)?
            .into_iter()
            .zip(pictures)
            .map(|(s, pictures)| {
                let label = s.toward.to_string();
                column(s, label, Some(pictures))
            })
            .collect();
        let params = serde_json::json!({
            "toward": later.layer,
            "groups": later.maps.len(),
            "path_steps": PATH_STEPS,
        });
        Ok(self.support_widget(
            format!(
                "neuron groups of {} supporting those of {}",
                self.layer, later.layer
            ),
            columns,
            &params,
        ))
    }

    fn support_widget(
        &self,
        title: String,
        columns: Vec<SupportColumn>,
        params: &serde_json::Value,
    ) -> GroupSupport {
        let (image, groups) = self.pictures();
        GroupSupport {
            title,
            image,
            groups,
            columns,
            provenance: self
                .provenance
                .clone()
                .technique("group-attribution", &self.layer, params),
        }
    }
}

fn column(
    support: GroupAttribution,
    label: String,
    pictures: Option<[Picture; 2]>,
) -> SupportColumn {
    SupportColumn {
        label,
        value: support.value,
        pictures,
        rest: support.rest(),
        groups: support.groups,
    }
}
