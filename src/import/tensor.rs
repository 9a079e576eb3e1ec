//! Decoding ONNX `TensorProto` payloads into host tensors.

use super::proto::TensorProto;
pub use crate::network::value::type_name;
use crate::network::{minifloat, Elem, HostData, HostTensor};

/// Decodes a tensor; the error says what is wrong with it (the caller adds the file and name).
pub fn decode(t: &TensorProto) -> Result<HostTensor, String> {
    decode_with(t, None)
}

/// [`decode`], taking a float tensor's `float_data` over rather than copying it: where the
/// file reader puts a float weight's payload ([`super::stream`]).
pub fn decode_owned(mut t: TensorProto) -> Result<HostTensor, String> {
    let floats = std::mem::take(&mut t.float_data);
    decode_with(&t, Some(floats))
}

/// `floats`: `t`'s `float_data`, when it was taken out of it.
fn decode_with(t: &TensorProto, floats: Option<Vec<f32>>) -> Result<HostTensor, String> {
    let float_data = || floats.unwrap_or_else(|| t.float_data.clone());
    if t.data_location == 1 {
        return Err("tensor data stored in an external file is not supported".into());
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    // Host storage: f32 for the float types, i64 for the other types but the 8- and 4-bit
    // integers, which are stored a byte each. Those are checked at i64's width all the same, as
    // host arithmetic on them (HostData::wide) widens them into a copy.
    let host_width = if matches!(t.data_type, 1 | 10 | 11 | 16..=20 | 23) {
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
                float_data()
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
        // 8-bit integers as they are stored: quantized weights, a quarter of a model's float
        // size, would take eight times as much as i64.
        2 => {
            let v: Vec<u8> = if !raw.is_empty() {
                from_raw(1)?.map(|b| b[0]).collect()
            } else {
                t.int32_data.iter().map(|&x| x as u8).collect()
            };
            check(v.len())?;
            (HostData::U8(v), Elem::Int)
        }
        3 => {
            let v: Vec<i8> = if !raw.is_empty() {
                from_raw(1)?.map(|b| b[0] as i8).collect()
            } else {
                t.int32_data.iter().map(|&x| x as i8).collect()
            };
            check(v.len())?;
            (HostData::I8(v), Elem::Int)
        }
        // 8-bit floats (float8 quantized models), a byte each, held as the f32 values they stand
        // for (exact).
        17..=20 => {
            let format = minifloat::format(t.data_type.into()).expect("a float8 code");
            let bytes: Vec<u8> = if !raw.is_empty() {
                from_raw(1)?.map(|b| b[0]).collect()
            } else {
                t.int32_data.iter().map(|&x| x as u8).collect()
            };
            check(bytes.len())?;
            let v = bytes.iter().map(|&b| format.decode(b)).collect();
            (HostData::F32(v), Elem::Float)
        }
        // 4-bit integers (opset 21's quantized weights) and 4-bit floats (FLOAT4E2M1), two to a
        // byte, the first in the low nibble: in raw data, or one packed byte per int32_data
        // entry. Unpacked here, a byte each (the floats as their f32 values).
        21..=23 => {
            let packed: std::borrow::Cow<'_, [u8]> = if !raw.is_empty() {
                std::borrow::Cow::Borrowed(raw)
            } else {
                t.int32_data.iter().map(|&x| x as u8).collect()
            };
            let bytes = n.div_ceil(2);
            if packed.len() != bytes {
                return Err(format!(
                    "{} bytes of packed 4-bit values, shape {shape:?} needs {bytes}",
                    packed.len()
                ));
            }
            let nibble = |k: usize| (packed[k / 2] >> (4 * (k % 2))) & 0xf;
            if let Some(format) = minifloat::format(t.data_type.into()) {
                let v = (0..n).map(|k| format.decode(nibble(k))).collect();
                (HostData::F32(v), Elem::Float)
            } else if t.data_type == 21 {
                (HostData::U8((0..n).map(nibble).collect()), Elem::Int)
            } else {
                // The nibble's top bit is its sign.
                let signed = |k: usize| ((nibble(k) << 4) as i8) >> 4;
                (HostData::I8((0..n).map(signed).collect()), Elem::Int)
            }
        }
        4 | 5 | 6 | 9 | 12 | 13 => {
            let width = match t.data_type {
                9 => 1,
                4 | 5 => 2,
                6 | 12 => 4,
                _ => 8,
            };
            let signed = matches!(t.data_type, 5 | 6);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data_type: i32, dims: Vec<i64>) -> TensorProto {
        TensorProto {
            data_type,
            dims,
            ..Default::default()
        }
    }

    #[test]
    fn four_and_eight_bit_integers_keep_a_byte_each_and_small_floats_their_values() {
        let mut int8 = tensor(3, vec![4]);
        int8.raw_data = vec![0x80, 0xff, 0x00, 0x7f];
        let h = decode(&int8).unwrap();
        assert_eq!(h.data, HostData::I8(vec![-128, -1, 0, 127]));
        assert_eq!((h.elem, h.to_i64()), (Elem::Int, vec![-128, -1, 0, 127]));

        let mut uint8 = tensor(2, vec![2, 2]);
        uint8.raw_data = vec![0x80, 0xff, 0x00, 0x7f];
        let h = decode(&uint8).unwrap();
        assert_eq!(h.data, HostData::U8(vec![128, 255, 0, 127]));
        assert_eq!(h.to_f32(), [128.0, 255.0, 0.0, 127.0]);

        // Without raw data the values sit in int32_data, as the ONNX spec says for 8-bit types.
        let mut listed = tensor(3, vec![2]);
        listed.int32_data = vec![-5, 100];
        assert_eq!(decode(&listed).unwrap().data, HostData::I8(vec![-5, 100]));

        // 4-bit: [0, 1, 7, -4, -8] packed as ONNX's int4 node test packs them (0x10, 0xc7, 0x08).
        let mut int4 = tensor(22, vec![5]);
        int4.int32_data = vec![0x10, 0xc7, 0x08];
        assert_eq!(
            decode(&int4).unwrap().data,
            HostData::I8(vec![0, 1, 7, -4, -8])
        );
        let mut uint4 = tensor(21, vec![3]);
        uint4.raw_data = vec![0xf0, 0x0a];
        assert_eq!(decode(&uint4).unwrap().data, HostData::U8(vec![0, 15, 10]));
        uint4.raw_data.push(0);
        let err = decode(&uint4).unwrap_err();
        assert!(err.contains("3 bytes of packed 4-bit values"), "{err}");

        // 8-bit floats are their values: E4M3FN's 0x38 is 1, 0xfe is -448; E5M2's 0x7c is
        // infinity. FLOAT4E2M1 packs two to a byte: 0x2f is [-6, 1].
        let mut e4m3 = tensor(17, vec![2]);
        e4m3.raw_data = vec![0x38, 0xfe];
        let h = decode(&e4m3).unwrap();
        assert_eq!((h.elem, h.to_f32()), (Elem::Float, vec![1.0, -448.0]));
        let mut e5m2 = tensor(19, vec![1]);
        e5m2.int32_data = vec![0x7c];
        assert_eq!(decode(&e5m2).unwrap().to_f32(), [f32::INFINITY]);
        let mut fp4 = tensor(23, vec![3]);
        fp4.raw_data = vec![0x2f, 0x05];
        assert_eq!(decode(&fp4).unwrap().to_f32(), [-6.0, 1.0, 3.0]);

        let mut short = tensor(2, vec![3]);
        short.raw_data = vec![1, 2];
        let err = decode(&short).unwrap_err();
        assert!(err.contains("raw data has 2 bytes"), "{err}");
    }
}
