//! The kernel as a user meets it: installed into a temporary prefix (with the prebuilt
//! template), then driven by real Jupyter (`tests/kernel/check_kernel.py`: jupyter_client,
//! nbclient, nbconvert from the test venv), and the exported tour opened in headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}

#[test]
fn notebooks_run_through_jupyter_with_the_kernel() {
    let root = root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing; run tests/run.sh",
        python.display()
    );
    let target = root.join("target");
    let prefix = target.join("kernel-test-prefix");
    let out = target.join("notebooks");
    let cache = target.join("kernel-test-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let start = std::time::Instant::now();
    run(
        Command::new(env!("CARGO_BIN_EXE_microscope-kernel"))
            .args(["install", "--prefix"])
            .arg(&prefix),
        "microscope-kernel install",
    );
    println!(
        "install (with prebuild): {:.0} s",
        start.elapsed().as_secs_f64()
    );
    run(
        Command::new(&python)
            .arg(root.join("tests/kernel/check_kernel.py"))
            .arg(root.join("notebooks"))
            .arg(&out)
            .env("JUPYTER_PATH", prefix.join("share/jupyter"))
            .env("MICROSCOPE_CACHE", &cache)
            .env(
                "MICROSCOPE_LIGHT_MODELS",
                root.join("tests/fixtures/onnx/light"),
            ),
        "kernel checks",
    );
    run(
        Command::new("node")
            .arg(root.join("tests/browser/exported.mjs"))
            .arg(out.join("01-tour.html"))
            .arg(target.join("screenshots")),
        "exported tour in Chromium",
    );
}
