//! Dataset examples: for each unit, the inputs of a dataset that activate it most (top-k) and
//! least (bottom-k), found in one streaming pass with O(k · units) memory, each with the crop
//! of the input around the unit's strongest position and the unit's activation map.
//!
//! An input's score for a unit is the maximum of the unit's activation map over positions.

use crate::data::{Dataset, ImageSpec};
use crate::device::{cpu_threads, is_cpu, side_by_side};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::{DynTensor, Reading, TokenGrid};

/// Settings for [`DatasetExamples::run`].
#[derive(Clone, Debug)]
pub struct DatasetExamples {
    /// How many top and bottom examples per unit.
    pub k: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// Side of the square crop around the strongest position, in input pixels (clamped to the
    /// input size).
    pub crop: usize,
    /// Also keep every input's score for every unit (O(inputs · units) memory), e.g. for an
    /// activation histogram.
    pub scores: bool,
}

impl Default for DatasetExamples {
    fn default() -> Self {
        Self {
            k: 9,
            batch: 256,
            crop: 16,
            scores: false,
        }
    }
}

/// One dataset example of one unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// Index of the input in the dataset.
    pub index: usize,
    /// The unit's strongest (top) or weakest (bottom) activation on it.
    pub score: f32,
    /// Where in the activation map, (row, column).
    pub position: (usize, usize),
    /// The unit's map over the input `[h, w]`, row-major, and its (h, w): its activation map;
    /// for a whole input, what [`UnitExamples::heatmap`] says, or empty with (0, 0) where no
    /// map lies over the input (a unit without positions; tokens without a patch grid).
    pub heatmap: Vec<f32>,
    pub map: (usize, usize),
    /// The input around the position, `[C, crop, crop]` in [0, 1] (zero outside the image); for
    /// a unit without positions (a `[N, C]` layer: logits, fully connected), the whole input
    /// `[C, H, W]`, since no part of it stands for the unit more than another.
    pub crop: Vec<f32>,
    /// The crop's (height, width).
    pub crop_size: (usize, usize),
    /// Whether the crop is the whole input (a unit without positions, or of tokens).
    pub whole: bool,
}

/// Top and bottom examples of one unit, strongest first / weakest first.
#[derive(Clone, Debug)]
pub struct UnitExamples {
    pub unit: usize,
    pub top: Vec<Example>,
    pub bottom: Vec<Example>,
    /// Each input's score, in dataset order, when [`DatasetExamples::scores`] is set.
    pub scores: Vec<f32>,
    /// What the heatmaps of whole inputs show, when they have one (tokens on a patch grid).
    pub heatmap: Option<String>,
}

/// How a whole input's heatmap is made from a unit's map, for a layer of tokens on a patch grid
/// ([`TokenGrid`]).
#[derive(Clone, Copy, Debug)]
enum OverInput {
    /// A token layer's unit: its value at each patch token (map `[T, 1]`).
    Tokens(TokenGrid),
    /// An attention head, softmax over the keys (map `[queries, keys]`, read as `p² · keys`):
    /// the class token's weights over the patch keys when the queries are the same tokens and
    /// begin with one, else each key's weight averaged over the queries.
    Attention { grid: TokenGrid, keys: usize },
}

impl OverInput {
    /// For a layer's activation of shape `dims` (as the forward pass gave it) read by
    /// `reading`, on an input of `height × width` pixels.
    fn of(dims: &[usize], reading: Reading, height: usize, width: usize) -> Option<OverInput> {
        match (dims, reading) {
            (&[_, tokens, _], Reading::Values) => {
                TokenGrid::of(tokens, height, width).map(OverInput::Tokens)
            }
            (&[_, _, _, keys], Reading::Softmax { axis, joint: false })
                if axis == -1 || axis == 3 =>
            {
                let grid = TokenGrid::of(keys, height, width)?;
                Some(OverInput::Attention { grid, keys })
            }
            _ => None,
        }
    }

    fn grid(self) -> TokenGrid {
        match self {
            OverInput::Tokens(grid) | OverInput::Attention { grid, .. } => grid,
        }
    }

    /// What the heatmaps show, for the unit view.
    fn describe(self, class_token: bool) -> String {
        let g = self.grid();
        let left_out = match g.skip {
            0 => String::new(),
            1 => " (the first token, a class token, left out)".into(),
            n => format!(" (the first {n}, class, distillation or register tokens, left out)"),
        };
        match self {
            OverInput::Tokens(_) => format!(
                "the unit at each of the {} × {} patch tokens{left_out}",
                g.rows, g.cols
            ),
            OverInput::Attention { .. } if class_token => format!(
                "where the first token (the class token) attends: its weight on each of the {} \
                 × {} patch tokens",
                g.rows, g.cols
            ),
            OverInput::Attention { .. } => format!(
                "the weight each of the {} × {} patch tokens receives, averaged over the \
                 queries{left_out}",
                g.rows, g.cols
            ),
        }
    }

    /// Whether an attention map of `map` (queries, keys) is read from the class token's row.
    fn class_token(self, map: (usize, usize)) -> bool {
        matches!(self, OverInput::Attention { grid, keys } if grid.skip > 0 && map.0 == keys)
    }

