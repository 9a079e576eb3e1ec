//! A content-addressed disk cache for technique results.
//!
//! Keys hash everything a result depends on (model digest, node, units, parameters, seed, device
//! kind). Entries are written atomically (temporary file, then rename) and carry a checksum of
//! their payload; a corrupt or truncated entry is reported as a miss, removed, and recomputed.
//! Location: `$MICROSCOPE_CACHE`, else `$XDG_CACHE_HOME/microscope`, else `~/.cache/microscope`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"MSCACHE1";

/// The environment variable that sets the cache folder.
pub const CACHE_ENV: &str = "MICROSCOPE_CACHE";

/// A folder of cached results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
}

/// The hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cache {
    /// `$MICROSCOPE_CACHE`, else `$XDG_CACHE_HOME/microscope` (the desktop's cache folder), else
    /// `~/.cache/microscope`; `None` when none can be found.
    pub fn default_location() -> Option<Cache> {
        let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let dir = set(CACHE_ENV)
            .map(PathBuf::from)
            .or_else(|| set("XDG_CACHE_HOME").map(|d| Path::new(&d).join("microscope")))
            .or_else(|| set("HOME").map(|h| Path::new(&h).join(".cache/microscope")))?;
        Some(Cache { dir })
    }

    pub fn at(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key for a list of parts (each part is length-prefixed, so parts cannot run together).
    pub fn key(parts: &[&str]) -> String {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        hex(&h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(key)
    }

    /// The payload stored under `key`, if present and intact. A damaged entry is removed.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        let intact = bytes.len() >= 40
            && &bytes[..8] == MAGIC
            && Sha256::digest(&bytes[40..])[..] == bytes[8..40];
        if intact {
            Some(bytes[40..].to_vec())
        } else {
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores `payload` under `key`, atomically.
    pub fn put(&self, key: &str, payload: &[u8]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("entries live in a sub-folder");
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let mut bytes = Vec::with_capacity(40 + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&Sha256::digest(payload));
        bytes.extend_from_slice(payload);
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

/// Little-endian encoding of tensors for cache payloads: a list of (shape, f32 data) records.
pub(crate) fn encode(records: &[(Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((records.len() as u32).to_le_bytes());
    for (shape, data) in records {
        out.extend((shape.len() as u32).to_le_bytes());
        for d in shape {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend((data.len() as u64).to_le_bytes());
        for v in data {
            out.extend(v.to_le_bytes());
        }
    }
    out
}

/// Inverse of [`encode`]; `None` if the payload does not parse.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<(Vec<usize>, Vec<f32>)>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let mut records = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let rank = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let mut shape = Vec::with_capacity(rank.min(8));
        for _ in 0..rank {
            shape.push(u64::from_le_bytes(take(8)?.try_into().ok()?) as usize);
        }
        let n = u64::from_le_bytes(take(8)?.try_into().ok()?) as usize;
        let raw = take(n.checked_mul(4)?)?;
        let data = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        records.push((shape, data));
    }
    Some(records)
}
