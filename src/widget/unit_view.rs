//! `UnitView`: everything about one unit, one tab per technique (what `unit.view()` shows).
//!
//! A technique that cannot run for this unit (no dataset attached, an op the linearized path
//! does not support) gives a tab that says why, not a failed view.

use serde::Serialize;

use super::image::{heatmap, png, pngs, thumbnail, Planar, Scale};
use super::plot::histogram_svg;
use super::progress::ProgressDisplay;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Model, Unit};
use crate::network::DynTensor;
use crate::provenance::Provenance;
use crate::technique::attribution::{attribution, Target};
use crate::technique::caricature::Caricature;
use crate::technique::dataset_examples::{DatasetExamples, Example, UnitExamples};
use crate::technique::deepdream::DeepDream;
use crate::technique::input_attribution::{
    methods_for, InputAttribution, InputMap, MethodSpec, Scope, METHODS,
};
use crate::technique::weights::{
    expanded_weights, first_layer_filters, own_layer, previous_spatial_layer, strongest_inputs,
};
use crate::technique::{FeatureVis, NeuronGroups, Visualization};

/// What a unit view computes, and how. They serialize as the view's parameters in its
/// provenance (the feature visualization's settings as a record of their own, first).
#[derive(Clone, Debug, Serialize)]
pub struct ViewOptions {
    #[serde(skip)]
    pub feature_vis: FeatureVis,
    /// Images in the diversity tab (0: none).
    pub diversity_samples: usize,
    /// Weight of the diversity term for those samples.
    pub diversity_weight: f32,
    /// Top and bottom dataset examples shown.
    pub examples: usize,
    pub deepdream: DeepDream,
    /// How many of the previous layer's strongest units the weights tab shows.
    pub weights: usize,
    /// The image for the attribution tab (`[1, C, H, W]` in [0, 1]); by default the unit's top
    /// dataset example, or its feature visualization without a dataset.
    #[serde(serialize_with = "crate::provenance::image_shape")]
    pub attribution_image: Option<DynTensor>,
    /// The image for the caricature tab (`[1, C, S, S]` in [0, 1]); by default the unit's top
    /// dataset example, or its feature visualization without a dataset. Its steps, seed and
    /// cache are those of `feature_vis`.
    #[serde(serialize_with = "crate::provenance::image_shape")]
    pub caricature_image: Option<DynTensor>,
    /// The attribution tab's input attributions (every method of
    /// [`crate::technique::input_attribution::METHODS`]).
    pub input_attribution: InputAttribution,
    /// How many groups the neuron-groups tab factorizes the layer into.
    pub neuron_groups: usize,
}

impl Default for ViewOptions {
    fn default() -> Self {
        Self {
            feature_vis: FeatureVis::default(),
            diversity_samples: 4,
            diversity_weight: 1.0,
            examples: 6,
            deepdream: DeepDream::default(),
            weights: 8,
            attribution_image: None,
            caricature_image: None,
            // Lighter than the technique's defaults, so that the tab stays quick on an
            // ImageNet model on a CPU (Integrated Gradients triples its steps at most once); the
            // tab shows Integrated Gradients' completeness gap.
            input_attribution: InputAttribution::default()
                .steps(32)
                .max_steps(96)
                .samples(16),
            neuron_groups: 4,
        }
    }
}

