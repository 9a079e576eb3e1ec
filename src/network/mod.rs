//! `Network`: one runtime graph type for every model.
//!
//! A network is a topologically ordered list of named [`Node`]s over named tensors, plus constant
//! tensors (weights, folded subgraphs). [`Network::forward`] evaluates only the nodes needed for
//! the requested activations, in order, dropping each intermediate after its last use. Feeding an
//! input that lives on an autodiff device makes the run differentiable with respect to that input;
//! weights are wrapped as untracked constants, so no weight gradient is computed unless the caller
//! passes tracked [`Weights`].
//!
//! Values live on burn's `Dispatch` backend, which picks the CPU or CUDA at run time. The same
//! graph also runs on a named backend ([`Back`]): feature visualization on the CPU runs on
//! [`Fast`], where ops of our own give burn-flex's slow backward passes faster ones, and on a
//! CUDA device (in builds with the `cuda` feature) on `FastCuda`, for the same reason.

#[cfg(feature = "cuda")]
mod cuda;
mod fast;
pub mod lower;
pub mod minifloat;
pub mod node;
pub mod ops;
pub mod units;
pub mod value;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use burn::prelude::*;
use burn::{Dispatch, DispatchDevice};

use crate::device::Device;
use crate::error::{Error, Result};
pub use node::{Attr, Node};
#[cfg(feature = "cuda")]
pub use ops::FastCuda;
pub use ops::{has_units, Back, Fast};
use ops::{Ctx, OpSpec, Slot};
pub use units::{Reading, TokenGrid, UnitLayout};
use value::Constant;
pub use value::{DynTensor, Elem, Gradients, HostData, HostTensor, Value, Wide, MAX_RANK};

/// What an import left out of a model file: the nodes whose op the runtime lacks and every node
/// that reads what they produce, directly or not (see `import::Extent::Supported`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeftOut {
    /// The unsupported nodes, in the graph's order.
    pub unsupported: Vec<UnsupportedNode>,
    /// How many nodes were left out (the unsupported ones and all downstream of them).
    pub nodes: usize,
    /// How many nodes the file holds.
    pub total: usize,
    /// Each left-out node's names (the one microscope gave it, the file's, its output
    /// tensors') → the unsupported node it depends on, an index into `unsupported`.
    pub depends_on: HashMap<String, usize>,
}

impl LeftOut {
    /// The unsupported node that the left-out node (or tensor) `name` depends on; `None` when
    /// `name` was not left out.
    pub fn cause(&self, name: &str) -> Option<&UnsupportedNode> {
        self.depends_on
            .get(name)
            .and_then(|&k| self.unsupported.get(k))
    }
}

/// A node whose op the runtime lacks.
#[derive(Clone, Debug, PartialEq)]
pub struct UnsupportedNode {
    pub node: String,
    pub op: String,
    /// The op's domain: empty for ONNX's own.
    pub domain: String,
}

impl std::fmt::Display for LeftOut {
    /// One line, e.g. `stops before NonZero (node roi/nonzero) and 2 more unsupported nodes:
    /// 130 of the file's 412 nodes left out` (its Constant nodes counted). Names come from the
    /// file: a long one is shortened, and the line must still be shown through an escaper (as
    /// text, or `widget::one_line`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::error::brief;
        match self.unsupported.first() {
            Some(u) if u.domain.is_empty() => {
                write!(f, "stops before {} (node {})", brief(&u.op), brief(&u.node))?
            }
            Some(u) => write!(
                f,
                "stops before {} of domain {} (node {})",
                brief(&u.op),
                brief(&u.domain),
                brief(&u.node)
            )?,
            None => write!(f, "stops early")?,
        }
        match self.unsupported.len() {
            0 | 1 => {}
            2 => write!(f, " and 1 more unsupported node")?,
            k => write!(f, " and {} more unsupported nodes", k - 1)?,
        }
        write!(
            f,
            ": {} of the file's {} nodes left out",
            self.nodes, self.total
        )
    }
}

/// Whether op `op` of `domain` (empty for ONNX's own) runs: an op of the table ([`ops::OPS`]),
/// or one that runs as some of them ([`lower::LOWERED`]).
pub fn is_supported(domain: &str, op: &str) -> bool {
    (domain.is_empty() && ops::spec(op).is_some()) || lower::spec(domain, op).is_some()
}

/// Constants up to this many elements keep a host copy (shape arithmetic reads them there).
const HOST_COPY_LIMIT: usize = 4096;

/// The size a dynamic axis other than the batch is taken at where one size is needed (a
/// layer's shape, an image input's size): ImageNet's 224.
pub const DYNAMIC_SIZE: usize = 224;

/// How [`Network::evaluate`] treats inputs and nonlinearities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Inputs must have the declared shape (any batch).
    Strict,
    /// Inputs may have any spatial size.
    AnySize,
    /// Any spatial size, and nonlinear ops replaced by linear stand-ins.
    Linearized,
    /// Any spatial size, and the gradient passed through ops that cut their input off.
    Redirected,
}

/// A graph input the caller feeds.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    /// `None` for a dynamic dimension (e.g. the batch).
    pub shape: Vec<Option<usize>>,
    /// The element type the file declares, if it does.
    pub elem: Option<Elem>,
}

impl Constant {
    fn new(host: HostTensor, device: &DispatchDevice) -> Self {
        let shape = host.shape.clone();
        // Tensors of a rank the device storage cannot hold stay on the host (an op that needs
        // one on the device then fails with an error naming it).
        let uploadable =
            host.elem == Elem::Float && !host.is_empty() && host.shape.len() <= MAX_RANK;
        let (host, device, shared) = match uploadable {
            false => (Some(host), None, None),
            true if host.len() <= HOST_COPY_LIMIT => {
                let on_device = host.upload_to(device);
                (Some(host), Some(on_device), None)
            }
            // On the CPU the values go into a buffer that the render backend's tensor
            // (`Constant::flex`) reads too.
            true if crate::device::is_cpu(device) => {
                let shared = value::SharedF32::new(host.data.into_f32());
                let on_device = DynTensor::from_shared_on(&shared, &shape, device);
                (None, Some(on_device), Some(shared))
            }
            true => (None, Some(host.into_device(device)), None),
        };
        Constant {
            host,
            device,
            flex: OnceLock::new(),
            shared,
            #[cfg(feature = "cuda")]
            cuda: OnceLock::new(),
            shape,
        }
    }
}

/// Weights tracked by autodiff, for callers that want weight gradients (training).
pub struct Weights<B: Backend = Dispatch> {
    tensors: HashMap<String, DynTensor<B>>,
}

