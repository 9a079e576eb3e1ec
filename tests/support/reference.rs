//! Comparing every node of a network with onnxruntime's values of it: the reference directories
//! that `tests/support/light_reference.py` and `tests/support/ort_nodes.py` write (`index.tsv`
//! and one `.npy` per node).

use std::path::{Path, PathBuf};

use microscope::network::{HostTensor, Value};
use microscope::{npy, DynTensor, Network};

/// Largest violation of `|a - b| <= atol + rtol * |b|`, as (index, got, want), if any.
pub fn mismatch(got: &[f32], want: &[f32], rtol: f32, atol: f32) -> Option<(usize, f32, f32)> {
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (a, b))| {
            // NaN anywhere counts as a mismatch.
            let diff = (*a - *b).abs().partial_cmp(&(atol + rtol * b.abs()));
            matches!(diff, None | Some(std::cmp::Ordering::Greater))
        })
        .max_by(|x, y| {
            let dx = (x.1 .0 - x.1 .1).abs();
            let dy = (y.1 .0 - y.1 .1).abs();
            dx.total_cmp(&dy)
        })
        .map(|(i, (a, b))| (i, *a, *b))
}

/// onnxruntime's value of every node of one model, and the graph input they were computed on.
pub struct Reference {
    dir: PathBuf,
    /// Tensor name, file (no `.npy`), op type, and numpy's element kind (`f`, `i`, `u`, `b`;
    /// `f` where the index does not say): one per node, in order.
    pub rows: Vec<[String; 4]>,
    pub input: npy::Array,
}

/// How every node compared.
pub struct NodeCheck {
    pub nodes: usize,
    /// Of those, nodes folded to constants at load time (compared as constants).
    pub folded: usize,
    /// The largest `|a - b| / (atol + rtol * |b|)`: below 1 passes.
    pub worst: f32,
    /// The largest `|a - b|`, and the tensor it was found in.
    pub worst_abs: (f32, String),
}

impl Reference {
    pub fn read(dir: &Path, input: npy::Array) -> Reference {
        let index = std::fs::read_to_string(dir.join("index.tsv"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let rows = index
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let kind = f.get(3).unwrap_or(&"f");
                [f[0], f[1], f[2], kind].map(str::to_string)
            })
            .collect();
        Reference {
            dir: dir.to_path_buf(),
            rows,
            input,
        }
    }

    fn row(&self, tensor: &str) -> Option<&[String; 4]> {
        self.rows.iter().find(|r| r[0] == tensor)
    }

    /// onnxruntime's value of `tensor`: a node output, or else the graph input.
    pub fn value(&self, tensor: &str) -> npy::Array {
        match self.row(tensor) {
            Some(r) => npy::read(&self.dir.join(format!("{}.npy", r[1]))).unwrap(),
            None => self.input.clone(),
        }
    }

    /// onnxruntime's value of `tensor` where the runtime keeps such a value: integers and
    /// booleans (shapes, indices, masks) on the host, floats on the device.
    fn feed(&self, tensor: &str, device: &burn::DispatchDevice) -> Value {
        let a = self.value(tensor);
        let ints = || a.data.iter().map(|&v| v as i64).collect::<Vec<_>>();
        match self.row(tensor).map_or("f", |r| r[3].as_str()) {
            "i" | "u" => Value::Host(HostTensor::i64(a.shape.clone(), ints())),
            "b" => Value::Host(HostTensor::bool(
                a.shape.clone(),
                a.data.iter().map(|&v| v != 0.0).collect(),
            )),
            _ => Value::Device(DynTensor::from_host(&a.data, &a.shape, device)),
        }
    }

    /// Runs each node of `net` on onnxruntime's values of its inputs, so that every op's
    /// numerics are checked without the drift a deep random-weight net amplifies, and compares
    /// its output (rtol 1e-3, atol 1e-4); nodes folded to constants at load time are compared
    /// as constants. Panics naming the first node that differs.
    pub fn check_every_node(&self, name: &str, net: &Network) -> NodeCheck {
        let device = net.device().burn().clone();
        let graph_input = net.image_input().unwrap().name.clone();
        let mut check = NodeCheck {
            nodes: 0,
            folded: 0,
            worst: 0.0,
            worst_abs: (0.0, String::new()),
        };
        for [tensor, _, op, _] in &self.rows {
            check.nodes += 1;
            if let Some(folded) = net.constant(tensor) {
                check.folded += 1;
                // Folded at load time (e.g. an Unsqueeze of a weight): compare the constant.
                let want = self.value(tensor);
                assert!(
                    mismatch(&folded.to_f32(), &want.data, 1e-6, 1e-7).is_none(),
                    "{name}: folded {tensor}"
                );
                continue;
            }
            let node = net.node(tensor).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut feeds = Vec::new();
            for t in node
                .inputs
                .iter()
                .filter(|t| !t.is_empty() && net.constant_shape(t).is_none())
            {
                let key = match self.row(t) {
                    Some(_) => t.clone(),
                    None => graph_input.clone(),
                };
                feeds.push((key, self.feed(t, &device)));
            }
            let feeds: Vec<(&str, Value)> =
                feeds.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let got = net
                .run(&feeds, &[tensor])
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .remove(0)
                .to_host();
            let want = self.value(tensor);
            assert_eq!(
                got.shape, want.shape,
                "{name}: {tensor} ({op}, node {})",
                node.name
            );
            let got = got.to_f32();
            for (a, b) in got.iter().zip(&want.data) {
                let d = (a - b).abs();
                check.worst = check.worst.max(d / (1e-4 + 1e-3 * b.abs()));
                if d > check.worst_abs.0 {
                    check.worst_abs = (d, tensor.clone());
                }
            }
            if let Some((i, a, b)) = mismatch(&got, &want.data, 1e-3, 1e-4) {
                panic!(
                    "{name}: tensor {tensor} ({op}, node {}) [{i}] = {a}, onnxruntime {b}",
                    node.name
                );
            }
        }
        check
    }
}
