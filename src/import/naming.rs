//! Readable, unique node names for graphs whose nodes are unnamed or numbered (`n12`, `r52`).
//!
//! In order of preference a node is named:
//! 1. by its own name, when that name says something (not empty, not `n12` or `Conv_3`) and
//!    PyTorch's exporter did not make it (its `node_Conv_292`);
//! 2. after its first parameter: a Conv whose weight is `inception_4a/1x1_w_0` becomes
//!    `inception_4a/1x1`;
//! 3. after the PyTorch module that made it, when the exporter noted it or wrote it into the
//!    name ([`TorchCall`]): `layer1.0.relu`, `layer1.0.add`; or after the Keras layer, from
//!    the TensorFlow scopes tf2onnx names nodes by: `conv2_block1_out`, `conv1_bn/mul`;
//! 4. an activation after the node it activates: `inception_4a/1x1/relu`;
//! 5. a Concat after the block its inputs share: `inception_4a/output`;
//! 6. else op type and index: `MaxPool_2`.
//!
//! Collisions get a `_2`, `_3`, ... suffix.

use std::collections::{HashMap, HashSet};

use super::proto::StringStringEntryProto;

/// What the namer needs to know about one node.
pub struct NodeInfo<'a> {
    pub name: &'a str,
    pub op: &'a str,
    pub inputs: &'a [String],
    pub outputs: &'a [String],
    /// The PyTorch module that made the node, when the exporter noted it ([`TorchCall::read`]).
    pub torch: Option<&'a TorchCall>,
}

/// Where in a PyTorch model a node comes from, from the notes of PyTorch's ONNX exporter (the
/// `dynamo=True` one, the default from PyTorch 2.9). Its node names are counters
/// (`node_Conv_292`, `node_relu_1`), but each node carries the path of modules that called it
/// (`pkg.torch.onnx.name_scopes`: `['', 'layer1', 'layer1.0', 'layer1.0.relu', 'relu_1']`, the
/// last entry the call itself) and their classes (`pkg.torch.onnx.class_hierarchy`).
///
/// As in torchvision's feature extraction, a `torch.nn` module's computation is named after the
/// module (`layer1.0.relu`, `avgpool`; where it takes several nodes, the last, which gives the
/// module's output, and the others after the module and their call: `features.0.2.silu`), and
/// a call in a model's own `forward` after the module and the call (`layer1.0.add`, `view` at
/// the top).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchCall {
    /// The innermost module's path (`layer1.0.relu`), empty at the top.
    pub module: String,
    /// The call, without its counter (`relu`, `add`, `view`).
    pub call: String,
    /// Whether the module is one of `torch.nn`'s own (a leaf, as torchvision's feature
    /// extraction treats them).
    pub leaf: bool,
    /// What joins the module and the call: `.` as in PyTorch, `/` for Keras's layers.
    pub sep: char,
}

impl TorchCall {
    /// The exporter's notes among a node's metadata, if any.
    pub fn read(metadata: &[StringStringEntryProto]) -> Option<TorchCall> {
        let note = |key: &str| {
            metadata
                .iter()
                .find(|e| e.key == key)
                .and_then(|e| python_strings(&e.value))
        };
        let scopes = note("pkg.torch.onnx.name_scopes")?;
        let [.., module, call] = &scopes[..] else {
            return None;
        };
        // Not a module: torch's own bookkeeping (`_empty_nn_module_stack_from_metadata_hook`).
        let module = if module.starts_with('_') { "" } else { module };
        // `relu_1` is the second call of `relu`: the counter says nothing the path does not.
        let call = match call.rsplit_once('_') {
            Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => stem,
            _ => call,
        };
        let call = call.trim_matches('_');
        if module.is_empty() && call.is_empty() {
            return None;
        }
        let classes = note("pkg.torch.onnx.class_hierarchy").unwrap_or_default();
        let leaf = !module.is_empty()
            && classes.len() >= 2
            && classes[classes.len() - 2].starts_with("torch.nn.modules.");
        Some(TorchCall {
            module: module.to_string(),
            call: call.to_string(),
            leaf,
            sep: '.',
        })
    }

    /// The module paths and calls that PyTorch's classic exporter (`dynamo=False`, the default
    /// before PyTorch 2.9) writes into node names, one per node of `nodes` (name, op type):
    /// `/layer1/layer1.0/conv1/Conv` is `layer1.0.conv1`'s Conv, `/layer1/layer1.0/Add` an add in
    /// `layer1.0`'s own `forward`, `/Flatten` one at the top. Each scope is a module's path from
    /// its last part that is not a number on (`layer1.0` for `layer1.0`, `conv1` for
    /// `layer1.0.conv1`, `block.0.0` for `features.1.block.0.0`), so the path is rebuilt scope by
    /// scope. The names carry no classes: a module is a leaf when no node lies inside it.
    /// `None` for a name not of that form.
    pub fn from_scopes(nodes: &[(&str, &str)]) -> Vec<Option<TorchCall>> {
        let parsed: Vec<Option<(String, String)>> = nodes
            .iter()
            .map(|&(name, op)| classic_scope(name, op))
            .collect();
        with_leaves(parsed, '.')
    }