/// One image of a tab, with a caption.
#[derive(Clone, Debug, Serialize)]
pub struct Picture {
    pub src: String,
    pub caption: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExampleCard {
    /// The crop around the strongest position.
    pub crop: String,
    /// The whole input, and the unit's activation map over it (empty for a unit without
    /// positions, whose crop is the whole input).
    pub image: String,
    pub heatmap: String,
    pub score: f32,
    pub index: usize,
    pub label: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WeightCard {
    pub unit: usize,
    /// Expanded weights to this unit, cropped to the receptive field (diverging colours).
    pub weights: String,
    /// The source unit's feature visualization, when computed.
    pub feature_vis: Option<String>,
    pub norm: f32,
    pub sum: f32,
}

/// One input attribution method's heatmap over the attribution tab's image.
#[derive(Clone, Debug, Serialize)]
pub struct InputHeatmap {
    pub id: &'static str,
    pub title: &'static str,
    pub about: &'static str,
    pub caveat: &'static str,
    /// At the image's size, drawn over it.
    pub heatmap: String,
    /// Its settings and, where it has them, its completeness gap or layer.
    pub note: String,
}

/// One neuron group: where it fires over the image, and its direction's feature visualization.
#[derive(Clone, Debug, Serialize)]
pub struct GroupCard {
    pub place: Picture,
    pub drawn: Picture,
    /// The group in which the view's unit weighs most, or (for a unit after the groups' layer)
    /// the one that supports it most.
    pub mine: bool,
    /// For a unit after the groups' layer: the group's contribution to it (activation ×
    /// gradient).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChannelScore {
    pub unit: usize,
    pub score: f32,
}

/// A tab's content.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind")]
pub enum Body {
    FeatureVis {
        positive: Picture,
        negative: Picture,
        diversity: Vec<Picture>,
    },
    DatasetExamples {
        top: Vec<ExampleCard>,
        bottom: Vec<ExampleCard>,
        /// What the heatmaps of whole inputs show (tokens on a patch grid).
        #[serde(skip_serializing_if = "Option::is_none")]
        heatmap: Option<String>,
    },
    DeepDream {
        before: Picture,
        after: Picture,
    },
    Caricature {
        image: Picture,
        caricature: Picture,
        /// Cosine similarity of the two images' activations at the layer.
        similarity: f32,
    },
    NeuronGroups {
        /// Which layer, and the unit's place in it.
        note: String,
        image: Picture,
        groups: Vec<GroupCard>,
    },
    Weights {
        from: Option<String>,
        cards: Vec<WeightCard>,
    },
    Attribution {
        image: Picture,
        spatial: String,
        at: String,
        value: f32,
        channels: Vec<ChannelScore>,
        /// One heatmap per input attribution method, in the order of its table.
        inputs: Vec<InputHeatmap>,
    },
    Histogram {
        svg: String,
        count: usize,
        mean: f32,
        max: f32,
    },
    /// Not computed; `reason` says why or what to do.
    Unavailable {
        reason: String,
    },
}

/// A tab as a widget's props carry it. The browser code renders the tabs the props list, in
/// their order, with their titles: it names none itself.
#[derive(Clone, Debug, Serialize)]
pub struct Tab {
    pub id: &'static str,
    pub title: &'static str,
    /// One line: what the technique shows.
    pub about: String,
    pub body: Body,
}

/// The unit view of one unit.
#[derive(Clone, Debug, Serialize)]
pub struct UnitView {
    pub model: String,
    pub layer: String,
    pub op: String,
    pub unit: usize,
    pub units: usize,
    pub tabs: Vec<Tab>,
    pub code: String,
    pub provenance: Provenance,
}

fn planar<'a>(data: &'a [f32], dims: &[usize]) -> Planar<'a> {
    let n = dims.len();
    Planar {
        data,
        channels: if n >= 3 { dims[n - 3] } else { 1 },
        height: dims[n.saturating_sub(2)],
        width: dims[n - 1],
    }
}

/// The first image of a tensor of images as a PNG.
fn first_png(images: &DynTensor) -> String {
    pngs(images).into_iter().next().unwrap_or_default()
}

/// One tab of the unit view. [`TABS`] is the only list of them: a unit view computes them in
/// its order and weighs them in its progress bar, a gallery lists them in its props for the
/// unit views it opens, and a live widget asks for one by `id`. Adding a tab is one entry here
/// and one compute function (and a renderer in widgets/unit_view.js when its [`Body`] is new).
#[derive(Debug)]
pub struct TabSpec {
    pub id: &'static str,
    pub title: &'static str,
    /// Its share of a whole view's computing time, for the progress bar (the shares add up to 1).
    pub weight: f32,
    /// One line: what the technique shows for `unit` (`conv3:7`, or `{unit}` for a gallery,
    /// whose browser code puts the clicked unit there), a unit of `layer`.
    about: fn(unit: &str, layer: &str, options: &ViewOptions) -> String,
    /// Computes the tab's content.
    compute: fn(&mut TabContext) -> Result<Body>,
}

