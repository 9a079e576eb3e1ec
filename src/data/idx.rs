//! IDX files (the MNIST family's format), plain or gzipped.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// An unsigned-byte IDX array: its dimensions and data.
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads `path`, or `path.gz` if only that exists, checking the header against the payload.
pub fn read(path: &Path) -> Result<Idx> {
    let gz = path.with_extension(match path.extension() {
        Some(e) => format!("{}.gz", e.to_string_lossy()),
        None => "gz".into(),
    });
    let (file, zipped) = if path.exists() {
        (
            path.to_path_buf(),
            path.extension().is_some_and(|e| e == "gz"),
        )
    } else if gz.exists() {
        (gz, true)
    } else {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file (nor .gz)"),
        });
    };
    let bad = |reason: String| Error::Format {
        path: file.clone(),
        reason,
    };
    let raw = std::fs::read(&file).map_err(|source| Error::Io {
        path: file.clone(),
        source,
    })?;
    let bytes = if zipped {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("corrupt gzip data: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x} is not unsigned byte",
            bytes[2]
        )));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(bad("truncated IDX header".into()));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        return Err(bad(format!(
            "IDX payload has {} bytes, dims {dims:?} need {n}",
            bytes.len() - header
        )));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}
