//! Reading an ONNX file field by field, so that a model is never held twice while it loads.
//!
//! Decoding the whole file with prost holds the file and a copy of every weight at once, then
//! the copy and the decoded weights: VGG-19's 548 MB file peaked at 1.43 GB. Here only the
//! weights' payloads (`GraphProto.initializer[].raw_data`) are read straight from the file into
//! the buffers that keep them: a float weight into an `f32` vector, which the runtime then takes
//! over without a copy. Every other field is copied, as it was written, into a small buffer that
//! prost decodes (nodes, names, attributes, shapes): prost still decides what is valid.
//!
//! Written here because prost decodes from a buffer in memory only, and no maintained protobuf
//! crate reads one field of a message from a stream while decoding the rest.
//!
//! Each length from the file is checked against what is left of the message around it, and the
//! outermost one against the file's length, before anything is allocated for it.

use std::io::Read;

use prost::Message;

use super::proto::{GraphProto, ModelProto, TensorProto};

// Field numbers (onnx.proto3): ModelProto.graph, GraphProto.initializer, TensorProto.data_type,
// TensorProto.raw_data.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_DATA_TYPE: u64 = 2;
const TENSOR_RAW_DATA: u64 = 9;
/// TensorProto.DataType FLOAT.
pub const FLOAT: i32 = 1;

// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// Why a model could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Reading failed (not a regular file, a disk error).
    Io(std::io::Error),
    /// The bytes are not a protobuf ModelProto: what is wrong with them.
    Format(String),
    /// A tensor's data are larger than the memory budget: which, and by how much.
    Budget(String),
}

impl From<String> for ReadError {
    fn from(reason: String) -> Self {
        ReadError::Format(reason)
    }
}

impl From<&str> for ReadError {
    fn from(reason: &str) -> Self {
        ReadError::Format(reason.to_string())
    }
}

impl From<prost::DecodeError> for ReadError {
    fn from(e: prost::DecodeError) -> Self {
        ReadError::Format(e.to_string())
    }
}

type Result<T> = std::result::Result<T, ReadError>;

/// Reads a model of `len` bytes from `r`.
pub fn read_model(r: impl Read, len: u64) -> Result<ModelProto> {
    let mut input = Input { r, pos: 0 };
    let mut rest = Vec::new();
    let mut graph: Option<(Vec<u8>, Vec<TensorProto>)> = None;
    while input.pos < len {
        let (key, field, wire) = input.key(len)?;
        if field == MODEL_GRAPH && wire == LEN {
            let end = input.length_end(len)?;
            let (graph_rest, initializers) = graph.get_or_insert_with(Default::default);
            read_graph(&mut input, end, graph_rest, initializers)?;
        } else {
            input.copy_field(key, wire, len, &mut rest)?;
        }
    }
    let mut model = ModelProto::decode(&rest[..])?;
    // A message field written twice is merged, as prost merges it: the graph's repeated fields
    // (its initializers among them) in the order they came.
    if let Some((graph_rest, initializers)) = graph {
        let mut g = GraphProto::decode(&graph_rest[..])?;
        g.initializer = initializers;
        model.graph = Some(g);
    }
    Ok(model)
}

fn read_graph(
    input: &mut Input<impl Read>,
    end: u64,
    rest: &mut Vec<u8>,
    initializers: &mut Vec<TensorProto>,
) -> Result<()> {
    while input.pos < end {
        let (key, field, wire) = input.key(end)?;
        if field == GRAPH_INITIALIZER && wire == LEN {
            let tensor_end = input.length_end(end)?;
            initializers.push(read_tensor(input, tensor_end)?);
        } else {
            input.copy_field(key, wire, end, rest)?;
        }
    }
    Ok(())
}

/// A tensor's payload as read from a file (its `raw_data`, or its bytes in an external data
/// file): a float tensor's straight into the `f32` vector that keeps it.
pub enum Payload {
    Bytes(Vec<u8>),
    F32(Vec<f32>),
}