/// The tabs of a unit view, in order.
pub static TABS: &[TabSpec] = &[
    TabSpec {
        id: "feature-vis",
        title: "Feature visualization",
        weight: 0.25,
        about: |unit, _, options| {
            let fv = &options.feature_vis;
            format!(
                "Images optimized to excite (positive) or inhibit (negative) {unit}, from noise \
                 ({} steps, seed {}).",
                fv.steps, fv.seed
            )
        },
        compute: |cx| {
            let positive = cx.positive()?.clone();
            feature_vis_tab(cx.unit, cx.options, &positive)
        },
    },
    TabSpec {
        id: "dataset-examples",
        title: "Dataset examples",
        weight: 0.2,
        about: |_, _, _| {
            "The inputs of the attached dataset that activate the unit most and least, cropped \
             around the strongest position; toggle heatmaps to see where it fires."
                .into()
        },
        compute: |cx| {
            let model = cx.unit.model().clone();
            match (cx.examples()?, model.dataset()) {
                (Some(ex), Some(data)) => examples_tab(&model, data, ex),
                _ => Ok(no_dataset()),
            }
        },
    },
    TabSpec {
        id: "deepdream",
        title: "DeepDream",
        weight: 0.1,
        about: |_, layer, options| {
            format!(
                "Gradient ascent on the mean square of {layer} from an input image, over {} \
                 octaves: what the whole layer amplifies.",
                options.deepdream.octaves
            )
        },
        compute: |cx| {
            let image = cx.source_image()?;
            deepdream_tab(cx.unit.model(), cx.options, &image, cx.unit.layer())
        },
    },
    TabSpec {
        id: "caricature",
        title: "Caricature",
        weight: 0.1,
        about: |_, layer, options| {
            format!(
                "An image optimized from noise until {layer}'s activations point the way they do \
                 on the input ({} steps, seed {}): what the whole layer sees in it, exaggerated.",
                options.feature_vis.steps, options.feature_vis.seed
            )
        },
        compute: |cx| {
            let image = match cx.options.caricature_image.clone() {
                Some(image) => image,
                None => cx.source_image()?,
            };
            caricature_tab(cx.unit, cx.options, &image)
        },
    },
    TabSpec {
        id: "neuron-groups",
        title: "Neuron groups",
        weight: 0.1,
        about: |unit, layer, options| {
            format!(
                "{layer}'s activations on the input (after its activation function, when one \
                 follows; for a layer without positions, such as logits, those of the last layer \
                 with positions before it), factorized into {} groups of units that fire \
                 together (non-negative matrix factorization): where each fires, and what it \
                 responds to, its direction drawn by feature visualization ({} steps, seed {}). \
                 Outlined: the group {unit} weighs most in, or from a later layer, the group that \
                 supports {unit} most (integrated gradients from a zero activation there).",
                options.neuron_groups, options.feature_vis.steps, options.feature_vis.seed
            )
        },
        compute: |cx| {
            let image = cx.source_image()?;
            neuron_groups_tab(cx.unit, cx.options, &image)
        },
    },
    TabSpec {
        id: "weights",
        title: "Weights",
        weight: 0.1,
        about: |_, _, _| {
            "Expanded weights from the previous layer's strongest units: the linear path between \
             them (ReLU as identity, max pool as average pool); red excites, blue inhibits."
                .into()
        },
        compute: |cx| weights_tab(cx.unit, cx.options),
    },
    TabSpec {
        id: "attribution",
        title: "Attribution",
        weight: 0.1,
        about: |_, _, _| {
            let titles = |scope: Scope| {
                let t: Vec<&str> = METHODS
                    .iter()
                    .filter(|m| m.scope == scope)
                    .map(|m| m.title)
                    .collect();
                t.join(", ")
            };
            format!(
                "Activation × gradient toward this unit at the previous layer: where in the \
                 image, and through which units, its activation comes from; and input \
                 attributions over the pixels ({}; after attention layers also {}).",
                titles(Scope::Any),
                titles(Scope::Attention)
            )
        },
        compute: |cx| {
            let image = match cx.options.attribution_image.clone() {
                Some(image) => image,
                None => cx.source_image()?,
            };
            attribution_tab(cx.unit, &image, &cx.options.input_attribution)
        },
    },
    TabSpec {
        id: "histogram",
        title: "Histogram",
        weight: 0.05,
        about: |_, _, _| {
            "The unit's strongest activation on each input of the attached dataset.".into()
        },
        compute: |cx| {
            Ok(match cx.examples()? {
                Some(ex) => histogram_tab(&ex.scores),
                None => no_dataset(),
            })
        },
    },
];

/// A tab without its content: what a gallery's props list for the unit views it opens.
#[derive(Clone, Debug, Serialize)]
pub struct TabHeader {
    pub id: &'static str,
    pub title: &'static str,
    pub about: String,
}

impl UnitView {
    /// The tabs that could not be computed for this unit, as (tab id, why).
    pub fn unavailable(&self) -> Vec<(&'static str, &str)> {
        self.tabs
            .iter()
            .filter_map(|t| match &t.body {
                Body::Unavailable { reason } => Some((t.id, reason.as_str())),
                _ => None,
            })
            .collect()
    }
}

