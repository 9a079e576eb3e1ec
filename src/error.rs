//! One error type for every fallible call: each message names the file, node, op or unit at fault.
//!
//! What a message shows of a model file stays readable whatever the file holds: each text field
//! is shown through [`brief`].

use std::borrow::Cow;
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
    #[error("{}: {}", path.display(), brief(.reason))]
    Format { path: PathBuf, reason: String },
    /// Something inside a model file is wrong; `path` names the file.
    #[error("{}: {source}", path.display())]
    InModel { path: PathBuf, source: Box<Error> },
    /// The model uses an operator the runtime does not implement.
    #[error(
        "unsupported op_type {} (domain {:?}) for node {}{}",
        brief(.op),
        brief(.domain),
        brief(.node),
        unsupported_hint(.op)
    )]
    UnsupportedOp {
        op: String,
        domain: String,
        node: String,
    },
    /// An operator failed on its inputs or attributes.
    #[error("node {} ({}): {}", brief(.node), brief(.op), brief(.message))]
    Node {
        node: String,
        op: String,
        message: String,
    },
    /// A name that no node, tensor or input carries.
    #[error("no node or tensor named {:?} in the network{}", brief(.name), brief(.hint))]
    UnknownName { name: String, hint: String },
    /// The caller's input does not fit the network.
    #[error("input {:?}: {}", brief(.name), brief(.message))]
    Input { name: String, message: String },
    /// A device that is not available in this build or on this machine.
    #[error("device {}: {}", brief(.device), brief(.message))]
    Device { device: String, message: String },
    /// A computation stopped because its cancel flag was raised (e.g. a notebook interrupt).
    #[error("{}: cancelled at step {step}", brief(.what))]
    Cancelled { what: String, step: usize },
    /// Anything else, with its own message.
    #[error("{}", brief(.0))]
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

/// Lists longer than this show their first [`LIST_HEAD`] values and how many more there are.
const LIST_LONG: usize = 16;
const LIST_HEAD: usize = 8;
/// Text longer than this many characters keeps [`TEXT_HEAD`] at the start and [`TEXT_TAIL`] at
/// the end.
const TEXT_LONG: usize = 600;
const TEXT_HEAD: usize = 400;
const TEXT_TAIL: usize = 150;

/// `text` as an error message shows it. A model file sets the lists that messages quote (a
/// `split` attribute, a Reshape's target, an initializer's dims) and the names they quote, and a
/// file can make either as long as it likes: a split of 100,000 sizes once made a 55 KB error
/// line. So a list of more than [`LIST_LONG`] numbers shows its first [`LIST_HEAD`] and how many
/// more there are, and text still over [`TEXT_LONG`] characters (a megabyte node name) keeps its
/// start and end around a count of what was left out. Lists of names are left whole (they
/// are there for the reader), and so is everything short. A few lines of string handling,
/// written here rather than taken from a crate.
pub(crate) fn brief(text: &str) -> Cow<'_, str> {
    let lists = brief_lists(text);
    let chars = lists.chars().count();
    if chars <= TEXT_LONG {
        return lists;
    }
    let head: String = lists.chars().take(TEXT_HEAD).collect();
    let tail: String = lists.chars().skip(chars - TEXT_TAIL).collect();
    let left_out = chars - TEXT_HEAD - TEXT_TAIL;
    Cow::Owned(format!(
        "{head} … ({left_out} characters left out) … {tail}"
    ))
}

/// What an unsupported op says about the file, where it says more than that microscope lacks it.
fn unsupported_hint(op: &str) -> String {
    // tf2onnx leaves a TensorFlow function it could not convert as a call of it (Keras 3's
    // ConvNeXt layers): no runtime can run such a file.
    let what = if op.ends_with("PartitionedCall") {
        "; it is TensorFlow's, not ONNX's: the exporter (tf2onnx) left a function it did not \
         convert"
    } else if matches!(op, "If" | "Loop" | "Scan") {
        // torchvision's detectors export their post-processing (box decoding, NMS) so.
        "; control flow is not supported"
    } else {
        ""
    };
    format!(
        "{what}; to look inside the nodes that do not depend on it, load the part that runs \
         with `Model::load_partial` (`--partial` on the command line)"
    )
}

