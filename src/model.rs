//! `Model`: a loaded network plus what a user needs around it (name, classes, input spec).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;

use crate::data::{Dataset, ImageSpec};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::import::{parse_file, parse_onnx, Extent};
use crate::network::{DynTensor, Network, DYNAMIC_SIZE};
use crate::zoo::files as zoo;

#[derive(Clone, Debug)]
enum Source {
    File(PathBuf, Extent),
    Zoo(&'static str),
}

/// A loaded model: its runtime graph, where it came from, and its metadata.
#[derive(Clone, Debug)]
pub struct Model {
    network: Arc<Network>,
    source: Source,
    /// SHA-256 of the model file (followed by the external data it reads, if any): part of
    /// every cache key.
    digest: String,
    /// The dataset attached with [`Model::with_dataset`] (for dataset examples).
    dataset: Option<Arc<Dataset>>,
}

impl Model {
    /// Loads an ONNX file onto the CPU.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_on(path, Device::cpu())
    }

    /// Loads an ONNX file onto `device`.
    pub fn load_on(path: impl AsRef<Path>, device: Device) -> Result<Model> {
        Self::load_extent(path.as_ref(), device, Extent::Whole)
    }

    /// Loads the part of an ONNX file that the runtime supports, onto the CPU: every node but
    /// those whose op it lacks and those downstream of them (a detector's post-processing).
    /// [`Model::left_out`] says what was left out; a file that is supported throughout loads
    /// whole. See [`Extent::Supported`].
    pub fn load_partial(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_partial_on(path, Device::cpu())
    }

    /// [`Model::load_partial`] onto `device`.
    pub fn load_partial_on(path: impl AsRef<Path>, device: Device) -> Result<Model> {
        Self::load_extent(path.as_ref(), device, Extent::Supported)
    }

    fn load_extent(path: &Path, device: Device, extent: Extent) -> Result<Model> {
        let (network, digest) = parse_file(path, device, extent)?;
        Ok(Model {
            network: Arc::new(network),
            source: Source::File(path.to_path_buf(), extent),
            digest,
            dataset: None,
        })
    }

    /// What loading left out of the file ([`Model::load_partial`]); `None` when it loaded whole.
    pub fn left_out(&self) -> Option<&crate::network::LeftOut> {
        self.network.left_out()
    }

    /// A built-in model (see [`zoo::NAMES`]).
    pub fn zoo(name: &str, device: Device) -> Result<Model> {
        let (name, bytes) = zoo::bytes(name)
            .ok_or_else(|| {
                Error::Message(format!(
                    "zoo:{name}: no such built-in model (available: {})",
                    zoo::NAMES.join(", ")
                ))
            })?
            .map_err(|e| Error::Message(format!("zoo:{name}: {e}")))?;
        let network =
            parse_onnx(&bytes, name, device).map_err(|e| e.in_model(format!("zoo:{name}")))?;
        Ok(Model {
            network: Arc::new(network),
            source: Source::Zoo(name),
            digest: crate::digest::sha256_hex(&bytes),
            dataset: None,
        })
    }

    /// `zoo:NAME` or a path to an `.onnx` file, as the command line accepts them.
    pub fn open(spec: &str, device: Device) -> Result<Model> {
        Self::open_extent(spec, device, Extent::Whole)
    }

    /// [`Model::open`], loading as much of a file as `extent` says (a built-in model is
    /// supported throughout).
    pub fn open_extent(spec: &str, device: Device, extent: Extent) -> Result<Model> {
        match spec.strip_prefix("zoo:") {
            Some(name) => Self::zoo(name, device),
            None => Self::load_extent(Path::new(spec), device, extent),
        }
    }

    /// The same model on another device (an attached dataset stays attached).
    pub fn to(&self, device: Device) -> Result<Model> {
        let mut moved = match &self.source {
            Source::File(path, extent) => Self::load_extent(path, device, *extent)?,
            Source::Zoo(name) => Self::zoo(name, device)?,
        };
        moved.dataset = self.dataset.clone();
        Ok(moved)
    }

    /// The model with `dataset` attached: techniques that need inputs (dataset examples,
    /// activation histograms) use it.
    pub fn with_dataset(mut self, dataset: Dataset) -> Model {
        self.dataset = Some(Arc::new(dataset));
        self
    }

    /// The attached dataset, if any.
    pub fn dataset(&self) -> Option<&Dataset> {
        self.dataset.as_deref()
    }