impl TabSpec {
    /// The tab `id`, or an error listing the tabs there are.
    pub fn find(id: &str) -> Result<&'static TabSpec> {
        TABS.iter().find(|t| t.id == id).ok_or_else(|| {
            let ids: Vec<&str> = TABS.iter().map(|t| t.id).collect();
            Error::Message(format!(
                "no tab {id:?} in a unit view (tabs: {})",
                ids.join(", ")
            ))
        })
    }

    /// This tab's header for a unit of `layer`: `about` said of `unit`.
    pub fn header(&self, unit: &str, layer: &str, options: &ViewOptions) -> TabHeader {
        TabHeader {
            id: self.id,
            title: self.title,
            about: (self.about)(unit, layer, options),
        }
    }

    /// This tab for a unit of `layer` with `body`: `about` said of `unit`.
    pub fn tab(&self, unit: &str, layer: &str, options: &ViewOptions, body: Body) -> Tab {
        Tab {
            id: self.id,
            title: self.title,
            about: (self.about)(unit, layer, options),
            body,
        }
    }
}

/// What several tabs share, computed once and only when a tab needs it: the positive feature
/// visualization, the dataset examples, the top example as an image.
struct TabContext<'a> {
    unit: &'a Unit,
    options: &'a ViewOptions,
    positive: Option<Visualization>,
    examples: Option<Option<UnitExamples>>,
}

impl<'a> TabContext<'a> {
    fn new(unit: &'a Unit, options: &'a ViewOptions) -> Self {
        Self {
            unit,
            options,
            positive: None,
            examples: None,
        }
    }

    fn positive(&mut self) -> Result<&Visualization> {
        if self.positive.is_none() {
            self.positive = Some(self.options.feature_vis.run(self.unit)?);
        }
        Ok(self.positive.as_ref().expect("just computed"))
    }

    fn examples(&mut self) -> Result<Option<&UnitExamples>> {
        if self.examples.is_none() {
            let model = self.unit.model();
            let ex = model
                .dataset()
                .map(|data| {
                    unit_examples(
                        model,
                        data,
                        self.unit.layer(),
                        self.unit.index(),
                        self.options.examples,
                    )
                })
                .transpose()?;
            self.examples = Some(ex);
        }
        Ok(self.examples.as_ref().and_then(Option::as_ref))
    }

    /// The unit's top dataset example as an image, or else its positive feature visualization.
    fn source_image(&mut self) -> Result<DynTensor> {
        let model = self.unit.model().clone();
        let top = self
            .examples()?
            .and_then(|ex| ex.top.first())
            .map(|e| e.index);
        match (top, model.dataset()) {
            (Some(index), Some(data)) => input_image(&model, data, index),
            _ => Ok(self.positive()?.images.clone()),
        }
    }

    /// Tab `spec`. A technique that fails for this unit gives a tab saying why; a cancelled
    /// computation stops the whole view.
    fn tab(&mut self, spec: &TabSpec) -> Result<Tab> {
        let body = match (spec.compute)(self) {
            Ok(b) => b,
            Err(e @ Error::Cancelled { .. }) => return Err(e),
            Err(e) => Body::Unavailable {
                reason: e.to_string(),
            },
        };
        let unit = self.unit;
        Ok(spec.tab(&unit.to_string(), unit.layer(), self.options, body))
    }
}

impl Unit {
    /// The unit view with default options.
    pub fn view(&self) -> Result<UnitView> {
        self.view_with(&ViewOptions::default())
    }

    /// The unit view with feature visualizations made by `feature_vis`.
    pub fn view_using(&self, feature_vis: &FeatureVis) -> Result<UnitView> {
        self.view_with(&ViewOptions {
            feature_vis: feature_vis.clone(),
            ..ViewOptions::default()
        })
    }

    /// The unit view, computing each tab with `options`, with a live progress bar.
    pub fn view_with(&self, options: &ViewOptions) -> Result<UnitView> {
        let mut bar = ProgressDisplay::start(&format!("unit view of {self}"));
        let view = self.compute_view(options, &mut |fraction, stage| bar.set(fraction, stage))?;
        bar.finish(&format!("{} tabs", TABS.len()));
        Ok(view)
    }

    /// One tab of the unit view (`id` from [`TABS`]), computed alone: what a live widget asks
    /// for when a tab is opened.
    pub fn view_tab(&self, id: &str, options: &ViewOptions) -> Result<Tab> {
        TabContext::new(self, options).tab(TabSpec::find(id)?)
    }

    fn compute_view(
        &self,
        options: &ViewOptions,
        stage: &mut dyn FnMut(f32, &str),
    ) -> Result<UnitView> {
        let model = self.model();
        let layer = model.layer(self.layer())?;
        let (name, u) = (self.layer(), self.index());
        let mut context = TabContext::new(self, options);
        let mut tabs = Vec::with_capacity(TABS.len());
        let mut done = 0.0;
        for spec in TABS {
            stage(done, &spec.title.to_lowercase());
            tabs.push(context.tab(spec)?);
            done += spec.weight;
        }
        Ok(UnitView {
            model: model.source(),
            layer: name.to_string(),
            op: layer.op,
            unit: u,
            units: layer.units,
            tabs,
            code: format!("model.unit({name:?}, {u})?.view()?"),
            provenance: Provenance::of(model)
                .technique("feature-vis", &self.to_string(), &options.feature_vis)
                .technique("caricature", &self.to_string(), &caricature_of(options))
                .technique(
                    "neuron-groups",
                    &self.to_string(),
                    &neuron_groups_of(options),
                )
                .technique("unit-view", &self.to_string(), options),
        })
    }
}

