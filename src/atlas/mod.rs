//! Atlas: a whole model as a static, linkable site (`microscope atlas`), computed in shards.
//!
//! ```text
//! DIR/index.html              the layer graph; each layer links to its page
//! DIR/<layer>/index.html      the layer's gallery; each unit links to its page
//! DIR/<layer>/<unit>.html     the unit's view, every tab, with links to its neighbours
//! DIR/assets/                 the component library and styles, shared by every page
//! DIR/store/                  the results, content-addressed (the technique cache's format)
//! ```
//!
//! The work is the layers' units in batches ([`plan`]). A batch's results, its gallery cells
//! (one batched feature visualization) and each of its units' views, go to the store as soon as
//! each is done, under keys that hash everything they depend on. Processes on any number of
//! machines that share `DIR` each compute their [`Shard`]; a run without a shard computes what
//! is missing and then writes the pages ([`site`]) from the store alone, so a site is the same,
//! byte for byte, however its work was split. An interrupted run loses at most the result in
//! progress.

pub mod estimate;
pub mod plan;
pub mod site;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use plan::{Batch, Shard};

use crate::error::{Error, Result};
use crate::model::{Layer, Model};
use crate::provenance::Provenance;
use crate::technique::cache::Cache;
use crate::technique::render;
use crate::technique::FeatureVis;
use crate::widget::gallery::GalleryUnit;
use crate::widget::{GalleryOptions, ViewOptions, Widget};

/// What an atlas shows, and with which settings.
#[derive(Clone, Debug)]
pub struct Atlas {
    pub model: Model,
    pub layers: Vec<Layer>,
    /// The galleries' settings (their feature visualization, batch size, thumbnails).
    pub gallery: GalleryOptions,
    /// The unit views' settings (the same feature visualization).
    pub view: ViewOptions,
    /// The site's folder.
    pub dir: PathBuf,
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Batches in this run's share of the work.
    pub batches: usize,
    pub units: usize,
    /// Batches of which something had to be computed (the others were all in the store).
    pub computed: usize,
    /// Results computed: gallery batches and unit views.
    pub galleries: usize,
    pub views: usize,
}

/// Progress of a run: units done of its share, and the expected time left.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub elapsed: f64,
    /// Seconds, from the cost of what was computed so far (`None` before anything was).
    pub left: Option<f64>,
}

impl Progress {
    /// `40/96 units · 1:20 elapsed · about 1:50 left`.
    pub fn line(&self) -> String {
        let left = self
            .left
            .map_or(String::new(), |s| format!(" · about {} left", clock(s)));
        format!(
            "{}/{} units · {} elapsed{left}",
            self.done,
            self.total,
            clock(self.elapsed)
        )
    }
}

/// Seconds as `m:ss` (or `h:mm:ss`).
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The layers an atlas shows unless told which: every node computed from the image's values,
/// except those that only rearrange another layer's units ([`OpSpec::rearranges`]: Flatten,
/// Reshape, ...). Nodes computed from shapes and constants alone (Shape, Range, ...) have no
/// gradient toward the image, so nothing to visualize.
///
/// [`OpSpec::rearranges`]: crate::network::ops::OpSpec::rearranges
pub fn default_layers(model: &Model) -> Result<Vec<String>> {
    let network = model.network();
    let image = network.image_input()?.name.as_str();
    Ok(network
        .nodes()
        .iter()
        .zip(network.computed_from(&[image]))
        .filter(|(node, computed)| {
            *computed && !crate::network::ops::spec(&node.op).is_some_and(|s| s.rearranges)
        })
        .map(|(node, _)| node.name.clone())
        .collect())
}

/// Folder names the site keeps for itself: no layer's folder takes them.
pub const RESERVED: [&str; 3] = ["index.html", "assets", "store"];

impl Atlas {
    /// The atlas of `layers` of `model` (every layer with units when `None`), feature
    /// visualizations made by `feature_vis` (its cache is not used: results go to the
    /// atlas's store), written to `dir`.
    pub fn new(
        model: &Model,
        layers: Option<&[String]>,
        feature_vis: &FeatureVis,
        batch: usize,
        dir: &Path,
    ) -> Result<Atlas> {
        let names: Vec<String> = match layers {
            Some(names) => names.to_vec(),
            None => default_layers(model)?,
        };
        let mut chosen = Vec::new();
        for name in &names {
            let layer = model.layer(name)?;
            if layer.units > 0 {
                chosen.push(layer);
            } else if layers.is_some() {
                return Err(Error::Message(format!(
                    "{name} ({}) has output shape {:?}: no units for an atlas",
                    layer.op, layer.shape
                )));
            }
        }
        if chosen.is_empty() {
            return Err(Error::Message(format!(
                "{}: no layer with units to show",
                model.source()
            )));
        }
        let feature_vis = feature_vis.clone().cache(None);
        Ok(Atlas {
            model: model.clone(),
            layers: chosen,
            gallery: GalleryOptions {
                feature_vis: feature_vis.clone(),
                batch: batch.max(1),
                ..GalleryOptions::default()
            },
            view: ViewOptions {
                feature_vis,
                ..ViewOptions::default()
            },
            dir: dir.to_path_buf(),
        })
    }

