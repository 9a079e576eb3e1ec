//! `microscope atlas --plan`: each shard's batches, units and expected time, from a few timed
//! steps of each layer on this machine, before anything long starts.
//!
//! A gallery batch and a unit view are each timed at two small step counts and extrapolated
//! along the line through them: the feature visualizations grow with the steps, the rest of a
//! view (DeepDream, attributions) does not.

use std::time::Instant;

use super::plan::assign;
use super::Atlas;
use crate::error::Result;
use crate::widget::{GalleryOptions, ViewOptions};

/// Step counts the estimate is timed at.
pub const TIMED_STEPS: [usize; 2] = [2, 4];

/// The measured cost of one layer's work, at the atlas's steps.
#[derive(Clone, Debug)]
pub struct LayerTime {
    pub name: String,
    pub units: usize,
    pub batches: usize,
    /// Seconds for a full batch's gallery cells.
    pub gallery: f64,
    /// Seconds for one unit's view.
    pub view: f64,
}

/// One shard's share.
#[derive(Clone, Debug)]
pub struct ShardPlan {
    pub batches: usize,
    pub units: usize,
    pub seconds: f64,
}

/// The plan of an atlas's work over some shards.
#[derive(Clone, Debug)]
pub struct Plan {
    pub source: String,
    pub steps: usize,
    pub batch: usize,
    pub backend: String,
    pub layers: Vec<LayerTime>,
    pub shards: Vec<ShardPlan>,
}

/// `t(steps)` on the line through the timings at [`TIMED_STEPS`], never below the larger one.
fn extrapolate(times: [f64; 2], steps: usize) -> f64 {
    let [a, b] = TIMED_STEPS.map(|s| s as f64);
    let slope = ((times[1] - times[0]) / (b - a)).max(0.0);
    times[1] + slope * (steps as f64 - b).max(0.0)
}

impl Atlas {
    /// Times each layer's work and splits it over `shards` as a sharded run would.
    pub fn plan(&self, shards: usize) -> Result<Plan> {
        let steps = self.gallery.feature_vis.steps;
        let batches = self.batches()?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let first: Vec<usize> = (0..layer.units.min(self.gallery.batch)).collect();
            let mut gallery = [0.0; 2];
            let mut view = [0.0; 2];
            for (i, k) in TIMED_STEPS.into_iter().enumerate() {
                let fv = self.gallery.feature_vis.clone().steps(k);
                let options = GalleryOptions {
                    feature_vis: fv.clone(),
                    ..self.gallery.clone()
                };
                let start = Instant::now();
                layer.gallery_units(&options, &first, &mut |_| {}, None, &mut |_| {})?;
                gallery[i] = start.elapsed().as_secs_f64() * self.gallery.batch as f64
                    / first.len().max(1) as f64;
                let options = ViewOptions {
                    feature_vis: fv,
                    ..self.view.clone()
                };
                let start = Instant::now();
                layer.unit(0)?.view_with(&options)?;
                view[i] = start.elapsed().as_secs_f64();
            }
            layers.push(LayerTime {
                name: layer.name.clone(),
                units: layer.units,
                batches: batches.iter().filter(|b| b.layer == l).count(),
                gallery: extrapolate(gallery, steps),
                view: extrapolate(view, steps),
            });
        }
        let shards = shards.max(1);
        let owner = assign(&batches, shards);
        let mut plans = vec![
            ShardPlan {
                batches: 0,
                units: 0,
                seconds: 0.0,
            };
            shards
        ];
        for (b, s) in batches.iter().zip(owner) {
            let t = &layers[b.layer];
            let n = b.units.len();
            let plan = &mut plans[s];
            plan.batches += 1;
            plan.units += n;
            plan.seconds += t.gallery * n as f64 / self.gallery.batch as f64 + t.view * n as f64;
        }
        Ok(Plan {
            source: self.model.source(),
            steps,
            batch: self.gallery.batch,
            backend: self.model.network().device().kind().to_string(),
            layers,
            shards: plans,
        })
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let units: usize = self.layers.iter().map(|l| l.units).sum();
        let batches: usize = self.layers.iter().map(|l| l.batches).sum();
        writeln!(
            f,
            "atlas plan: {}, {} layers, {units} units in {batches} batches of up to {}, {} steps \
             (timed at {:?} steps on {})",
            self.source,
            self.layers.len(),
            self.batch,
            self.steps,
            TIMED_STEPS,
            self.backend
        )?;
        let width = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "{:<width$}  {:>6}  {:>7}  {:>14}  {:>10}",
            "layer", "units", "batches", "gallery batch", "unit view"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<width$}  {:>6}  {:>7}  {:>12.2} s  {:>8.2} s",
                l.name, l.units, l.batches, l.gallery, l.view
            )?;
        }
        writeln!(
            f,
            "{:<9}  {:>7}  {:>6}  estimated time",
            "shard", "batches", "units"
        )?;
        let n = self.shards.len();
        for (i, s) in self.shards.iter().enumerate() {
            writeln!(
                f,
                "{:<9}  {:>7}  {:>6}  {}",
                format!("{i}/{n}"),
                s.batches,
                s.units,
                super::clock(s.seconds)
            )?;
        }
        let total: f64 = self.shards.iter().map(|s| s.seconds).sum();
        writeln!(
            f,
            "{:<9}  {:>7}  {:>6}  {} (one process)",
            "total",
            batches,
            units,
            super::clock(total)
        )
    }
}
