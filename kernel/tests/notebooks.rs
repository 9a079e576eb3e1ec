//! The kernel as a user meets it: installed under `$HOME` (beside the Rust toolchain, as
//! `install --user` puts it) from an environment scrubbed of everything `cargo test` adds to it
//! (no `CARGO_*`, no `LD_LIBRARY_PATH`): cold into a prefix of its own, or, under tests/run.sh,
//! over the install the README's command made (see `Install`). Then driven by real Jupyter
//! (`tests/kernel/check_kernel.py`: jupyter_client and nbclient from the test venv, running every
//! notebook but the tour), and the tour run in a real JupyterLab and Notebook 7 in Chromium,
//! clicking its live gallery (`tests/browser/jupyterlab.mjs`). The tour exported to HTML is
//! tests/user_path.sh's to check, as the README's command makes it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A command as a user's shell or desktop would start it: none of the variables `cargo test`
/// (and rustup's proxy in front of it) set, only the user's own `HOME`, `PATH` (without the
/// toolchain directory rustup may put first) and locale. A kernel that only works because cargo
/// put the toolchain's libraries on `LD_LIBRARY_PATH` fails here, as it would for a user.
fn user_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if matches!(
            name.as_ref(),
            "HOME" | "USER" | "LOGNAME" | "LANG" | "TERM" | "TMPDIR"
        ) || name.starts_with("LC_")
        {
            cmd.env(&k, v);
        }
    }
    let target = root().join("target");
    let path: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .filter(|p| !p.starts_with(&target) && !p.to_string_lossy().contains("/toolchains/"))
        .collect();
    cmd.env("PATH", std::env::join_paths(path).unwrap());
    cmd
}

/// Where the tests install the kernel: under `$HOME`, next to `~/.rustup` as a user's install
/// is (a relative library path that happens to resolve from /tmp does not from there), one
/// folder per checkout.
fn home_prefix(root: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    root.hash(&mut h);
    home.join(".cache/microscope-kernel-tests")
        .join(format!("{:016x}", h.finish()))
}

/// The install the test drives, and where Jupyter finds it.
struct Install {
    command: Vec<std::ffi::OsString>,
    /// Where it is: `JUPYTER_PATH` for the kernelspec and the front-end extension.
    jupyter_path: PathBuf,
    /// Cold, or over an earlier install.
    kind: &'static str,
    /// Removed when the test passes (a template is a few GB).
    own: Option<PathBuf>,
}

impl Install {
    /// With `MICROSCOPE_KERNEL_TEST_DATA_DIR` (tests/run.sh sets it to the Jupyter data directory
    /// tests/user_path.sh installed into, cold, through the README's command), `install --user`
    /// over that install, as a user's second run of the command does. Without it, a cold
    /// install into a prefix of the test's own: a template left by an earlier run would hide a
    /// broken first install.
    fn new(root: &Path) -> Self {
        let bin = std::ffi::OsString::from(env!("CARGO_BIN_EXE_microscope-kernel"));
        match std::env::var_os("MICROSCOPE_KERNEL_TEST_DATA_DIR") {
            Some(data) => Install {
                command: vec![bin, "install".into(), "--user".into()],
                jupyter_path: PathBuf::from(data),
                kind: "over the user-path install",
                own: None,
            },
            None => {
                let prefix = home_prefix(root);
                let _ = std::fs::remove_dir_all(&prefix);
                Install {
                    command: vec![
                        bin,
                        "install".into(),
                        "--prefix".into(),
                        prefix.clone().into(),
                    ],
                    jupyter_path: prefix.join("share/jupyter"),
                    kind: "cold",
                    own: Some(prefix),
                }
            }
        }
    }

    fn command(&self) -> Command {
        let mut cmd = user_command(&self.command[0]);
        cmd.args(&self.command[1..]).env(SPARE_IDLE.0, SPARE_IDLE.1);
        if self.own.is_none() {
            cmd.env("JUPYTER_DATA_DIR", &self.jupyter_path);
        }
        cmd
    }

    fn clean_up(&self) {
        if let Some(prefix) = &self.own {
            let _ = std::fs::remove_dir_all(prefix);
        }
    }
}

/// A child process killed when dropped (the JupyterLab server, even when a check fails).
struct Server(std::process::Child);

