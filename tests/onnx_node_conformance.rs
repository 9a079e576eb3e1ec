//! Conformance against ONNX's own backend node tests.
//!
//! Runs every single-node test of the supported op types (generated from the onnx wheel by
//! `tests/support/onnx_node_tests.py` into `tests/fixtures/onnx/node`, or the folder named by
//! `MICROSCOPE_ONNX_NODE_TESTS`), prints a pass/fail table per op, and fails on any failure.
//!
//! A case counts when its float-typed inputs and outputs are all float32, or 8- or 4-bit floats
//! (integer inputs such as indices and shapes are fine). Cases excluded on purpose are listed in `EXCLUDED` with a reason.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use microscope::import::{parse_onnx, proto, tensor};
use microscope::network::{HostTensor, Value};

use prost::Message;

/// Cases that are not run, and why.
const EXCLUDED: &[(&str, &str)] = &[
    (
        "test_affine_grid_3d",
        "AffineGrid of 3-D grids (volumes) is outside the scope of 2-D vision models",
    ),
    (
        "test_averagepool_3d_",
        "3-D pooling is outside the scope of 2-D vision CNNs",
    ),
    (
        "test_col2im_5d",
        "Col2Im of 3-D images (volumes) is outside the scope of 2-D vision models",
    ),
    (
        "test_einsum_batch_diagonal",
        "an index repeated within one Einsum term (a diagonal) is refused: exporters of vision \
         models do not emit it",
    ),
    (
        "test_gridsample_volumetric_",
        "GridSample of volumes is outside the scope of 2-D vision models",
    ),
    (
        "test_lppool_3d_",
        "3-D pooling is outside the scope of 2-D vision CNNs",
    ),
    (
        "test_maxpool_3d_",
        "3-D pooling is outside the scope of 2-D vision CNNs",
    ),
    (
        "test_maxunpool_export_with_output_shape",
        "ONNX's reference puts the values at their indices in the shape the pooling gives and pads \
         that to output_shape, which moves them; onnxruntime and PyTorch index output_shape, the \
         shape of the tensor MaxPool read, as does this runtime (tests/gradients.rs round-trips it)",
    ),
    (
        "test_training_dropout",
        "training-mode Dropout draws random masks; the runtime is inference-only",
    ),
];

/// The ops of quantized models, whose cases are of 8- and 16-bit integers.
const QUANTIZED: &[&str] = &[
    "ConvInteger",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
];

fn fixtures() -> PathBuf {
    std::env::var_os("MICROSCOPE_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/node"))
}

fn read_tensor(path: &Path) -> proto::TensorProto {
    let bytes = std::fs::read(path).unwrap();
    proto::TensorProto::decode(bytes.as_slice()).unwrap()
}

