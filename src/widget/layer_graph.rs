//! `LayerGraph`: the whole network as a top-to-bottom drawing (what displaying a `Model` shows).
//!
//! Nodes whose names share a first path segment (`inception_4a/1x1`, `inception_4a/output`)
//! form a group that is drawn collapsed as one box and expands in place. The layout is computed
//! here: the collapsed graph gets ranks and x positions, and each group gets its own internal
//! layout; the component only stacks rows, growing a row where a group is expanded.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::layout::{layered, Placed};
use crate::error::Result;
use crate::model::Model;
use crate::network::UnitLayout;
use crate::provenance::Provenance;

/// Size of one node box (and of a collapsed group), in SVG units.
pub const NODE_W: f32 = 168.0;
pub const NODE_H: f32 = 42.0;
/// Vertical gap between ranks, and padding inside an expanded group (below its title bar).
pub const RANK_GAP: f32 = 34.0;
pub const GROUP_PAD: f32 = 14.0;
pub const GROUP_TITLE: f32 = 22.0;

#[derive(Clone, Debug, Serialize)]
pub struct GraphNode {
    pub name: String,
    pub op: String,
    /// Output shape at batch 1, e.g. `[1, 64, 7, 7]`.
    pub shape: Vec<usize>,
    /// Units of the output (see [`UnitLayout`]): 64 there, 768 for tokens `[1, 197, 768]`.
    pub units: usize,
    pub params: usize,
    /// Indices of the nodes whose outputs this node reads.
    pub inputs: Vec<usize>,
    /// The group it belongs to, if any.
    pub group: Option<usize>,
    /// Centre inside its expanded group (group-relative), when grouped.
    pub gx: f32,
    pub gy: f32,
    /// The notebook code that opens this layer.
    pub code: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub name: String,
    pub members: Vec<usize>,
    /// Size when expanded.
    pub width: f32,
    pub height: f32,
}

/// A box of the collapsed drawing: a node outside any group, or a whole group.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// `"node"` or `"group"`.
    pub kind: &'static str,
    /// Index into `nodes` or `groups`.
    pub index: usize,
    pub rank: usize,
    /// Centre x in the collapsed drawing.
    pub x: f32,
}

/// The layer graph of a model.
#[derive(Clone, Debug, Serialize)]
pub struct LayerGraph {
    pub model: String,
    /// How many nodes of shape arithmetic are not drawn: nodes that compute from the inputs'
    /// shapes and constants alone, never from their values ([`Network::computed_from`]), such
    /// as the Shape → Gather → Unsqueeze → Concat that PyTorch's classic exporter writes for
    /// each size it reads (419 of a small torchvision Faster R-CNN's 560 nodes). They have no
    /// units worth looking at; `info` lists them.
    ///
    /// [`Network::computed_from`]: crate::network::Network::computed_from
    pub shape_nodes: usize,
    /// How many QuantizeLinear nodes of a quantized model are not drawn: their integer codes are
    /// the values of the layer before them, rounded, and an edge passes through each. The
    /// DequantizeLinear after one is drawn: there a layer's rounded values are real numbers
    /// again (in onnxruntime's QDQ models, the only place a ReLU's output is, as the quantizer
    /// folds the ReLU into the rounding).
    pub quantizers: usize,
    pub nodes: Vec<GraphNode>,
    pub groups: Vec<Group>,
    pub items: Vec<Item>,
    pub node_size: [f32; 2],
    pub rank_gap: f32,
    pub group_pad: f32,
    pub group_title: f32,
    /// How the widget reaches the kernel that made it (under the microscope kernel only): a
    /// clicked layer's gallery is then computed on request.
    pub live: Option<super::live::Live>,
    pub provenance: Provenance,
}