/// An attribution image in a provenance: its shape (the pixels are the user's).
fn no_dataset() -> Body {
    Body::Unavailable {
        reason: "No dataset attached: use model.with_dataset(Dataset::…) first.".into(),
    }
}

fn unit_examples(
    model: &Model,
    data: &Dataset,
    layer: &str,
    unit: usize,
    k: usize,
) -> Result<UnitExamples> {
    let settings = DatasetExamples {
        k: k.max(1),
        scores: true,
        ..DatasetExamples::default()
    };
    settings
        .run(model, data, layer, &[unit])?
        .pop()
        .ok_or_else(|| Error::Message(format!("{layer}:{unit}: no dataset examples")))
}

/// Input `index` of `data` as pixels in [0, 1] at the model's size, `[1, C, H, W]`.
fn input_image(model: &Model, data: &Dataset, index: usize) -> Result<DynTensor> {
    let s = model.input_spec()?;
    let spec = crate::data::ImageSpec::unit(s.channels, s.height, s.width);
    data.batch(index..index + 1, &spec, model.network().device().burn())
}

fn feature_vis_tab(unit: &Unit, options: &ViewOptions, positive: &Visualization) -> Result<Body> {
    let fv = &options.feature_vis;
    let negative = fv.clone().negative(true).run(unit)?;
    let mut diversity = Vec::new();
    if options.diversity_samples > 1 {
        let units = vec![unit.index(); options.diversity_samples];
        let v = fv.clone().diversity(options.diversity_weight).run_units(
            unit.model(),
            unit.layer(),
            &units,
        )?;
        for (src, a) in pngs(&v.images).into_iter().zip(&v.activations) {
            diversity.push(Picture {
                src,
                caption: format!("activation {a:.3}"),
            });
        }
    }
    Ok(Body::FeatureVis {
        positive: Picture {
            src: first_png(&positive.images),
            caption: format!("positive · activation {:.3}", positive.activations[0]),
        },
        negative: Picture {
            src: first_png(&negative.images),
            caption: format!("negative · activation {:.3}", negative.activations[0]),
        },
        diversity,
    })
}

fn example_cards(model: &Model, data: &Dataset, list: &[Example]) -> Result<Vec<ExampleCard>> {
    let spec = model.input_spec()?;
    let side = spec.height.max(spec.width).min(112);
    list.iter()
        .map(|e| {
            let full = input_image(model, data, e.index)?;
            let pixels = full.to_vec();
            let (mh, mw) = e.map;
            let (ch, cw) = e.crop_size;
            let crop = Planar {
                data: &e.crop,
                channels: spec.channels,
                height: ch,
                width: cw,
            };
            // A unit without positions (or of tokens) has the whole input as its example, with
            // a heatmap only where its map lies over the input (tokens on a patch grid).
            let whole = e.whole;
            Ok(ExampleCard {
                crop: if whole {
                    thumbnail(&crop, side)
                } else {
                    png(&crop)
                },
                image: thumbnail(&planar(&pixels, &full.dims()[1..]), side),
                heatmap: if e.heatmap.is_empty() {
                    String::new()
                } else {
                    heatmap(&e.heatmap, mh, mw, Scale::Heat)
                },
                score: e.score,
                index: e.index,
                label: data
                    .labels()
                    .get(e.index)
                    .and_then(|&l| data.classes().get(l))
                    .cloned(),
            })
        })
        .collect()
}

fn examples_tab(model: &Model, data: &Dataset, ex: &UnitExamples) -> Result<Body> {
    Ok(Body::DatasetExamples {
        top: example_cards(model, data, &ex.top)?,
        bottom: example_cards(model, data, &ex.bottom)?,
        heatmap: ex.heatmap.clone(),
    })
}

/// The caricature tab's settings: the feature visualization's steps, seed and cache.
fn caricature_of(options: &ViewOptions) -> Caricature {
    let fv = &options.feature_vis;
    Caricature::default()
        .steps(fv.steps)
        .seed(fv.seed)
        .cache(fv.cache.clone())
}

