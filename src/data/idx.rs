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
    let opened = std::fs::File::open(&file).map_err(|source| Error::Io {
        path: file.clone(),
        source,
    })?;
    // Streamed: the header is checked before the payload is read, and never more than the
    // header's size (plus one byte, to notice extra data) is decompressed, so a gzip bomb
    // cannot fill memory.
    let mut reader: Box<dyn Read> = if zipped {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(
            opened,
        )))
    } else {
        Box::new(std::io::BufReader::new(opened))
    };
    let mut read_exact = |buf: &mut [u8], what: &str| {
        reader.read_exact(buf).map_err(|e| {
            let packed = if zipped { "gzip data or " } else { "" };
            bad(format!("truncated or corrupt {packed}{what}: {e}"))
        })
    };
    let mut magic = [0u8; 4];
    read_exact(&mut magic, "IDX header")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if magic[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x} is not unsigned byte",
            magic[2]
        )));
    }
    let rank = magic[3] as usize;
    let mut header = vec![0u8; 4 * rank];
    read_exact(&mut header, "IDX header")?;
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize)
        .collect();
    if rank == 0 || dims.contains(&0) {
        return Err(bad(format!("IDX dims {dims:?} hold no items")));
    }
    let n = crate::budget::fits(&dims, 1).map_err(bad)?;
    let mut data = Vec::with_capacity(n);
    (&mut reader)
        .take(n as u64)
        .read_to_end(&mut data)
        .map_err(|e| {
            let packed = if zipped { "gzip data or " } else { "" };
            bad(format!("corrupt {packed}IDX payload: {e}"))
        })?;
    let mut extra = [0u8; 1];
    let more = reader.read(&mut extra).unwrap_or(0);
    if data.len() != n || more != 0 {
        return Err(bad(format!(
            "IDX payload has {} bytes, dims {dims:?} need {n}",
            if more != 0 {
                format!("more than {n}")
            } else {
                data.len().to_string()
            }
        )));
    }
    Ok(Idx { dims, data })
}
