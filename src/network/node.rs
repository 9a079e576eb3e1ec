//! Nodes of the runtime graph and their attributes.

use std::collections::BTreeMap;

use super::value::HostTensor;
use crate::error::{Error, Result};

/// An attribute value, as ONNX defines them (graphs and sparse tensors are not supported).
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(HostTensor),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

/// One operation of the network.
#[derive(Clone, Debug)]
pub struct Node {
    /// Readable, unique name (see `import::naming`).
    pub name: String,
    /// ONNX op type, e.g. `Conv`.
    pub op: String,
    /// The op's domain: empty for ONNX's own (`ai.onnx`), else e.g. `com.microsoft`. Only ONNX's
    /// ops run; another domain's op runs lowered to them ([`super::lower`]) or not at all.
    pub domain: String,
    /// Operator-set version of the op's domain in this model.
    pub opset: i64,
    /// Names of the input tensors; an empty string marks an omitted optional input.
    pub inputs: Vec<String>,
    /// Names of the output tensors (the first one is "the node's activation").
    pub outputs: Vec<String>,
    pub attrs: BTreeMap<String, Attr>,
    /// The name the node had in the file (may be empty).
    pub source_name: String,
}

impl Node {
    fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }

    fn wrong_type(&self, name: &str, want: &str) -> Error {
        Error::node(
            &self.name,
            &self.op,
            format!("attribute {name} is not {want}"),
        )
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attrs.contains_key(name)
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.attr(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(self.wrong_type(name, "an int")),
        }
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.attr(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(_) => Err(self.wrong_type(name, "a float")),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(_) => Err(self.wrong_type(name, "a list of ints")),
        }
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.wrong_type(name, "a list of floats")),
        }
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        match self.attr(name) {
            None => Ok(default.to_string()),
            Some(Attr::String(v)) => Ok(v.clone()),
            Some(_) => Err(self.wrong_type(name, "a string")),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attr::Strings(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.wrong_type(name, "a list of strings")),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&HostTensor> {
        match self.attr(name) {
            Some(Attr::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// An error about this node.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::node(&self.name, &self.op, message)
    }
}