fn caricature_tab(unit: &Unit, options: &ViewOptions, image: &DynTensor) -> Result<Body> {
    let first = DynTensor::new(image.to_rank::<4>()?.narrow(0, 0, 1));
    let result =
        caricature_of(options).run_with(unit.model(), unit.layer(), &first, &mut |_| {}, None)?;
    Ok(Body::Caricature {
        image: Picture {
            src: first_png(&result.image),
            caption: "input".into(),
        },
        caricature: Picture {
            src: first_png(&result.caricature),
            caption: format!("caricature · cosine {:.3}", result.similarity),
        },
        similarity: result.similarity,
    })
}

/// The neuron-groups tab's settings: the feature visualization's.
fn neuron_groups_of(options: &ViewOptions) -> NeuronGroups {
    NeuronGroups::default()
        .groups(options.neuron_groups)
        .vis(options.feature_vis.clone())
}

/// The neuron groups of the unit's layer on `image`, after its activation function when one
/// alone reads it (`conv3/relu` for `conv3`: what the next layers see); for a unit without
/// positions (a logit), of the last layer with positions before it.
fn neuron_groups_tab(unit: &Unit, options: &ViewOptions, image: &DynTensor) -> Result<Body> {
    let model = unit.model();
    let first = DynTensor::new(image.to_rank::<4>()?.narrow(0, 0, 1));
    let own = model.network().output_shape(unit.layer())?.len() != 2;
    let before = match own {
        true => unit.layer().to_string(),
        false => match previous_spatial_layer(model, unit.layer())? {
            Some(layer) => layer,
            None => {
                return Ok(Body::Unavailable {
                    reason: format!(
                        "{} has no positions on the image, and no layer with positions comes \
                         before it: nothing to split over the image",
                        unit.layer()
                    ),
                })
            }
        },
    };
    let layer = activated(model, &before);
    let result = neuron_groups_of(options).run(&model.layer(&layer)?, &first)?;
    let index = unit.index();
    let signed = |v: f32| format!("{v:+.2}");
    let (note, mine, support) = match own {
        true => {
            let weights: Vec<f32> = result
                .directions
                .iter()
                .map(|d| d.get(index).copied().unwrap_or(0.0))
                .collect();
            let mine = (0..weights.len()).max_by(|&a, &b| weights[a].total_cmp(&weights[b]));
            let list: Vec<String> = weights.iter().map(|w| format!("{w:.2}")).collect();
            let note = match mine {
                Some(g) => format!(
                    "{unit} weighs {:.2} in group {} (its weights in the groups' unit-length \
                     directions: {})",
                    weights[g],
                    g + 1,
                    list.join(", ")
                ),
                None => format!("{unit} is in none of the groups"),
            };
            let note = match layer != unit.layer() {
                true => format!("at {layer}, {} after its activation: {note}", unit.layer()),
                false => note,
            };
            (note, mine, vec![None; weights.len()])
        }
        false => {
            let target = Target::Logit {
                node: unit.layer().to_string(),
                index,
            };
            let support = result.attribution(model, &target)?;
            let mine = support.strongest();
            let note = format!(
                "at {layer}, the last layer with positions before {}: {unit} is {:.2} on this \
                 image; integrated gradients at {layer} give the groups {} in all{} and the rest \
                 {}",
                unit.layer(),
                support.value,
                signed(support.groups.iter().sum()),
                mine.map_or(String::new(), |g| format!(
                    ", group {} the most ({})",
                    g + 1,
                    signed(support.groups[g])
                )),
                signed(support.rest())
            );
            let cards = support
                .groups
                .iter()
                .map(|&v| Some(format!("{} toward {unit}", signed(v))))
                .collect();
            (note, mine, cards)
        }
    };
    let (image, groups) = result.pictures();
    Ok(Body::NeuronGroups {
        note,
        image,
        groups: groups
            .into_iter()
            .enumerate()
            .zip(support)
            .map(|((g, [place, drawn]), support)| GroupCard {
                place,
                drawn,
                mine: mine == Some(g),
                support,
            })
            .collect(),
    })
}

/// Elementwise activation functions: what a layer's values become before the next layer reads
/// them.
const ACTIVATIONS: [&str; 12] = [
    "Relu",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Gelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
];

/// `layer`'s activation function when one alone reads it (`conv3/relu` for `conv3`), else
/// `layer`.
fn activated(model: &Model, layer: &str) -> String {
    let net = model.network();
    let Some(out) = net.node(layer).ok().and_then(|n| n.outputs.first()) else {
        return layer.to_string();
    };
    let readers: Vec<_> = net
        .nodes()
        .iter()
        .filter(|n| n.inputs.contains(out))
        .collect();
    match readers[..] {
        [next] if ACTIVATIONS.contains(&next.op.as_str()) => next.name.clone(),
        _ => layer.to_string(),
    }
}

