//! One error type for every fallible call: each message names the file, node, op or unit at fault.

use std::path::PathBuf;

/// Everything that can go wrong when loading or running a network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not what it claims to be (truncated, not ONNX, bad tensor payload).
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// Something inside a model file is wrong; `path` names the file.
    #[error("{}: {source}", path.display())]
    InModel { path: PathBuf, source: Box<Error> },
    /// The model uses an operator the runtime does not implement.
    #[error("unsupported op_type {op} (domain {domain:?}) for node {node}")]
    UnsupportedOp {
        op: String,
        domain: String,
        node: String,
    },
    /// An operator failed on its inputs or attributes.
    #[error("node {node} ({op}): {message}")]
    Node {
        node: String,
        op: String,
        message: String,
    },
    /// A name that no node, tensor or input carries.
    #[error("no node or tensor named {name:?} in the network{hint}")]
    UnknownName { name: String, hint: String },
    /// The caller's input does not fit the network.
    #[error("input {name:?}: {message}")]
    Input { name: String, message: String },
    /// A device that is not available in this build or on this machine.
    #[error("device {device}: {message}")]
    Device { device: String, message: String },
    /// A computation stopped because its cancel flag was raised (e.g. a notebook interrupt).
    #[error("{what}: cancelled at step {step}")]
    Cancelled { what: String, step: usize },
    /// Anything else, with its own message.
    #[error("{0}")]
    Message(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn node(node: &str, op: &str, message: impl Into<String>) -> Self {
        Error::Node {
            node: node.to_string(),
            op: op.to_string(),
            message: message.into(),
        }
    }

    /// This error as one inside the model file `path` (kept as it is when it already names a file).
    pub fn in_model(self, path: impl Into<PathBuf>) -> Self {
        match self {
            Error::InModel { .. } | Error::Io { .. } | Error::Format { .. } => self,
            other => Error::InModel {
                path: path.into(),
                source: Box::new(other),
            },
        }
    }
}