impl LayerGraph {
    pub fn new(model: &Model) -> Result<LayerGraph> {
        let net = model.network();
        let shapes = net.shapes()?;
        // Graph inputs are drawn as nodes of their own, above everything that reads them.
        let mut nodes: Vec<GraphNode> = Vec::new();
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for input in net.inputs() {
            producer.insert(&input.name, nodes.len());
            let shape: Vec<usize> = input.shape.iter().map(|d| d.unwrap_or(1)).collect();
            nodes.push(GraphNode {
                name: input.name.clone(),
                op: "Input".into(),
                units: UnitLayout::units(&shape),
                shape,
                params: 0,
                inputs: vec![],
                group: None,
                gx: 0.0,
                gy: 0.0,
                code: String::new(),
            });
        }
        // Shape arithmetic is not drawn (see `LayerGraph::shape_nodes`).
        let sources: Vec<&str> = net.inputs().iter().map(|i| i.name.as_str()).collect();
        let computed = net.computed_from(&sources);
        let shape_nodes = computed.iter().filter(|&&c| !c).count();
        let mut quantizers = 0;
        for ((node, shape), _) in net
            .nodes()
            .iter()
            .zip(shapes)
            .zip(&computed)
            .filter(|(_, &c)| c)
        {
            // Quantizers are not drawn (see `LayerGraph::quantizers`).
            if node.op == "QuantizeLinear" && node.domain.is_empty() {
                if let Some(&from) = node.inputs.first().and_then(|t| producer.get(t.as_str())) {
                    for t in &node.outputs {
                        producer.insert(t, from);
                    }
                }
                quantizers += 1;
                continue;
            }
            let inputs = node
                .inputs
                .iter()
                .filter_map(|t| producer.get(t.as_str()).copied())
                .collect();
            for t in &node.outputs {
                producer.insert(t, nodes.len());
            }
            nodes.push(GraphNode {
                name: node.name.clone(),
                op: node.op.clone(),
                units: crate::network::node_units(node, shape),
                shape: shape.clone(),
                params: net.param_count(node),
                inputs,
                group: None,
                gx: 0.0,
                gy: 0.0,
                code: format!("model.layer({:?})?", node.name),
            });
        }
        let mut groups = candidate_groups(&nodes);
        // Grouping must keep the drawing acyclic (a group whose members are joined through an
        // outside node would not be); dissolve the largest offending group until it is.
        let (items, placed) = loop {
            let (items, edges) = collapsed(&nodes, &groups);
            let widths = vec![NODE_W; items.len()];
            if let Some(placed) = layered(&widths, &edges) {
                break (items, placed);
            }
            let largest = (0..groups.len())
                .max_by_key(|&g| groups[g].1.len())
                .unwrap_or(0);
            groups.remove(largest);
        };
        let mut out_groups = Vec::with_capacity(groups.len());
        for (g, (name, members)) in groups.iter().enumerate() {
            let (width, height) = lay_out_group(&mut nodes, members, g);
            out_groups.push(Group {
                name: name.clone(),
                members: members.clone(),
                width,
                height,
            });
        }
        let items = items
            .into_iter()
            .zip(placed)
            .map(|((kind, index), Placed { rank, x })| Item {
                kind,
                index,
                rank,
                x,
            })
            .collect();
        Ok(LayerGraph {
            model: model.source(),
            shape_nodes,
            quantizers,
            nodes,
            groups: out_groups,
            items,
            node_size: [NODE_W, NODE_H],
            rank_gap: RANK_GAP,
            group_pad: GROUP_PAD,
            group_title: GROUP_TITLE,
            live: super::live::register(std::sync::Arc::new(LiveGraph {
                model: model.clone(),
            })),
            provenance: Provenance::of(model),
        })
    }
}

/// The module path in a node's name: `inception_4a/1x1` → `[inception_4a, 1x1]`; PyTorch's
/// classic exporter's `/layer1/layer1.0/conv1/Conv` → `[layer1, layer1.0, conv1, Conv]`; the
/// module names given to its `dynamo=True` exporter's nodes, `layer1.0.conv1` → `[layer1, 0,
/// conv1]`. Segments split at `/` where the name has one, else at `.`.
fn module_path(name: &str) -> (Vec<&str>, char) {
    let name = name.trim_start_matches('/');
    let sep = if name.contains('/') { '/' } else { '.' };
    (name.split(sep).filter(|s| !s.is_empty()).collect(), sep)
}

/// The group of a node at `depth`: the first `depth` segments of its module path, when it has
/// more than that (a node named just `conv1` is in no group).
fn group_key(name: &str, depth: usize) -> Option<String> {
    let (path, sep) = module_path(name);
    (path.len() > depth).then(|| path[..depth].join(&sep.to_string()))
}

