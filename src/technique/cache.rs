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

pub use crate::paths::CACHE_ENV;

/// A folder of cached results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
    /// Whether writes keep it under its size limit ([`max_bytes`]); a store keeps everything.
    evicting: bool,
}

impl Cache {
    /// The cache folder ([`crate::paths::cache_root`]); `None` when none can be found.
    pub fn default_location() -> Option<Cache> {
        crate::paths::cache_root().map(Cache::at)
    }

    pub fn at(dir: impl Into<PathBuf>) -> Cache {
        Cache {
            dir: dir.into(),
            evicting: true,
        }
    }

    /// A store at `dir`: the same format, but nothing is ever evicted (an atlas's results,
    /// which processes on several machines fill and which a later run reads back).
    pub fn store(dir: impl Into<PathBuf>) -> Cache {
        Cache {
            dir: dir.into(),
            evicting: false,
        }
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
        crate::digest::hex(&h.finalize())
    }

    /// Where `key`'s entry lives; `None` for anything but a key [`Cache::key`] makes (64
    /// lowercase hex digits), so no key can name a path outside the cache.
    fn path(&self, key: &str) -> Option<PathBuf> {
        let valid = key.len() == 64 && lower_hex(key);
        valid.then(|| self.dir.join(&key[..2]).join(key))
    }