fn deepdream_tab(
    model: &Model,
    options: &ViewOptions,
    image: &DynTensor,
    layer: &str,
) -> Result<Body> {
    let first = DynTensor::new(image.to_rank::<4>()?.narrow(0, 0, 1));
    let (dream, before, after) = options.deepdream.run(model, &first, layer)?;
    Ok(Body::DeepDream {
        before: Picture {
            src: first_png(&first),
            caption: format!("input · objective {before:.3}"),
        },
        after: Picture {
            src: first_png(&dream),
            caption: format!("dream · objective {after:.3}"),
        },
    })
}

/// The bounding box of the non-zero entries of a `[h, w]` map (the receptive field).
fn support(map: &[f32], h: usize, w: usize) -> (usize, usize, usize, usize) {
    let (mut y0, mut y1, mut x0, mut x1) = (h, 0, w, 0);
    for y in 0..h {
        for x in 0..w {
            if map[y * w + x] != 0.0 {
                (y0, y1, x0, x1) = (y0.min(y), y1.max(y), x0.min(x), x1.max(x));
            }
        }
    }
    if y0 > y1 {
        (0, h - 1, 0, w - 1)
    } else {
        (y0, y1, x0, x1)
    }
}

fn weights_tab(unit: &Unit, options: &ViewOptions) -> Result<Body> {
    let model = unit.model();
    // Expanded weights are drawn as maps over the source layer's positions, so they come from
    // the nearest spatial layer: for logits or fully connected layers, through the linear path
    // back to the last convolution.
    let Some(from) = previous_spatial_layer(model, unit.layer())? else {
        // The first layer: its weights are the filter itself, drawn as an image.
        let (conv, filters) = first_layer_filters(model)?;
        if conv != own_layer(model, unit.layer())? {
            return Err(Error::Message(format!(
                "{unit}: no previous layer to expand weights from"
            )));
        }
        let d = filters.dims();
        let per: usize = d[1..].iter().product();
        let all = filters.to_vec();
        let f = &all[unit.index() * per..(unit.index() + 1) * per];
        // Drawn as an image: 0.5 is zero, and the largest weight's magnitude reaches 0 or 1.
        let m = f.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        let shown: Vec<f32> = f.iter().map(|v| 0.5 + v / (2.0 * m)).collect();
        return Ok(Body::Weights {
            from: None,
            cards: vec![WeightCard {
                unit: unit.index(),
                weights: png(&planar(&shown, &d[1..])),
                feature_vis: None,
                norm: f.iter().map(|v| v * v).sum::<f32>().sqrt(),
                sum: f.iter().sum(),
            }],
        });
    };
    let w = expanded_weights(model, &from, unit.layer(), unit.index())?;
    let d = w.dims(); // [C, H, W]
    let data = w.to_vec();
    let strongest = strongest_inputs(&w, options.weights);
    let sources: Vec<usize> = strongest.iter().map(|s| s.0).collect();
    let fv_images = if sources.is_empty() {
        Vec::new()
    } else {
        pngs(
            &options
                .feature_vis
                .run_units(model, &from, &sources)?
                .images,
        )
    };
    let plane = d[1] * d[2];
    let cards = strongest
        .iter()
        .enumerate()
        .map(|(i, &(c, norm, sum))| {
            let map = &data[c * plane..(c + 1) * plane];
            let (y0, y1, x0, x1) = support(map, d[1], d[2]);
            let width = d[2];
            let cropped: Vec<f32> = (y0..=y1)
                .flat_map(|y| (x0..=x1).map(move |x| map[y * width + x]))
                .collect();
            WeightCard {
                unit: c,
                weights: heatmap(&cropped, y1 - y0 + 1, x1 - x0 + 1, Scale::Diverging),
                feature_vis: fv_images.get(i).cloned(),
                norm,
                sum,
            }
        })
        .collect();
    Ok(Body::Weights {
        from: Some(from),
        cards,
    })
}

