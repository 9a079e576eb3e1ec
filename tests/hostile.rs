//! Untrusted inputs through the command line: the hostile corpus (`tests/hostile/`), made by
//! `make_corpus.py` with the test venv's `onnx` and run by `run_corpus.sh` against the built
//! `microscope`, each case under `ulimit -v 4000000` and a 10 s limit. Hostile files must exit 2
//! with one line naming the problem; legal but adversarial ones must load within 2 s.

use std::path::Path;
use std::process::Command;

#[test]
fn hostile_models_and_inputs_fail_cleanly_and_adversarial_ones_load_fast() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing; run tests/run.sh",
        python.display()
    );
    let corpus = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-corpus");
    let _ = std::fs::remove_dir_all(&corpus);
    let made = Command::new(&python)
        .arg(root.join("tests/hostile/make_corpus.py"))
        .arg(&corpus)
        .status()
        .expect("running make_corpus.py");
    assert!(made.success(), "make_corpus.py failed");
    let out = Command::new("bash")
        .arg(root.join("tests/hostile/run_corpus.sh"))
        .arg(env!("CARGO_BIN_EXE_microscope"))
        .arg(&corpus)
        // render's results go to a cache of the test's own, not the user's.
        .env("MICROSCOPE_CACHE", corpus.join("technique-cache"))
        .output()
        .expect("running run_corpus.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "hostile corpus: {}", {
        let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
        fails.join("\n")
    });
}
