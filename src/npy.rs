//! Minimal `.npy` (NumPy format 1.0/2.0/3.0) reading and writing for float32 and int64 arrays.

use std::path::Path;

use crate::error::{Error, Result};

/// An array read from or written to a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a little-endian float32/float64/int64/int32/uint8 `.npy` file as float32.
pub fn read(path: &Path) -> Result<Array> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = crate::paths::regular_file(path)?;
    if size > crate::budget::budget().bytes {
        return Err(bad(
            path,
            format!(
                "the file is {}, over the {}",
                crate::budget::human(size),
                crate::budget::budget()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "not a .npy file (missing \\x93NUMPY magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .ok_or_else(|| bad(path, "truncated header"))?;
    let field = |key: &str| -> Option<String> {
        let at = header.find(&format!("'{key}'"))?;
        let rest = header[at + key.len() + 2..]
            .trim_start()
            .strip_prefix(':')?
            .trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr").ok_or_else(|| bad(path, "header has no descr"))?;
    let descr = descr
        .trim_start_matches('\'')
        .split('\'')
        .next()
        .unwrap_or("")
        .to_string();
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(bad(path, "Fortran-ordered arrays are not supported"));
    }
    let shape_text = field("shape").ok_or_else(|| bad(path, "header has no shape"))?;
    let inner = shape_text
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or("");
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| bad(path, format!("bad shape {shape_text}")))
        })
        .collect::<Result<_>>()?;
    let n = crate::budget::fits(&shape, 4).map_err(|e| bad(path, e))?;
    let body = &bytes[start + header_len..];
    let (width, conv): (usize, fn(&[u8]) -> f32) = match descr.as_str() {
        "<f4" => (4, |b| f32::from_le_bytes(b.try_into().unwrap())),
        "<f8" => (8, |b| f64::from_le_bytes(b.try_into().unwrap()) as f32),
        "<i8" => (8, |b| i64::from_le_bytes(b.try_into().unwrap()) as f32),
        "<i4" => (4, |b| i32::from_le_bytes(b.try_into().unwrap()) as f32),
        "|u1" => (1, |b| b[0] as f32),
        other => return Err(bad(path, format!("unsupported dtype {other}; use float32"))),
    };
    let needed = n.checked_mul(width).filter(|&b| b <= body.len());
    let Some(needed) = needed else {
        return Err(bad(
            path,
            format!("truncated data: {} bytes for shape {shape:?}", body.len()),
        ));
    };
    let data = body[..needed].chunks_exact(width).map(conv).collect();
    Ok(Array { shape, data })
}

/// Writes a float32 `.npy` file.
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