impl Drop for Server {
    /// Stops the server as Ctrl-C would (it shuts its kernels down), killing it only if it
    /// has not exited after 20 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the tour in JupyterLab and in Notebook 7 (from the test venv, with the kernel and its
/// front-end extension from `jupyter_path`) and clicks its live widgets. The notebooks are copies
/// (one per front end, each with its own kernel): the front ends save.
fn jupyterlab_live(root: &Path, python: &Path, jupyter_path: &Path, cache: &Path, target: &Path) {
    let dir = target.join("jupyterlab-test");
    let _ = std::fs::remove_dir_all(&dir);
    let notebooks = dir.join("notebooks");
    std::fs::create_dir_all(&notebooks).unwrap();
    for name in ["01-tour.ipynb", "01-tour-notebook7.ipynb"] {
        std::fs::copy(root.join("notebooks/01-tour.ipynb"), notebooks.join(name)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let log = std::fs::File::create(dir.join("jupyterlab.log")).unwrap();
    let _server = Server(
        user_command(python)
            .args(["-m", "jupyterlab", "--no-browser", "--allow-root"])
            .arg("--ServerApp.ip=127.0.0.1")
            .arg(format!("--ServerApp.port={port}"))
            .arg(format!("--IdentityProvider.token={token}"))
            .arg(format!("--ServerApp.root_dir={}", notebooks.display()))
            .arg("--LabApp.expose_app_in_browser=True")
            .arg("--JupyterNotebookApp.expose_app_in_browser=True")
            .arg("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
            .env("JUPYTER_PATH", jupyter_path)
            .env("JUPYTER_CONFIG_DIR", dir.join("config"))
            .env("JUPYTER_DATA_DIR", dir.join("data"))
            .env("MICROSCOPE_CACHE", cache)
            .env(SPARE_IDLE.0, SPARE_IDLE.1)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting JupyterLab from the test venv"),
    );
    for (page, label) in [
        ("lab/tree/01-tour.ipynb", "JupyterLab"),
        ("notebooks/01-tour-notebook7.ipynb", "Notebook 7"),
    ] {
        let status = Command::new("node")
            .arg(root.join("tests/browser/jupyterlab.mjs"))
            .arg(format!("http://127.0.0.1:{port}"))
            .arg(&token)
            .arg(page)
            .arg(label)
            .arg(target.join("screenshots"))
            .status()
            .expect("running node");
        assert!(
            status.success(),
            "live widgets in {label} failed (server log: {})",
            dir.join("jupyterlab.log").display()
        );
    }
    // A downloaded model whose node names carry markup and output markers, opened as a user
    // would: no script from it may run, no output but the widgets and the printed text appear.
    run(
        Command::new(python)
            .arg(root.join("tests/kernel/hostile_notebook.py"))
            .arg(&notebooks),
        "writing the hostile notebook",
    );
    run(
        Command::new("node")
            .arg(root.join("tests/browser/hostile_lab.mjs"))
            .arg(format!("http://127.0.0.1:{port}"))
            .arg(&token)
            // A workspace of its own: the default one reopens the tour beside it.
            .arg("lab/workspaces/hostile/tree/hostile.ipynb")
            .arg(target.join("screenshots")),
        "the hostile notebook in JupyterLab",
    );
}

/// Spare kernels (kernel/src/spare.rs) left by the test's kernels exit two minutes after them,
/// rather than ten.
const SPARE_IDLE: (&str, &str) = ("MICROSCOPE_SPARE_IDLE_S", "120");

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}

/// [`run`], returning the largest resident set of the command's own process (not its children)
/// as sampled every 100 ms, in bytes.
fn run_sampling_memory(cmd: &mut Command, what: &str) -> u64 {
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{what}: {e}")) {
            break status;
        }
        let rss = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        peak = peak.max(rss * 1024);
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{what} failed ({status})");
    peak
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
    let out = target.join("notebooks");
    let cache = target.join("kernel-test-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let install = Install::new(&root);
    let start = std::time::Instant::now();
    let peak = run_sampling_memory(&mut install.command(), "microscope-kernel install");
    println!(
        "install (with prebuild, {}): {:.0} s, its process at most {:.2} GB",
        install.kind,
        start.elapsed().as_secs_f64(),
        peak as f64 / 1e9
    );
    // rust-analyzer, inside evcxr in the install's process, is shown only the crates the build
    // uses (kernel/src/crate_graph.rs): 1.2 GB measured, 2.2 GB with the whole graph.
    assert!(
        peak < 1_800_000_000,
        "the install's process held {peak} bytes: is rust-analyzer indexing the whole crate graph?"
    );
    let jupyter_path = &install.jupyter_path;
    let start = std::time::Instant::now();
    run(
        user_command(&python)
            .arg(root.join("tests/kernel/check_kernel.py"))
            .arg(root.join("notebooks"))
            .arg(&out)
            .env("JUPYTER_PATH", jupyter_path)
            .env("MICROSCOPE_CACHE", &cache)
            .env(SPARE_IDLE.0, SPARE_IDLE.1)
            .env(
                "MICROSCOPE_LIGHT_MODELS",
                root.join("tests/fixtures/onnx/light"),
            ),
        "kernel checks",
    );
    // The tour exported to HTML is checked in Chromium by tests/user_path.sh, as a user makes
    // it; here it runs live in JupyterLab and Notebook 7.
    let checks = start.elapsed();
    jupyterlab_live(&root, &python, jupyter_path, &cache, &target);
    println!(
        "kernel checks (notebooks included): {:.0} s; JupyterLab and Notebook 7: {:.0} s",
        checks.as_secs_f64(),
        (start.elapsed() - checks).as_secs_f64()
    );
    install.clean_up();
}