/// Nodes sharing the first segment of their module path (at least two of them), with the
/// group's name. A group of more than half of the graph (`features` in a torchvision network)
/// is split by the next segment instead (`features.1`, `features.2`).
fn candidate_groups(nodes: &[GraphNode]) -> Vec<(String, Vec<usize>)> {
    let by_key = |members: &mut dyn Iterator<Item = usize>, depth: usize| {
        let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for i in members {
            if let Some(key) = group_key(&nodes[i].name, depth) {
                by.entry(key).or_default().push(i);
            }
        }
        by
    };
    let layers = nodes.iter().filter(|n| n.op != "Input").count();
    let mut all = (0..nodes.len()).filter(|&i| nodes[i].op != "Input");
    let mut groups = Vec::new();
    for (key, members) in by_key(&mut all, 1) {
        if members.len() * 2 > layers {
            groups.extend(by_key(&mut members.into_iter(), 2));
        } else {
            groups.push((key, members));
        }
    }
    groups.retain(|(_, members)| members.len() >= 2);
    groups.sort_by_key(|(_, members)| members[0]);
    groups
}

/// The boxes of the collapsed drawing and the edges between them.
#[allow(clippy::type_complexity)]
fn collapsed(
    nodes: &[GraphNode],
    groups: &[(String, Vec<usize>)],
) -> (Vec<(&'static str, usize)>, Vec<(usize, usize)>) {
    let mut item_of = vec![usize::MAX; nodes.len()];
    let mut items = Vec::new();
    let mut group_item = HashMap::new();
    let mut group_of = vec![None; nodes.len()];
    for (g, (_, members)) in groups.iter().enumerate() {
        for &m in members {
            group_of[m] = Some(g);
        }
    }
    for i in 0..nodes.len() {
        item_of[i] = match group_of[i] {
            Some(g) => *group_item.entry(g).or_insert_with(|| {
                items.push(("group", g));
                items.len() - 1
            }),
            None => {
                items.push(("node", i));
                items.len() - 1
            }
        };
    }
    let mut edges = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for &p in &n.inputs {
            let (a, b) = (item_of[p], item_of[i]);
            if a != b {
                edges.push((a, b));
            }
        }
    }
    (items, edges)
}

/// Lays out a group's members inside it; returns the expanded group's size.
fn lay_out_group(nodes: &mut [GraphNode], members: &[usize], g: usize) -> (f32, f32) {
    let local: HashMap<usize, usize> = members.iter().enumerate().map(|(l, &m)| (m, l)).collect();
    let mut edges = Vec::new();
    for (l, &m) in members.iter().enumerate() {
        for p in &nodes[m].inputs {
            if let Some(&pl) = local.get(p) {
                edges.push((pl, l));
            }
        }
    }
    let widths = vec![NODE_W; members.len()];
    // Members of a group come from an acyclic graph, so their subgraph is acyclic too.
    let placed = layered(&widths, &edges).unwrap_or_else(|| {
        (0..members.len())
            .map(|i| Placed {
                rank: i,
                x: NODE_W / 2.0,
            })
            .collect()
    });
    let mut width: f32 = 0.0;
    let mut ranks = 0;
    for (&m, p) in members.iter().zip(&placed) {
        let node = &mut nodes[m];
        node.group = Some(g);
        node.gx = GROUP_PAD + p.x;
        node.gy = GROUP_TITLE + GROUP_PAD + p.rank as f32 * (NODE_H + RANK_GAP) + NODE_H / 2.0;
        width = width.max(p.x + NODE_W / 2.0);
        ranks = ranks.max(p.rank + 1);
    }
    (
        width + 2.0 * GROUP_PAD,
        GROUP_TITLE + 2.0 * GROUP_PAD + ranks as f32 * (NODE_H + RANK_GAP) - RANK_GAP,
    )
}

