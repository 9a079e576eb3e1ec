//! `Gallery`: a feature visualization of every unit of a layer (what `layer.gallery()` shows),
//! computed in batches, with each unit's activation on its image. Also `LayerCard`, the short
//! summary a `Layer` displays as.

use serde::Serialize;

use super::image::{thumbnail, Planar};
use super::live::{Reply, Throttle};
use super::progress::ProgressDisplay;
use super::unit_view::{TabHeader, ViewOptions, TABS};
use crate::error::{Error, Result};
use crate::model::Layer;
use crate::provenance::Provenance;
use crate::technique::FeatureVis;

/// How a gallery is computed.
#[derive(Clone, Debug)]
pub struct GalleryOptions {
    pub feature_vis: FeatureVis,
    /// Units optimized together in one batch.
    pub batch: usize,
    /// Thumbnail side in pixels, 1 to [`THUMBNAIL_MOST`].
    pub thumbnail: usize,
    /// Which units to compute now (default: all of the layer's). Every unit is listed either
    /// way; the others are left for a live widget to compute on request.
    pub units: Option<Vec<usize>>,
}

impl Default for GalleryOptions {
    fn default() -> Self {
        Self {
            feature_vis: FeatureVis::default(),
            batch: 32,
            thumbnail: 64,
            units: None,
        }
    }
}

/// The largest thumbnail side a gallery draws ([`GalleryOptions::thumbnail`]): a gallery shows
/// its thumbnails in a grid, and a larger side (nearest-neighbour upsampling of a render of 128
/// px or so) only adds bytes to the notebook.
pub const THUMBNAIL_MOST: usize = 1024;

/// `layer.gallery()` of a layer with more units than this computes one batch of them at once
/// and lists the others for a live widget to compute when clicked (or with its button).
pub const LAZY_ABOVE: usize = 256;

/// Progress of a gallery being computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GalleryProgress {
    /// Units finished so far.
    pub done: usize,
    pub total: usize,
    /// Units in the batch in progress.
    pub batch: usize,
    /// Step of the batch in progress, of `steps`.
    pub step: usize,
    pub steps: usize,
}