    /// The Keras layers that tf2onnx writes into node names from TensorFlow's name scopes, one
    /// per node of `nodes` (names): `resnet50_1/conv2_block1_out_1/Relu` is the Relu of layer
    /// `conv2_block1_out` of model `resnet50`. Keras 3 adds `_1` to each layer's scope (`_2` to
    /// a second call), not to the scopes of TensorFlow's ops inside it
    /// (`conv1_bn_1/batchnorm/mul_1`), so a layer inside a model inside the model is found too
    /// (`mobilenetv2_1.00_224/block_1_expand`). The model's own scope, which every node has, is
    /// left out. `None` for every node unless the names are of that form (Keras 2's carry no
    /// such mark).
    pub fn from_keras_scopes(nodes: &[&str]) -> Vec<Option<TorchCall>> {
        let none = || vec![None; nodes.len()];
        let Some(model) = nodes
            .first()
            .and_then(|n| n.split_once('/'))
            .map(|(m, _)| m)
        else {
            return none();
        };
        if keras_counter(model).is_none() {
            return none();
        }
        let mut parsed = Vec::with_capacity(nodes.len());
        for name in nodes {
            let mut scopes: Vec<&str> = name.split('/').collect();
            let op = scopes.pop().unwrap_or_default();
            if scopes.first() != Some(&model) {
                return none();
            }
            let layers: Vec<&str> = scopes[1..]
                .iter()
                .map_while(|scope| keras_counter(scope))
                .collect();
            if !layers.iter().all(|l| module_part(l)) || op.is_empty() {
                return none();
            }
            // The op, without tf2onnx's counters (`mul_1__6`).
            let op = op.split("__").next().unwrap_or_default();
            let call = keras_counter(op).unwrap_or(op).to_lowercase();
            parsed.push(Some((layers.join("/"), call)));
        }
        with_leaves(parsed, '/')
    }

    /// `module.call`, or whichever of the two there is.
    fn qualified(&self) -> String {
        match (self.module.as_str(), self.call.as_str()) {
            (m, "") => m.to_string(),
            ("", c) => c.to_string(),
            (m, c) => format!("{m}{}{c}", self.sep),
        }
    }

    /// Whether a layer named `name` sits beside this module (`conv1` beside `bn1`: a Conv the
    /// exporter fused a BatchNormalization into).
    fn beside(&self, name: &str) -> bool {
        let parent = |path: &str| path.rsplit_once('.').map_or("", |(p, _)| p).to_string();
        parent(name) == parent(&self.module)
    }
}

/// Whether `part` can be one part of a module's path: `layer1`, `0`, `block1-0` (Python allows a
/// child any name without a dot), but nothing empty and no spaces or control characters.
fn module_part(part: &str) -> bool {
    !part.is_empty() && !part.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/')
}