impl Weights {
    /// Tracks `tensors` (plain-device weights by constant name) for a gradient run.
    pub fn tracked(tensors: &HashMap<String, DynTensor>) -> Weights {
        let tensors = tensors
            .iter()
            .map(|(k, t)| (k.clone(), freeze(t).require_grad()))
            .collect();
        Weights { tensors }
    }
}

impl<B: Backend> Weights<B> {
    /// The tracked tensor of weight `name`; read its gradient with `tensor.grad(&grads)`.
    pub fn get(&self, name: &str) -> Option<&DynTensor<B>> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

/// [`Network::forward_bytes`]'s image size and targets.
type BytesKey = ([usize; 2], Vec<String>);

/// A tensor's name and value.
pub(crate) type Named<B> = (String, DynTensor<B>);

/// A runtime graph of named nodes.
pub struct Network {
    name: String,
    nodes: Vec<Node>,
    /// Each node's op.
    specs: Vec<&'static OpSpec>,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    constants: HashMap<String, Constant>,
    /// Tensor name → (node index, output index).
    producer: HashMap<String, (usize, usize)>,
    /// Node names and their original names/aliases → node index.
    names: HashMap<String, usize>,
    device: Device,
    shapes: OnceLock<Result<Vec<Vec<usize>>, String>>,
    /// See [`Network::batch_fixed`].
    batch_fixed: OnceLock<bool>,
    /// [`Network::forward_bytes`] measured so far, by image size and targets.
    forward_bytes: Mutex<HashMap<BytesKey, u64>>,
    metadata: BTreeMap<String, String>,
    /// What the import left out, when it loaded only part of the file.
    left_out: Option<LeftOut>,
    /// Initializers dropped after folding (see [`fold_constants`]) → the node that read them.
    dropped: HashMap<String, Arc<Node>>,
}

/// A summary: printing every weight of a model is never what a user wants.
impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("name", &self.name)
            .field("nodes", &self.nodes.len())
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("constants", &self.constants.len())
            .field("device", &self.device.to_string())
            .field("left_out", &self.left_out.as_ref().map(LeftOut::to_string))
            .finish()
    }
}