fn host(t: &proto::TensorProto) -> HostTensor {
    tensor::decode(t).unwrap_or_else(|e| panic!("{}: {e}", t.name))
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

fn run_case(dir: &Path) -> (String, Outcome) {
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let model = proto::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_ref().unwrap();
    let op = graph.node[0].op_type.clone();
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    if let Some((_, why)) = EXCLUDED.iter().find(|(p, _)| name.starts_with(p)) {
        return (op, Outcome::Skip(why.to_string()));
    }
    let data = dir.join("test_data_set_0");
    let mut inputs = Vec::new();
    let mut expected = Vec::new();
    for (i, vi) in graph.input.iter().enumerate() {
        let path = data.join(format!("input_{i}.pb"));
        if path.exists() {
            inputs.push((vi.name.clone(), read_tensor(&path)));
        }
    }
    for (i, vo) in graph.output.iter().enumerate() {
        expected.push((
            vo.name.clone(),
            read_tensor(&data.join(format!("output_{i}.pb"))),
        ));
    }
    // float32 (double is computed in float32), or int/bool tensors used as indices, shapes, masks.
    // The first output may be a mask too (Equal's only cases; compared as 0 and 1).
    // The 4-, 8- and 16-bit integers of quantized models' ops are their data, in and out (and
    // the INT32 products of the integer ops).
    let quantized = |t: &proto::TensorProto| {
        QUANTIZED.contains(&op.as_str()) && matches!(t.data_type, 2..=6 | 21 | 22)
    };
    // The 8- and 4-bit floats (of float8 quantized models: Cast, QuantizeLinear,
    // DequantizeLinear) are held as the float32 values they stand for.
    let small_float = |t: &proto::TensorProto| {
        microscope::network::minifloat::format(t.data_type.into()).is_some()
    };
    let allowed = |t: &proto::TensorProto| {
        matches!(t.data_type, 1 | 6 | 7 | 9 | 11) || quantized(t) || small_float(t)
    };
    let first_is_float = expected.first().is_some_and(|(_, t)| {
        matches!(t.data_type, 1 | 7 | 9 | 11) || quantized(t) || small_float(t)
    });
    let all = inputs
        .iter()
        .map(|(_, t)| t)
        .chain(expected.iter().map(|(_, t)| t));
    if !first_is_float || !all.clone().all(allowed) {
        let types: Vec<String> = all.map(|t| tensor::type_name(t.data_type)).collect();
        return (
            op,
            Outcome::Skip(format!("not a float32 case (types {})", types.join(", "))),
        );
    }
    let result = (|| -> Result<(), String> {
        let net = parse_onnx(&bytes, &name, support::test_device()).map_err(|e| e.to_string())?;
        let device = support::test_device();
        let feeds: Vec<(&str, Value)> = inputs
            .iter()
            .map(|(n, t)| {
                let h = host(t);
                let v = if t.data_type == 1 {
                    Value::Device(h.upload(device.burn()))
                } else {
                    Value::Host(h)
                };
                (n.as_str(), v)
            })
            .collect();
        let targets: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let got = net.run(&feeds, &targets).map_err(|e| e.to_string())?;
        for ((out, want), got) in expected.iter().zip(got) {
            let want = host(want);
            let got = got.to_host();
            if got.shape != want.shape {
                return Err(format!(
                    "{out}: shape {:?}, expected {:?}",
                    got.shape, want.shape
                ));
            }
            let (g, w) = (got.to_f32(), want.to_f32());
            let rtol = relative_tolerance(&op);
            for (k, (a, b)) in g.iter().zip(&w).enumerate() {
                let close =
                    (a - b).abs() <= 1e-5 + rtol * b.abs() || (a.is_nan() && b.is_nan()) || a == b;
                if !close {
                    return Err(format!("{out}[{k}] = {a}, expected {b}"));
                }
            }
        }
        Ok(())
    })();
    (
        op,
        match result {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        },
    )
}

/// ONNX's own tolerance (1e-3 relative) everywhere, except on CUDA for the ops that run on
/// tensor cores: burn's CUDA matmul and convolution kernels read float32 operands as TF32 (10
/// mantissa bits, relative rounding 2^-11 ≈ 4.9e-4 per operand, as PyTorch does with
/// `allow_tf32`), so a dot product of a few terms with cancellation lands within ~5e-3; 1e-2
/// bounds that. Resize and LRN are matrix products here, so they share the bound.
fn relative_tolerance(op: &str) -> f32 {
    let tensor_cores = [
        "MatMul",
        "Gemm",
        "Conv",
        "ConvTranspose",
        "Resize",
        "Upsample",
        "LRN",
    ];
    if support::test_device().kind() == "cuda" && tensor_cores.contains(&op) {
        1e-2
    } else {
        1e-3
    }
}

/// The panic message, for a case that panicked.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[test]
fn onnx_backend_node_tests() {
    let root = fixtures();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run tests/run.sh to install the ONNX fixtures",
                root.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() > 300,
        "expected the generated node tests in {}",
        root.display()
    );
    // MICROSCOPE_NODE_TESTS_ONLY=substring runs only the matching cases (for debugging).
    if let Ok(only) = std::env::var("MICROSCOPE_NODE_TESTS_ONLY") {
        dirs.retain(|d| d.to_string_lossy().contains(&only));
    }
    let mut table: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    // Panics are caught per case and reported as failures; keep the log readable.
    std::panic::set_hook(Box::new(|_| {}));
    for dir in &dirs {
        let (op, outcome) = std::panic::catch_unwind(|| run_case(dir)).unwrap_or_else(|p| {
            let why = format!("panicked: {}", panic_message(p.as_ref()));
            ("(panic)".into(), Outcome::Fail(why))
        });
        let row = table.entry(op).or_default();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        match outcome {
            Outcome::Pass => row.0 += 1,
            Outcome::Fail(e) => {
                row.1 += 1;
                failures.push(format!("{name}: {e}"));
            }
            Outcome::Skip(why) => {
                row.2 += 1;
                skipped.push(format!("{name}: {why}"));
            }
        }
    }
    println!("{:<24} {:>6} {:>6} {:>8}", "op", "pass", "fail", "skipped");
    for (op, (p, f, s)) in &table {
        println!("{op:<24} {p:>6} {f:>6} {s:>8}");
    }
    let (p, f, s) = table
        .values()
        .fold((0, 0, 0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
    println!("{:<24} {p:>6} {f:>6} {s:>8}", "total");
    println!("\nskipped:\n  {}", skipped.join("\n  "));
    if !failures.is_empty() {
        println!("\nfailures:\n  {}", failures.join("\n  "));
    }
    // The cases are done: failures below say why again.
    drop(std::panic::take_hook());
    assert!(failures.is_empty(), "{} node tests failed", failures.len());
    // Every op of the runtime's table (`microscope info --ops`, which tests/run.sh generates the
    // fixtures from) is exercised: an op added to the table without conformance cases fails.
    if std::env::var_os("MICROSCOPE_NODE_TESTS_ONLY").is_none() {
        // ONNX's ops that run lowered to others too; onnxruntime's have no node tests
        // (tests/exporters.rs checks them against onnxruntime).
        let lowered = microscope::network::lower::LOWERED
            .iter()
            .filter(|o| o.domain.is_empty());
        let untested: Vec<&str> = microscope::network::ops::OPS
            .iter()
            .map(|o| o.name)
            .chain(lowered.map(|o| o.name))
            .filter(|op| table.get(*op).is_none_or(|row| row.0 == 0))
            .collect();
        assert!(
            untested.is_empty(),
            "ops without a passing ONNX node test: {untested:?} (tests/run.sh regenerates the \
             fixtures when the op table changes)"
        );
    }
}