/// `name` without the counter Keras 3 adds to a layer's scope (`conv1_1` → `conv1`); `None`
/// without one.
fn keras_counter(name: &str) -> Option<&str> {
    let (stem, n) = name.rsplit_once('_')?;
    (!stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(stem)
}

/// Module paths and calls as [`TorchCall`]s, each module a leaf when no other lies inside it
/// (paths joined by `sep`).
fn with_leaves(parsed: Vec<Option<(String, String)>>, sep: char) -> Vec<Option<TorchCall>> {
    // `m.` for every module path m, sorted: the paths inside m follow `m.` at once. (A set of
    // every path's ancestors would cost the square of a path's depth, and a file's names may be
    // thousands of scopes deep.)
    let mut keys: Vec<String> = parsed
        .iter()
        .flatten()
        .map(|(module, _)| format!("{module}{sep}"))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let outer = |module: &str| {
        let key = format!("{module}{sep}");
        let next = keys.partition_point(|k| *k <= key);
        keys.get(next).is_some_and(|k| k.starts_with(&key))
    };
    parsed
        .into_iter()
        .map(|p| {
            let (module, call) = p?;
            Some(TorchCall {
                leaf: !module.is_empty() && !outer(&module),
                module,
                call,
                sep,
            })
        })
        .collect()
}

/// A classic export's node name read as (module path, call): see [`TorchCall::from_scopes`].
fn classic_scope(name: &str, op: &str) -> Option<(String, String)> {
    let mut scopes: Vec<&str> = name.strip_prefix('/')?.split('/').collect();
    // The op type, with a counter after the first node of its kind in a scope (`Add_1`).
    let last = scopes.pop()?;
    let stem = match last.rsplit_once('_') {
        Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => stem,
        _ => last,
    };
    if stem != op {
        return None;
    }
    let number = |a: &str| a.bytes().all(|b| b.is_ascii_digit());
    let mut path: Vec<&str> = Vec::new();
    for scope in scopes {
        let mut parts: Vec<&str> = scope.split('.').collect();
        // A module called again in the same scope gets a counter on its own part (the second
        // call of a shared head's `conv.0.0` is `conv.0.0_1`, of `cls_logits` is
        // `cls_logits_1`). It is kept in the name, and read past to find the module's place.
        let own = parts.pop()?;
        let counted = match own.rsplit_once('_') {
            Some((stem, n)) if !stem.is_empty() && !n.is_empty() && number(n) => stem,
            _ => own,
        };
        parts.push(if number(counted) { counted } else { own });
        let head = &parts[..parts.len() - 1];
        // Finding the ancestors below costs the square of their count: no module is nested in
        // that many lists at once.
        if head.len() > 16 {
            return None;
        }
        // A name, then numbers: all but the last are ancestors', those the path has last, and
        // those of modules that were never called (an `nn.ModuleList`, whose children are
        // called one by one: `/encoder/layer.0/...` for `encoder.layer.0`). Or numbers only,
        // the whole path (the layers of a top-level `nn.Sequential`: `/0/Conv`).
        let known = match parts.iter().position(|a| !number(a)) {
            Some(0) if parts[1..].iter().all(|a| number(a)) => (0..=head.len())
                .rev()
                .find(|&k| path.ends_with(&head[..k]))
                .unwrap_or(0),
            None if path == head => head.len(),
            _ => return None,
        };
        if !parts.iter().chain([&own]).all(|a| module_part(a)) {
            return None;
        }
        path.extend(&head[known..]);
        path.push(own);
    }
    Some((path.join("."), op.to_lowercase()))
}

/// The strings of a Python list literal of plain strings (`['', 'layer1']`); `None` for
/// anything else (escapes included).
fn python_strings(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(", ")
        .map(|item| {
            let quote = item.chars().next().filter(|q| matches!(q, '\'' | '"'))?;
            let body = item.strip_prefix(quote)?.strip_suffix(quote)?;
            (!body.contains(['\'', '"', '\\'])).then(|| body.to_string())
        })
        .collect()
}

/// How many activations may nest in a name (`conv/relu/lrn`) before they are named after the
/// chain's root instead.
const MAX_ACTIVATION_NESTING: usize = 3;

const PARAM_SUFFIXES: &[&str] = &[
    "_w", "_b", "_W", "_B", "_s", ".weight", ".bias", "_weight", "_bias", "/weight", "/bias",
    "_weights", "/kernel", "_kernel", "_scale", "/scale", ".scale", "_gamma", "/gamma", ".gamma",
];

/// Whether a node or tensor name is only a counter (`n12`, `r52`, `123`, `Conv_3`,
/// `onnx::Conv_55`).
pub fn is_generic(name: &str, op: &str) -> bool {
    // The classic PyTorch exporter's made-up tensor names (`onnx::Conv_55`).
    if name.starts_with("onnx::") {
        return true;
    }
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let stem = stem.trim_end_matches(['_', ':', '.']);
    stem.len() <= 3 && stem.chars().all(|c| c.is_ascii_alphabetic()) || stem == op
}

/// A quantized op's node as onnxruntime's quantizer names it after the float node it replaced
/// (`conv1_quant` for `conv1`), by that node's name.
fn unquantized<'a>(name: &'a str, op: &str) -> &'a str {
    let quantized = op.starts_with("QLinear") || op == "QGemm" || op.ends_with("Integer");
    match name.strip_suffix("_quant") {
        Some(stem) if quantized && !stem.is_empty() => stem,
        _ => name,
    }
}

/// Whether a constant is one PyTorch's exporter made, named after the FX node that made it
/// (`scalar_tensor_default` for the 2 of `(a + b) / 2`, `full_default`, `_tensor_constant0`,
/// `lifted_tensor_0`), not a parameter of a module.
fn made_by_torch(name: &str) -> bool {
    name.ends_with("_default")
        || name.starts_with("_tensor_constant")
        || name.contains("lifted_tensor")
}

/// The layer name a parameter tensor implies: `inception_4a/1x1_w_0` → `inception_4a/1x1`.
pub fn param_stem(param: &str) -> String {
    let mut s = param;
    // onnxruntime's quantizer stores `fc1.weight` as `fc1.weight_quantized` and names what its
    // DequantizeLinear makes of it `fc1.weight_DequantizeLinear_Output`.
    for suffix in ["_DequantizeLinear_Output", "_quantized"] {
        s = s
            .strip_suffix(suffix)
            .filter(|r| !r.is_empty())
            .unwrap_or(s);
    }
    for suffix in [":0", "_0"] {
        if let Some(rest) = s.strip_suffix(suffix) {
            if !rest.is_empty() {
                s = rest;
                break;
            }
        }
    }
    for suffix in PARAM_SUFFIXES {
        if let Some(rest) = s.strip_suffix(suffix) {
            if !rest.is_empty() {
                return rest.to_string();
            }
        }
    }
    s.to_string()
}