impl Network {
    /// Assembles a network: checks every op is supported, folds constant subgraphs, uploads weights.
    ///
    /// `nodes` must be in topological order; `aliases` maps extra names onto node names.
    pub fn new(
        name: impl Into<String>,
        nodes: Vec<Node>,
        inputs: Vec<InputSpec>,
        outputs: Vec<String>,
        mut constants: HashMap<String, HostTensor>,
        aliases: Vec<(String, String)>,
        device: Device,
    ) -> Result<Self> {
        let nodes = lower::lower(nodes, &mut constants, &inputs, &outputs)?;
        let mut specs = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let spec = ops::spec(&n.op).filter(|_| n.domain.is_empty());
            specs.push(spec.ok_or_else(|| Error::UnsupportedOp {
                op: n.op.clone(),
                domain: n.domain.clone(),
                node: n.name.clone(),
            })?);
        }
        let Folded {
            nodes,
            specs,
            constants,
            dropped,
        } = fold_constants(nodes, specs, constants, &outputs)?;
        let plain = device.burn().clone();
        let constants = constants
            .into_iter()
            .map(|(k, v)| (k, Constant::new(v, &plain)))
            .collect();
        let mut net = Network {
            name: name.into(),
            nodes,
            specs,
            inputs,
            outputs,
            constants,
            producer: HashMap::new(),
            names: HashMap::new(),
            device,
            shapes: OnceLock::new(),
            batch_fixed: OnceLock::new(),
            forward_bytes: Mutex::default(),
            metadata: BTreeMap::new(),
            left_out: None,
            dropped,
        };
        net.index(aliases)?;
        Ok(net)
    }

    fn index(&mut self, aliases: Vec<(String, String)>) -> Result<()> {
        let mut known: HashSet<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        known.extend(self.constants.keys().map(String::as_str));
        for (i, n) in self.nodes.iter().enumerate() {
            for input in n.inputs.iter().filter(|s| !s.is_empty()) {
                if !known.contains(input.as_str()) {
                    return Err(n.error(format!(
                        "input tensor {input:?} is not produced before this node"
                    )));
                }
            }
            for (k, out) in n.outputs.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
                self.producer.insert(out.clone(), (i, k));
                known.insert(out);
            }
            if self.names.insert(n.name.clone(), i).is_some() {
                return Err(n.error("duplicate node name"));
            }
        }
        for out in &self.outputs {
            if !known.contains(out.as_str()) {
                return Err(Error::Message(format!(
                    "graph output {out:?} is never produced"
                )));
            }
        }
        for (alias, target) in aliases {
            if let Some(&i) = self.names.get(&target) {
                // Not over another node's tensor of that name (see `import::naming`).
                if self.producer.get(&alias).is_none_or(|&(p, _)| p == i) {
                    self.names.entry(alias).or_insert(i);
                }
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key/value metadata from the model file (class names, input normalization, provenance).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Attaches metadata (importers call this).
    pub fn with_metadata(mut self, metadata: BTreeMap<String, String>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Marks the network as part of its file (importers call this).
    pub fn with_left_out(mut self, left_out: LeftOut) -> Self {
        self.left_out = Some(left_out);
        self
    }

    /// What the import left out of the file, when it loaded only the part the runtime supports.
    pub fn left_out(&self) -> Option<&LeftOut> {
        self.left_out.as_ref()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// Names of the graph's output tensors.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The node called `name` (its readable name, original name, or an output tensor name).
    pub fn node(&self, name: &str) -> Result<&Node> {
        if let Some(&i) = self.names.get(name) {
            return Ok(&self.nodes[i]);
        }
        if let Some(&(i, _)) = self.producer.get(name) {
            return Ok(&self.nodes[i]);
        }
        Err(self.unknown(name))
    }

    /// How the units of layer `name` are read ([`Reading`]); as they are for a name that is not
    /// a node's.
    pub fn reading(&self, name: &str) -> Reading {
        let Ok(node) = self.node(name) else {
            return Reading::Values;
        };
        if node.op != "Softmax" || !node.domain.is_empty() {
            return Reading::Values;
        }
        let joint = node.opset < 13;
        let axis = node.int("axis", if joint { 1 } else { -1 }).unwrap_or(-1);
        Reading::Softmax { axis, joint }
    }

    /// Whether the units of layer `name` are read by their concentration ([`Reading::span`]):
    /// a softmax over their own maps, such as attention weights.
    pub fn concentrates(&self, name: &str) -> bool {
        let shape = self.output_shape(name);
        shape.is_ok_and(|s| self.reading(name).span(&s).is_some())
    }

    fn unknown(&self, name: &str) -> Error {
        if let Some(cause) = self.left_out.as_ref().and_then(|l| l.cause(name)) {
            return Error::UnknownName {
                name: name.to_string(),
                hint: format!(
                    ": it was left out when the model was loaded in part, as it depends on \
                     {} (node {}), which microscope does not run",
                    cause.op, cause.node
                ),
            };
        }
        if let Some(reader) = self.dropped.get(name) {
            let made = reader.outputs.first().map(String::as_str).unwrap_or("");
            return Error::UnknownName {
                name: name.to_string(),
                hint: format!(
                    ": it was a constant read only by {} node {:?}, which ran when the model \
                     was loaded; microscope keeps that node's output instead, {made:?}",
                    reader.op, reader.name
                ),
            };
        }
        let lower = name.to_lowercase();
        let mut close: Vec<&str> = self
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .filter(|n| n.to_lowercase().contains(&lower) || lower.contains(&n.to_lowercase()))
            .take(5)
            .collect();
        close.sort();
        let hint = if close.is_empty() {
            format!(
                " (it has {} nodes; list them with `microscope info`)",
                self.nodes.len()
            )
        } else {
            format!("; did you mean {}?", close.join(", "))
        };
        Error::UnknownName {
            name: name.to_string(),
            hint,
        }
    }

    /// The output shape of node `name` at the declared input size, for a batch of 1 where the
    /// batch is dynamic (a file can fix it at another size).
    pub fn output_shape(&self, name: &str) -> Result<Vec<usize>> {
        let node = self.node(name)?;
        let index = self.names[&node.name];
        Ok(self.shapes()?[index].clone())
    }

    /// The number of units of node `name` (see [`node_units`]).
    pub fn units(&self, name: &str) -> Result<usize> {
        let node = self.node(name)?;
        Ok(node_units(node, &self.output_shape(name)?))
    }

    /// For each node, whether it computes from the values of the tensors `sources` (graph
    /// inputs), directly or through other nodes, rather than from their shapes, constants and
    /// indices alone ([`ops::reads_values`], [`ops::gives_values`]): Shape and Size read only
    /// shapes, so an exporter's shape arithmetic (Shape → Gather → Unsqueeze → Concat, an anchor
    /// grid from a Range) computes from none, nor does arithmetic on MaxPool's indices
    /// (PyTorch's exporter makes them per-plane). A node that does not has no gradient toward
    /// the sources (one that does may still have none: a comparison's mask).
    pub fn computed_from(&self, sources: &[&str]) -> Vec<bool> {
        let values = self.values_of(sources);
        self.nodes
            .iter()
            .map(|node| self.value_inputs(node, &values).next().is_some())
            .collect()
    }

    /// The tensors that hold values computed from `sources`, the sources among them (see
    /// [`Network::computed_from`]).
    pub fn values_of<'a>(&'a self, sources: &[&'a str]) -> HashSet<&'a str> {
        let mut values: HashSet<&str> = sources.iter().copied().collect();
        for node in &self.nodes {
            if self.value_inputs(node, &values).next().is_some() {
                values.extend(
                    (node.outputs.iter().enumerate())
                        .filter(|&(k, _)| ops::gives_values(&node.op, k))
                        .map(|(_, o)| o.as_str()),
                );
            }
        }
        values
    }

    /// The inputs of `node` through which it reads the values in `values` (of
    /// [`Network::values_of`]).
    pub fn value_inputs<'n>(
        &self,
        node: &'n Node,
        values: &HashSet<&str>,
    ) -> impl Iterator<Item = &'n String> {
        let values: Vec<bool> = (node.inputs.iter().enumerate())
            .map(|(k, i)| ops::reads_values(&node.op, k) && values.contains(i.as_str()))
            .collect();
        node.inputs
            .iter()
            .zip(values)
            .filter(|(_, v)| *v)
            .map(|(i, _)| i)
    }

    /// Number of parameters (elements of float constants) each node reads: not its integer
    /// ones (a Reshape's shape, a reduction's axes).
    pub fn param_count(&self, node: &Node) -> usize {
        node.inputs
            .iter()
            .filter_map(|i| self.constants.get(i))
            // A constant held only on the device is a float one.
            .filter(|c| c.host.as_ref().is_none_or(|h| h.elem == Elem::Float))
            .map(|c| c.shape.iter().product::<usize>())
            .sum()
    }

    /// The shape of a constant tensor, if `name` is one.
    pub fn constant_shape(&self, name: &str) -> Option<&[usize]> {
        self.constants.get(name).map(|c| c.shape.as_slice())
    }

    /// A constant's values on the host.
    pub fn constant(&self, name: &str) -> Option<HostTensor> {
        self.constants.get(name).map(Constant::host)
    }

    /// Moves the weights to another device.
    pub fn to(mut self, device: Device) -> Self {
        let plain = device.burn().clone();
        for c in self.constants.values_mut() {
            let host = c.host();
            *c = Constant::new(host, &plain);
        }
        self.device = device;
        self.shapes = OnceLock::new();
        self
    }

    /// Weights as tracked autodiff tensors, for callers that want weight gradients (training).
    pub fn tracked_weights(&self) -> Weights {
        self.weights(|d| freeze(d).require_grad())
    }

    /// Weights as untracked autodiff constants: what every gradient run uses by default.
    pub fn frozen_weights(&self) -> Weights {
        self.weights(freeze)
    }

    /// The float weights on the plain device, by constant name.
    pub fn weight_tensors(&self) -> HashMap<String, DynTensor> {
        let weights = self
            .constants
            .iter()
            .filter_map(|(k, c)| c.device.clone().map(|d| (k.clone(), d)));
        weights.collect()
    }

    fn weights(&self, wrap: impl Fn(&DynTensor) -> DynTensor) -> Weights {
        let tensors = self
            .constants
            .iter()
            .filter_map(|(k, c)| c.device.as_ref().map(|d| (k.clone(), wrap(d))))
            .collect();
        Weights { tensors }
    }

    /// The single image-like input (rank 4), for convenience APIs.
    pub fn image_input(&self) -> Result<&InputSpec> {
        match self.inputs.as_slice() {
            [one] => Ok(one),
            many => Err(Error::Message(format!(
                "the network has {} inputs ({}), and the techniques take models of one image \
                 input (`Network::forward` feeds several by name)",
                many.len(),
                many.iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Runs the network on `feeds` and returns the activations of `targets` (node or tensor
    /// names), evaluating only the nodes they depend on.
    pub fn forward<B: Back>(
        &self,
        feeds: &[(&str, DynTensor<B>)],
        targets: &[&str],
    ) -> Result<Vec<DynTensor<B>>> {
        self.forward_in(feeds, targets, None, Mode::Strict)
    }

    /// [`Network::forward`] for a single-input network, with an image batch `[N, C, H, W]`.
    pub fn forward_image<B: Back>(
        &self,
        x: Tensor<B, 4>,
        targets: &[&str],
    ) -> Result<Vec<DynTensor<B>>> {
        let input = self.image_input()?.name.clone();
        self.forward(&[(&input, DynTensor::new(x))], targets)
    }

    /// [`Network::forward`] for images of any spatial size (e.g. feature visualization at 128 px
    /// on a network declared for 224 px): the network must be fully convolutional up to
    /// `targets`, or a node on the way fails with an error naming it.
    pub fn forward_any_size<B: Back>(
        &self,
        feeds: &[(&str, DynTensor<B>)],
        targets: &[&str],
    ) -> Result<Vec<DynTensor<B>>> {
        self.forward_in(feeds, targets, None, Mode::AnySize)
    }

    /// Runs `feeds` (typically a patched intermediate activation) to `targets` with every
    /// nonlinearity replaced by its linear stand-in (ReLU → identity, max → average pooling),
    /// as Circuits' expanded weights need. A MaxUnpool, which puts values where the image's
    /// maxima were, spreads each evenly over its window instead (average pooling's transpose).
    pub fn forward_linearized<B: Back>(
        &self,
        feeds: &[(&str, DynTensor<B>)],
        targets: &[&str],
    ) -> Result<Vec<DynTensor<B>>> {
        self.forward_in(feeds, targets, None, Mode::Linearized)
    }

    /// [`Network::forward_any_size`] whose backward pass goes through ReLUs and Clips as if
    /// they were the identity (the forward values are unchanged): feature visualization's first
    /// steps, so that units behind inputs that are off for the start image get a gradient.
    pub fn forward_redirected<B: Back>(
        &self,
        feeds: &[(&str, DynTensor<B>)],
        targets: &[&str],
    ) -> Result<Vec<DynTensor<B>>> {
        self.forward_in(feeds, targets, None, Mode::Redirected)
    }

    /// [`Network::forward_any_size`] on the autodiff device that also takes the gradient at
    /// `probes` (tensor names on the way to `targets`): a tracked zero is added to each probed
    /// tensor as it is computed, and the gradient with respect to that leaf is the gradient with
    /// respect to the tensor, through every path from it. burn keeps gradients of leaves only,
    /// and feeding the tensor instead (as `technique::attribution` does for one layer) would cut
    /// the paths from an earlier probe through a later one. Returns the targets' values and each
    /// probe's value and leaf.
    pub fn forward_probed(
        &self,
        feeds: &[(&str, DynTensor)],
        probes: &[&str],
        targets: &[&str],
    ) -> Result<(Vec<DynTensor>, Vec<Probe>)> {
        let mut at = HashMap::new();
        for (k, p) in probes.iter().enumerate() {
            let tensor = self.resolve(p)?;
            let &(node, slot) = self.producer.get(&tensor).ok_or_else(|| {
                Error::Message(format!("{p} is not computed by a node: nothing to probe"))
            })?;
            at.insert((node, slot), k);
        }
        let feeds: Vec<(&str, Value)> = feeds
            .iter()
            .map(|(n, t)| (*n, Value::Device(t.clone())))
            .collect();
        let mut found: Vec<Option<Probe>> = vec![None; probes.len()];
        let values = crate::device::on_cpu_pool(self.device.burn(), || {
            self.evaluate(&feeds, targets, None, Mode::AnySize, &mut |i, outs| {
                for (slot, out) in outs.iter_mut().enumerate() {
                    let (Some(&k), Value::Device(d)) = (at.get(&(i, slot)), &*out) else {
                        continue;
                    };
                    let zero =
                        value::Storage::zeros(d.storage().dims(), &d.device()).require_grad();
                    let leaf = DynTensor::from_storage(zero.clone(), d.rank());
                    let probed = d.clone().map(|s| s + zero);
                    found[k] = Some(Probe {
                        value: d.clone(),
                        leaf,
                    });
                    *out = Value::Device(probed);
                }
            })
        })?;
        let outputs = self.device_values(values, targets, &feeds)?;
        let probes = found
            .into_iter()
            .zip(probes)
            .map(|(f, p)| {
                f.ok_or_else(|| {
                    Error::Message(format!(
                        "{p} was not computed on the way to {}: nothing to probe",
                        targets.join(", ")
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok((outputs, probes))
    }

    /// [`Network::forward_any_size`] of `feeds` to `layer` that also returns the values that
    /// patching `layer` would recompute for nothing: the tensors that the nodes between `layer`
    /// and `beyond` read from outside that way (a residual block's skip, an Inception module's
    /// other branches), which do not depend on `layer`. Fed alongside a patched `layer`, they
    /// spare each patched pass the network before it. Only values of the batch, on the device,
    /// with a leading axis of 1 and at least two axes come back (shape arithmetic on the host is
    /// recomputed, as it is cheap and may depend on the batch's size).
    pub(crate) fn forward_beside<B: Back>(
        &self,
        feeds: &[(&str, DynTensor<B>)],
        layer: &str,
        beyond: &str,
    ) -> Result<(DynTensor<B>, Vec<Named<B>>)> {
        let patched = self.resolve(layer)?;
        let beyond_name = beyond;
        let beyond = self.resolve(beyond)?;
        // The nodes on the way to `beyond` with `layer` given, and which of them read it.
        let mut needed = vec![false; self.nodes.len()];
        let mut stack = vec![beyond.as_str()];
        let mut reached = false;
        while let Some(t) = stack.pop() {
            reached |= t == patched;
            match self.producer.get(t) {
                Some(&(i, _)) if t != patched && !needed[i] => {
                    needed[i] = true;
                    stack.extend(self.nodes[i].inputs.iter().map(String::as_str));
                }
                _ => {}
            }
        }
        if !reached {
            return Err(Error::Message(format!(
                "{beyond_name} does not depend on {layer}"
            )));
        }
        // Nodes are in topological order: a node depends on `layer` once one of its inputs does.
        let mut after = vec![false; self.nodes.len()];
        let mut beside: Vec<String> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate().filter(|(i, _)| needed[*i]) {
            let from_layer: Vec<bool> = (node.inputs.iter())
                .map(|t| *t == patched || self.producer.get(t).is_some_and(|&(j, _)| after[j]))
                .collect();
            if !from_layer.contains(&true) {
                continue;
            }
            after[i] = true;
            for (t, from_layer) in node.inputs.iter().zip(from_layer) {
                if !from_layer && self.producer.contains_key(t) && !beside.contains(t) {
                    beside.push(t.clone());
                }
            }
        }
        let feeds: Vec<(&str, Value<B>)> = feeds
            .iter()
            .map(|(n, t)| (*n, Value::Device(t.clone())))
            .collect();
        let mut targets = vec![layer];
        targets.extend(beside.iter().map(String::as_str));
        let values = crate::device::on_cpu_pool(self.device.burn(), || {
            self.evaluate_batch(&feeds, &targets, None, Mode::AnySize)
        })?;
        let mut values = values.into_iter();
        let first = values.next().into_iter().collect();
        let activation = self.device_values(first, &[layer], &feeds)?.remove(0);
        let beside = beside
            .into_iter()
            .zip(values)
            .filter_map(|(t, v)| match v {
                Value::Device(d) if d.rank() >= 2 && d.dims()[0] == 1 => Some((t, d)),
                _ => None,
            })
            .collect();
        Ok((activation, beside))
    }

    /// [`Network::forward`] with tracked weights (their gradients are then computed).
    pub fn forward_with(
        &self,
        feeds: &[(&str, DynTensor)],
        targets: &[&str],
        weights: Option<&Weights>,
    ) -> Result<Vec<DynTensor>> {
        self.forward_in(feeds, targets, weights, Mode::Strict)
    }

    fn forward_in<B: Back>(
        &self,
        feeds: &[(&str, DynTensor<B>)],
        targets: &[&str],
        weights: Option<&Weights<B>>,
        mode: Mode,
    ) -> Result<Vec<DynTensor<B>>> {
        crate::device::on_cpu_pool(self.device.burn(), || {
            self.forward_on_this_thread(feeds, targets, weights, mode)
        })
    }

    fn forward_on_this_thread<B: Back>(
        &self,
        feeds: &[(&str, DynTensor<B>)],
        targets: &[&str],
        weights: Option<&Weights<B>>,
        mode: Mode,
    ) -> Result<Vec<DynTensor<B>>> {
        let feeds: Vec<(&str, Value<B>)> = feeds
            .iter()
            .map(|(n, t)| (*n, Value::Device(t.clone())))
            .collect();
        let values = self.evaluate_batch(&feeds, targets, weights, mode)?;
        self.device_values(values, targets, &feeds)
    }

    /// Results as device tensors on the feeds' device (host results are uploaded).
    fn device_values<B: Back>(
        &self,
        values: Vec<Value<B>>,
        targets: &[&str],
        feeds: &[(&str, Value<B>)],
    ) -> Result<Vec<DynTensor<B>>> {
        let device = self.device_of(feeds);
        values
            .into_iter()
            .zip(targets)
            .map(|(v, t)| match v {
                Value::Device(d) => Ok(d),
                // Shape arithmetic on the host may go past the device tensors' rank.
                Value::Host(h) if h.shape.len() > MAX_RANK => Err(Error::Message(format!(
                    "{t} {:?} has rank {}, over the runtime's {MAX_RANK}",
                    h.shape,
                    h.shape.len()
                ))),
                Value::Host(h) if h.elem != Elem::Bool => Ok(h.upload_to(&device)),
                Value::Host(_) => Err(Error::Message(format!("{t} is not a float tensor"))),
            })
            .collect()
    }

    /// Runs the network on host or device values and returns the values of `targets` as computed
    /// (shape-like results stay on the host).
    pub fn run(&self, feeds: &[(&str, Value)], targets: &[&str]) -> Result<Vec<Value>> {
        self.evaluate_batch(feeds, targets, None, Mode::Strict)
    }

    /// Output shapes of every node (first output) for a batch of 1 at the declared input size
    /// (224 for dynamic spatial axes).
    /// Computed once with a forward pass on zeros and cached.
    pub fn shapes(&self) -> Result<&[Vec<usize>]> {
        let shapes = self.shapes.get_or_init(|| {
            let mut shapes = vec![Vec::new(); self.nodes.len()];
            self.zeros_pass(None, &mut |i, outs| {
                shapes[i] = outs.first().map(Value::dims).unwrap_or_default();
            })
            .map(|_| shapes)
        });
        shapes.as_deref().map_err(|e| Error::Message(e.clone()))
    }

    /// Whether the file fixes the batch at 1: the whole graph runs on zeros at the declared size
    /// for one image but not for two. PyTorch's exporter writes such files even when asked for a
    /// dynamic batch, for code that folds the batch into another axis (`nn.MultiheadAttention`
    /// views its input as `[tokens, batch·heads, width]`, and the export keeps `batch·heads` as
    /// the number it was for one image); onnxruntime then refuses a batch of 2. Here a batch
    /// runs one image at a time on such a network, with the same results, only slower.
    /// Decided the first time a batch fails (or this is asked), by a pass on two images of zeros.
    pub fn batch_fixed(&self) -> bool {
        if let Some(&fixed) = self.batch_fixed.get() {
            return fixed;
        }
        // Not `get_or_init`: render lanes may ask at once, and a thread that waits inside the
        // probe's parallel ops may run another lane's step, which asks again on that thread.
        // Two probes give the same answer; one waiting on the other could never end.
        let fixed = self.shapes().is_ok() && self.zeros_pass(Some(2), &mut |_, _| {}).is_err();
        let _ = self.batch_fixed.set(fixed);
        fixed
    }

    /// Runs the whole graph on zeros at the declared input size: a batch of `batch`, else of the
    /// declared batch or 1 where it is dynamic; dynamic spatial axes are [`DYNAMIC_SIZE`].
    fn zeros_pass(
        &self,
        batch: Option<usize>,
        observe: &mut dyn FnMut(usize, &mut Vec<Value>),
    ) -> std::result::Result<(), String> {
        let device = self.device.burn().clone();
        let feeds: Vec<(String, Value)> = self
            .inputs
            .iter()
            .map(|i| {
                let dims: Vec<usize> = i
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(k, d)| match (k, batch) {
                        (0, Some(b)) => b,
                        _ => d.unwrap_or(if k == 0 { 1 } else { DYNAMIC_SIZE }),
                    })
                    .collect();
                let n = crate::budget::fits(&dims, 4)
                    .map_err(|e| format!("input {:?} as declared: {e}", i.name))?;
                Ok((
                    i.name.clone(),
                    Value::Device(DynTensor::from_host(&vec![0.0; n], &dims, &device)),
                ))
            })
            .collect::<std::result::Result<_, String>>()?;
        let feeds: Vec<(&str, Value)> =
            feeds.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        // Every node runs on the way to the sinks (nodes whose outputs nothing reads), and each
        // value is dropped after its last reader, as in any pass: asking for every node instead
        // kept all activations at once (24 GB for a 768 px MobileNetV5, 2 GB to evaluate).
        let read: HashSet<&str> = self
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .collect();
        let sinks: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| !n.outputs.iter().any(|o| read.contains(o.as_str())))
            .map(|n| n.name.as_str())
            .collect();
        self.evaluate(&feeds, &sinks, None, Mode::Strict, observe)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Bytes of every value one image of `[h, w]` pixels makes on its way to `targets` (each
    /// output of each node run, at 4 bytes an element), measured by a forward pass of one image
    /// of zeros at that size: the activations a gradient pass keeps per image, before its
    /// gradients and workspaces (see `technique::render`'s memory plan). Measured once for each
    /// size and targets: every technique plans its batch by it, each time it runs, and the pass
    /// costs as much as a forward pass of the image itself.
    pub fn forward_bytes(&self, size: [usize; 2], targets: &[&str]) -> Result<u64> {
        let key = (size, targets.iter().map(|t| t.to_string()).collect());
        let cache = || self.forward_bytes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&bytes) = cache().get(&key) {
            return Ok(bytes);
        }
        let bytes = self.measure_forward_bytes(size, targets)?;
        cache().insert(key, bytes);
        Ok(bytes)
    }

    /// [`Network::forward_bytes`], measured.
    fn measure_forward_bytes(&self, [h, w]: [usize; 2], targets: &[&str]) -> Result<u64> {
        let input = self.image_input()?;
        let channels = match input.shape.get(1) {
            Some(&Some(c)) => c,
            _ => {
                return Err(Error::Input {
                    name: input.name.clone(),
                    message: "the image input declares no channel count".into(),
                })
            }
        };
        let dims = [1, channels, h, w];
        let n = crate::budget::fits(&dims, 4).map_err(|e| Error::Input {
            name: input.name.clone(),
            message: e,
        })?;
        let zeros = DynTensor::<Dispatch>::from_host(&vec![0.0; n], &dims, self.device.burn());
        let feeds = [(input.name.as_str(), Value::Device(zeros))];
        let mut bytes = 0u64;
        crate::device::on_cpu_pool(self.device.burn(), || {
            self.evaluate(&feeds, targets, None, Mode::AnySize, &mut |_, outs| {
                for out in outs {
                    let n = out.dims().iter().map(|&d| d as u64).product::<u64>();
                    bytes = bytes.saturating_add(n.saturating_mul(4));
                }
            })
        })?;
        Ok(bytes)
    }

    /// The tensor name a target refers to.
    fn resolve(&self, target: &str) -> Result<String> {
        if let Some(&i) = self.names.get(target) {
            return Ok(self.nodes[i].outputs[0].clone());
        }
        if self.producer.contains_key(target)
            || self.constants.contains_key(target)
            || self.inputs.iter().any(|i| i.name == target)
        {
            return Ok(target.to_string());
        }
        Err(self.unknown(target))
    }

    /// The device of the fed device values, else the network's.
    fn device_of<B: Back>(&self, feeds: &[(&str, Value<B>)]) -> B::Device {
        feeds
            .iter()
            .find_map(|(_, v)| match v {
                Value::Device(t) => Some(t.device()),
                Value::Host(_) => None,
            })
            .unwrap_or_else(|| B::device_of(&self.device))
    }

    /// [`Network::evaluate`] without observer, for a batch that may have to run one image at a
    /// time (see [`Network::batch_fixed`]).
    fn evaluate_batch<B: Back>(
        &self,
        feeds: &[(&str, Value<B>)],
        targets: &[&str],
        weights: Option<&Weights<B>>,
        mode: Mode,
    ) -> Result<Vec<Value<B>>> {
        // The batch: the leading axis of the fed network inputs.
        let n = feeds
            .iter()
            .find(|(name, _)| self.inputs.iter().any(|i| i.name == *name))
            .and_then(|(_, v)| v.dims().first().copied())
            .unwrap_or(1);
        if n > 1 && self.batch_fixed.get() == Some(&true) {
            return self.one_at_a_time(n, feeds, targets, weights, mode);
        }
        match self.evaluate(feeds, targets, weights, mode, &mut |_, _| {}) {
            Err(_) if n > 1 && self.batch_fixed() => {
                self.one_at_a_time(n, feeds, targets, weights, mode)
            }
            result => result,
        }
    }

    /// Evaluates a batch of `n` as `n` batches of one (every fed value whose leading axis is `n`
    /// is split), and joins each target's values along its leading axis, which must be the
    /// batch's: an axis of 1 for one image.
    fn one_at_a_time<B: Back>(
        &self,
        n: usize,
        feeds: &[(&str, Value<B>)],
        targets: &[&str],
        weights: Option<&Weights<B>>,
        mode: Mode,
    ) -> Result<Vec<Value<B>>> {
        let mut per_target: Vec<Vec<Value<B>>> = vec![Vec::with_capacity(n); targets.len()];
        for k in 0..n {
            let item: Vec<(&str, Value<B>)> = feeds
                .iter()
                .map(|(name, v)| match v.dims().first() {
                    Some(&d) if d == n => (*name, v.item(k)),
                    _ => (*name, v.clone()),
                })
                .collect();
            let values = self.evaluate(&item, targets, weights, mode, &mut |_, _| {})?;
            for ((target, value), gathered) in targets.iter().zip(values).zip(&mut per_target) {
                if value.dims().first() != Some(&1) {
                    return Err(Error::Message(format!(
                        "{target} is {:?} for one image, with no batch axis: this model's file \
                         fixes its batch at 1 (its exporter wrote the batch into a shape), so a \
                         batch of {n} runs one image at a time, and only to nodes whose output \
                         leads with the batch",
                        value.dims()
                    )));
                }
                // A shape may follow the values (NonZero): images must agree to be joined.
                if let Some(first) = gathered.first().map(Value::dims) {
                    if first != value.dims() {
                        return Err(Error::Message(format!(
                            "{target} is {first:?} for the first image and {:?} for image {k}: \
                             a batch run one image at a time (this model's file fixes its batch \
                             at 1) cannot be joined",
                            value.dims()
                        )));
                    }
                }
                gathered.push(value);
            }
        }
        let device = self.device_of(feeds);
        Ok(per_target
            .into_iter()
            .map(|items| Value::join(items, &device))
            .collect())
    }

    fn evaluate<B: Back>(
        &self,
        feeds: &[(&str, Value<B>)],
        targets: &[&str],
        weights: Option<&Weights<B>>,
        mode: Mode,
        observe: &mut dyn FnMut(usize, &mut Vec<Value<B>>),
    ) -> Result<Vec<Value<B>>> {
        let any_size = mode != Mode::Strict;
        let wanted: Vec<String> = targets
            .iter()
            .map(|t| self.resolve(t))
            .collect::<Result<_>>()?;
        let device = self.device_of(feeds);
        let autodiff = B::ad_enabled(&device);
        let mut env: HashMap<&str, Slot<B>> = HashMap::new();
        for (name, value) in feeds {
            match self.inputs.iter().find(|i| i.name == *name) {
                Some(spec) => check_input(spec, &value.dims(), any_size)?,
                // Feeding an intermediate tensor patches it: its producer is not run.
                None if self.producer.contains_key(*name) => {}
                None => {
                    return Err(Error::Input {
                        name: name.to_string(),
                        message: format!(
                            "the network has no such input or tensor (inputs: {})",
                            self.inputs
                                .iter()
                                .map(|i| i.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
                }
            }
            env.insert(name, Slot::from(value.clone()));
        }
        // Which nodes are needed, and how many needed nodes read each tensor.
        let mut needed = vec![false; self.nodes.len()];
        let mut stack: Vec<&str> = wanted.iter().map(String::as_str).collect();
        while let Some(t) = stack.pop() {
            if env.contains_key(t) {
                continue;
            }
            if let Some(&(i, _)) = self.producer.get(t) {
                if !needed[i] {
                    needed[i] = true;
                    stack.extend(
                        self.nodes[i]
                            .inputs
                            .iter()
                            .filter(|s| !s.is_empty())
                            .map(String::as_str),
                    );
                }
            }
        }
        let mut uses: HashMap<&str, usize> = HashMap::new();
        let reads = self
            .nodes
            .iter()
            .zip(&needed)
            .filter(|(_, &n)| n)
            .flat_map(|(n, _)| &n.inputs);
        for t in reads.chain(&wanted) {
            *uses.entry(t.as_str()).or_default() += 1;
        }
        for (i, node) in self.nodes.iter().enumerate().filter(|(i, _)| needed[*i]) {
            let inputs = node
                .inputs
                .iter()
                .map(|name| self.input_slot(name, node, &env, autodiff, weights))
                .collect::<Result<_>>()?;
            // A stand-in makes one output: a node whose further outputs are read (MaxPool's
            // Indices, by which a MaxUnpool puts values back) runs itself, told that it is on a
            // linearized path.
            let stand_in = match mode {
                Mode::Linearized if node.outputs.iter().skip(1).all(|o| o.is_empty()) => {
                    ops::linearized(&node.op)
                }
                _ => None,
            };
            let ctx = Ctx {
                node,
                inputs,
                device: &device,
                linearized: mode == Mode::Linearized && stand_in.is_none(),
            };
            let kernel = stand_in.unwrap_or(B::kernel(self.specs[i]));
            let mut outs = guarded(node, || kernel(&ctx))?;
            if mode == Mode::Redirected && ops::cuts_off(&node.op) {
                outs = ops::pass_gradient_through(&ctx, outs)?;
            }
            if outs.len() < node.outputs.iter().filter(|o| !o.is_empty()).count() {
                return Err(node.error("produced fewer outputs than declared"));
            }
            observe(i, &mut outs);
            // Drop each intermediate after its last reader.
            for input in &node.inputs {
                if let Some(u) = uses.get_mut(input.as_str()) {
                    *u -= 1;
                    if *u == 0 {
                        env.remove(input.as_str());
                    }
                }
            }
            for (name, v) in node.outputs.iter().zip(outs) {
                let read_later = uses.contains_key(name.as_str());
                if !name.is_empty() && read_later && !env.contains_key(name.as_str()) {
                    env.insert(name, Slot::from(v));
                }
            }
        }
        wanted
            .iter()
            .map(|w| {
                env.get(w.as_str())
                    .cloned()
                    .or_else(|| self.constant_slot(w, autodiff, weights))
                    .map(Slot::into_value)
                    .ok_or_else(|| Error::Message(format!("tensor {w} was not computed")))
            })
            .collect()
    }

    /// The slot for input `name` of `node`: a computed or fed value, else a constant.
    fn input_slot<B: Back>(
        &self,
        name: &str,
        node: &Node,
        env: &HashMap<&str, Slot<B>>,
        autodiff: bool,
        weights: Option<&Weights<B>>,
    ) -> Result<Option<Slot<B>>> {
        if name.is_empty() {
            return Ok(None);
        }
        let slot = env
            .get(name)
            .cloned()
            .or_else(|| self.constant_slot(name, autodiff, weights));
        if slot.is_none() && self.inputs.iter().any(|i| i.name == name) {
            return Err(Error::Input {
                name: name.to_string(),
                message: format!(
                    "no value was fed for this input (node {} needs it)",
                    node.name
                ),
            });
        }
        Ok(slot)
    }

    fn constant_slot<B: Back>(
        &self,
        name: &str,
        autodiff: bool,
        weights: Option<&Weights<B>>,
    ) -> Option<Slot<B>> {
        let c = self.constants.get(name)?;
        let device = match weights.and_then(|w| w.get(name)) {
            Some(tracked) => Some(tracked.clone()),
            None => B::constant(c, autodiff),
        };
        Some(Slot {
            host: c.host.clone(),
            device,
        })
    }
}

/// A tensor probed by [`Network::forward_probed`].
#[derive(Clone, Debug)]
pub struct Probe {
    /// Its value.
    pub value: DynTensor,
    /// The zero added to it: `leaf.grad(&grads)` is the gradient with respect to it.
    pub leaf: DynTensor,
}

/// A weight as an autodiff constant: usable in a tracked graph, but no gradient is computed for it.
fn freeze(d: &DynTensor) -> DynTensor {
    DynTensor::from_storage(value::Storage::from_inner(d.storage().clone()), d.rank())
}

thread_local! {
    /// Whether this thread is inside [`guarded`], whose panics become errors (not printed).
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Wraps the process's panic hook once so panics caught by [`guarded`] print nothing: they
/// reach the user as errors naming the node. Every other panic is reported as before.
fn quiet_guarded_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(|g| g.get()) {
                previous(info);
            }
        }));
    });
}

/// Runs an operator, turning a panic inside the tensor library into an error that names the node.
fn guarded<B: Backend>(
    node: &Node,
    f: impl FnOnce() -> Result<Vec<Value<B>>>,
) -> Result<Vec<Value<B>>> {
    guard(f, |reason| {
        node.error(format!(
            "the tensor backend rejected the operation: {reason}"
        ))
    })
}

/// Runs `f`, turning a panic inside the tensor library into the error `blame` builds from the
/// panic's message. The panic itself prints nothing.
pub(crate) fn guard<T>(
    f: impl FnOnce() -> Result<T>,
    blame: impl FnOnce(String) -> Error,
) -> Result<T> {
    quiet_guarded_panics();
    let outer = GUARDED.with(|g| g.replace(true));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    caught.unwrap_or_else(|payload| {
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown failure");
        let reason = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("==="))
            .collect::<Vec<_>>()
            .join(" ");
        Err(blame(reason))
    })
}

/// The number of units of `node` whose output has `shape`: as [`UnitLayout`] reads them, for a
/// node whose op holds units ([`ops::has_units`]); else 0.
pub fn node_units(node: &Node, shape: &[usize]) -> usize {
    if ops::has_units(&node.op) {
        UnitLayout::units(shape)
    } else {
        0
    }
}

/// Checks a fed value against the declared input shape; the first axis is the batch and may
/// have any size, and with `any_size` so may the spatial axes (from the third on).
fn check_input(spec: &InputSpec, dims: &[usize], any_size: bool) -> Result<()> {
    let free = |i: usize| i == 0 || (any_size && i >= 2);
    let fits = spec.shape.len() == dims.len()
        && spec
            .shape
            .iter()
            .zip(dims)
            .enumerate()
            .all(|(i, (want, got))| free(i) || want.is_none_or(|w| w == *got));
    if fits {
        return Ok(());
    }
    let want: Vec<String> = spec
        .shape
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    // Images channels-last, as TensorFlow keeps them (a Keras model's input is declared
    // channels-first here too: see `import::layout`).
    let channels_last = match (&spec.shape[..], dims) {
        ([_, Some(c), h, w], &[_, gh, gw, gc]) => {
            gc == *c && h.is_none_or(|h| h == gh) && w.is_none_or(|w| w == gw) && gc != gh
        }
        _ => false,
    };
    let hint = if channels_last {
        "; these images are channels-last: microscope takes them channels-first, [N, C, H, W] \
         (numpy: x.transpose(0, 3, 1, 2))"
    } else {
        ""
    };
    Err(Error::Input {
        name: spec.name.clone(),
        message: format!("expected shape [{}], got {dims:?}{hint}", want.join(", ")),
    })
}

/// What [`fold_constants`] leaves.
struct Folded {
    nodes: Vec<Node>,
    specs: Vec<&'static OpSpec>,
    constants: HashMap<String, HostTensor>,
    dropped: HashMap<String, Arc<Node>>,
}

/// Evaluates on the host every node whose inputs are all constants, turning its outputs into
/// constants (weights materialized from ConstantOfShape, shape arithmetic on initializers).
///
/// An initializer that only such nodes read is dropped once the last of them has run, unless
/// it is a graph output: a quantized model's 8-bit weights, read by DequantizeLinear alone,
/// would otherwise stay resident next to their float values, as `i64` (8 bytes a weight: 1.1
/// GB more for an int8 VGG-19). `dropped` maps each to that last node, for the error that
/// names it. What folding made stays, so every node can still be evaluated.
fn fold_constants(
    nodes: Vec<Node>,
    specs: Vec<&'static OpSpec>,
    mut constants: HashMap<String, HostTensor>,
    outputs: &[String],
) -> Result<Folded> {
    let cpu = Device::cpu().burn().clone();
    let outputs: HashSet<&str> = outputs.iter().map(String::as_str).collect();
    let initializers: HashSet<String> = constants.keys().cloned().collect();
    let mut readers: HashMap<String, usize> = HashMap::new();
    for input in nodes.iter().flat_map(|n| &n.inputs) {
        *readers.entry(input.clone()).or_default() += 1;
    }
    let mut kept_nodes = Vec::new();
    let mut kept_specs = Vec::new();
    let mut dropped = HashMap::new();
    for (node, spec) in nodes.into_iter().zip(specs) {
        let foldable = node
            .inputs
            .iter()
            .all(|i| i.is_empty() || constants.contains_key(i));
        if !foldable {
            kept_nodes.push(node);
            kept_specs.push(spec);
            continue;
        }
        // Initializers that no later node reads: dropped after this one, so taken out for it
        // rather than copied (unless it reads one twice). Sets, not scans: a hostile file's
        // node may have a million inputs.
        let mut reads: HashMap<&str, usize> = HashMap::new();
        for input in &node.inputs {
            *reads.entry(input.as_str()).or_default() += 1;
        }
        let made: HashSet<&str> = node.outputs.iter().map(String::as_str).collect();
        let mut last = HashSet::new();
        for (&input, &times) in reads.iter().filter(|(i, _)| initializers.contains(**i)) {
            if let Some(left) = readers.get_mut(input) {
                *left -= times;
                if *left == 0 && !outputs.contains(input) && !made.contains(input) {
                    last.insert(input);
                }
            }
        }
        let once = |i: &str| reads[i] == 1;
        let inputs = node
            .inputs
            .iter()
            .map(|i| {
                let host = match last.contains(i.as_str()) && once(i) {
                    true => constants.remove(i),
                    false => constants.get(i).cloned(),
                };
                host.map(|h| Slot {
                    host: Some(h),
                    device: None,
                })
            })
            .collect();
        let ctx = Ctx {
            node: &node,
            inputs,
            device: &cpu,
            linearized: false,
        };
        let outs = guarded(&node, || (spec.kernel.dispatch)(&ctx))?;
        drop(ctx);
        for (name, v) in node.outputs.iter().zip(outs) {
            if !name.is_empty() {
                constants.insert(name.clone(), v.into_host());
            }
        }
        if !last.is_empty() {
            let reader = Arc::new(node.clone());
            for input in last {
                constants.remove(input);
                dropped.insert(input.to_string(), reader.clone());
            }
        }
    }
    Ok(Folded {
        nodes: kept_nodes,
        specs: kept_specs,
        constants,
        dropped,
    })
}