    /// The heatmap over the patch grid of one example's unit map `values` of shape `map`.
    fn heatmap(self, values: &[f32], map: (usize, usize)) -> Option<Vec<f32>> {
        let grid = self.grid();
        match self {
            OverInput::Tokens(_) => grid.patches(values).map(<[f32]>::to_vec),
            OverInput::Attention { keys, .. } => {
                let (queries, k) = map;
                if k != keys || values.len() != queries * keys || queries == 0 {
                    return None;
                }
                // The weights back from `p² · keys`.
                let p =
                    |q: usize, key: usize| (values[q * keys + key] / keys as f32).max(0.0).sqrt();
                let per_key: Vec<f32> = if self.class_token(map) {
                    (0..keys).map(|key| p(0, key)).collect()
                } else {
                    (0..keys)
                        .map(|key| (0..queries).map(|q| p(q, key)).sum::<f32>() / queries as f32)
                        .collect()
                };
                grid.patches(&per_key).map(<[f32]>::to_vec)
            }
        }
    }
}

/// The k best entries seen so far, by a score comparison.
struct Best {
    k: usize,
    entries: Vec<Example>,
    higher: bool,
}

impl Best {
    fn better(&self, a: f32, b: f32) -> bool {
        if self.higher {
            a > b
        } else {
            a < b
        }
    }

    /// Whether a score would enter the list (so the caller only builds entries that do).
    fn admits(&self, score: f32) -> bool {
        self.entries.len() < self.k
            || self
                .entries
                .last()
                .is_some_and(|w| self.better(score, w.score))
    }

    fn offer(&mut self, e: Example) {
        let at = self
            .entries
            .partition_point(|x| !self.better(e.score, x.score));
        self.entries.insert(at, e);
        self.entries.truncate(self.k);
    }
}