    /// Layer (node) `name`: its op, output shape and number of units.
    pub fn layer(&self, name: &str) -> Result<Layer> {
        let node = self.network.node(name)?;
        let shape = self.network.output_shape(name)?;
        Ok(Layer {
            model: self.clone(),
            name: node.name.clone(),
            op: node.op.clone(),
            units: self.network.units(name)?,
            shape,
            params: self.network.param_count(node),
        })
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// SHA-256 of the model file (hex), followed by the external data it reads, if any.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// `zoo:NAME` or the file path.
    pub fn source(&self) -> String {
        match &self.source {
            Source::File(p, _) => p.display().to_string(),
            Source::Zoo(name) => format!("zoo:{name}"),
        }
    }

    /// Class names, when the model file carries them (metadata key `classes`, one per line).
    pub fn classes(&self) -> Option<Vec<String>> {
        self.network
            .metadata()
            .get("classes")
            .map(|c| c.lines().map(str::to_string).collect())
    }

    /// The image input the model expects. Pixels are in [0, 1] unless the file's metadata says
    /// otherwise (`input_mean`, `input_std`: comma-separated, one value per channel). A
    /// dynamic height or width (a fully convolutional model exported for any size) is taken
    /// at [`DYNAMIC_SIZE`], as the layers' shapes are.
    pub fn input_spec(&self) -> Result<ImageSpec> {
        let input = self.network.image_input()?;
        let dims: Vec<usize> = input
            .shape
            .iter()
            .enumerate()
            .map(|(k, d)| d.unwrap_or(if k >= 2 { DYNAMIC_SIZE } else { 0 }))
            .collect();
        let [_, c, h, w] = dims[..] else {
            return Err(Error::Input {
                name: input.name.clone(),
                message: format!(
                    "expected an image input [N, C, H, W], found rank {}",
                    dims.len()
                ),
            });
        };
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::Input {
                name: input.name.clone(),
                message: format!(
                    "an image input needs a fixed number of channels and a size above 0, \
                     found [N, {}, {}, {}]",
                    input.shape[1].map_or("?".into(), |c| c.to_string()),
                    h,
                    w
                ),
            });
        }
        let mut spec = ImageSpec::unit(c, h, w);
        let meta = self.network.metadata();
        let values = |key: &str, into: &mut Vec<f32>| -> Result<()> {
            if let Some(text) = meta.get(key) {
                let v: Vec<f32> = text
                    .split(',')
                    .filter_map(|x| x.trim().parse().ok())
                    .collect();
                if v.len() != c {
                    return Err(Error::Message(format!(
                        "metadata {key}={text:?} needs {c} values"
                    )));
                }
                *into = v;
            }
            Ok(())
        };
        values("input_mean", &mut spec.mean)?;
        values("input_std", &mut spec.std)?;
        Ok(spec)
    }
}

/// One unit (channel) of a layer of a model.
#[derive(Clone, Debug)]
pub struct Unit {
    model: Model,
    layer: String,
    index: usize,
}

impl Unit {
    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn layer(&self) -> &str {
        &self.layer
    }

    pub fn index(&self) -> usize {
        self.index
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.layer, self.index)
    }
}

impl Model {
    /// Unit `index` of `layer` (a node name); fails naming the unit when it does not exist.
    pub fn unit(&self, layer: &str, index: usize) -> Result<Unit> {
        let node = self.network.node(layer)?;
        let shape = self.network.output_shape(layer)?;
        let units = self.network.units(layer)?;
        if index >= units {
            // A recurrent layer's output is [steps, directions, batch, hidden]: say where its
            // units are viewed.
            let why = if crate::network::has_units(&node.op) {
                ""
            } else {
                " (a recurrent layer's output has no unit axis; view the layer after it, which \
                 reads it as tokens)"
            };
            return Err(Error::Message(format!(
                "unit {}:{index} does not exist: {} ({}) has output shape {shape:?}, units \
                 0..{units}{why}",
                node.name, node.name, node.op
            )));
        }
        Ok(Unit {
            model: self.clone(),
            layer: node.name.clone(),
            index,
        })
    }

    /// Images in [0, 1] (`[N, C, H, W]`, any device) normalized as the model's input expects.
    pub fn normalize<B: Backend>(&self, images: &DynTensor<B>) -> Result<DynTensor<B>> {
        let spec = self.input_spec()?;
        let x = images.to_rank::<4>()?;
        let c = spec.channels;
        if x.dims()[1] != c {
            return Err(Error::Message(format!(
                "images have {} channels, {} takes {c}",
                x.dims()[1],
                self.source()
            )));
        }
        // One mean and one std for every channel (the common case, [0, 1] pixels included):
        // scalar passes, or none, instead of per-channel broadcasts.
        let same = |v: &[f32]| v.windows(2).all(|w| w[0] == w[1]);
        if let (Some(&m), Some(&s), true) = (
            spec.mean.first(),
            spec.std.first(),
            same(&spec.mean) && same(&spec.std),
        ) {
            let x = if m == 0.0 { x } else { x.sub_scalar(m) };
            let x = if s == 1.0 { x } else { x.div_scalar(s) };
            return Ok(DynTensor::new(x));
        }
        let device = x.device();
        let mean = Tensor::<B, 1>::from_floats(spec.mean.as_slice(), &device).reshape([1, c, 1, 1]);
        let std = Tensor::<B, 1>::from_floats(spec.std.as_slice(), &device).reshape([1, c, 1, 1]);
        Ok(DynTensor::new((x - mean) / std))
    }
}

/// One layer (node) of a model, as the layer card shows it.
#[derive(Clone, Debug)]
pub struct Layer {
    model: Model,
    pub name: String,
    pub op: String,
    /// Output shape for a batch of 1 at the model's input size.
    pub shape: Vec<usize>,
    /// Channels of the output (the layer's units, as [`UnitLayout`] finds them: `C` of
    /// `[N, C, H, W]`, `[N, C]` and tokens `[N, T, C]`); 0 for other outputs.
    pub units: usize,
    /// Parameters the node reads.
    pub params: usize,
}

impl Layer {
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// What a unit's value is, where it is not its map's mean: a softmax over the units' own
    /// maps, such as attention weights, is read by its concentration ([`Reading`]).
    ///
    /// [`Reading`]: crate::network::Reading
    pub fn unit_value(&self) -> Option<String> {
        self.model.network().reading(&self.name).note(&self.shape)
    }

    /// Unit `index` of this layer.
    pub fn unit(&self, index: usize) -> Result<Unit> {
        self.model.unit(&self.name, index)
    }
}