impl Payload {
    /// `n` bytes that `fill` reads, into floats where `float` (the tensor's type, as far as it
    /// is known, is FLOAT) and they are whole floats.
    pub fn read<E>(
        n: usize,
        float: bool,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<Payload, E> {
        Ok(if float && n > 0 && n.is_multiple_of(4) {
            let mut values = vec![0f32; n / 4];
            fill(bytemuck::cast_slice_mut(&mut values))?;
            Payload::F32(values)
        } else {
            let mut bytes = vec![0u8; n];
            fill(&mut bytes)?;
            Payload::Bytes(bytes)
        })
    }

    /// The bytes as they were in the file.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Payload::Bytes(bytes) => bytes,
            Payload::F32(values) => bytemuck::cast_slice(values),
        }
    }

    /// Makes it `t`'s payload. Non-empty raw data is what a tensor holds (it comes before
    /// `float_data`), so a float tensor's stands in its `float_data`, which is read as it stands.
    pub fn store(self, t: &mut TensorProto) {
        match self {
            Payload::F32(mut values) if t.data_type == FLOAT => {
                for v in &mut values {
                    *v = f32::from_bits(u32::from_le(v.to_bits()));
                }
                t.float_data = values;
                t.raw_data = Vec::new();
            }
            // The type changed after the payload (a type written twice): the bytes as they were.
            Payload::F32(values) => t.raw_data = bytemuck::cast_slice(&values).to_vec(),
            Payload::Bytes(bytes) => t.raw_data = bytes,
        }
    }
}

fn read_tensor(input: &mut Input<impl Read>, end: u64) -> Result<TensorProto> {
    let mut rest = Vec::new();
    let mut raw = None;
    // The type as far as read: writers put it (field 2) before the payload (field 9).
    let mut data_type = 0;
    while input.pos < end {
        let (key, field, wire) = input.key(end)?;
        if field == TENSOR_RAW_DATA && wire == LEN {
            let raw_end = input.length_end(end)?;
            // Fits in usize: the bytes are in a file being read into memory (or in memory).
            let n = usize::try_from(raw_end - input.pos).map_err(|e| e.to_string())?;
            // Within the file, but perhaps not within the memory this process may use: refused
            // before it is allocated, naming the tensor where its name came first.
            let budget = crate::budget::budget();
            if n as u64 > budget.bytes {
                let name = TensorProto::decode(&rest[..]).map(|t| t.name);
                return Err(ReadError::Budget(format!(
                    "initializer {}: its data take {}, over the {budget}",
                    name.unwrap_or_default(),
                    crate::budget::human(n as u64)
                )));
            }
            raw = Some(Payload::read(n, data_type == FLOAT, |buf| input.read(buf))?);
        } else if field == TENSOR_DATA_TYPE && wire == VARINT {
            let value = input.varint()?;
            if input.pos > end {
                return Err("a field runs past the end of its message".into());
            }
            // As prost reads an int32: the low 32 bits.
            data_type = value as i32;
            prost::encoding::encode_key(field as u32, prost::encoding::WireType::Varint, &mut rest);
            prost::encoding::encode_varint(value, &mut rest);
        } else {
            input.copy_field(key, wire, end, &mut rest)?;
        }
    }
    let mut t = TensorProto::decode(&rest[..])?;
    if let Some(raw) = raw {
        raw.store(&mut t);
    }
    Ok(t)
}

/// The file as read so far.
struct Input<R> {
    r: R,
    /// Bytes read.
    pos: u64,
}

