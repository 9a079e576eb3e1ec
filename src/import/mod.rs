//! Importing models into a [`Network`]: ONNX files, parsed at run time.

pub mod builder;
pub mod external;
pub mod layout;
pub mod naming;
pub mod proto;
pub mod stream;
pub mod tensor;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::network::{Attr, Elem, HostTensor, InputSpec, LeftOut, Network, Node, UnsupportedNode};
use external::ExternalData;
use naming::NodeInfo;

/// How much of a model file to load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Extent {
    /// Every node; a node whose op the runtime lacks is an error naming it.
    #[default]
    Whole,
    /// The nodes the runtime can run: every node except those whose op it lacks and those
    /// downstream of them. What the left-out nodes read from the rest becomes the network's
    /// outputs, beside the file's outputs that remain, and [`Network::left_out`] says what was
    /// left out. A detector whose post-processing (NonZero, NonMaxSuppression, If, Loop) is
    /// not supported loads as its backbone, neck and heads.
    Supported,
}

/// Reads and parses an ONNX file into a [`Network`] on `device`.
pub fn load_onnx(path: &Path, device: Device) -> Result<Network> {
    parse_file(path, device, Extent::Whole).map(|(network, _)| network)
}

/// Reads and parses the file at `path`, reading external data from the files beside it;
/// errors name the file. Also returns the model's digest: the hex SHA-256 of the file, followed
/// by the external data it reads (the file's own SHA-256 when it has none).
///
/// The file is read field by field ([`stream`]): its weights go straight into the buffers that
/// keep them, so the model is not held twice while it loads.
pub fn parse_file(path: &Path, device: Device, extent: Extent) -> Result<(Network, String)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // Errors from reading and parsing carry no path: this one's.
    let at_path = |e: Error| match e {
        Error::Format { reason, .. } => Error::Format {
            path: path.to_path_buf(),
            reason,
        },
        other => other.in_model(path),
    };
    crate::paths::regular_file(path)?;
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut reader = external::Hashing::new(std::io::BufReader::new(file));
    let model = stream::read_model(&mut reader, len).map_err(|e| match e {
        stream::ReadError::Io(source) => io(source),
        other => at_path(read_error(other)),
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut external = ExternalData::beside(path, reader.into_digest());
    let network = parse_model(model, &stem, device, &mut external, extent).map_err(at_path)?;
    Ok((network, external.digest()))
}

fn format_error(reason: impl Into<String>) -> Error {
    Error::Format {
        path: PathBuf::new(),
        reason: reason.into(),
    }
}

/// What [`stream::read_model`]'s error says, without a path.
fn read_error(e: stream::ReadError) -> Error {
    let not_onnx = |reason| format!("not a valid ONNX model (protobuf: {reason})");
    format_error(match e {
        stream::ReadError::Format(reason) => not_onnx(reason),
        stream::ReadError::Budget(reason) => reason,
        // Only from a slice here, which fails only where it ends (parse_file reports a file's
        // own I/O errors as such).
        stream::ReadError::Io(e) => not_onnx(e.to_string()),
    })
}

/// Parses ONNX bytes; errors carry no path (the caller adds it). A tensor stored in an external
/// file is an error here: there is no folder to read it from (see [`parse_file`]).
pub fn parse_onnx(bytes: &[u8], name: &str, device: Device) -> Result<Network> {
    let model = stream::read_model(bytes, bytes.len() as u64).map_err(read_error)?;
    parse_model(
        model,
        name,
        device,
        &mut ExternalData::none(),
        Extent::Whole,
    )
}

/// The decoded file is dropped once the nodes and weights are read from it, and each weight is
/// taken out of it as it is read: a model is not held twice while its weights are uploaded.
fn parse_model(
    mut model: proto::ModelProto,
    name: &str,
    device: Device,
    external: &mut ExternalData,
    extent: Extent,
) -> Result<Network> {
    let initializers = match &mut model.graph {
        Some(g) => std::mem::take(&mut g.initializer),
        None => Vec::new(),
    };
    let graph = match (&model.graph, model.ir_version) {
        (Some(g), v) if v > 0 => g,
        _ => return Err(format_error("not an ONNX model (no ir_version or graph)")),
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);

    let mut constants: HashMap<String, HostTensor> = HashMap::new();
    let mut initializer_types = HashMap::new();
    for init in initializers {
        let (name, code) = (init.name.clone(), init.data_type);
        let t = external
            .decode(init)
            .map_err(|r| format_error(format!("initializer {name}: {r}")))?;
        initializer_types.insert(name.clone(), code);
        constants.insert(name, t);
    }
    let mut inputs: Vec<InputSpec> = graph
        .input
        .iter()
        .filter(|i| !constants.contains_key(&i.name))
        .map(|i| {
            let tensor_type = i.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
            InputSpec {
                name: i.name.clone(),
                elem: tensor_type.and_then(|t| Elem::of_onnx(t.elem_type.into())),
                shape: tensor_type
                    .and_then(|t| t.shape.as_ref())
                    .map(|s| {
                        s.dim
                            .iter()
                            .map(|d| d.dim_value.filter(|&v| v > 0).map(|v| v as usize))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();

    // Tensors that hold parameters: initializers and outputs of constant-only nodes.
    let mut params: HashMap<String, String> =
        constants.keys().map(|k| (k.clone(), k.clone())).collect();
    let mut constant_nodes = HashSet::new();
    for (i, n) in graph.node.iter().enumerate() {
        let present: Vec<&String> = n.input.iter().filter(|s| !s.is_empty()).collect();
        if present.iter().all(|s| params.contains_key(*s)) {
            constant_nodes.insert(i);
            let source = present.first().map(|s| params[*s].clone());
            for out in n.output.iter().filter(|o| !o.is_empty()) {
                let own = (!naming::is_generic(out, &n.op_type)).then(|| out.clone());
                params.insert(
                    out.clone(),
                    own.or(source.clone()).unwrap_or_else(|| out.clone()),
                );
            }
        }
    }
    let compute: Vec<usize> = (0..graph.node.len())
        .filter(|i| !constant_nodes.contains(i))
        .collect();
    let mut torch: Vec<Option<naming::TorchCall>> = compute
        .iter()
        .map(|&i| naming::TorchCall::read(&graph.node[i].metadata_props))
        .collect();
    if torch.iter().all(Option::is_none) {
        // No notes: perhaps the classic exporter, which writes the modules into the names.
        let named: Vec<(&str, &str)> = compute
            .iter()
            .map(|&i| (graph.node[i].name.as_str(), graph.node[i].op_type.as_str()))
            .collect();
        torch = naming::TorchCall::from_scopes(&named);
        if model.producer_name == "tf2onnx" && torch.iter().all(Option::is_none) {
            let names: Vec<&str> = named.iter().map(|(name, _)| *name).collect();
            torch = naming::TorchCall::from_keras_scopes(&names);
        }
    }
    let infos: Vec<NodeInfo> = compute
        .iter()
        .zip(&torch)
        .map(|(&i, torch)| {
            let n = &graph.node[i];
            NodeInfo {
                name: &n.name,
                op: &n.op_type,
                inputs: &n.input,
                outputs: &n.output,
                torch: torch.as_ref(),
            }
        })
        .collect();
    let readable = naming::readable_names(&infos, &params);
    let mut names: HashMap<usize, String> = compute.into_iter().zip(readable).collect();

    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut aliases = Vec::new();
    // Tensors that the left-out nodes produce (with `Extent::Supported`), each with the
    // unsupported node it depends on (an index into `left_out.unsupported`).
    let mut dropped: HashMap<&str, usize> = HashMap::new();
    let mut left_out = LeftOut {
        total: graph.node.len(),
        ..LeftOut::default()
    };
    // What the left-out nodes read from the rest, in the order they first read it (a set
    // beside it: a file can hold a million such reads).
    let mut frontier: Vec<String> = Vec::new();
    let mut in_frontier: HashSet<&str> = HashSet::new();
    let input_names: HashSet<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let declared = declared_types(graph, &initializer_types);
    for (i, n) in graph.node.iter().enumerate() {
        let name = names.remove(&i).unwrap_or_else(|| {
            let first = n.output.first().cloned().unwrap_or_default();
            format!("{}:{first}", n.op_type)
        });
        // Refused before its attributes are read: an op outside the table may carry kinds of
        // attribute the runtime never reads (If's and Loop's subgraphs).
        let standard = n.domain.is_empty() || n.domain == "ai.onnx";
        let domain = if standard { "" } else { n.domain.as_str() };
        let unsupported = !crate::network::is_supported(domain, &n.op_type);
        if unsupported && extent == Extent::Whole {
            return Err(Error::UnsupportedOp {
                op: n.op_type.clone(),
                domain: n.domain.clone(),
                node: name,
            });
        }
        let cause = if unsupported {
            left_out.unsupported.push(UnsupportedNode {
                node: name.clone(),
                op: n.op_type.clone(),
                domain: n.domain.clone(),
            });
            Some(left_out.unsupported.len() - 1)
        } else {
            n.input
                .iter()
                .find_map(|t| dropped.get(t.as_str()).copied())
        };
        if let Some(cause) = cause {
            left_out.nodes += 1;
            let outputs = n.output.iter().filter(|o| !o.is_empty());
            dropped.extend(outputs.map(|o| (o.as_str(), cause)));
            // Its names, so that asking for it says why it is missing.
            let known = [&name, &n.name].into_iter().chain(&n.output);
            for known in known.filter(|k| !k.is_empty()) {
                left_out.depends_on.entry(known.clone()).or_insert(cause);
            }
            // What it reads from the nodes kept: an output of the part loaded.
            for t in n.input.iter().filter(|t| !t.is_empty()) {
                let computed = !dropped.contains_key(t.as_str())
                    && !params.contains_key(t)
                    && !input_names.contains(t);
                if computed && in_frontier.insert(t.as_str()) {
                    frontier.push(t.clone());
                }
            }
            continue;
        }
        let mut attrs = BTreeMap::new();
        for a in &n.attribute {
            attrs.insert(
                a.name.clone(),
                convert_attr(a, external).map_err(|r| Error::node(&name, &n.op_type, r))?,
            );
        }
        declare_types(&mut attrs, n, domain, &declared);
        if !n.name.is_empty() && n.name != name {
            aliases.push((n.name.clone(), name.clone()));
        }
        nodes.push(Node {
            name,
            op: n.op_type.clone(),
            domain: domain.to_string(),
            opset,
            inputs: n.input.clone(),
            outputs: n.output.clone(),
            attrs,
            source_name: n.name.clone(),
        });
    }
    layout::channels_first(&mut nodes, &mut inputs, &constants, opset);
    let mut outputs: Vec<String> = graph
        .output
        .iter()
        .map(|o| o.name.clone())
        .filter(|o| !dropped.contains_key(o.as_str()))
        .collect();
    let named: HashSet<String> = outputs.iter().cloned().collect();
    outputs.extend(frontier.into_iter().filter(|t| !named.contains(t)));
    let metadata = model
        .metadata_props
        .iter()
        .map(|m| (m.key.clone(), m.value.clone()))
        .collect();
    drop(model);
    let network = Network::new(name, nodes, inputs, outputs, constants, aliases, device)?
        .with_metadata(metadata);
    if left_out.nodes == 0 {
        return Ok(network);
    }
    if network.nodes().is_empty() {
        // Nothing runs before the first unsupported node: that node is the error.
        let first = left_out.unsupported.swap_remove(0);
        return Err(Error::UnsupportedOp {
            op: first.op,
            domain: first.domain,
            node: first.node,
        });
    }
    Ok(network.with_left_out(left_out))
}

/// The element type the file declares for each tensor it types: initializers, graph inputs and
/// outputs, value_info, Constant nodes' values, and what Cast and CastLike make. The runtime
/// keeps integers as i64 and floats as f32 whatever their ONNX type, and only a few nodes need
/// one back (see [`declare_types`]).
/// `initializers` are the initializers' types, by name (taken out of `graph` as they are read).
fn declared_types<'a>(
    graph: &'a proto::GraphProto,
    initializers: &'a HashMap<String, i32>,
) -> HashMap<&'a str, i32> {
    let mut types: HashMap<&str, i32> = initializers
        .iter()
        .map(|(name, &code)| (name.as_str(), code))
        .collect();
    for i in graph
        .input
        .iter()
        .chain(&graph.output)
        .chain(&graph.value_info)
    {
        let elem = i.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        if let Some(t) = elem.filter(|t| t.elem_type != 0) {
            types.entry(&i.name).or_insert(t.elem_type);
        }
    }
    // Nodes in file order, which is the order they run in: a CastLike's target is typed before.
    for n in &graph.node {
        let Some(out) = n.output.first() else {
            continue;
        };
        let standard = n.domain.is_empty() || n.domain == "ai.onnx";
        let code = match n.op_type.as_str() {
            "Constant" if standard => n.attribute.iter().find_map(|a| match a.name.as_str() {
                "value" => a.t.as_ref().map(|t| i64::from(t.data_type)),
                "value_int" | "value_ints" => Some(7),
                "value_float" | "value_floats" => Some(1),
                _ => None,
            }),
            "Cast" if standard => n.attribute.iter().find(|a| a.name == "to").map(|a| a.i),
            "CastLike" if standard => n
                .input
                .get(1)
                .and_then(|t| types.get(t.as_str()))
                .map(|&c| i64::from(c)),
            _ => None,
        };
        if let Some(code) = code.and_then(|c| i32::try_from(c).ok()) {
            types.insert(out, code);
        }
    }
    types
}

/// Gives a node the ONNX type it makes where the file leaves it to another tensor's declared
/// type, as an attribute its kernel reads:
/// - a node that quantizes its output (QuantizeLinear, QLinearConv, …) gets its output zero
///   point's type as `output_dtype` (QuantizeLinear's name for it since opset 21): the integer
///   range it saturates to;
/// - CastLike gets its target's as `to` (Cast's name for it): an 8- or 4-bit float target
///   rounds the values to that type.
fn declare_types(
    attrs: &mut BTreeMap<String, Attr>,
    n: &proto::NodeProto,
    domain: &str,
    declared: &HashMap<&str, i32>,
) {
    let (input, attr) = if domain.is_empty() && n.op_type == "CastLike" {
        (1, "to")
    } else if let Some(zero_point) = crate::network::lower::output_zero_point(domain, &n.op_type) {
        (zero_point, "output_dtype")
    } else {
        return;
    };
    let set = matches!(attrs.get(attr), Some(Attr::Int(code)) if *code != 0);
    let typed_by = n.input.get(input).filter(|t| !t.is_empty());
    if let (false, Some(code)) = (set, typed_by.and_then(|t| declared.get(t.as_str()))) {
        attrs.insert(attr.into(), Attr::Int(i64::from(*code)));
    }
}

fn convert_attr(a: &proto::AttributeProto, external: &mut ExternalData) -> Result<Attr, String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(match a.r#type {
        1 => Attr::Float(a.f),
        2 => Attr::Int(a.i),
        3 => Attr::String(text(&a.s)),
        // A copy: the nodes are read in place. A Constant node's value is one tensor at a time.
        4 => Attr::Tensor(
            external
                .decode(a.t.clone().ok_or("tensor attribute without a tensor")?)
                .map_err(|r| format!("attribute {}: {r}", a.name))?,
        ),
        6 => Attr::Floats(a.floats.clone()),
        7 => Attr::Ints(a.ints.clone()),
        8 => Attr::Strings(a.strings.iter().map(|s| text(s)).collect()),
        other => return Err(format!("attribute {} has unsupported type {other}", a.name)),
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_model, parse_onnx, proto, stream, Extent, ExternalData};
    use crate::import::builder::OnnxBuilder;
    use crate::network::Network;
    use crate::{Device, Result};
    use prost::Message;

    fn partial(bytes: &[u8]) -> Result<Network> {
        let model = stream::read_model(bytes, bytes.len() as u64).unwrap();
        parse_model(
            model,
            "detector",
            Device::cpu(),
            &mut ExternalData::none(),
            Extent::Supported,
        )
    }

    /// Loaded in part, a network keeps every node that does not depend on an unsupported one
    /// (a branch beside it, constants, a graph output it does not reach) and drops the rest,
    /// however indirectly they depend on it. What the dropped nodes read from the kept ones
    /// becomes an output beside the file's outputs that remain.
    #[test]
    fn cast_like_casts_to_its_target_s_declared_type_as_cast_does() {
        use crate::import::builder::AttrValue;
        use crate::network::{HostTensor, Value};
        // The target is an 8-bit float (E4M3FN, 17) made by a Cast: CastLike rounds to it too.
        let mut b = OnnxBuilder::new();
        b.input("image", &[1, 1, 1, 2])
            .node("Cast", "narrow", &["image"], &[("to", AttrValue::Int(17))])
            .node("CastLike", "like", &["image", "narrow"], &[])
            .output("like");
        let net = parse_onnx(&b.to_bytes("casts"), "casts", Device::cpu()).unwrap();
        let image = HostTensor::f32(vec![1, 1, 1, 2], vec![0.478_925_47, 3.0]);
        let out = net
            .run(&[("image", Value::Host(image))], &["narrow", "like"])
            .unwrap();
        let values: Vec<Vec<f32>> = out
            .iter()
            .map(|v| match v {
                Value::Device(t) => t.to_vec(),
                Value::Host(h) => h.to_f32(),
            })
            .collect();
        assert_eq!(values[0], [0.468_75, 3.0]);
        assert_eq!(values[1], values[0]);
    }

    #[test]
    fn a_partial_load_keeps_what_does_not_depend_on_an_unsupported_op() {
        let mut b = OnnxBuilder::new();
        b.input("image", &[1, 3, 4, 4])
            .node("Relu", "relu", &["image"], &[])
            .node("NonZero", "boxes", &["relu"], &[])
            .node(
                "Cast",
                "cast",
                &["boxes"],
                &[("to", crate::import::builder::AttrValue::Int(1))],
            )
            .node("Sigmoid", "score", &["relu"], &[])
            .node("Add", "sum", &["score", "cast"], &[])
            .node("Neg", "negated", &["score"], &[])
            .output("sum")
            .output("negated");
        let bytes = b.to_bytes("detector");
        let net = partial(&bytes).unwrap();
        let kept: Vec<&str> = net.nodes().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(kept, ["relu", "score", "negated"]);
        // The file's output that remains, then what the dropped nodes read, in graph order.
        assert_eq!(net.outputs(), ["negated", "relu", "score"]);
        let left = net.left_out().unwrap();
        assert_eq!(left.nodes, 3);
        assert_eq!(left.total, 6);
        assert_eq!(left.unsupported.len(), 1);
        assert_eq!(
            left.to_string(),
            "stops before NonZero (node boxes): 3 of the file's 6 nodes left out"
        );
        // Asking for a left-out node says why it is missing.
        let err = net.node("sum").unwrap_err().to_string();
        assert!(
            err.contains("left out") && err.contains("NonZero (node boxes)"),
            "{err}"
        );
        assert!(net.left_out().unwrap().cause("score").is_none());
        // Loaded whole, the same file is the error it always was.
        let err = parse_onnx(&bytes, "detector", Device::cpu()).unwrap_err();
        assert!(err.to_string().contains("NonZero"), "{err}");

        // A file that is supported throughout loads whole either way, marked as such.
        let mut b = OnnxBuilder::new();
        b.input("image", &[1, 3, 4, 4])
            .node("Relu", "relu", &["image"], &[])
            .output("relu");
        let net = partial(&b.to_bytes("plain")).unwrap();
        assert!(net.left_out().is_none());
        assert_eq!(net.outputs(), ["relu"]);
    }

    /// An op of another domain (onnxruntime's fused ones) is left out as ONNX's own are; a file
    /// whose first node is unsupported has nothing to load, and says which node.
    #[test]
    fn a_partial_load_of_nothing_is_the_first_unsupported_node() {
        let mut b = OnnxBuilder::new();
        b.input("image", &[1, 3, 4, 4])
            .node("FusedConv", "fused", &["image"], &[])
            .node("Relu", "relu", &["fused"], &[])
            .output("relu");
        let mut model = proto::ModelProto::decode(b.to_bytes("ort").as_slice()).unwrap();
        model.graph.as_mut().unwrap().node[0].domain = "com.microsoft".into();
        let err = partial(&model.encode_to_vec()).unwrap_err().to_string();
        assert!(
            err.contains("FusedConv") && err.contains("com.microsoft") && err.contains("fused"),
            "{err}"
        );

        // After a node that runs, it is left out and named with its domain; a name of a
        // megabyte is shown by its start and end.
        let long = "n".repeat(1 << 20);
        let mut b = OnnxBuilder::new();
        b.input("image", &[1, 3, 4, 4])
            .node("Relu", "relu", &["image"], &[])
            .node("FusedConv", &long, &["relu"], &[])
            .output(&long);
        let mut model = proto::ModelProto::decode(b.to_bytes("ort").as_slice()).unwrap();
        model.graph.as_mut().unwrap().node[1].domain = "com.microsoft".into();
        let net = partial(&model.encode_to_vec()).unwrap();
        let line = net.left_out().unwrap().to_string();
        assert!(
            line.starts_with("stops before FusedConv of domain com.microsoft (node nnnn")
                && line.contains("characters left out")
                && line.len() < 1000,
            "{line}"
        );
    }

    /// A detector's post-processing exports as `If` nodes whose branches are subgraphs: the
    /// error names the op and says how to load the rest, not the attribute kind it skipped;
    /// loaded in part, the branch is left out unread.
    #[test]
    fn control_flow_is_refused_by_its_op_before_its_subgraphs_are_read() {
        let mut b = OnnxBuilder::new();
        b.input("image", &[1, 3, 4, 4])
            .node("Relu", "relu", &["image"], &[])
            .node("If", "post", &["relu"], &[])
            .output("post");
        let mut model = proto::ModelProto::decode(b.to_bytes("detector").as_slice()).unwrap();
        let graph = model.graph.as_mut().unwrap();
        graph.node[1].attribute.push(proto::AttributeProto {
            name: "then_branch".into(),
            r#type: 5,
            ..Default::default()
        });
        let bytes = model.encode_to_vec();
        let err = parse_onnx(&bytes, "detector", Device::cpu())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unsupported op_type If") && err.contains("control flow"),
            "{err}"
        );
        // Loaded in part, the branch is left out unread.
        let net = partial(&bytes).unwrap();
        assert_eq!(net.outputs(), ["relu"]);
        assert_eq!(net.left_out().unwrap().unsupported[0].op, "If");
    }
}
