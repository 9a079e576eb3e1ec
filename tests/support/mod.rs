//! Builds small ONNX models in code for tests.

#![allow(dead_code)]

pub mod reference;

use std::path::{Path, PathBuf};

use microscope::import::proto::*;
use prost::Message;
use rand::{Rng, SeedableRng};

pub fn tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: 1,
        float_data: data,
        name: name.into(),
        ..Default::default()
    }
}

pub fn random(name: &str, dims: &[i64], seed: u64, scale: f32) -> TensorProto {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: i64 = dims.iter().product();
    tensor(
        name,
        dims,
        (0..n).map(|_| rng.random_range(-scale..scale)).collect(),
    )
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: 7,
        ..Default::default()
    }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: 2,
        ..Default::default()
    }
}

pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

pub fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            dim_value: (d > 0).then_some(d),
                            dim_param: (d <= 0).then(|| "N".into()),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

/// Serializes a one-graph model at opset 13.
pub fn model(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    input: ValueInfoProto,
    output: &str,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        producer_name: "microscope-tests".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "test".into(),
            initializer: inits,
            input: vec![input],
            output: vec![ValueInfoProto {
                name: output.into(),
                r#type: None,
            }],
            value_info: Vec::new(),
        }),
        metadata_props: Vec::new(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
    }
    .encode_to_vec()
}

/// conv1 (2→3, 3×3, pad 1) → relu → maxpool 2×2 → conv2 (3→4, 3×3); input [N, 2, H, W].
pub fn small_conv_net() -> Vec<u8> {
    model(
        vec![
            node(
                "Conv",
                "conv1",
                &["x", "w1", "b1"],
                &["c1"],
                vec![ints("pads", &[1, 1, 1, 1])],
            ),
            node("Relu", "relu1", &["c1"], &["r1"], vec![]),
            node(
                "MaxPool",
                "pool1",
                &["r1"],
                &["p1"],
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            ),
            node("Conv", "conv2", &["p1", "w2", "b2"], &["c2"], vec![]),
        ],
        vec![
            random("w1", &[3, 2, 3, 3], 1, 0.5),
            random("b1", &[3], 2, 0.1),
            random("w2", &[4, 3, 3, 3], 3, 0.5),
            random("b2", &[4], 4, 0.1),
        ],
        value_info("x", &[0, 2, 0, 0]),
        "c2",
    )
}

/// The device tests run on: `MICROSCOPE_TEST_DEVICE=cuda` selects `cuda:0` (needs `--features cuda`).
pub fn test_device() -> microscope::Device {
    match std::env::var("MICROSCOPE_TEST_DEVICE").as_deref() {
        Ok(spec) => microscope::Device::parse(spec).unwrap_or_else(|e| panic!("{e}")),
        Err(_) => microscope::Device::cpu(),
    }
}

/// Markup and script as node names: a page that runs any of them sets `window.__pwned`.
pub const HOSTILE: [&str; 3] = [
    "<img src=x onerror=\"window.__pwned=1\">conv",
    "</script><script>window.__pwned=2</script>",
    "block/<b onmouseover=alert(3)>bold</b>",
];

/// A name with a right-to-left override: shown as it is, the page would read "block/relu" then
/// "dessap" reversed, as "passed". The page must show the override as an escape.
pub const REORDERING: &str = "block/relu\u{202e}dessap";

/// The name of a node whose op is not supported, at the end of [`hostile_names_model`] with
/// `unsupported_tail`: what a partially loaded model shows of it must stay text.
pub const HOSTILE_UNSUPPORTED: &str = "<img src=x onerror=\"window.__pwned=4\">nms";

/// A 3×3 convolution from `x` (3 channels, weights `w1`, `b1`) to `c1`, named [`HOSTILE`]`[0]`.
fn hostile_first_conv() -> NodeProto {
    node(
        "Conv",
        HOSTILE[0],
        &["x", "w1", "b1"],
        &["c1"],
        vec![ints("pads", &[1, 1, 1, 1])],
    )
}

