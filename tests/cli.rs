//! The `microscope` CLI: the layer table, and one clear line with exit code 2 on bad input.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use microscope::npy;

fn microscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_microscope"))
        .args(args)
        .output()
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The largest absolute difference between two arrays' values.
fn max_difference(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
}

/// Exit code 2 and exactly one line on stderr that contains every `needle`.
fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected, got: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "{stderr:?} should mention {n:?}");
    }
}

#[test]
fn info_prints_readable_layer_table() {
    let out = microscope(&[
        "info",
        support::light_model("light_inception_v1").to_str().unwrap(),
    ]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("inception_4a/output "))
        .expect("inception_4a/output row");
    assert!(
        row.contains("Concat") && row.contains("[1, 512, 13, 13]"),
        "{row}"
    );
    let conv = text
        .lines()
        .find(|l| l.starts_with("inception_4a/1x1 "))
        .expect("conv row");
    assert!(
        conv.contains("Conv") && conv.trim_end().ends_with("92352"),
        "{conv}"
    );
}

/// A name of 5,000 characters ran every row of the table out to its width, and a right-to-left
/// override reached the terminal as it was. The long name is whole in its own row, every other
/// row stays narrow, and the override is shown as an escape.
#[test]
fn info_keeps_its_table_readable_with_long_and_reordering_names() {
    use support::{node, random, value_info};
    let long = format!("conv_{}", "n".repeat(5000));
    let model = tmp("names.onnx");
    let bytes = support::model(
        vec![
            node("Conv", &long, &["x", "w", "b"], &["c"], vec![]),
            node("Relu", support::REORDERING, &["c"], &["r"], vec![]),
        ],
        vec![
            random("w", &[4, 3, 3, 3], 1, 0.5),
            random("b", &[4], 2, 0.1),
        ],
        value_info("x", &[1, 3, 8, 8]),
        "r",
    );
    std::fs::write(&model, bytes).unwrap();
    let out = microscope(&["info", model.to_str().unwrap()]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with(&format!("{long} "))),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with("conv_")) {
        assert!(line.chars().count() < 120, "{line}");
    }
    assert!(
        text.contains("block/relu\\u{202e}dessap") && !text.contains('\u{202e}'),
        "{text}"
    );
}

