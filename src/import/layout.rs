//! Channels-last image inputs, as models from TensorFlow and Keras have them.
//!
//! tf2onnx keeps a TensorFlow model's input as it was, `[N, H, W, C]`, and since ONNX's Conv is
//! channels-first, puts a Transpose to `[N, C, H, W]` before the first convolution. Every
//! technique here makes, feeds and shows images `[N, C, H, W]`, so such an input is declared
//! channels-first and a Transpose in front turns it back (`input_1/channels_last`); the model's
//! own Transpose then undoes that one. The model computes what it computed before, from images
//! in the layout every other model takes.

use std::collections::{HashMap, HashSet};

use crate::network::{Attr, HostTensor, InputSpec, Node};

/// From channels-last to channels-first, as tf2onnx's Transpose before the first convolution.
const TO_CHANNELS_FIRST: [i64; 4] = [0, 3, 1, 2];

/// Ops that keep a channels-last tensor channels-last on its way to that Transpose: the
/// scaling and casting a model may do to its input first.
const KEEPS_LAYOUT: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Cast", "Identity", "Clip", "Relu",
];

/// Declares a channels-last image input channels-first, with a Transpose in front of the nodes
/// that read it (its name free among the file's tensors and `constants`). A rank-4 input counts
/// as channels-last when its last axis holds 1, 3 or 4 channels and everything that reads it
/// goes, through [`KEEPS_LAYOUT`] ops only, into a Transpose to channels-first. Only the input
/// of a graph of one: the techniques take one image input, and each of a file's many inputs
/// would cost a walk over the graph.
pub fn channels_first(
    nodes: &mut Vec<Node>,
    inputs: &mut [InputSpec],
    constants: &HashMap<String, HostTensor>,
    opset: i64,
) {
    if let [spec] = inputs {
        if !channels_last(spec, nodes) {
            return;
        }
        let mut tensors: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.inputs.iter().chain(&n.outputs))
            .map(String::as_str)
            .chain(constants.keys().map(String::as_str))
            .collect();
        tensors.insert(&spec.name);
        let turned = free(&tensors, format!("{}:channels_last", spec.name));
        let names: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| [n.name.as_str(), n.source_name.as_str()])
            .collect();
        let name = free(&names, format!("{}/channels_last", spec.name));
        for node in nodes.iter_mut() {
            for input in node.inputs.iter_mut().filter(|i| **i == spec.name) {
                input.clone_from(&turned);
            }
        }
        nodes.insert(
            0,
            Node {
                name,
                op: "Transpose".into(),
                domain: String::new(),
                opset,
                inputs: vec![spec.name.clone()],
                outputs: vec![turned],
                attrs: [("perm".to_string(), Attr::Ints(vec![0, 2, 3, 1]))].into(),
                source_name: String::new(),
            },
        );
        let s = &spec.shape;
        spec.shape = vec![s[0], s[3], s[1], s[2]];
    }
}

/// Whether `spec` is a channels-last image input (see [`channels_first`]).
fn channels_last(spec: &InputSpec, nodes: &[Node]) -> bool {
    if spec.shape.len() != 4 || !matches!(spec.shape[3], Some(1 | 3 | 4)) {
        return false;
    }
    // Tensors still channels-last; the nodes are in topological order.
    let mut last: HashSet<&str> = HashSet::from([spec.name.as_str()]);
    let mut turned = false;
    for node in nodes {
        if !node.inputs.iter().any(|i| last.contains(i.as_str())) {
            continue;
        }
        let perm = match node.attrs.get("perm") {
            Some(Attr::Ints(p)) => p.as_slice(),
            _ => &[],
        };
        if node.op == "Transpose" && perm == TO_CHANNELS_FIRST {
            turned = true;
        } else if KEEPS_LAYOUT.contains(&node.op.as_str()) {
            last.extend(node.outputs.iter().map(String::as_str));
        } else {
            return false;
        }
    }
    turned
}

/// `base`, or `base_2`, `base_3`, … whichever is not in `taken`.
fn free(taken: &HashSet<&str>, base: String) -> String {
    if !taken.contains(base.as_str()) {
        return base;
    }
    (2..)
        .map(|k| format!("{base}_{k}"))
        .find(|n| !taken.contains(n.as_str()))
        .expect("a free name")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, op: &str, inputs: &[&str], output: &str, perm: Option<&[i64]>) -> Node {
        Node {
            name: name.into(),
            op: op.into(),
            domain: String::new(),
            opset: 13,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.into()],
            attrs: perm
                .map(|p| ("perm".to_string(), Attr::Ints(p.to_vec())))
                .into_iter()
                .collect(),
            source_name: name.into(),
        }
    }

    fn image(shape: [Option<usize>; 4]) -> Vec<InputSpec> {
        vec![InputSpec {
            name: "image".into(),
            shape: shape.to_vec(),
            elem: None,
        }]
    }

    const NHWC: [Option<usize>; 4] = [None, Some(32), Some(32), Some(3)];

    #[test]
    fn a_channels_last_input_is_declared_channels_first_with_a_transpose_in_front() {
        let mut nodes = vec![
            node("scale", "Mul", &["image", "k"], "s", None),
            node("image/channels_last", "Relu", &["s"], "r", None),
            node("to_nchw", "Transpose", &["r"], "t", Some(&[0, 3, 1, 2])),
            node("conv", "Conv", &["t", "w"], "c", None),
        ];
        let mut inputs = image(NHWC);
        channels_first(&mut nodes, &mut inputs, &HashMap::new(), 13);
        assert_eq!(inputs[0].shape, [None, Some(3), Some(32), Some(32)]);
        let front = &nodes[0];
        // The name is taken by a node of the file.
        assert_eq!(front.name, "image/channels_last_2");
        assert_eq!(
            (front.op.as_str(), &front.inputs[..]),
            ("Transpose", &["image".to_string()][..])
        );
        assert!(matches!(&front.attrs["perm"], Attr::Ints(p) if p == &[0, 2, 3, 1]));
        assert_eq!(nodes[1].inputs, [front.outputs[0].as_str(), "k"]);
    }

    #[test]
    fn other_inputs_are_left_as_they_are() {
        type Case = (&'static str, [Option<usize>; 4], Vec<Node>);
        let cases: [Case; 4] = [
            // A convolution reads the input as it is.
            (
                "read by a Conv too",
                NHWC,
                vec![
                    node("t", "Transpose", &["image"], "t", Some(&[0, 3, 1, 2])),
                    node("c", "Conv", &["image", "w"], "c", None),
                ],
            ),
            (
                "another permutation",
                NHWC,
                vec![node("t", "Transpose", &["image"], "t", Some(&[0, 2, 1, 3]))],
            ),
            (
                "no Transpose",
                NHWC,
                vec![node("c", "Conv", &["image", "w"], "c", None)],
            ),
            (
                "channels-first",
                [None, Some(3), Some(32), Some(32)],
                vec![node("t", "Transpose", &["image"], "t", Some(&[0, 3, 1, 2]))],
            ),
        ];
        for (what, shape, mut nodes) in cases {
            let before = nodes.len();
            let mut inputs = image(shape);
            channels_first(&mut nodes, &mut inputs, &HashMap::new(), 13);
            assert_eq!(
                (nodes.len(), &inputs[0].shape[..]),
                (before, &shape[..]),
                "{what}"
            );
        }
    }
}