    /// The payload stored under `key`, if present and intact. A damaged entry is removed; an
    /// intact one is marked as just used (its modification time), for eviction.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path(key)?;
        let size = std::fs::metadata(&path).ok()?.len();
        if size > crate::budget::budget().bytes {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        let intact = bytes.len() >= 40
            && &bytes[..8] == MAGIC
            && Sha256::digest(&bytes[40..])[..] == bytes[8..40];
        if intact {
            if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            Some(bytes[40..].to_vec())
        } else {
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores `payload` under `key`, atomically: written to a temporary file of this writer's
    /// own (process, call and clock, so that processes of one id on two machines sharing the
    /// folder differ too), then renamed, so concurrent writers of one key each leave an intact
    /// entry. Now and then the least recently used entries go while the cache
    /// is over its size limit ([`max_bytes`]).
    pub fn put(&self, key: &str, payload: &[u8]) -> Result<()> {
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = self.path(key).ok_or_else(|| {
            Error::Message(format!("cache key {key:?} is not a key this cache makes"))
        })?;
        let dir = path.parent().expect("entries live in a sub-folder");
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = dir.join(format!(".{key}.{}.{n}.{clock:x}.tmp", std::process::id()));
        let mut bytes = Vec::with_capacity(40 + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&Sha256::digest(payload));
        bytes.extend_from_slice(payload);
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        // The walk over every entry is done on the first and every 64th write of a process, so
        // a long run (an atlas) does not walk the cache once per result; the limit may be
        // passed by that many entries meanwhile.
        if self.evicting && n.is_multiple_of(64) {
            self.evict(max_bytes());
        }
        Ok(())
    }

    /// Removes the least recently used entries until the cache holds at most `limit` bytes.
    pub fn evict(&self, limit: u64) {
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
        for (name, f) in self.files() {
            if name.starts_with('.') {
                continue; // another writer's temporary file
            }
            if let Ok(m) = f.metadata() {
                if m.is_file() {
                    let used = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                    entries.push((used, m.len(), f.path()));
                }
            }
        }
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, size, path) in entries {
            if total <= limit {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }

    /// Removes temporary files that a writer left when it was killed mid-write, once they are
    /// `older_than` (a write takes well under a second, so an old one has no writer any more,
    /// on this machine or another sharing the folder). Returns how many went.
    pub fn remove_abandoned(&self, older_than: std::time::Duration) -> usize {
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for (name, f) in self.files() {
            if !(name.starts_with('.') && name.ends_with(".tmp")) {
                continue;
            }
            let old = f
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > older_than));
            if old && std::fs::remove_file(f.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The files in the entries' two-hex-digit folders (entries and writers' temporary files),
    /// with their names. Anything else here (the zoo's downloads in `zoo/`) is not the
    /// cache's.
    fn files(&self) -> Vec<(String, std::fs::DirEntry)> {
        let mut out = Vec::new();
        let Ok(shards) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for shard in shards.flatten() {
            let name = shard.file_name();
            let name = name.to_string_lossy();
            if !(name.len() == 2 && lower_hex(&name)) {
                continue;
            }
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                out.push((f.file_name().to_string_lossy().into_owned(), f));
            }
        }
        out
    }
}

fn lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The variable that sets the cache's size limit (bytes, or with a K, M, G or T suffix).
pub const MAX_ENV: &str = "MICROSCOPE_CACHE_MAX";

/// The cache's size limit: `$MICROSCOPE_CACHE_MAX`, else 2 GiB (about 1,500 galleries of 64
/// units at 128 px).
pub fn max_bytes() -> u64 {
    std::env::var(MAX_ENV)
        .ok()
        .and_then(|v| crate::budget::parse_size(v.trim()))
        .unwrap_or(2 << 30)
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
        // A record whose shape does not hold exactly its values is not one `encode` wrote.
        if crate::budget::elements(&shape).ok()? != n {
            return None;
        }
        let raw = take(n.checked_mul(4)?)?;
        let data = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        records.push((shape, data));
    }
    Some(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> Cache {
        let dir =
            std::env::temp_dir().join(format!("microscope-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Cache::at(dir)
    }

    #[test]
    fn keys_that_the_cache_does_not_make_are_refused() {
        let c = scratch("keys");
        for key in [
            "",
            "a",
            "../../etc/passwd",
            &"G".repeat(64),
            &"é".repeat(32),
        ] {
            assert!(c.put(key, b"x").is_err(), "{key:?}");
            assert!(c.get(key).is_none(), "{key:?}");
        }
        let _ = std::fs::remove_dir_all(c.dir());
    }

    #[test]
    fn concurrent_writers_of_one_key_leave_an_intact_entry() {
        let c = scratch("writers");
        let key = Cache::key(&["same"]);
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let (c, key) = (&c, &key);
                s.spawn(move || {
                    for _ in 0..20 {
                        c.put(key, &[t; 4096]).unwrap();
                    }
                });
            }
        });
        let got = c.get(&key).expect("an intact entry");
        assert!(got.len() == 4096 && got.iter().all(|&b| b == got[0]));
        let _ = std::fs::remove_dir_all(c.dir());
    }

    #[test]
    fn eviction_removes_the_least_recently_used_entries_first() {
        let c = scratch("lru");
        let keys: Vec<String> = (0..4).map(|i| Cache::key(&[&i.to_string()])).collect();
        for k in &keys {
            c.put(k, &[0u8; 1000]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The zoo's downloads share the folder and are older than every entry: not the
        // cache's to evict.
        let wheel = c.dir().join("zoo/model.whl");
        std::fs::create_dir_all(wheel.parent().unwrap()).unwrap();
        std::fs::write(&wheel, [0u8; 5000]).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1);
        std::fs::File::options()
            .append(true)
            .open(&wheel)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // Using the oldest makes it the most recent.
        assert!(c.get(&keys[0]).is_some());
        c.evict(2 * 1040);
        let left: Vec<bool> = keys.iter().map(|k| c.get(k).is_some()).collect();
        assert_eq!(left, [true, false, false, true]);
        assert!(wheel.exists(), "eviction removed the zoo's download");
        let _ = std::fs::remove_dir_all(c.dir());
    }

    #[test]
    fn a_record_whose_shape_does_not_hold_its_values_does_not_decode() {
        let good = encode(&[(vec![2, 3], vec![0.0; 6])]);
        assert!(decode(&good).is_some());
        let bad = encode(&[(vec![2, 4], vec![0.0; 6])]);
        assert!(decode(&bad).is_none());
        let overflow = encode(&[(vec![1 << 40, 1 << 40, 16], vec![0.0; 6])]);
        assert!(decode(&overflow).is_none());
    }

    #[test]
    fn only_old_temporary_files_are_abandoned() {
        let c = Cache::store(scratch("abandoned").dir().to_path_buf());
        let key = Cache::key(&["kept"]);
        c.put(&key, b"entry").unwrap();
        let folder = c.dir().join(&key[..2]);
        let (old, fresh) = (folder.join(".a.1.0.0.tmp"), folder.join(".b.2.0.0.tmp"));
        std::fs::write(&old, b"half").unwrap();
        std::fs::write(&fresh, b"half").unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .append(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        assert_eq!(c.remove_abandoned(std::time::Duration::from_secs(3600)), 1);
        assert!(!old.exists() && fresh.exists());
        assert_eq!(c.get(&key).as_deref(), Some(&b"entry"[..]));
        let _ = std::fs::remove_dir_all(c.dir());
    }
}