impl<R: Read> Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the file ends inside a field".into(),
            _ => ReadError::Io(e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// A varint (at most ten bytes, as protobuf writes them).
    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let mut byte = [0u8];
            self.read(&mut byte)?;
            value |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] < 0x80 {
                return Ok(value);
            }
        }
        Err("a varint longer than ten bytes".into())
    }

    /// A field's key, inside a message that ends at `end`: (key, field number, wire type).
    fn key(&mut self, end: u64) -> Result<(u64, u64, u64)> {
        let key = self.varint()?;
        if self.pos > end {
            return Err("a field key crosses the end of its message".into());
        }
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(format!("invalid field number {field}").into());
        }
        Ok((key, field, wire))
    }

    /// Reads a length and returns where the bytes it counts end, which must be inside the
    /// message that ends at `end`.
    fn length_end(&mut self, end: u64) -> Result<u64> {
        let n = self.varint()?;
        match self.pos.checked_add(n) {
            Some(stop) if stop <= end => Ok(stop),
            _ => Err(format!(
                "a field of {n} bytes at byte {} runs past the end of its message",
                self.pos
            )
            .into()),
        }
    }

    /// Copies the field whose key was just read, as it was written, to `out`.
    fn copy_field(&mut self, key: u64, wire: u64, end: u64, out: &mut Vec<u8>) -> Result<()> {
        prost::encoding::encode_varint(key, out);
        let n = match wire {
            VARINT => {
                let value = self.varint()?;
                prost::encoding::encode_varint(value, out);
                0
            }
            FIXED64 => 8,
            FIXED32 => 4,
            LEN => {
                let stop = self.length_end(end)?;
                prost::encoding::encode_varint(stop - self.pos, out);
                stop - self.pos
            }
            // Groups (3, 4) are deprecated and in no ONNX field; 6 and 7 are not wire types.
            _ => return Err(format!("wire type {wire} is not read in ONNX files").into()),
        };
        // After a varint value, too: it may have run on into the next message.
        if self.pos + n > end {
            return Err("a field runs past the end of its message".into());
        }
        // Fits in usize: it is inside the message, which is in memory or being read into it.
        let start = out.len();
        out.resize(start + n as usize, 0);
        self.read(&mut out[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::proto::{NodeProto, StringStringEntryProto};

    fn float_tensor(name: &str, values: &[f32], raw: bool) -> TensorProto {
        let mut t = TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: FLOAT,
            ..Default::default()
        };
        if raw {
            t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        } else {
            t.float_data = values.to_vec();
        }
        t
    }

    fn model() -> ModelProto {
        let int8 = TensorProto {
            name: "q".into(),
            dims: vec![3],
            data_type: 3,
            raw_data: vec![0x80, 0x7f, 1],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            producer_name: "here".into(),
            graph: Some(GraphProto {
                name: "g".into(),
                node: vec![NodeProto {
                    op_type: "Relu".into(),
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                initializer: vec![
                    float_tensor("w", &[1.5, -2.0, 3.25], true),
                    float_tensor("b", &[0.5], false),
                    int8,
                    float_tensor("empty", &[], true),
                ],
                ..Default::default()
            }),
            metadata_props: vec![StringStringEntryProto {
                key: "k".into(),
                value: "v".into(),
            }],
            ..Default::default()
        }
    }

    /// What prost reads from the same bytes, with float payloads in `float_data`.
    fn as_prost_reads(bytes: &[u8]) -> ModelProto {
        let mut m = ModelProto::decode(bytes).unwrap();
        for t in m.graph.iter_mut().flat_map(|g| &mut g.initializer) {
            if t.data_type == FLOAT && !t.raw_data.is_empty() && t.raw_data.len().is_multiple_of(4)
            {
                t.float_data = std::mem::take(&mut t.raw_data)
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
            }
        }
        m
    }

    #[test]
    fn a_model_reads_as_prost_reads_it_with_float_payloads_as_floats() {
        let bytes = model().encode_to_vec();
        let read = read_model(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(read, as_prost_reads(&bytes));
        let w = &read.graph.as_ref().unwrap().initializer[0];
        assert_eq!(
            (w.float_data.as_slice(), w.raw_data.len()),
            (&[1.5, -2.0, 3.25][..], 0)
        );
    }

    #[test]
    fn a_graph_written_twice_is_merged_as_prost_merges_it() {
        let mut bytes = model().encode_to_vec();
        let second = ModelProto {
            graph: Some(GraphProto {
                name: "second".into(),
                initializer: vec![float_tensor("w2", &[7.0], true)],
                ..Default::default()
            }),
            ..Default::default()
        };
        bytes.extend(second.encode_to_vec());
        let read = read_model(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(read, as_prost_reads(&bytes));
        assert_eq!(read.graph.unwrap().initializer.len(), 5);
    }

    fn format_error(read: Result<ModelProto>) -> String {
        match read {
            Err(ReadError::Format(reason)) => reason,
            other => panic!("not a format error: {other:?}"),
        }
    }

    /// A model of one initializer whose fields are `tensor`'s bytes.
    fn one_initializer(tensor: &[u8]) -> Vec<u8> {
        let mut graph = Vec::new();
        prost::encoding::bytes::encode(5, &tensor.to_vec(), &mut graph);
        let mut bytes = Vec::new();
        prost::encoding::bytes::encode(7, &graph, &mut bytes);
        bytes
    }

    #[test]
    fn a_type_given_after_the_payload_keeps_the_payload_as_bytes() {
        // Written by hand, as writers keep field order: the payload, then the type; and a float
        // type, the payload, then another type.
        let raw: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut late = Vec::new();
        prost::encoding::bytes::encode(9, &raw, &mut late);
        prost::encoding::int32::encode(2, &FLOAT, &mut late);
        let mut changed = Vec::new();
        prost::encoding::int32::encode(2, &FLOAT, &mut changed);
        prost::encoding::bytes::encode(9, &raw, &mut changed);
        prost::encoding::int32::encode(2, &2, &mut changed);
        for tensor in [late, changed] {
            let bytes = one_initializer(&tensor);
            let read = read_model(&bytes[..], bytes.len() as u64).unwrap();
            assert_eq!(read, ModelProto::decode(&bytes[..]).unwrap());
            assert_eq!(read.graph.unwrap().initializer[0].raw_data, raw);
        }
    }

    #[test]
    fn lengths_past_their_message_or_the_file_are_refused_before_anything_is_allocated() {
        let bytes = model().encode_to_vec();
        // Cut anywhere: an error (or, cut between top-level fields, a shorter model), never a
        // panic.
        for cut in 0..bytes.len() {
            let _ = read_model(&bytes[..cut], cut as u64);
        }
        // A graph whose length says 2^62 bytes.
        let mut huge = Vec::new();
        prost::encoding::encode_key(7, prost::encoding::WireType::LengthDelimited, &mut huge);
        prost::encoding::encode_varint(1 << 62, &mut huge);
        let err = format_error(read_model(&huge[..], huge.len() as u64));
        assert!(err.contains("runs past the end"), "{err}");
        // A payload longer than its tensor.
        let mut tensor = Vec::new();
        prost::encoding::int32::encode(2, &FLOAT, &mut tensor);
        prost::encoding::encode_key(9, prost::encoding::WireType::LengthDelimited, &mut tensor);
        prost::encoding::encode_varint(1 << 40, &mut tensor);
        let bytes = one_initializer(&tensor);
        let err = format_error(read_model(&bytes[..], bytes.len() as u64));
        assert!(err.contains("runs past the end"), "{err}");
    }

    /// Bytes changed at random read as prost reads them: the same model, or an error from both
    /// (deterministic: a small LCG, not a fuzzer; `tests/hostile` fuzzes whole files).
    #[test]
    fn changed_bytes_read_as_prost_reads_them_or_fail_with_it() {
        let bytes = model().encode_to_vec();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % n
        };
        let (mut both_ok, mut both_err) = (0, 0);
        for _ in 0..5000 {
            let mut changed = bytes.clone();
            for _ in 0..1 + next(3) {
                let at = next(changed.len());
                changed[at] = next(256) as u8;
            }
            let ours = read_model(&changed[..], changed.len() as u64);
            match (ours, ModelProto::decode(&changed[..])) {
                (Ok(ours), Ok(_)) => {
                    assert_eq!(ours, as_prost_reads(&changed), "{changed:?}");
                    both_ok += 1;
                }
                (Err(ReadError::Format(_)), Err(_)) => both_err += 1,
                (ours, theirs) => panic!("{changed:?}: ours {ours:?}, prost {theirs:?}"),
            }
        }
        assert!(
            both_ok > 100 && both_err > 100,
            "{both_ok} read, {both_err} refused"
        );
    }
}