impl GalleryProgress {
    /// Fraction of the work done, in [0, 1].
    pub fn fraction(&self) -> f32 {
        let in_batch = self.batch as f32 * self.step as f32 / self.steps.max(1) as f32;
        ((self.done as f32 + in_batch) / self.total.max(1) as f32).min(1.0)
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GalleryUnit {
    pub index: usize,
    /// Thumbnail PNG (`None`: not computed).
    pub image: Option<String>,
    /// The unit's mean activation on its visualization.
    pub activation: Option<f32>,
}

/// The gallery of one layer.
#[derive(Clone, Debug, Serialize)]
pub struct Gallery {
    pub model: String,
    pub layer: String,
    pub op: String,
    pub shape: Vec<usize>,
    pub units: Vec<GalleryUnit>,
    /// What a unit's value is, where it is not its map's mean ([`Layer::unit_value`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_value: Option<String>,
    pub thumbnail: usize,
    pub steps: usize,
    pub seed: u64,
    /// The tabs of the unit view a clicked unit opens (`unit_view::TABS`), each `about` said
    /// of `{unit}` (the browser code puts the clicked unit there).
    pub tabs: Vec<TabHeader>,
    /// The tab the gallery's own cells fill in (its feature visualization).
    pub cell_tab: &'static str,
    /// How the widget reaches the kernel that made it (under the microscope kernel only).
    pub live: Option<super::live::Live>,
    pub provenance: Provenance,
}

impl Layer {
    /// The gallery of every unit, with default settings and a live progress bar. A layer of
    /// more than [`LAZY_ABOVE`] units computes its first batch now and the others on request.
    pub fn gallery(&self) -> Result<Gallery> {
        self.gallery_using(&FeatureVis::default())
    }

    /// The gallery of every unit, visualized with `feature_vis`, with a live progress bar (as
    /// [`Layer::gallery`], lazy above [`LAZY_ABOVE`] units).
    pub fn gallery_using(&self, feature_vis: &FeatureVis) -> Result<Gallery> {
        self.gallery_showing(None, feature_vis)
    }

    /// A gallery of every unit that computes only `units` now. Under the microscope kernel the
    /// others are computed when clicked (or all at once with the gallery's button), in the
    /// background, with the same settings; elsewhere they show as not computed.
    pub fn gallery_of(
        &self,
        units: impl IntoIterator<Item = usize>,
        feature_vis: &FeatureVis,
    ) -> Result<Gallery> {
        self.gallery_showing(Some(units.into_iter().collect()), feature_vis)
    }

    fn gallery_showing(
        &self,
        units: Option<Vec<usize>>,
        feature_vis: &FeatureVis,
    ) -> Result<Gallery> {
        // A layer of a thousand units (a classifier's logits) would keep the cell busy for hours
        // on a CPU: its first batch is computed now, the rest on request.
        let units = units.or_else(|| {
            (self.units > LAZY_ABOVE).then(|| (0..GalleryOptions::default().batch).collect())
        });
        let options = GalleryOptions {
            feature_vis: feature_vis.clone(),
            units,
            ..GalleryOptions::default()
        };
        let mut bar = ProgressDisplay::start(&format!("gallery of {}", self.name));
        let gallery = self.gallery_with(
            &options,
            &mut |p| bar.set(p.fraction(), &format!("{} of {} units", p.done, p.total)),
            None,
        )?;
        let computed = gallery.units.iter().filter(|u| u.image.is_some()).count();
        bar.finish(&format!("{computed} units"));
        Ok(gallery)
    }

    /// The gallery with `options`, reporting progress; stops with [`Error::Cancelled`] when
    /// `cancel` is set. Every unit of the layer is listed; those outside `options.units` are
    /// left to compute later.
    pub fn gallery_with(
        &self,
        options: &GalleryOptions,
        progress: &mut dyn FnMut(GalleryProgress),
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Gallery> {
        if self.units == 0 {
            return Err(Error::Message(format!(
                "{} ({}) has output shape {:?}: no units to show",
                self.name, self.op, self.shape
            )));
        }
        let wanted: Vec<usize> = match &options.units {
            Some(u) => u.clone(),
            None => (0..self.units).collect(),
        };
        if let Some(&bad) = wanted.iter().find(|&&u| u >= self.units) {
            return Err(Error::Message(format!(
                "{}:{bad}: no such unit ({} has {} units)",
                self.name, self.name, self.units
            )));
        }
        let mut units: Vec<GalleryUnit> = (0..self.units)
            .map(|index| GalleryUnit {
                index,
                image: None,
                activation: None,
            })
            .collect();
        self.gallery_units(options, &wanted, progress, cancel, &mut |batch| {
            for u in batch {
                let index = u.index;
                units[index] = u;
            }
        })?;
        Ok(Gallery {
            model: self.model().source(),
            layer: self.name.clone(),
            op: self.op.clone(),
            shape: self.shape.clone(),
            units,
            unit_value: self.unit_value(),
            thumbnail: options.thumbnail,
            steps: options.feature_vis.steps,
            seed: options.feature_vis.seed,
            tabs: TABS
                .iter()
                .map(|t| t.header("{unit}", &self.name, &view_options(options)))
                .collect(),
            cell_tab: CELL_TAB,
            live: super::live::register(std::sync::Arc::new(LiveGallery {
                layer: self.clone(),
                options: options.clone(),
            })),
            provenance: Provenance::of(self.model()).technique(
                "feature-vis",
                &self.name,
                &options.feature_vis,
            ),
        })
    }

    /// Computes the gallery cells of `units` in batches of `options.batch`, handing each batch
    /// to `on_batch` as soon as it is done.
    pub(crate) fn gallery_units(
        &self,
        options: &GalleryOptions,
        units: &[usize],
        progress: &mut dyn FnMut(GalleryProgress),
        cancel: Option<&std::sync::atomic::AtomicBool>,
        on_batch: &mut dyn FnMut(Vec<GalleryUnit>),
    ) -> Result<()> {
        if !(1..=THUMBNAIL_MOST).contains(&options.thumbnail) {
            return Err(Error::Message(format!(
                "gallery of {}: a thumbnail of {} px; thumbnails take 1 to {THUMBNAIL_MOST} px",
                self.name, options.thumbnail
            )));
        }
        let fv = &options.feature_vis;
        let mut done = 0;
        for chunk in units.chunks(options.batch.max(1)) {
            let v = fv.run_with(
                self.model(),
                &self.name,
                chunk,
                &mut |p| {
                    progress(GalleryProgress {
                        done,
                        total: units.len(),
                        batch: chunk.len(),
                        step: p.step,
                        steps: p.total,
                    })
                },
                cancel,
            )?;
            let d = v.images.dims();
            let per = d[1] * d[2] * d[3];
            let pixels = v.images.to_vec();
            let batch = chunk
                .iter()
                .zip(&v.activations)
                .enumerate()
                .map(|(i, (&index, &a))| {
                    let image = Planar {
                        data: &pixels[i * per..(i + 1) * per],
                        channels: d[1],
                        height: d[2],
                        width: d[3],
                    };
                    GalleryUnit {
                        index,
                        image: Some(thumbnail(&image, options.thumbnail)),
                        activation: Some(a),
                    }
                })
                .collect();
            done += chunk.len();
            on_batch(batch);
        }
        progress(GalleryProgress {
            done: units.len(),
            total: units.len(),
            batch: 0,
            step: 0,
            steps: 1,
        });
        Ok(())
    }
}

impl Gallery {
    /// The plain-text summary (the `text/plain` fallback).
    pub fn summary(&self) -> String {
        let mut best: Vec<&GalleryUnit> = self
            .units
            .iter()
            .filter(|u| u.activation.is_some())
            .collect();
        best.sort_by(|a, b| {
            b.activation
                .unwrap_or(0.0)
                .total_cmp(&a.activation.unwrap_or(0.0))
        });
        let top: Vec<String> = best
            .iter()
            .take(5)
            .map(|u| format!("{} ({:.3})", u.index, u.activation.unwrap_or(0.0)))
            .collect();
        let computed = best.len();
        format!(
            "Gallery of {} ({}, {:?}) in {}: {} units ({computed} computed), feature \
             visualization {} steps, seed {}; strongest: {}\n{}",
            self.layer,
            self.op,
            self.shape,
            self.model,
            self.units.len(),
            self.steps,
            self.seed,
            top.join(", "),
            note_line(&self.unit_value)
        )
    }
}

/// A layer's summary card: name, op, output shape, units, parameters.
#[derive(Clone, Debug, Serialize)]
pub struct LayerCard {
    pub model: String,
    pub layer: String,
    pub op: String,
    pub shape: Vec<usize>,
    pub units: usize,
    /// What a unit's value is, where it is not its map's mean ([`Layer::unit_value`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_value: Option<String>,
    pub params: usize,
    pub code: String,
    pub provenance: Provenance,
}

impl Layer {
    /// The card a layer displays as.
    pub fn card(&self) -> LayerCard {
        LayerCard {
            model: self.model().source(),
            layer: self.name.clone(),
            op: self.op.clone(),
            shape: self.shape.clone(),
            units: self.units,
            unit_value: self.unit_value(),
            params: self.params,
            code: format!("model.layer({:?})?.gallery()?", self.name),
            provenance: Provenance::of(self.model()),
        }
    }

    /// Rich display in evcxr-based notebooks.
    pub fn evcxr_display(&self) {
        super::evcxr_print(&self.card());
    }
}

impl LayerCard {
    /// The plain-text summary (the `text/plain` fallback).
    pub fn summary(&self) -> String {
        format!(
            "Layer {} ({}) of {}: output {:?}, {} units, {} parameters\n{}",
            self.layer,
            self.op,
            self.model,
            self.shape,
            self.units,
            self.params,
            note_line(&self.unit_value)
        )
    }
}

/// A text summary's line for what a unit's value is, if it says.
fn note_line(unit_value: &Option<String>) -> String {
    unit_value
        .as_ref()
        .map_or(String::new(), |note| format!("({note})\n"))
}

/// The tab a gallery's cells are: the feature visualization of each unit.
pub const CELL_TAB: &str = "feature-vis";

/// The unit-view settings of a gallery's units: its own feature visualization, defaults else.
fn view_options(options: &GalleryOptions) -> ViewOptions {
    ViewOptions {
        feature_vis: options.feature_vis.clone(),
        ..ViewOptions::default()
    }
}

/// What a live gallery computes against: its layer and settings.
struct LiveGallery {
    layer: Layer,
    options: GalleryOptions,
}

/// A live gallery's requests.
#[derive(serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum GalleryRequest {
    /// Those units' cells, one `units` reply per finished batch.
    Units { units: Vec<usize> },
    /// One tab of a unit's view (`tab`: an id of [`super::unit_view::TABS`]), as a `tab` reply.
    Tab { unit: usize, tab: String },
}

impl super::live::Answer for LiveGallery {
    fn answer(
        &self,
        request: &serde_json::Value,
        cancel: &std::sync::atomic::AtomicBool,
        reply: &dyn Fn(Reply),
    ) -> Result<()> {
        let layer = &self.layer;
        let unit_arg = |u: usize| -> Result<usize> {
            if u < layer.units {
                Ok(u)
            } else {
                Err(Error::Message(format!(
                    "{}: no unit {u} ({} units)",
                    layer.name, layer.units
                )))
            }
        };
        match super::live::parse_request(request, "gallery")? {
            GalleryRequest::Units { units } => {
                let units: Vec<usize> = units.into_iter().map(unit_arg).collect::<Result<_>>()?;
                let mut throttle = Throttle::default();
                layer.gallery_units(
                    &self.options,
                    &units,
                    &mut |p| {
                        if throttle.ready() {
                            reply(Reply::Progress {
                                fraction: Some(f64::from(p.fraction())),
                                label: format!("{} of {} units", p.done, p.total),
                            });
                        }
                    },
                    Some(cancel),
                    &mut |batch| reply(Reply::with(batch, |units| Reply::Units { units })),
                )
            }
            GalleryRequest::Tab { unit, tab } => {
                let unit = layer.unit(unit_arg(unit)?)?;
                reply(Reply::Progress {
                    fraction: None,
                    label: format!("computing {tab} of {unit}"),
                });
                let computed = unit.view_tab(&tab, &view_options(&self.options))?;
                let index = unit.index();
                reply(Reply::with(computed, |tab| Reply::Tab { unit: index, tab }));
                Ok(())
            }
        }
    }
}