/// `text` with each innermost `[a, b, …]` list of more than [`LIST_LONG`] numbers shortened.
fn brief_lists(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    // `text[done..]` is not in `out` yet; brackets are ASCII, so byte offsets are char bounds.
    let mut done = 0;
    let mut open = None;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'[' => open = Some(i),
            b']' => {
                if let Some(start) = open.take() {
                    let items: Vec<&str> = text[start + 1..i].split(", ").collect();
                    let numbers = items.iter().all(|v| v.trim().parse::<f64>().is_ok());
                    if items.len() > LIST_LONG && numbers {
                        out.push_str(&text[done..=start]);
                        out.push_str(&items[..LIST_HEAD].join(", "));
                        out.push_str(&format!(", … {} more]", items.len() - LIST_HEAD));
                        done = i + 1;
                    }
                }
            }
            _ => {}
        }
    }
    if done == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensorflow_call_left_in_the_file_is_named_as_the_exporters() {
        let unsupported = |op: &str| {
            Error::UnsupportedOp {
                op: op.into(),
                domain: String::new(),
                node: "block/dwconv".into(),
            }
            .to_string()
        };
        assert_eq!(
            unsupported("StatefulPartitionedCall"),
            "unsupported op_type StatefulPartitionedCall (domain \"\") for node block/dwconv; it \
             is TensorFlow's, not ONNX's: the exporter (tf2onnx) left a function it did not \
             convert; to look inside the nodes that do not depend on it, load the part that runs \
             with `Model::load_partial` (`--partial` on the command line)"
        );
        assert!(unsupported("Loop").contains("control flow is not supported"));
        assert_eq!(
            unsupported("NonMaxSuppression"),
            "unsupported op_type NonMaxSuppression (domain \"\") for node block/dwconv; to look \
             inside the nodes that do not depend on it, load the part that runs with \
             `Model::load_partial` (`--partial` on the command line)"
        );
    }

    #[test]
    fn a_long_list_of_numbers_shows_its_start_and_its_length() {
        let sizes = vec![0i64; 4096];
        let e = Error::node(
            "conv2",
            "Split",
            format!("split {sizes:?} does not cover axis 0"),
        );
        assert_eq!(
            e.to_string(),
            "node conv2 (Split): split [0, 0, 0, 0, 0, 0, 0, 0, … 4088 more] does not cover axis 0"
        );
        // Shown again (an error inside another's message), it stays the same.
        let again = Error::Message(e.to_string()).to_string();
        assert_eq!(again, e.to_string());
    }

    #[test]
    fn short_lists_lists_of_names_and_nested_lists_stay_whole() {
        for text in [
            "cannot reshape [1, 3, 8, 8] to [-1, 7]",
            "scales [1.0, 1.0, NaN, inf] are not finite",
            "outputs [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\", \"j\", \"k\", \
             \"l\", \"m\", \"n\", \"o\", \"p\", \"q\"]",
            "unbalanced ] and [ brackets [",
            "",
        ] {
            assert_eq!(brief(text), text);
        }
        let nested = format!("{:?}", vec![vec![1; 20], vec![2; 2]]);
        assert_eq!(
            brief(&nested),
            "[[1, 1, 1, 1, 1, 1, 1, 1, … 12 more], [2, 2]]"
        );
    }

    #[test]
    fn long_text_keeps_its_start_and_end() {
        let name = format!("start{}é{}end", "n".repeat(1 << 20), "ü".repeat(50));
        let e = Error::node(&name, "Conv", "input has 224 channels");
        let shown = e.to_string();
        assert!(
            shown.chars().count() < TEXT_LONG + 40,
            "{} characters",
            shown.chars().count()
        );
        assert!(shown.starts_with("node startnnn"), "{shown}");
        assert!(
            shown.contains("üüüend (Conv): input has 224 channels"),
            "{shown}"
        );
        assert!(shown.contains(&format!(
            "({} characters left out)",
            (1 << 20) + 5 + 1 + 50 + 3 - TEXT_HEAD - TEXT_TAIL
        )));
        assert_eq!(brief(&brief(&name)), brief(&name));
    }
}
