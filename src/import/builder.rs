//! Writing ONNX models from code: the zoo's trainer exports its networks with this, and tests
//! build small models with it.

use prost::Message;

use super::proto::*;
use crate::network::HostTensor;

/// Accumulates nodes, initializers and metadata of a single-input model (opset 13 unless
/// [`OnnxBuilder::opset`] says otherwise).
pub struct OnnxBuilder {
    opset: i64,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    metadata: Vec<StringStringEntryProto>,
}

/// An attribute value for [`OnnxBuilder::node`].
pub enum AttrValue {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    /// A string, e.g. Einsum's `equation` or Gelu's `approximate`.
    String(String),
}

impl Default for OnnxBuilder {
    fn default() -> Self {
        Self {
            opset: 13,
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            metadata: Vec::new(),
        }
    }
}

impl OnnxBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The opset the model imports (default 13): as recent as its newest op needs, e.g. 17 for
    /// LayerNormalization, 20 for Gelu.
    pub fn opset(&mut self, version: i64) -> &mut Self {
        self.opset = version;
        self
    }

    /// A float32 graph input; a dimension of 0 or less is dynamic (`N`).
    pub fn input(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        self.inputs.push(value_info(name, dims));
        self
    }

    pub fn output(&mut self, name: &str) -> &mut Self {
        self.outputs.push(ValueInfoProto {
            name: name.into(),
            r#type: None,
        });
        self
    }

    /// A float32 initializer (integer data converted; shapes and indices that ops read as
    /// integers go through [`OnnxBuilder::int64_initializer`]).
    pub fn initializer(&mut self, name: &str, tensor: &HostTensor) -> &mut Self {
        let data = tensor.to_f32();
        self.initializers.push(TensorProto {
            dims: tensor.shape.iter().map(|&d| d as i64).collect(),
            data_type: 1,
            float_data: data,
            name: name.into(),
            ..Default::default()
        });
        self
    }

    /// An int64 initializer (shapes for Reshape, indices for Gather, axes).
    pub fn int64_initializer(&mut self, name: &str, dims: &[usize], values: &[i64]) -> &mut Self {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: 7,
            int64_data: values.to_vec(),
            name: name.into(),
            ..Default::default()
        });
        self
    }

    /// A node whose output tensor has the node's own name.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: &[(&str, AttrValue)],
    ) -> &mut Self {
        self.node_outputs(op, name, inputs, &[name], attrs)
    }

    /// A node with several output tensors (TopK's values and indices, LSTM's Y and Y_h).
    pub fn node_outputs(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[(&str, AttrValue)],
    ) -> &mut Self {
        let attribute = attrs
            .iter()
            .map(|(k, v)| {
                let mut a = AttributeProto {
                    name: k.to_string(),
                    ..Default::default()
                };
                match v {
                    AttrValue::Int(i) => (a.i, a.r#type) = (*i, 2),
                    AttrValue::Ints(i) => (a.ints, a.r#type) = (i.clone(), 7),
                    AttrValue::Float(f) => (a.f, a.r#type) = (*f, 1),
                    AttrValue::String(s) => (a.s, a.r#type) = (s.clone().into_bytes(), 3),
                }
                a
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: name.into(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        self
    }

    /// A `key: value` entry of the model's metadata.
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        self.metadata.push(StringStringEntryProto {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// The serialized model.
    pub fn to_bytes(&self, graph_name: &str) -> Vec<u8> {
        ModelProto {
            ir_version: ir_version(self.opset),
            producer_name: "microscope".into(),
            graph: Some(GraphProto {
                node: self.nodes.clone(),
                name: graph_name.into(),
                initializer: self.initializers.clone(),
                input: self.inputs.clone(),
                output: self.outputs.clone(),
                value_info: Vec::new(),
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            metadata_props: self.metadata.clone(),
        }
        .encode_to_vec()
    }
}

/// The IR version that came with `opset` (onnx's `VERSION_TABLE`), and 8 at the least, as
/// this builder always wrote.
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            dim_value: (d > 0).then_some(d),
            dim_param: (d <= 0).then(|| "N".to_string()),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}