#[test]
fn eval_writes_requested_nodes() {
    let input = tmp("in.npy");
    npy::write(&input, &[1, 2, 8, 8], &vec![0.5; 128]).unwrap();
    let model = tmp("small.onnx");
    std::fs::write(&model, support::small_conv_net()).unwrap();
    let out_dir = tmp("eval-out");
    let out = microscope(&[
        "eval",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--node",
        "pool1",
        "--node",
        "conv2",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_success(&out);
    assert_eq!(
        npy::read(&out_dir.join("pool1.npy")).unwrap().shape,
        vec![1, 3, 4, 4]
    );
    assert_eq!(
        npy::read(&out_dir.join("conv2.npy")).unwrap().shape,
        vec![1, 4, 2, 2]
    );
}

/// A transformer whose export fixed its batch at 1 (tests/exporters.rs): `info` says so,
/// and `eval` runs a batch of 2 through it one image at a time, as PyTorch computed it.
#[test]
fn a_model_whose_file_fixes_its_batch_evaluates_a_batch() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/pytorch_export");
    let info = |name: &str| {
        let out = microscope(&["info", reference.join(name).to_str().unwrap()]);
        assert_success(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(info("vit.onnx").contains("batch  fixed at 1 by the file"));
    assert!(!info("tiny.onnx").contains("batch  fixed"));
    let out_dir = tmp("fixed-batch-out");
    let out = microscope(&[
        "eval",
        reference.join("vit.onnx").to_str().unwrap(),
        "--input",
        reference.join("x.npy").to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_success(&out);
    let got = npy::read(&out_dir.join("logits.npy")).unwrap();
    let want = npy::read(&reference.join("vit_logits.npy")).unwrap();
    assert_eq!(got.shape, [2, 10]);
    let worst = max_difference(&got.data, &want.data);
    assert!(worst < 1e-5, "logits differ from PyTorch's by {worst}");
}

/// A Keras model (tests/exporters.rs) takes images channels-first like every other: a batch as
/// TensorFlow keeps it, channels-last, is one error that says how to turn it.
#[test]
fn channels_last_images_are_refused_with_how_to_turn_them() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/keras_export");
    let x = npy::read(&reference.join("x.npy")).unwrap();
    let [n, c, h, w] = x.shape[..] else {
        panic!("{:?}", x.shape)
    };
    let mut nhwc = vec![0.0; x.data.len()];
    for (i, v) in x.data.iter().enumerate() {
        let (b, ch, y, xx) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
        nhwc[((b * h + y) * w + xx) * c + ch] = *v;
    }
    let input = tmp("keras-nhwc.npy");
    npy::write(&input, &[n, h, w, c], &nhwc).unwrap();
    let out = microscope(&[
        "eval",
        reference.join("keras.onnx").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        tmp("keras-nhwc-out").to_str().unwrap(),
    ]);
    assert_clean_failure(
        &out,
        &[
            "expected shape [?, 3, 32, 32]",
            "channels-last",
            "transpose(0, 3, 1, 2)",
        ],
    );
}

#[test]
fn missing_file() {
    let out = microscope(&["info", "/nonexistent/model.onnx"]);
    assert_clean_failure(&out, &["/nonexistent/model.onnx"]);
}

#[test]
fn truncated_and_non_onnx_files() {
    let bytes = std::fs::read(support::light_model("light_inception_v1")).unwrap();
    let cut = tmp("truncated.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(
        &microscope(&["info", cut.to_str().unwrap()]),
        &["truncated.onnx", "ONNX"],
    );
    let text = tmp("notes.onnx");
    std::fs::write(&text, "this is a text file, not a model\n").unwrap();
    assert_clean_failure(
        &microscope(&["info", text.to_str().unwrap()]),
        &["notes.onnx", "ONNX"],
    );
    // A folder, and a named pipe that no one writes to: refused at once, not read (the pipe
    // would wait for a writer for ever).
    let folder = tmp("folder.onnx");
    let pipe = tmp("pipe.onnx");
    for path in [&folder, &pipe] {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_dir_all(path);
    }
    std::fs::create_dir_all(&folder).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap()
        .success());
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new("timeout")
            .arg("20")
            .arg(env!("CARGO_BIN_EXE_microscope"))
            .args(args)
            .output()
            .unwrap()
    };
    for (path, name) in [(&folder, "folder.onnx"), (&pipe, "pipe.onnx")] {
        let out = run(&["info".as_ref(), path.as_os_str()]);
        assert_clean_failure(&out, &[name, "not a regular file"]);
    }
    // An input array, the same.
    let out = run(&[
        "eval".as_ref(),
        "zoo:fashion".as_ref(),
        "--input".as_ref(),
        pipe.as_os_str(),
        "--out".as_ref(),
        tmp("pipe-out").as_os_str(),
    ]);
    assert_clean_failure(&out, &["pipe.onnx", "not a regular file"]);
}

#[test]
fn info_ops_lists_the_op_table() {
    let out = microscope(&["info", "--ops"]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let lowered = microscope::network::lower::LOWERED
        .iter()
        .map(|o| match o.domain {
            "" => o.name.to_string(),
            domain => format!("{domain}.{}", o.name),
        });
    let table: Vec<String> = microscope::network::ops::OPS
        .iter()
        .map(|o| o.name.to_string())
        .chain(lowered)
        .collect();
    assert_eq!(
        names, table,
        "one line per op of the table, in its order, then the ops that run lowered to them"
    );
    let qgemm = text
        .lines()
        .find(|l| l.starts_with("com.microsoft.QGemm "))
        .unwrap();
    assert!(
        qgemm.contains("runs as DequantizeLinear, Gemm, QuantizeLinear")
            && qgemm.contains("ContribOperators.md#com.microsoft.QGemm"),
        "{qgemm}"
    );
    let relu = text.lines().find(|l| l.starts_with("Relu ")).unwrap();
    assert!(
        relu.contains("activation")
            && relu.contains("linearized as Identity")
            && relu.contains("opsets 1–14")
            && relu.contains("https://onnx.ai/onnx/operators/onnx__Relu.html"),
        "{relu}"
    );
    let bare = microscope(&["info"]);
    assert_eq!(bare.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("<MODEL>"));
}

/// `microscope info --ops | head -1`: the reader is gone before the output is written. The
/// command stops quietly with success, as `cat` would, instead of an "internal error".
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    for args in [&["info", "--ops"][..], &["info", "zoo:fashion"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_microscope"))
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{args:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unknown_op_is_named() {
    let bytes = support::model(
        vec![support::node("FancyWarp", "warp1", &["x"], &["y"], vec![])],
        vec![],
        support::value_info("x", &[1, 3, 4, 4]),
        "y",
    );
    let path = tmp("fancy.onnx");
    std::fs::write(&path, bytes).unwrap();
    assert_clean_failure(
        &microscope(&["info", path.to_str().unwrap()]),
        &["FancyWarp", "warp1", "fancy.onnx", "--partial"],
    );
}

/// `--partial` loads the part of a detector that runs (tests/exporters.rs): `info` says what was
/// left out, in the layer table's header; `eval` writes, by default, what the left-out nodes
/// read (the pyramid's levels among them), as PyTorch computed it.
#[test]
fn partial_loads_what_runs_and_says_what_was_left_out() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/detector_export");
    let model = dir.join("detector.onnx");
    let model = model.to_str().unwrap();
    let out = microscope(&["info", "--partial", model]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = text.lines().take(2).collect();
    assert!(
        header[1].starts_with("partial  stops before NonZero (node rpn.nonzero) and 9 more"),
        "{header:?}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("rpn.head.conv.0.0_1 ")),
        "{text}"
    );

    let out_dir = tmp("partial-eval");
    let out = microscope(&[
        "eval",
        model,
        "--partial",
        "--input",
        dir.join("x.npy").to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("/backbone/fpn/layer_blocks.0/layer_blocks.0.0/Conv_output_0 "))
        .unwrap_or_else(|| panic!("{text}"));
    let file = line.rsplit(" -> ").next().unwrap();
    let (got, want) = (
        npy::read(Path::new(file)).unwrap(),
        npy::read(&dir.join("fpn_0.npy")).unwrap(),
    );
    assert_eq!(got.shape, want.shape);
    let worst = max_difference(&got.data, &want.data);
    assert!(
        worst < 1e-5,
        "the pyramid differs from PyTorch's by {worst}"
    );
}

#[test]
fn wrong_input_shape() {
    let input = tmp("wrong.npy");
    npy::write(&input, &[1, 3, 10, 10], &vec![0.0; 300]).unwrap();
    let out = microscope(&[
        "eval",
        support::light_model("light_squeezenet").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        tmp("wrong-out").to_str().unwrap(),
    ]);
    assert_clean_failure(&out, &["data_0", "224"]);
}

#[test]
fn unknown_node_and_device() {
    let input = tmp("ok.npy");
    npy::write(&input, &[1, 2, 8, 8], &vec![0.0; 128]).unwrap();
    let model = tmp("small2.onnx");
    std::fs::write(&model, support::small_conv_net()).unwrap();
    let base = [
        "eval",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
    ];
    let dir = tmp("x");
    let mut args = base.to_vec();
    args.extend([dir.to_str().unwrap(), "--node", "conv9"]);
    assert_clean_failure(&microscope(&args), &["conv9"]);
    let mut args = base.to_vec();
    args.extend([dir.to_str().unwrap(), "--device", "tpu"]);
    assert_clean_failure(&microscope(&args), &["tpu"]);
}

#[test]
fn render_writes_the_notebook_widgets_as_standalone_pages() {
    let graph = tmp("graph.html");
    let out = microscope(&["render", "zoo:fashion", "--out", graph.to_str().unwrap()]);
    assert_success(&out);
    let html = std::fs::read_to_string(&graph).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("data-component=\"LayerGraph\"") && html.contains("\"conv3\""));
    let unit = tmp("unit.html");
    let out = microscope(&[
        "render",
        "zoo:fashion",
        "--layer",
        "conv2",
        "--unit",
        "3",
        "--steps",
        "8",
        "--out",
        unit.to_str().unwrap(),
    ]);
    assert_success(&out);
    let html = std::fs::read_to_string(&unit).unwrap();
    assert!(html.contains("data-component=\"UnitView\"") && html.contains("conv2:3"));
    // Bad input: one line naming the unit or layer.
    let page = unit.to_str().unwrap();
    for (args, needle) in [
        (vec!["--layer", "conv2", "--unit", "99"], "conv2:99"),
        (vec!["--layer", "conv9"], "conv9"),
    ] {
        let mut all = vec!["render", "zoo:fashion", "--out", page];
        all.extend(args);
        assert_clean_failure(&microscope(&all), &[needle]);
    }
}

/// `groups` writes a layer's neuron groups on a PNG file against the model's top classes, the
/// first of them the class the model predicts for the image; a missing file, a directory or a
/// layer without positions is one line naming it.
#[test]
fn groups_writes_the_neuron_groups_of_an_image_against_its_top_classes() {
    use microscope::data::{Dataset, ImageSpec, Split};
    let data = Dataset::fashion_mnist(Split::Test).unwrap();
    let spec = ImageSpec::unit(1, 28, 28);
    let cpu = microscope::Device::cpu();
    let image = data.batch(0..1, &spec, cpu.burn()).unwrap();
    let pixels: Vec<u8> = image
        .to_vec()
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let png = tmp("boot.png");
    image::GrayImage::from_raw(28, 28, pixels)
        .unwrap()
        .save(&png)
        .unwrap();
    let model = microscope::zoo::fashion().unwrap();
    let logits = model
        .network()
        .forward(&[("image", model.normalize(&image).unwrap())], &["logits"]);
    let scores = logits.unwrap()[0].to_vec();
    let best = (0..10)
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
        .unwrap();
    let page = tmp("groups.html");
    let (png, page) = (png.to_str().unwrap(), page.to_str().unwrap());
    let base = ["groups", "zoo:fashion", "--image", png, "--out", page];
    let run = |more: &[&str]| microscope(&[&base[..], more].concat());
    let out = run(&["--layer", "conv3/relu", "--groups", "3", "--steps", "8"]);
    assert_success(&out);
    let html = std::fs::read_to_string(page).unwrap();
    assert!(
        html.contains("data-component=\"GroupSupport\""),
        "a groups-against-classes page"
    );
    let first = format!(
        "\"label\":\"logits:{best} {}\"",
        microscope::data::FASHION_CLASSES[best]
    );
    let labels: Vec<&str> = html
        .match_indices("\"label\":\"logits:")
        .map(|(i, _)| &html[i..i + 40])
        .collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert!(
        html.find(&first) == html.find("\"label\":\"logits:"),
        "{first} first: {labels:?}"
    );
    // Without classes: the groups alone.
    assert_success(&run(&[
        "--layer",
        "conv3/relu",
        "--groups",
        "2",
        "--steps",
        "8",
        "--classes",
        "0",
    ]));
    let html = std::fs::read_to_string(page).unwrap();
    assert!(
        html.contains("data-component=\"Images\"") && html.contains("neuron groups of conv3/relu")
    );
    // Bad input: one line naming it.
    let missing = tmp("missing.png");
    let dir = tmp("");
    for (args, needle) in [
        (
            vec!["--image", missing.to_str().unwrap(), "--layer", "conv3"],
            "missing.png",
        ),
        (
            vec!["--image", dir.to_str().unwrap(), "--layer", "conv3"],
            "not a file",
        ),
        (
            vec!["--image", png, "--layer", "logits"],
            "neuron groups of logits",
        ),
    ] {
        let mut all = vec!["groups", "zoo:fashion", "--out", page];
        all.extend(args);
        assert_clean_failure(&microscope(&all), &[needle]);
    }
}

/// A model saved as onnx saves large ones, its weights in a file beside it
/// (`onnx.save_model(..., save_as_external_data=True)`, by the test venv's onnx), evaluates to
/// the same bytes as the same model with its weights inline, whatever the working folder; and
/// its digest, part of every cache key, changes with the weights file. The inline file's digest
/// is its SHA-256 (hashed as the file is read field by field).
#[test]
fn a_model_with_its_weights_in_a_file_beside_it_evaluates_as_the_inline_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = support::venv_python();
    let dir = tmp("external");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    // The zoo model keeps its weights in float_data, which onnx leaves inline: raw bytes first.
    let script = r#"
import sys, onnx
from onnx import numpy_helper
m = onnx.load(sys.argv[1])
for t in m.graph.initializer:
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
onnx.save_model(m, sys.argv[2] + "/inline.onnx")
onnx.save_model(m, sys.argv[2] + "/sub/ext.onnx", save_as_external_data=True,
                all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)
"#;
    let made = Command::new(&python)
        .args(["-c", script])
        .arg(root.join("src/zoo/fashion.onnx"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(made.success());
    let data = dir.join("sub/ext.onnx.data");
    assert!(
        std::fs::metadata(&data).unwrap().len() > 1_000_000,
        "the weights are external"
    );
    let input = dir.join("x.npy");
    let x: Vec<f32> = (0..784).map(|i| (i % 29) as f32 / 29.0).collect();
    npy::write(&input, &[1, 1, 28, 28], &x).unwrap();
    let eval = |model: &str, out: &str| {
        let out_dir = dir.join(out);
        let run = Command::new(env!("CARGO_BIN_EXE_microscope"))
            .current_dir(&dir)
            .args(["eval", model, "--input", "x.npy", "--out"])
            .arg(&out_dir)
            .output()
            .unwrap();
        assert_success(&run);
        std::fs::read(out_dir.join("logits.npy")).unwrap()
    };
    assert_eq!(
        eval("sub/ext.onnx", "ext-out"),
        eval("inline.onnx", "inline-out")
    );

    let inline = dir.join("inline.onnx");
    assert_eq!(
        microscope::Model::load(&inline).unwrap().digest(),
        microscope::digest::sha256_hex(&std::fs::read(&inline).unwrap())
    );
    let before = microscope::Model::load(dir.join("sub/ext.onnx")).unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let after = microscope::Model::load(dir.join("sub/ext.onnx")).unwrap();
    assert_ne!(before.digest(), after.digest());
}

/// `microscope info MODEL` under a memory budget of `budget`.
fn info_with_budget(model: &Path, budget: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_microscope"))
        .arg("info")
        .arg(model)
        .env("MICROSCOPE_MEMORY_BUDGET", budget)
        .output()
        .unwrap()
}

/// Tensors of external data may all point at the same bytes, so a small weights file can ask
/// for any amount of memory: what they read in all must fit the memory budget, or the model is
/// refused with one line (here 64 tensors of one 64 KiB range against a 1 MiB budget).
#[test]
fn external_tensors_that_share_their_bytes_are_held_to_the_memory_budget() {
    use microscope::import::proto::{StringStringEntryProto, TensorProto};
    let dir = tmp("external-shared");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("w.bin"), vec![0u8; 65536]).unwrap();
    let shared = |i: usize| TensorProto {
        name: format!("w{i}"),
        dims: vec![16384],
        data_type: 1,
        data_location: 1,
        external_data: ["location", "w.bin"]
            .chunks(2)
            .map(|kv| StringStringEntryProto {
                key: kv[0].into(),
                value: kv[1].into(),
            })
            .collect(),
        ..Default::default()
    };
    let bytes = support::model(
        vec![support::node("Add", "add", &["x", "w0"], &["y"], vec![])],
        (0..64).map(shared).collect(),
        support::value_info("x", &[1, 16384]),
        "y",
    );
    let model = dir.join("shared.onnx");
    std::fs::write(&model, bytes).unwrap();
    let run = |budget: &str| info_with_budget(&model, budget);
    assert_clean_failure(&run("1M"), &["external data", "budget", "w16"]);
    assert_success(&run("8M"));
}

/// A weight's data larger than the memory budget are refused before they are read, whatever
/// shape the tensor declares (here one float that brings 2 MiB of data, against a 1 MiB
/// budget); within the budget, its shape and data disagree.
#[test]
fn a_weight_larger_than_the_memory_budget_is_refused_before_it_is_read() {
    use microscope::import::proto::TensorProto;
    let heavy = TensorProto {
        name: "heavy".into(),
        dims: vec![1],
        data_type: 1,
        raw_data: vec![0u8; 2 << 20],
        ..Default::default()
    };
    let bytes = support::model(
        vec![support::node("Add", "add", &["x", "heavy"], &["y"], vec![])],
        vec![heavy],
        support::value_info("x", &[1, 1]),
        "y",
    );
    let model = tmp("heavy.onnx");
    std::fs::write(&model, bytes).unwrap();
    let run = |budget: &str| info_with_budget(&model, budget);
    assert_clean_failure(
        &run("1M"),
        &["heavy.onnx", "initializer heavy", "2.0 MiB", "budget"],
    );
    assert_clean_failure(
        &run("8M"),
        &["initializer heavy", "524288 values for shape [1]"],
    );
}

/// A layer that does not keep the batch on its first axis (its output broadcast to `[1, 3, N,
/// 128]`, as a fuzzed quantized model's was): the unit view renders, and each tab that reads
/// the layer image by image says why it cannot, rather than the run dying on rows that are not
/// there.
#[test]
fn a_layer_that_moves_the_batch_off_its_first_axis_is_named_not_a_crash() {
    use microscope::import::builder::{AttrValue, OnnxBuilder};
    use microscope::network::HostTensor;
    let w: Vec<f32> = (0..18).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
    let mut o = OnnxBuilder::new();
    o.input("x", &[1, 1, 8, 8])
        .initializer("w", &HostTensor::f32(vec![2, 1, 3, 3], w))
        .initializer(
            "spread.by",
            &HostTensor::f32(vec![1, 3, 1, 1], vec![1.0, -1.0, 2.0]),
        )
        .node(
            "Conv",
            "conv",
            &["x", "w"],
            &[("pads", AttrValue::Ints(vec![1; 4]))],
        )
        .node("Flatten", "flat", &["conv"], &[])
        .node("Mul", "spread", &["flat", "spread.by"], &[])
        .output("spread");
    let model = tmp("batch_off_axis.onnx");
    std::fs::write(&model, o.to_bytes("batch_off_axis")).unwrap();
    let page = tmp("batch_off_axis.html");
    let out = microscope(&[
        "render",
        model.to_str().unwrap(),
        "--layer",
        "spread",
        "--unit",
        "0",
        "--steps",
        "2",
        "--out",
        page.to_str().unwrap(),
    ]);
    assert_success(&out);
    let html = std::fs::read_to_string(&page).unwrap();
    let why = "does not keep the batch there";
    // Feature visualization (its diversity batch), Integrated Gradients and SmoothGrad.
    assert!(html.matches(why).count() >= 3, "{html}");
    assert!(html.contains("layer \\\"spread\\\": the first axis of its output is 1 long"));
}