impl DatasetExamples {
    /// Scans `data` once and returns the examples of `units` of `layer`.
    pub fn run(
        &self,
        model: &Model,
        data: &Dataset,
        layer: &str,
        units: &[usize],
    ) -> Result<Vec<UnitExamples>> {
        for &u in units {
            model.unit(layer, u)?;
        }
        if self.k == 0 || data.is_empty() {
            return Err(Error::Message(format!(
                "{}: nothing to scan (k = {}, {} images)",
                data.name(),
                self.k,
                data.len()
            )));
        }
        let net = model.network();
        // Pixels in [0, 1] at the model's size; `Model::normalize` applies its mean and std.
        let spec = {
            let s = model.input_spec()?;
            ImageSpec::unit(s.channels, s.height, s.width)
        };
        let device = net.device().burn().clone();
        let input = net.image_input()?.name.clone();
        let mut tops: Vec<Best> = units
            .iter()
            .map(|_| Best {
                k: self.k,
                entries: vec![],
                higher: true,
            })
            .collect();
        let mut bottoms: Vec<Best> = units
            .iter()
            .map(|_| Best {
                k: self.k,
                entries: vec![],
                higher: false,
            })
            .collect();
        let mut scores: Vec<Vec<f32>> = vec![Vec::new(); units.len()];
        let mut map_size = (0, 0);
        let mut tokens = false;
        let mut over_input = None;
        // `batch` images a pass, fewer where that many would not fit the memory available (the
        // same scores, in more passes). On the CPU the passes run in lanes side by side, one per
        // thread with a pool of its own, each pass of at most `LANE_PASS_BYTES`, as input
        // attribution's points do (one pool of 2 threads ran much of each pass on one thread,
        // and a batch of large images made tensors too large for the allocator to reuse).
        let cpu = is_cpu(&device);
        let (batch, lanes) = match super::render::available_memory(model) {
            Some(available) => {
                let per_image = super::render::one_image_fits(
                    model,
                    &format!("dataset examples of {layer}"),
                    &[layer.to_string()],
                    [spec.height, spec.width],
                    available,
                    &format!("an image of {}×{} px", spec.height, spec.width),
                    "scan on a machine with more memory",
                )?;
                let fit = super::render::fit_count(per_image, available);
                if cpu {
                    let lanes = cpu_threads(&device).min(fit).max(1);
                    let pass = self
                        .batch
                        .min(super::render::lane_pass(per_image))
                        .min(fit / lanes);
                    (pass.max(1), lanes)
                } else {
                    (self.batch.max(1).min(fit), 1)
                }
            }
            // As many images at once as one pass of `batch` held.
            None if cpu => {
                let lanes = cpu_threads(&device).min(self.batch).max(1);
                ((self.batch / lanes).max(1), lanes)
            }
            None => (self.batch.max(1), 1),
        };
        let round = batch.saturating_mul(lanes);
        for first in (0..data.len()).step_by(round) {
            if crate::interrupt::requested() {
                return Err(Error::Cancelled {
                    what: format!("dataset examples of {layer}"),
                    step: first,
                });
            }
            let last = first.saturating_add(round).min(data.len());
            let mut passes: Vec<std::ops::Range<usize>> = (first..last)
                .step_by(batch)
                .map(|s| s..s.saturating_add(batch).min(last))
                .collect();
            let acts = side_by_side(&device, &mut passes, |range| -> Result<DynTensor> {
                let x = data.batch(range.clone(), &spec, &device)?;
                let act = net.forward(&[(&input, model.normalize(&x)?)], &[layer])?;
                Ok(super::per_image(&[layer], act, range.len())?.remove(0))
            });
            for (range, act) in passes.iter().zip(acts) {
                let (start, end) = (range.start, range.end);
                let act = act?;
                // Tokens `[N, T, C]` are seen as `[N, C, T, 1]`: a unit's map over tokens. The
                // map of attention weights is over queries and keys, not over the image.
                let reading = net.reading(layer);
                tokens = act.dims().len() == 3 || reading.span(&act.dims()).is_some();
                over_input = OverInput::of(&act.dims(), reading, spec.height, spec.width);
                let act = DynTensor::new(act.to_unit_maps(reading)?);
                let [_, c, h, w] = act.dims()[..] else {
                    unreachable!("to_nchw gives rank 4")
                };
                map_size = (h, w);
                let values = act.to_vec();
                for (i, item) in (start..end).enumerate() {
                    for (slot, &u) in units.iter().enumerate() {
                        let map = &values[(i * c + u) * h * w..(i * c + u + 1) * h * w];
                        let (arg_max, max) = extreme(map, f32::gt);
                        let (arg_min, min) = extreme(map, f32::lt);
                        if self.scores {
                            scores[slot].push(max);
                        }
                        let entry = |score: f32, at: usize| Example {
                            index: item,
                            score,
                            position: (at / w, at % w),
                            heatmap: map.to_vec(),
                            map: (h, w),
                            crop: Vec::new(),
                            crop_size: (0, 0),
                            whole: false,
                        };
                        if tops[slot].admits(max) {
                            tops[slot].offer(entry(max, arg_max));
                        }
                        if bottoms[slot].admits(min) {
                            bottoms[slot].offer(entry(min, arg_min));
                        }
                    }
                }
            }
        }
        let crop = self.crop.min(spec.height).min(spec.width).max(1);
        // No crop stands for a unit without positions, nor (without the token grid's geometry)
        // for a token layer's unit or an attention head's: their examples are whole inputs.
        let whole = map_size == (1, 1) || tokens;
        let over_input = over_input.filter(|_| whole);
        let mut out = Vec::with_capacity(units.len());
        for (((&unit, top), bottom), scores) in units.iter().zip(tops).zip(bottoms).zip(scores) {
            let finish = |mut list: Vec<Example>| -> Result<Vec<Example>> {
                for e in &mut list {
                    let image = data.batch(e.index..e.index + 1, &spec, &device)?.to_vec();
                    if whole {
                        e.crop = image;
                        e.crop_size = (spec.height, spec.width);
                        e.whole = true;
                        let map = over_input.and_then(|o| Some((o.heatmap(&e.heatmap, e.map)?, o)));
                        (e.heatmap, e.map) = match map {
                            Some((m, o)) => (m, (o.grid().rows, o.grid().cols)),
                            None => (Vec::new(), (0, 0)),
                        };
                        continue;
                    }
                    e.crop = crop_around(
                        &image,
                        spec.channels,
                        spec.height,
                        spec.width,
                        e.position,
                        map_size,
                        crop,
                    );
                    e.crop_size = (crop, crop);
                }
                Ok(list)
            };
            let heatmap = over_input.map(|o| o.describe(o.class_token(map_size)));
            out.push(UnitExamples {
                unit,
                top: finish(top.entries)?,
                bottom: finish(bottom.entries)?,
                scores,
                heatmap,
            });
        }
        Ok(out)
    }
}

/// Index and value of the first extreme element under `better`.
fn extreme(map: &[f32], better: fn(&f32, &f32) -> bool) -> (usize, f32) {
    map.iter().enumerate().fold(
        (0, map[0]),
        |(bi, bv), (i, v)| if better(v, &bv) { (i, *v) } else { (bi, bv) },
    )
}

/// The `[C, size, size]` window of an image `[C, H, W]` centred on the input point under
/// activation position `pos` of a `map` grid.
fn crop_around(
    image: &[f32],
    c: usize,
    h: usize,
    w: usize,
    pos: (usize, usize),
    map: (usize, usize),
    size: usize,
) -> Vec<f32> {
    let centre =
        |p: usize, m: usize, full: usize| ((p as f32 + 0.5) * full as f32 / m.max(1) as f32) as i64;
    let (cy, cx) = (centre(pos.0, map.0, h), centre(pos.1, map.1, w));
    let (y0, x0) = (cy - size as i64 / 2, cx - size as i64 / 2);
    let mut out = vec![0.0; c * size * size];
    for ch in 0..c {
        for y in 0..size {
            for x in 0..size {
                let (sy, sx) = (y0 + y as i64, x0 + x as i64);
                if (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx) {
                    out[(ch * size + y) * size + x] =
                        image[(ch * h + sy as usize) * w + sx as usize];
                }
            }
        }
    }
    out
}
