//! Decoding ONNX `TensorProto` payloads into host tensors.

use super::proto::TensorProto;
pub use crate::network::value::type_name;
use crate::network::{Elem, HostData, HostTensor};

/// Decodes a tensor; the error says what is wrong with it (the caller adds the file and name).
pub fn decode(t: &TensorProto) -> Result<HostTensor, String> {
    if t.data_location == 1 {
        return Err("tensor data stored in an external file is not supported".into());
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    // Host storage: f32 for the float types, i64 for the rest.
    let host_width = if matches!(t.data_type, 1 | 10 | 11 | 16) {
        4
    } else {
        8
    };
    let n = crate::budget::fits(&shape, host_width)?;
    let raw = &t.raw_data;
    // The values' bytes, one element at a time: not collected first, as a slice per element
    // takes 16 bytes (1.6 GB more, for a moment, to decode VGG's largest weight).
    let from_raw = |width: usize| -> Result<std::slice::ChunksExact<'_, u8>, String> {
        // n fits the budget at 8 bytes each, so n * width (at most 8) does not overflow.
        if raw.len() != n * width {
            return Err(format!(
                "raw data has {} bytes, shape {shape:?} needs {}",
                raw.len(),
                n * width
            ));
        }
        Ok(raw.chunks_exact(width))
    };
    let check = |len: usize| -> Result<(), String> {
        if len == n {
            Ok(())
        } else {
            Err(format!("{len} values for shape {shape:?}"))
        }
    };
    let (data, elem) = match t.data_type {
        1 => {
            let v: Vec<f32> = if !raw.is_empty() {
                from_raw(4)?
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect()
            } else {
                t.float_data.clone()
            };
            check(v.len())?;
            (HostData::F32(v), Elem::Float)
        }
        11 => {
            let v: Vec<f32> = if !raw.is_empty() {
                from_raw(8)?
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect()
            } else {
                t.double_data.iter().map(|&x| x as f32).collect()
            };
            check(v.len())?;
            (HostData::F32(v), Elem::Float)
        }
        10 | 16 => {
            let bits: Vec<u16> = if !raw.is_empty() {
                from_raw(2)?
                    .map(|b| u16::from_le_bytes(b.try_into().unwrap()))
                    .collect()
            } else {
                t.int32_data.iter().map(|&x| x as u16).collect()
            };
            check(bits.len())?;
            let v = bits
                .iter()
                .map(|&b| {
                    if t.data_type == 10 {
                        half::f16::from_bits(b).to_f32()
                    } else {
                        half::bf16::from_bits(b).to_f32()
                    }
                })
                .collect();
            (HostData::F32(v), Elem::Float)
        }
        7 => {
            let v: Vec<i64> = if !raw.is_empty() {
                from_raw(8)?
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect()
            } else {
                t.int64_data.clone()
            };
            check(v.len())?;
            (HostData::I64(v), Elem::Int)
        }
        2 | 3 | 4 | 5 | 6 | 9 | 12 | 13 => {
            let width = match t.data_type {
                2 | 3 | 9 => 1,
                4 | 5 => 2,
                6 | 12 => 4,
                _ => 8,
            };
            let signed = matches!(t.data_type, 3 | 5 | 6);
            let v: Vec<i64> = if !raw.is_empty() {
                from_raw(width)?
                    .map(|b| {
                        let mut buf = [0u8; 8];
                        buf[..width].copy_from_slice(b);
                        let u = u64::from_le_bytes(buf);
                        if signed {
                            let shift = 64 - 8 * width as u32;
                            ((u << shift) as i64) >> shift
                        } else {
                            u as i64
                        }
                    })
                    .collect()
            } else if t.data_type == 13 {
                t.uint64_data.iter().map(|&x| x as i64).collect()
            } else if t.data_type == 12 {
                t.uint64_data.iter().map(|&x| x as i64).collect()
            } else {
                t.int32_data.iter().map(|&x| x as i64).collect()
            };
            check(v.len())?;
            let elem = if t.data_type == 9 {
                Elem::Bool
            } else {
                Elem::Int
            };
            (HostData::I64(v), elem)
        }
        other => return Err(format!("data type {} is not supported", type_name(other))),
    };
    Ok(HostTensor { shape, data, elem })
}
