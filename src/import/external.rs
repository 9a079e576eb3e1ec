//! ONNX external data: tensors whose bytes live in a file beside the model. PyTorch's exporter
//! writes them for models over protobuf's 2 GB limit, and `onnx.save_model(...,
//! save_as_external_data=True)` on request. Each such tensor names its file (`location`,
//! relative to the model's folder) and where its bytes are in it (`offset`, `length`).
//!
//! Written here, not taken from a library: onnx's own reader is Python's, and the Rust ONNX
//! crates that read external data (burn-onnx, tract) are model importers of their own, not
//! readers of one tensor.
//!
//! A location comes from an untrusted file. As onnx's checker requires, it must be a relative
//! path of plain names (no `..`, no root) that, with links resolved, stays inside the model's
//! folder, and it must be a regular file (a named pipe would block the read). Offset and length
//! must lie inside the file, and the length inside the memory budget, before anything is read.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::proto::TensorProto;
use super::stream::{self, Payload};
use super::tensor;
use crate::network::HostTensor;

/// Where external data is read from, and the model's identity over what was read.
pub struct ExternalData {
    /// The model's folder; `None` for a model parsed from bytes alone (the zoo's).
    dir: Option<PathBuf>,
    /// SHA-256 of the model file followed by each external tensor's bytes, in the order read.
    digest: Sha256,
    /// Bytes read so far. Tensors may point at the same bytes, so unlike inline data their
    /// total is not bounded by the files' size: it must fit the memory budget too.
    total: usize,
}

impl ExternalData {
    /// For the model file at `path`, whose bytes `digest` has hashed ([`Hashing`]).
    pub fn beside(path: &Path, digest: Sha256) -> ExternalData {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        ExternalData {
            dir: Some(dir),
            digest,
            total: 0,
        }
    }

    /// For a model parsed from bytes with no folder around it: external data is an error (and
    /// the digest is not the model's; nothing is hashed).
    pub fn none() -> ExternalData {
        ExternalData {
            dir: None,
            digest: Sha256::new(),
            total: 0,
        }
    }

    /// For [`ExternalData::beside`], the hex SHA-256 of the model file and the external data
    /// read: the model file's own digest when it has none, so that inline models keep their
    /// cache keys.
    pub fn digest(self) -> String {
        crate::digest::hex(&self.digest.finalize())
    }

    /// Decodes `t`, reading its bytes from its file when it stores them externally.
    pub fn decode(&mut self, t: TensorProto) -> Result<HostTensor, String> {
        if t.data_location != 1 {
            return tensor::decode_owned(t);
        }
        let Some(dir) = &self.dir else {
            return Err("its data is in an external file, and this model has no folder".into());
        };
        let payload = read(dir, &t, &mut self.total)?;
        self.digest.update(payload.bytes());
        let mut inline = TensorProto {
            data_location: 0,
            external_data: Vec::new(),
            ..t
        };
        payload.store(&mut inline);
        tensor::decode_owned(inline)
    }
}

/// A reader that hashes what is read through it: the model file, for its digest.
pub struct Hashing<R> {
    inner: R,
    digest: Sha256,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            digest: Sha256::new(),
        }
    }

    pub fn into_digest(self) -> Sha256 {
        self.digest
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

/// The payload of external tensor `t`, from its file in `dir`.
/// `total` counts the bytes read for every tensor so far.
fn read(dir: &Path, t: &TensorProto, total: &mut usize) -> Result<Payload, String> {
    let field = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        field(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("external data {key} {v:?} is not a byte count"))
            })
            .transpose()
    };
    let location = field("location").ok_or("its external data names no location")?;
    let relative = Path::new(location);
    if location.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "external data location {location:?} is not a path inside the model's folder"
        ));
    }
    let path = dir.join(relative);
    let shown = path.display();
    let failed = |e: std::io::Error| format!("external data {shown}: {e}");
    let real = path.canonicalize().map_err(failed)?;
    let folder = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if !real.starts_with(folder) {
        return Err(format!(
            "external data location {location:?} leads outside the model's folder"
        ));
    }
    // Before opening: opening a named pipe waits for a writer.
    let meta = std::fs::metadata(&real).map_err(failed)?;
    if !meta.is_file() {
        return Err(format!(
            "external data {shown}: {}",
            crate::paths::NOT_REGULAR
        ));
    }
    let size = meta.len();
    let mut file = std::fs::File::open(&real).map_err(failed)?;
    let offset = number("offset")?.unwrap_or(0);
    let Some(left) = size.checked_sub(offset) else {
        return Err(format!(
            "external data {shown}: offset {offset} is past its end ({size} bytes)"
        ));
    };
    let length = number("length")?.unwrap_or(left);
    if length > left {
        return Err(format!(
            "external data {shown}: {length} bytes at offset {offset} run past its end ({size} bytes)"
        ));
    }
    let length = usize::try_from(length)
        .map_err(|_| format!("external data of {length} bytes"))
        .and_then(|n| crate::budget::fits(&[n], 1))?;
    *total = total.saturating_add(length);
    let budget = crate::budget::budget();
    if *total as u64 > budget.bytes {
        return Err(format!(
            "the external data read up to this tensor comes to {}, over the {budget}",
            crate::budget::human(*total as u64)
        ));
    }
    Payload::read(length, t.data_type == stream::FLOAT, |buf| {
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(buf))
            .map_err(failed)
    })
}