/// Computes a readable, unique name for every node. `params` are the tensors that hold weights
/// (initializers and constant-only subgraph outputs), each mapped to the name of the
/// initializer it comes from.
pub fn readable_names(nodes: &[NodeInfo], params: &HashMap<String, String>) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(nodes.len());
    let mut derived = vec![false; nodes.len()];
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut unique = Unique::default();
    // A name never given to a node when it is another node's tensor: a name asks for a node
    // first, and the file's tensor must stay reachable by its own name (onnxruntime's quantizer
    // keeps the Gemm `logits` and renames its output, giving `logits` to the DequantizeLinear
    // after it, the graph's output). Such a node is named after its op within it: `logits/gemm`.
    let tensors: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |t| (t.as_str(), i)))
        .collect();
    let apart = |base: String, i: usize| match tensors.get(base.as_str()) {
        Some(&p) if p != i => format!("{base}/{}", nodes[i].op.to_lowercase()),
        _ => base,
    };
    // For a node named after the activation chain it ends: the chain's first node, and how
    // many activations deep this one is.
    let mut activation_chain: Vec<Option<(usize, usize)>> = vec![None; nodes.len()];
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for n in nodes.iter().filter(|n| n.torch.is_some()) {
        for t in n.inputs.iter().skip(1) {
            *readers.entry(t).or_default() += 1;
        }
    }
    // One call of a `torch.nn` module is a run of its nodes; the run's last gives its output.
    let leaf_module = |i: usize| {
        nodes
            .get(i)
            .and_then(|n| n.torch)
            .filter(|t| t.leaf)
            .map(|t| &t.module)
    };
    let ends_call: Vec<bool> = (0..nodes.len())
        .map(|i| leaf_module(i).is_some() && leaf_module(i) != leaf_module(i + 1))
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        let data_input = n
            .inputs
            .iter()
            .find(|t| !t.is_empty() && !params.contains_key(*t));
        let from_producer = data_input.and_then(|t| producer.get(t.as_str()).copied());
        // PyTorch's exporter names nodes after counters, its calls or its rewrite rules
        // (`node_Conv_292`, `n0_19`): what it noted about the module says more.
        let candidate = if !n.name.is_empty() && !is_generic(n.name, n.op) && n.torch.is_none() {
            Some(unquantized(n.name, n.op).to_string())
        } else if let Some(stem) = n
            .inputs
            .iter()
            .skip(1)
            .filter_map(|t| Some((t, param_stem(params.get(t)?))))
            .find(|(t, stem)| {
                // For PyTorch's exporter, only a weight of the module, or of one beside it
                // that this node alone reads (a conv with its batch norm folded in). Not a
                // Clip's bound (`min_val_cast`), a constant it made up (`val_226`), or weights
                // it merged because they were equal (every untrained LayerNorm's).
                // Of a leaf module that takes several nodes, the last gives its output and has
                // its name (of torchvision's LayerNorm2d in a classic export, its transpose back,
                // not the norm that reads its weight).
                n.torch.is_none_or(|torch| {
                    // Keras's weights are named after TensorFlow's ops that read them
                    // (`conv1_conv_1/convolution/ReadVariableOp:0`), never after a layer.
                    if torch.sep != '.' {
                        return false;
                    }
                    // A module's parameter is named by its path (not `/Constant_2_output_0`,
                    // the classic exporter's name for a constant).
                    let path = stem.split('.').all(module_part);
                    path && !is_generic(stem, n.op)
                        && !made_by_torch(stem)
                        && if *stem == torch.module {
                            ends_call[i] || !torch.leaf
                        } else {
                            torch.beside(stem) && readers.get(t.as_str()) == Some(&1)
                        }
                })
            })
            .map(|(_, stem)| stem)
        {
            Some(stem)
        } else if let Some(torch) = n.torch {
            Some(if ends_call[i] {
                torch.module.clone()
            } else {
                torch.qualified()
            })
        } else if crate::network::ops::is_activation(n.op)
            && from_producer.is_some_and(|p| derived[p])
        {
            let p = from_producer.expect("checked");
            // `conv/relu`, `conv/relu/lrn`: each activation nests under what it follows, up to
            // a few levels. A longer chain of them names each after the chain's root
            // (`conv/relu_7`), so a file of thousands of chained activations cannot grow
            // names quadratically.
            let (root, depth) = activation_chain[p].unwrap_or((p, 0));
            if depth < MAX_ACTIVATION_NESTING {
                activation_chain[i] = Some((root, depth + 1));
                Some(format!("{}/{}", names[p], n.op.to_lowercase()))
            } else {
                activation_chain[i] = Some((root, depth));
                Some(format!("{}/{}", names[root], n.op.to_lowercase()))
            }
        } else if n.op == "Concat" {
            let parents: Vec<&str> = n
                .inputs
                .iter()
                .filter_map(|t| producer.get(t.as_str()))
                .filter(|&&p| derived[p])
                .map(|&p| names[p].as_str())
                .collect();
            common_block(&parents).map(|b| format!("{b}/output"))
        } else {
            None
        };
        derived[i] = candidate.is_some();
        let base = candidate.unwrap_or_else(|| format!("{}_{i}", n.op));
        names.push(unique.claim(apart(base, i)));
        for out in n.outputs {
            producer.insert(out, i);
        }
    }
    // A node that kept a generic name but feeds only nodes of one block belongs to that block
    // (e.g. the pool branch of an inception block): `inception_3a/maxpool`.
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (j, n) in nodes.iter().enumerate() {
        for t in n.inputs {
            if let Some(&p) = producer.get(t.as_str()) {
                // j only grows, so a repeat can only be the last entry (linear, even for a
                // tensor that thousands of nodes read).
                if p != j && consumers[p].last() != Some(&j) {
                    consumers[p].push(j);
                }
            }
        }
    }
    for i in 0..nodes.len() {
        if derived[i] || consumers[i].is_empty() || !consumers[i].iter().all(|&c| derived[c]) {
            continue;
        }
        let readers: Vec<&str> = consumers[i].iter().map(|&c| names[c].as_str()).collect();
        let block = match readers[..] {
            [one] => one.rsplit_once('/').map(|(b, _)| b.to_string()),
            _ => common_block(&readers),
        };
        if let Some(block) = block {
            let base = format!("{block}/{}", nodes[i].op.to_lowercase());
            let name = unique.claim(apart(base, i));
            unique.release(&names[i]);
            names[i] = name;
        }
    }
    names
}