fn attribution_tab(unit: &Unit, image: &DynTensor, inputs: &InputAttribution) -> Result<Body> {
    let model = unit.model();
    let image = DynTensor::new(image.to_rank::<4>()?.narrow(0, 0, 1));
    // Attributions are maps over positions: taken at the nearest spatial layer before the unit
    // (for logits, the last convolution), or at the unit's own layer when it is the first.
    let at =
        previous_spatial_layer(model, unit.layer())?.unwrap_or_else(|| unit.layer().to_string());
    let target = Target::Unit {
        layer: unit.layer().to_string(),
        index: unit.index(),
    };
    let map = attribution(model, &image, &at, &target)?;
    let mut channels: Vec<ChannelScore> = map
        .channels
        .iter()
        .enumerate()
        .map(|(unit, &score)| ChannelScore { unit, score })
        .collect();
    channels.sort_by(|a, b| b.score.abs().total_cmp(&a.score.abs()));
    channels.truncate(8);
    // A method that fails for this model (Grad-CAM without a convolution) says why in its
    // place; the others stay.
    let inputs = methods_for(model, &target)
        .into_iter()
        .map(|spec| match inputs.run(spec.id, model, &image, &target) {
            Ok(m) => Ok(input_heatmap(&m, spec, inputs)),
            Err(e @ Error::Cancelled { .. }) => Err(e),
            Err(e) => Ok(InputHeatmap {
                heatmap: String::new(),
                note: e.to_string(),
                ..input_heading(spec)
            }),
        })
        .collect::<Result<_>>()?;
    Ok(Body::Attribution {
        image: Picture {
            src: first_png(&image),
            caption: format!("{unit} = {:.3} on this image", map.value),
        },
        spatial: heatmap(&map.spatial, map.height, map.width, Scale::Diverging),
        at,
        value: map.value,
        channels,
        inputs,
    })
}

/// One method's map as a heatmap at the image's size. Signed maps are clipped at the 99th
/// percentile of their magnitude first, so that a few extreme pixels (saliency has them) do not
/// wash the rest out.
fn input_heatmap(m: &InputMap, spec: &MethodSpec, settings: &InputAttribution) -> InputHeatmap {
    let [_, h, w] = m.dims;
    let heatmap = if spec.signed {
        let mut sizes: Vec<f32> = m.map.iter().map(|v| v.abs()).collect();
        sizes.sort_by(f32::total_cmp);
        let q = sizes[(sizes.len() - 1) * 99 / 100];
        // NaN sorts last; a map with that many NaNs is drawn unclipped rather than panic.
        let q = if q.is_nan() { f32::INFINITY } else { q };
        let clipped: Vec<f32> = m.map.iter().map(|v| v.clamp(-q, q)).collect();
        heatmap(&clipped, h, w, Scale::Diverging)
    } else {
        heatmap(&m.map, h, w, Scale::Heat)
    };
    let mut note = vec![(spec.settings)(settings)];
    if let Some(c) = m.completeness {
        note.push(format!(
            "Σ {:.3} vs f(x) − f(baseline) {:.3}: gap {:.2} % after {} steps",
            c.sum,
            c.value - c.baseline,
            100.0 * c.relative_gap(),
            c.steps
        ));
    }
    if let Some(layer) = &m.layer {
        note.push(format!("at {layer}"));
    }
    note.extend(m.detail.clone());
    note.retain(|n| !n.is_empty());
    InputHeatmap {
        heatmap,
        note: note.join(" · "),
        ..input_heading(spec)
    }
}

/// A method's heatmap entry without a map: what its table row says.
fn input_heading(spec: &MethodSpec) -> InputHeatmap {
    InputHeatmap {
        id: spec.id,
        title: spec.title,
        about: spec.about,
        caveat: spec.caveat,
        heatmap: String::new(),
        note: String::new(),
    }
}

fn histogram_tab(scores: &[f32]) -> Body {
    let count = scores.len();
    Body::Histogram {
        svg: histogram_svg(scores, "strongest activation", 520, 240),
        count,
        mean: scores.iter().sum::<f32>() / count.max(1) as f32,
        max: scores.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    }
}

impl UnitView {
    /// The plain-text summary (the `text/plain` fallback).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "UnitView of {}:{} ({}, unit {} of {}) in {}\n",
            self.layer, self.unit, self.op, self.unit, self.units, self.model
        );
        for t in &self.tabs {
            let state = match &t.body {
                Body::Unavailable { reason } => format!("unavailable: {reason}"),
                _ => "computed".into(),
            };
            s.push_str(&format!("  {:<22} {state}\n", t.title));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabs_are_declared_once_with_unique_ids_and_weights_adding_up_to_one() {
        let mut ids: Vec<&str> = TABS.iter().map(|t| t.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), TABS.len(), "tab ids repeat");
        let total: f32 = TABS.iter().map(|t| t.weight).sum();
        assert!((total - 1.0).abs() < 1e-6, "weights add up to {total}");
        assert!(TABS.iter().all(|t| t.weight > 0.0));
        // The browser code renders the tabs the props list: it names none of them itself.
        let js = crate::widget::assets::library();
        for t in TABS {
            for quoted in [format!("\"{}\"", t.title), format!("'{}'", t.title)] {
                assert!(!js.contains(&quoted), "widgets/*.js names the tab {quoted}");
            }
        }
        assert!(TabSpec::find("no-such-tab")
            .unwrap_err()
            .to_string()
            .contains(TABS[0].id));
    }
}