    /// The store of results, `DIR/store`.
    pub fn store(&self) -> Cache {
        Cache::store(self.dir.join("store"))
    }

    /// Every batch of the atlas, in order.
    pub fn batches(&self) -> Result<Vec<Batch>> {
        plan::batches(&self.model, &self.layers, self.gallery.batch)
    }

    /// The batches of `shard` (all of them for `None`).
    pub fn share(&self, shard: Option<Shard>) -> Result<Vec<Batch>> {
        let all = self.batches()?;
        Ok(match shard {
            None => all,
            Some(s) => {
                let owner = plan::assign(&all, s.count);
                all.into_iter()
                    .zip(owner)
                    .filter(|(_, o)| *o == s.index)
                    .map(|(b, _)| b)
                    .collect()
            }
        })
    }

    /// What every key depends on besides its own parts: the model's digest and dataset, the
    /// backend (with its revision, [`render::pixels_backend`]), the crate's version.
    fn context(&self) -> String {
        let mut p = Provenance::of(&self.model);
        p.backend = render::pixels_backend(self.model.network().device()).to_string();
        serde_json::to_string(&p).expect("provenance is plain data")
    }

    /// The store key of a batch's gallery cells.
    pub fn gallery_key(&self, batch: &Batch) -> String {
        Cache::key(&[
            "atlas-gallery",
            &self.context(),
            &self.layers[batch.layer].name,
            &format!("{:?}", batch.units),
            &json(&self.gallery.feature_vis),
            &self.gallery.thumbnail.to_string(),
        ])
    }

    /// The store key of a unit's view.
    pub fn view_key(&self, layer: &Layer, unit: usize) -> String {
        Cache::key(&[
            "atlas-unit-view",
            &self.context(),
            &layer.name,
            &unit.to_string(),
            &json(&self.view.feature_vis),
            &json(&self.view),
        ])
    }

    /// Computes what is missing from the store of `shard`'s batches (of every batch for
    /// `None`), each result stored as soon as it is done, reporting progress.
    pub fn compute(
        &self,
        shard: Option<Shard>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Report> {
        let store = self.store();
        // A shard killed mid-write leaves a temporary file; an hour on, none is still written.
        store.remove_abandoned(std::time::Duration::from_secs(3600));
        let share = self.share(shard)?;
        let total: usize = share.iter().map(|b| b.units.len()).sum();
        let remaining: f64 = share.iter().map(|b| b.cost).sum();
        let mut report = Report {
            batches: share.len(),
            units: total,
            ..Report::default()
        };
        let start = Instant::now();
        let (mut done, mut spent, mut left_cost) = (0usize, 0.0f64, remaining);
        let mut tell = |done: usize, spent: f64, left_cost: f64| {
            let elapsed = start.elapsed().as_secs_f64();
            let left = (spent > 0.0).then(|| elapsed / spent * left_cost);
            progress(&Progress {
                done,
                total,
                elapsed,
                left,
            });
        };
        tell(0, 0.0, remaining);
        for batch in &share {
            let layer = &self.layers[batch.layer];
            let per_unit = batch.cost / batch.units.len().max(1) as f64;
            let mut computed = false;
            let key = self.gallery_key(batch);
            if store.get(&key).is_none() {
                let mut cells: Vec<GalleryUnit> = Vec::new();
                layer.gallery_units(&self.gallery, &batch.units, &mut |_| {}, None, &mut |b| {
                    cells.extend(b)
                })?;
                store.put(&key, json(&cells).as_bytes())?;
                report.galleries += 1;
                computed = true;
            }
            for &u in &batch.units {
                let key = self.view_key(layer, u);
                if store.get(&key).is_none() {
                    let view = layer.unit(u)?.view_with(&self.view)?;
                    store.put(&key, json(&view.props()).as_bytes())?;
                    report.views += 1;
                    computed = true;
                    spent += per_unit;
                }
                done += 1;
                left_cost -= per_unit;
                tell(done, spent, left_cost);
            }
            report.computed += usize::from(computed);
        }
        Ok(report)
    }
}

/// A settings value as JSON text (a key part, a stored payload).
fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}