impl LayerGraph {
    /// The plain-text summary (the `text/plain` fallback).
    pub fn summary(&self) -> String {
        let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
        for n in &self.nodes {
            *ops.entry(&n.op).or_default() += 1;
        }
        let ops: Vec<String> = ops.iter().map(|(op, k)| format!("{op} {k}")).collect();
        let mut s = format!(
            "LayerGraph of {}: {} nodes in {} groups ({})\n",
            self.model,
            self.nodes.len(),
            self.groups.len(),
            ops.join(", ")
        );
        if self.quantizers > 0 {
            s.push_str(&format!(
                "  ({} QuantizeLinear nodes not drawn)\n",
                self.quantizers
            ));
        }
        if self.shape_nodes > 0 {
            s.push_str(&format!(
                "  ({} nodes of shape arithmetic not drawn)\n",
                self.shape_nodes
            ));
        }
        // What loading left out of the model file (`Model::load_partial`), as its provenance
        // records it.
        if let Some(left_out) = &self.provenance.model_left_out {
            s.push_str(&format!("  partial: {}\n", super::one_line(left_out)));
        }
        const SHOWN: usize = 24;
        for n in self.nodes.iter().take(SHOWN) {
            s.push_str(&format!("  {:<32} {:<20} {:?}\n", n.name, n.op, n.shape));
        }
        if self.nodes.len() > SHOWN {
            s.push_str(&format!("  … {} more\n", self.nodes.len() - SHOWN));
        }
        s
    }
}

/// What a live layer graph computes against: its model.
struct LiveGraph {
    model: Model,
}

/// A live layer graph's requests.
#[derive(serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum GraphRequest {
    /// A gallery of `layer` with nothing computed yet (default settings), live itself, as a
    /// `gallery` reply; the widget then asks that gallery for units.
    Gallery { layer: String },
}

impl super::live::Answer for LiveGraph {
    fn answer(
        &self,
        request: &serde_json::Value,
        _cancel: &std::sync::atomic::AtomicBool,
        reply: &dyn Fn(super::live::Reply),
    ) -> Result<()> {
        match super::live::parse_request(request, "layer graph")? {
            GraphRequest::Gallery { layer } => {
                let options = super::gallery::GalleryOptions {
                    units: Some(Vec::new()),
                    ..Default::default()
                };
                let gallery =
                    self.model
                        .layer(&layer)?
                        .gallery_with(&options, &mut |_| {}, None)?;
                reply(super::live::Reply::with(gallery, |gallery| {
                    super::live::Reply::Gallery { gallery }
                }));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grouped(names: &[&str]) -> Vec<(String, Vec<usize>)> {
        let nodes: Vec<GraphNode> = names
            .iter()
            .map(|name| GraphNode {
                name: name.to_string(),
                op: if name.is_empty() { "Input" } else { "Relu" }.into(),
                shape: vec![1],
                units: 1,
                params: 0,
                inputs: vec![],
                group: None,
                gx: 0.0,
                gy: 0.0,
                code: String::new(),
            })
            .collect();
        candidate_groups(&nodes)
    }

    #[test]
    fn modules_group_in_every_exporters_naming() {
        let names = |groups: Vec<(String, Vec<usize>)>| -> Vec<String> {
            groups.into_iter().map(|(name, _)| name).collect()
        };
        // Caffe2's blocks, PyTorch's classic exporter (its names start with `/`), and the
        // module names microscope gives its dynamo exporter's nodes.
        let caffe = [
            "", "conv1", "a/1x1", "a/3x3", "a/output", "b/1x1", "b/output", "fc",
        ];
        assert_eq!(names(grouped(&caffe)), ["a", "b"]);
        let classic = [
            "",
            "/conv1/Conv",
            "/layer1/layer1.0/conv1/Conv",
            "/layer1/layer1.0/Add",
            "/layer2/layer2.0/conv1/Conv",
            "/layer2/layer2.0/Add",
            "/fc/Gemm",
        ];
        assert_eq!(names(grouped(&classic)), ["layer1", "layer2"]);
        let dynamo = [
            "",
            "conv1",
            "relu",
            "layer1.0.conv1",
            "layer1.0.add",
            "layer1.1.add",
            "avgpool",
            "fc",
        ];
        assert_eq!(names(grouped(&dynamo)), ["layer1"]);
        // One module holding most of the network is split by its children.
        let torchvision = [
            "",
            "features.0.0",
            "features.0.2",
            "features.1.block.0",
            "features.1.add",
            "features.2",
            "avgpool",
            "classifier.0",
            "classifier.1",
        ];
        let groups = grouped(&torchvision);
        assert_eq!(
            names(groups.clone()),
            ["features.0", "features.1", "classifier"]
        );
        assert_eq!(groups[1].1, [3, 4]);
    }
}