/// Names handed out so far. A taken name gets the first free `_2`, `_3`, … suffix; the search
/// for a base resumes where the last one for that base stopped, so a file with thousands of
/// nodes of one name still loads in linear time.
#[derive(Default)]
struct Unique {
    used: HashSet<String>,
    next: HashMap<String, usize>,
}

impl Unique {
    fn claim(&mut self, base: String) -> String {
        if self.used.insert(base.clone()) {
            return base;
        }
        let k = self.next.entry(base.clone()).or_insert(2);
        loop {
            let name = format!("{base}_{k}");
            *k += 1;
            if self.used.insert(name.clone()) {
                return name;
            }
        }
    }

    fn release(&mut self, name: &str) {
        self.used.remove(name);
    }
}

/// The longest `/`-separated prefix shared by all names (at least two names, non-empty prefix).
fn common_block(names: &[&str]) -> Option<String> {
    let (first, rest) = names.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let mut prefix: Vec<&str> = first.split('/').collect();
    prefix.pop();
    for n in rest {
        let segs: Vec<&str> = n.split('/').collect();
        let common = prefix.iter().zip(&segs).take_while(|(a, b)| a == b).count();
        prefix.truncate(common.min(segs.len().saturating_sub(1)));
    }
    (!prefix.is_empty()).then(|| prefix.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_strip_parameter_suffixes() {
        assert_eq!(param_stem("inception_4a/1x1_w_0"), "inception_4a/1x1");
        assert_eq!(
            param_stem("gpu_0/res2_0_branch2a_bn_s_0"),
            "gpu_0/res2_0_branch2a_bn"
        );
        assert_eq!(param_stem("features.0.weight"), "features.0");
    }

    #[test]
    fn counters_are_generic() {
        assert!(is_generic("n12", "Conv"));
        assert!(is_generic("r52", "Relu"));
        assert!(is_generic("Conv_3", "Conv"));
        assert!(is_generic("", "Conv"));
        assert!(!is_generic("/features/features.0/Conv", "Conv"));
        assert!(!is_generic("conv1", "Conv"));
    }

    type Triple = Option<(String, String, bool)>;

    /// Each call as (module, call, leaf).
    fn triples(calls: Vec<Option<TorchCall>>) -> Vec<Triple> {
        calls
            .into_iter()
            .map(|t| t.map(|t| (t.module, t.call, t.leaf)))
            .collect()
    }

    fn want(module: &str, call: &str, leaf: bool) -> Triple {
        Some((module.into(), call.into(), leaf))
    }

    #[test]
    fn classic_pytorch_names_are_read_as_module_paths() {
        let nodes = [
            ("/conv1/Conv", "Conv"),
            ("/layer1/layer1.0/conv1/Conv", "Conv"),
            ("/layer1/layer1.0/Add", "Add"),
            ("/layer1/layer1.0/Add_1", "Add"),
            ("/layer1/layer1.0/relu_1/Relu", "Relu"),
            ("/features/features.1/block/block.0/block.0.0/Conv", "Conv"),
            ("/Flatten", "Flatten"),
            ("/0/Conv", "Conv"),
            ("/0/0.1/Relu", "Relu"),
            ("/trunk/block1/block1-0/proj/proj.0/Conv", "Conv"),
            ("/encoder/layer.0/conv/Conv", "Conv"),
            ("/encoder/layer.0/Add", "Add"),
            ("/rpn/head/conv/conv.0/conv.0.0_1/Conv", "Conv"),
            ("/rpn/head/cls_logits_1/Conv", "Conv"),
            // Not of that form.
            ("/a/0.1/Conv", "Conv"),
            ("/conv1/Relu", "Conv"),
            ("conv1/Conv", "Conv"),
            ("/a b/Conv", "Conv"),
            ("//Conv", "Conv"),
            ("/x.y/Conv", "Conv"),
            ("/0.x/Conv", "Conv"),
            ("/a\u{1b}[2J/Conv", "Conv"),
            ("/", "Conv"),
            ("", "Conv"),
        ];
        let got = triples(TorchCall::from_scopes(&nodes));
        assert_eq!(
            got,
            [
                want("conv1", "conv", true),
                want("layer1.0.conv1", "conv", true),
                want("layer1.0", "add", false),
                want("layer1.0", "add", false),
                want("layer1.0.relu_1", "relu", true),
                want("features.1.block.0.0", "conv", true),
                want("", "flatten", false),
                want("0", "conv", false),
                want("0.1", "relu", true),
                want("trunk.block1.block1-0.proj.0", "conv", true),
                want("encoder.layer.0.conv", "conv", true),
                want("encoder.layer.0", "add", false),
                want("rpn.head.conv.0.0_1", "conv", true),
                want("rpn.head.cls_logits_1", "conv", true),
            ]
            .into_iter()
            .chain(std::iter::repeat_n(None, 10))
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn pytorch_nodes_are_named_after_their_modules() {
        let notes = |scopes: &str, classes: &str| {
            [
                ("pkg.torch.onnx.name_scopes", scopes),
                ("pkg.torch.onnx.class_hierarchy", classes),
            ]
            .map(|(key, value)| StringStringEntryProto {
                key: key.into(),
                value: value.into(),
            })
        };
        let call = |module: &str, call: &str, leaf| TorchCall {
            module: module.into(),
            call: call.into(),
            leaf,
            sep: '.',
        };
        let relu = notes(
            "['', 'layer1', 'layer1.0', 'layer1.0.relu', 'relu_1']",
            "['m.Net', 'm.Block', 'torch.nn.modules.activation.ReLU', 'aten.relu.default']",
        );
        assert_eq!(
            TorchCall::read(&relu),
            Some(call("layer1.0.relu", "relu", true))
        );
        let add = notes(
            "['', 'layer1', 'layer1.0', 'add_12']",
            "['m.Net', 'torch.nn.modules.container.Sequential', 'm.Block', 'aten.add.Tensor']",
        );
        assert_eq!(TorchCall::read(&add), Some(call("layer1.0", "add", false)));
        // `max_pool2d` ends in a digit that is not a counter; torch's own bookkeeping is no
        // module.
        let top = notes(
            "['_empty_nn_module_stack_from_metadata_hook', 'max_pool2d']",
            "['_empty_nn_module_stack_from_metadata_hook', 'aten.max_pool2d.default']",
        );
        assert_eq!(TorchCall::read(&top), Some(call("", "max_pool2d", false)));
        for odd in ["", "[]", "['']", "['a\\', 'b']", "'a', 'b'", "['a', b]"] {
            assert_eq!(TorchCall::read(&notes(odd, "[]")), None, "{odd}");
        }

        // A conv fused with its batch norm (noted as the norm's), a SiLU in two nodes, a
        // Clip whose bound is a parameter, a residual add, a reshape at the top, and two
        // layer norms the exporter gave one weight (equal, untrained).
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let io = [
            (
                "Conv",
                s(&["x", "b.conv1.weight"]),
                call("b.bn1", "bn", true),
            ),
            ("Sigmoid", s(&["t0"]), call("b.act", "silu", true)),
            ("Mul", s(&["t0", "t1"]), call("b.act", "silu", true)),
            (
                "Clip",
                s(&["t2", "min_val_cast"]),
                call("b.relu6", "hardtanh", true),
            ),
            ("Add", s(&["t3", "x"]), call("b", "add", false)),
            ("Reshape", s(&["t4", "val_7"]), call("", "view", false)),
            // A top-level `(a + b) / 2`: the 2 is the exporter's, the positions a parameter.
            (
                "Div",
                s(&["t5", "scalar_tensor_default"]),
                call("", "div", false),
            ),
            ("Add", s(&["t6", "pos_embed"]), call("", "add", false)),
            (
                "LayerNormalization",
                s(&["t7", "b.ln_1.weight"]),
                call("b.ln_1", "ln", true),
            ),
            (
                "LayerNormalization",
                s(&["t8", "b.ln_1.weight"]),
                call("b.ln_2", "ln", true),
            ),
        ];
        let outputs: Vec<Vec<String>> = (0..io.len()).map(|i| vec![format!("t{i}")]).collect();
        let nodes: Vec<NodeInfo> = io
            .iter()
            .zip(&outputs)
            .enumerate()
            .map(|(i, ((op, inputs, torch), outputs))| NodeInfo {
                name: if i == 1 { "n0" } else { "node_x" },
                op,
                inputs,
                outputs,
                torch: Some(torch),
            })
            .collect();
        let params: HashMap<String, String> = [
            "b.conv1.weight",
            "min_val_cast",
            "val_7",
            "scalar_tensor_default",
            "pos_embed",
            "b.ln_1.weight",
        ]
        .iter()
        .map(|p| (p.to_string(), p.to_string()))
        .collect();
        assert_eq!(
            readable_names(&nodes, &params),
            [
                "b.conv1",
                "b.act.silu",
                "b.act",
                "b.relu6",
                "b.add",
                "view",
                "div",
                "pos_embed",
                "b.ln_1",
                "b.ln_2"
            ]
        );
    }

    #[test]
    fn keras_layers_are_read_from_tensorflow_scopes() {
        let names = [
            "resnet50_1/conv1_bn_1/batchnorm/mul_1__6",
            "resnet50_1/conv1_bn_1/batchnorm/mul_1",
            "resnet50_1/activation_1_1/Relu6",
            "resnet50_1/base_1/block_1_expand_1/Conv2D",
            "resnet50_1/base_1/add_2/Add",
            "resnet50_1/Transpose__7",
        ];
        let got = triples(TorchCall::from_keras_scopes(&names));
        assert_eq!(
            got,
            [
                want("conv1_bn", "mul", true),
                want("conv1_bn", "mul", true),
                want("activation_1", "relu6", true),
                want("base/block_1_expand", "conv2d", true),
                want("base/add", "add", true),
                want("", "transpose", false),
            ]
        );
        // Keras 2's scopes carry no counter; a node outside the model's scope.
        for other in [
            &["model/conv1/Conv2D", "model/conv1/Relu"][..],
            &["m_1/conv1_1/Conv2D", "Identity"][..],
            &[][..],
        ] {
            let none = TorchCall::from_keras_scopes(other);
            assert!(none.iter().all(Option::is_none), "{other:?}");
        }
    }

    /// The classic exporter's tensor names (`onnx::Conv_55` for a conv with its batch norm
    /// folded in, `/Constant_2_output_0`) name no layer; the modules do.
    #[test]
    fn classic_pytorch_nodes_are_named_after_their_modules() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let io = [
            (
                "/conv1/Conv",
                "Conv",
                s(&["x", "onnx::Conv_55", "onnx::Conv_56"]),
            ),
            ("/Shape", "Shape", s(&["t0"])),
            ("/Slice", "Slice", s(&["t1", "/Constant_2_output_0"])),
            ("/fc/Gemm", "Gemm", s(&["t2", "fc.weight", "fc.bias"])),
        ];
        let outputs: Vec<Vec<String>> = (0..io.len()).map(|i| vec![format!("t{i}")]).collect();
        let named: Vec<(&str, &str)> = io.iter().map(|(name, op, _)| (*name, *op)).collect();
        let torch = TorchCall::from_scopes(&named);
        let nodes: Vec<NodeInfo> = io
            .iter()
            .zip(&outputs)
            .zip(&torch)
            .map(|(((name, op, inputs), outputs), torch)| NodeInfo {
                name,
                op,
                inputs,
                outputs,
                torch: torch.as_ref(),
            })
            .collect();
        let params: HashMap<String, String> = [
            "onnx::Conv_55",
            "onnx::Conv_56",
            "/Constant_2_output_0",
            "fc.weight",
            "fc.bias",
        ]
        .iter()
        .map(|p| (p.to_string(), p.to_string()))
        .collect();
        assert_eq!(
            readable_names(&nodes, &params),
            ["conv1", "shape", "slice", "fc"]
        );
    }

    #[test]
    fn inception_block_is_named_after_its_parameters() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let io = [
            (s(&["x", "a/1x1_w_0"]), s(&["r0"]), "Conv"),
            (s(&["r0"]), s(&["r1"]), "Relu"),
            (s(&["x", "a/3x3_w_0"]), s(&["r2"]), "Conv"),
            (s(&["r2"]), s(&["r3"]), "Relu"),
            (s(&["r1", "r3"]), s(&["r4"]), "Concat"),
            (s(&["r4"]), s(&["r5"]), "MaxPool"),
            (s(&["r5"]), s(&["r6"]), "MaxPool"),
            (s(&["r6", "b/1x1_w_0"]), s(&["r7"]), "Conv"),
        ];
        let nodes: Vec<NodeInfo> = io
            .iter()
            .enumerate()
            .map(|(i, (inp, out, op))| NodeInfo {
                name: if i == 0 { "n0" } else { "" },
                op,
                inputs: inp,
                outputs: out,
                torch: None,
            })
            .collect();
        let params: HashMap<String, String> = ["a/1x1_w_0", "a/3x3_w_0", "b/1x1_w_0"]
            .iter()
            .map(|p| (p.to_string(), p.to_string()))
            .collect();
        assert_eq!(
            readable_names(&nodes, &params),
            [
                "a/1x1",
                "a/1x1/relu",
                "a/3x3",
                "a/3x3/relu",
                "a/output",
                "MaxPool_5",
                "b/maxpool",
                "b/1x1"
            ]
        );
    }

    /// onnxruntime's quantizer keeps a Gemm's name, `logits`, renames its output and gives the
    /// name `logits` to the output of the DequantizeLinear after it. The Gemm is `logits/gemm`,
    /// so that `logits` still asks for the file's tensor; and a quantized weight's name gives
    /// the layer its name as the float weight did (`fc1.weight_DequantizeLinear_Output`).
    #[test]
    fn no_node_is_named_after_another_nodes_tensor() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let io = [
            (s(&["x", "fc1.weight_DequantizeLinear_Output"]), s(&["h"])),
            (
                s(&["h", "logits.weight_DequantizeLinear_Output"]),
                s(&["t"]),
            ),
            (s(&["t", "scale", "zero"]), s(&["q"])),
            (s(&["q", "scale", "zero"]), s(&["logits"])),
        ];
        let named = [
            ("fc1", "Gemm"),
            ("logits", "Gemm"),
            ("logits_QuantizeLinear", "QuantizeLinear"),
            ("logits_DequantizeLinear", "DequantizeLinear"),
        ];
        let nodes: Vec<NodeInfo> = named
            .iter()
            .zip(&io)
            .map(|(&(name, op), (inputs, outputs))| NodeInfo {
                name,
                op,
                inputs,
                outputs,
                torch: None,
            })
            .collect();
        let params: HashMap<String, String> = [
            "fc1.weight_DequantizeLinear_Output",
            "logits.weight_DequantizeLinear_Output",
            "scale",
            "zero",
        ]
        .iter()
        .map(|p| (p.to_string(), p.to_string()))
        .collect();
        assert_eq!(
            readable_names(&nodes, &params),
            [
                "fc1",
                "logits/gemm",
                "logits_QuantizeLinear",
                "logits_DequantizeLinear"
            ]
        );
    }

    #[test]
    fn thousands_of_nodes_of_one_name_get_distinct_names_in_linear_time() {
        let n = 20_000;
        let tensors: Vec<[String; 1]> = (0..=n).map(|i| [format!("t{i}")]).collect();
        let nodes: Vec<NodeInfo> = (0..n)
            .map(|i| NodeInfo {
                name: "same",
                op: "Relu",
                inputs: &tensors[i],
                outputs: &tensors[i + 1],
                torch: None,
            })
            .collect();
        let start = std::time::Instant::now();
        let names = readable_names(&nodes, &HashMap::new());
        let distinct: HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), n);
        assert_eq!(names[..3], ["same", "same_2", "same_3"]);
        // Quadratic naming took about 40 s here; linear takes milliseconds.
        assert!(start.elapsed().as_secs_f64() < 2.0, "{:?}", start.elapsed());

        // Unnamed activations after a named node: nested a few levels, then flat.
        let chain: Vec<NodeInfo> = (0..n)
            .map(|i| NodeInfo {
                name: if i == 0 { "conv" } else { "" },
                op: if i == 0 { "Conv" } else { "Relu" },
                inputs: &tensors[i],
                outputs: &tensors[i + 1],
                torch: None,
            })
            .collect();
        let names = readable_names(&chain, &HashMap::new());
        assert_eq!(
            names[..6],
            [
                "conv",
                "conv/relu",
                "conv/relu/relu",
                "conv/relu/relu/relu",
                "conv/relu_2",
                "conv/relu_3"
            ]
            .map(String::from)
        );
        let longest = names.iter().map(String::len).max().unwrap();
        assert!(longest < 40, "{longest}");
        assert_eq!(names.iter().collect::<HashSet<_>>().len(), n);
    }
}