/// A small conv net (input [1, 3, 16, 16], 4 units a layer) whose node names are [`HOSTILE`]
/// and [`REORDERING`]; with `unsupported_tail`, a NonZero named [`HOSTILE_UNSUPPORTED`] reads
/// its output (loaded in part, the rest is the same network).
pub fn hostile_names_model_with(unsupported_tail: bool) -> Vec<u8> {
    let mut nodes = vec![
        hostile_first_conv(),
        node("Relu", HOSTILE[1], &["c1"], &["r1"], vec![]),
        node("Conv", HOSTILE[2], &["r1", "w2", "b2"], &["c2"], vec![]),
        node("Relu", REORDERING, &["c2"], &["r2"], vec![]),
    ];
    if unsupported_tail {
        nodes.push(node(
            "NonZero",
            HOSTILE_UNSUPPORTED,
            &["r2"],
            &["boxes"],
            vec![],
        ));
    }
    model(
        nodes,
        vec![
            random("w1", &[4, 3, 3, 3], 1, 0.5),
            random("b1", &[4], 2, 0.1),
            random("w2", &[4, 4, 3, 3], 3, 0.5),
            random("b2", &[4], 4, 0.1),
        ],
        value_info("x", &[1, 3, 16, 16]),
        if unsupported_tail { "boxes" } else { "r2" },
    )
}

/// A small classifier (input [1, 3, 16, 16]: conv → ReLU → global average pool → `logits`, 3
/// classes) whose first node is named [`HOSTILE`]`[0]` and whose class names (metadata
/// `classes`) are the other two and [`REORDERING`].
pub fn hostile_classifier() -> Vec<u8> {
    let nodes = vec![
        hostile_first_conv(),
        node("Relu", "relu", &["c1"], &["r1"], vec![]),
        node("GlobalAveragePool", "pool", &["r1"], &["p1"], vec![]),
        node("Flatten", "flatten", &["p1"], &["f1"], vec![]),
        node(
            "Gemm",
            "logits",
            &["f1", "w2", "b2"],
            &["logits"],
            vec![int("transB", 1)],
        ),
    ];
    let bytes = model(
        nodes,
        vec![
            random("w1", &[4, 3, 3, 3], 1, 0.5),
            random("b1", &[4], 2, 0.1),
            random("w2", &[3, 4], 3, 1.0),
            random("b2", &[3], 4, 0.1),
        ],
        value_info("x", &[1, 3, 16, 16]),
        "logits",
    );
    let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
    proto.metadata_props.push(StringStringEntryProto {
        key: "classes".into(),
        value: [HOSTILE[1], HOSTILE[2], REORDERING].join("\n"),
    });
    proto.encode_to_vec()
}

/// [`hostile_names_model_with`] without the unsupported tail.
pub fn hostile_names_model() -> Vec<u8> {
    hostile_names_model_with(false)
}

/// The ONNX fixtures tests/run.sh makes: `$MICROSCOPE_ONNX_FIXTURES`, else tests/fixtures/onnx.
pub fn onnx_fixtures() -> PathBuf {
    std::env::var_os("MICROSCOPE_ONNX_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx"))
}

/// A light model of ONNX's backend tests (`light_inception_v1`: real architectures, light
/// weights).
pub fn light_model(name: &str) -> PathBuf {
    onnx_fixtures().join("light").join(format!("{name}.onnx"))
}

/// A scratch directory of one test, `$TMPDIR/microscope-NAME-PID`, removed when dropped (also when
/// the test fails), so test runs leave nothing behind in the user's temporary directory.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("microscope-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test venv's Python, with onnx, onnxruntime and numpy (tests/run.sh makes it).
pub fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing; run tests/run.sh",
        python.display()
    );
    python
}

/// Runs `tests/support/SCRIPT` with the test venv's Python and `args`; fails the test with the
/// script's stderr if it fails.
pub fn run_script(script: &str, args: &[&std::ffi::OsStr]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(venv_python())
        .arg(root.join("tests/support").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An attribution tab's input attribution maps are those of the methods of `scope` in
/// [`METHODS`](microscope::technique::input_attribution::METHODS)' order (all of them for `None`),
/// and each method drew its heatmap.
pub fn assert_methods_drawn(
    inputs: &[microscope::widget::unit_view::InputHeatmap],
    scope: Option<microscope::technique::input_attribution::Scope>,
) {
    use microscope::technique::input_attribution::METHODS;
    let expected: Vec<&str> = METHODS
        .iter()
        .filter(|m| scope.is_none_or(|s| m.scope == s))
        .map(|m| m.id)
        .collect();
    let drawn: Vec<&str> = inputs.iter().map(|i| i.id).collect();
    assert_eq!(drawn, expected);
    for i in inputs {
        assert!(
            i.heatmap.starts_with("data:image/png"),
            "{}: {}",
            i.id,
            i.note
        );
    }
}
