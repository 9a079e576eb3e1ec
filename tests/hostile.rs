//! Untrusted inputs through the command line: corpora of hostile files (`tests/hostile/`), made
//! by a Python script with the test venv's `onnx` and run by `run_corpus.sh` against the built
//! `microscope`, each case under `ulimit -v 4000000` and a 10 s limit. Hostile files must exit 2
//! with one line naming the problem; legal but adversarial ones must load within 2 s of CPU time.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes the corpus `name` with `script` (given `args`, then the corpus folder), runs every case
/// with `env` set, prints the summary, and fails with the failing cases.
fn make_and_run(script: &str, args: &[&OsStr], name: &str, env: &[(&str, &str)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = support::venv_python();
    let corpus = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&corpus);
    let made = Command::new(&python)
        .arg(root.join("tests/hostile").join(script))
        .args(args)
        .arg(&corpus)
        .status()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(made.success(), "{script} failed");
    let out = Command::new("bash")
        .arg(root.join("tests/hostile/run_corpus.sh"))
        .arg(env!("CARGO_BIN_EXE_microscope"))
        .arg(&corpus)
        // render's results go to a cache of the test's own, not the user's.
        .env("MICROSCOPE_CACHE", corpus.join("technique-cache"))
        .envs(env.iter().copied())
        .output()
        .expect("running run_corpus.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(out.status.success(), "{name}:\n{}", fails.join("\n"));
    let _ = std::fs::remove_dir_all(&corpus);
}

#[test]
fn hostile_models_and_inputs_fail_cleanly_and_adversarial_ones_load_fast() {
    make_and_run("make_corpus.py", &[], "hostile-corpus", &[]);
}

/// The ONNX node tests with one or two things changed (`mutate_node_tests.py`: hostile
/// attributes, constant inputs and fed shapes), 1,500 of them, each evaluated by the CLI: every
/// one evaluates, or is refused with one line that comes from a check of the input, never a
/// panic caught inside the runtime or burn. A small memory budget makes legal but large outputs
/// a quick refusal instead of a slow success.
#[test]
fn mutated_onnx_node_tests_evaluate_or_fail_cleanly() {
    let nodes = std::env::var_os("MICROSCOPE_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/node"));
    make_and_run(
        "mutate_node_tests.py",
        &[nodes.as_os_str(), OsStr::new("1500"), OsStr::new("0")],
        "mutated-node-tests",
        &[("MICROSCOPE_MEMORY_BUDGET", "256M")],
    );
}

/// The zoo's fashion model and a small branching net, wrong as graphs (`mutate_graphs.py`: a
/// node reading a later or missing tensor, two nodes writing one, a swapped op type, an op
/// outside the table, an initializer whose dims, type or bytes disagree, a wrong graph input or
/// output, hostile names), 1,000 of them through `eval`, `info` and `render`, two in five
/// loading only the part that runs (`--partial`): every one works or is refused with one short
/// line from a check, never a crash.
#[test]
fn mutated_graphs_evaluate_or_fail_cleanly() {
    let fashion = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/zoo/fashion.onnx");
    make_and_run(
        "mutate_graphs.py",
        &[fashion.as_os_str(), OsStr::new("1000"), OsStr::new("0")],
        "mutated-graphs",
        &[("MICROSCOPE_MEMORY_BUDGET", "256M")],
    );
}

/// [`mutated_graphs_evaluate_or_fail_cleanly`] on the three quantized reference models
/// (onnxruntime's dynamic, QDQ and QOperator forms): integer weights and their scales rewired,
/// retyped or swapped, 300 cases each. Seed 13 found a layer that lost its batch axis this way.
#[test]
fn mutated_quantized_graphs_evaluate_or_fail_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/quantized");
    for form in ["dynamic", "qdq", "qoperator"] {
        let model = dir.join(format!("{form}.onnx"));
        make_and_run(
            "mutate_graphs.py",
            &[model.as_os_str(), OsStr::new("300"), OsStr::new("13")],
            &format!("mutated-{form}"),
            &[("MICROSCOPE_MEMORY_BUDGET", "256M")],
        );
    }
}
