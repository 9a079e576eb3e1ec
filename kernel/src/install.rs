//! Installing the kernelspec, and the template build directory that makes kernels start fast.
//!
//! `install` copies this binary next to a `kernel.json` and prebuilds, once, everything a cell
//! links against (burn, the microscope crate, evcxr's own runtime crate) in a template evcxr
//! directory. Each kernel starts from a copy of that template (`cp -a`: timestamps kept, so
//! cargo sees every dependency as fresh), never from a live directory another kernel uses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::eval::{self, Preload};
use crate::template::{copy_template, crate_dir, OPT_LEVEL};
use crate::toolchain::Toolchain;

/// Kernelspec name and display name.
pub const NAME: &str = "microscope";
pub const DISPLAY_NAME: &str = "Rust · microscope";

/// This user's Jupyter data directory (kernels, labextensions).
fn user_data_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("JUPYTER_DATA_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(d).join("jupyter"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; use --prefix")?;
    Ok(PathBuf::from(home).join(".local/share/jupyter"))
}

/// The front-end extension that lets widgets reach their kernel (live widgets).
const EXTENSION_NAME: &str = "microscope-jupyter";
const EXTENSION_JS: &str = include_str!("../../widgets/jupyter/extension.js");

/// Writes the front-end extension into `data/labextensions`, where JupyterLab 4 and Notebook 7
/// find prebuilt extensions. The script's name carries a hash of its content, so a browser
/// never runs a cached older copy.
fn install_extension(data: &Path) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let dir = data.join("labextensions").join(EXTENSION_NAME);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("static"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let hash: String = Sha256::digest(EXTENSION_JS.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let script = format!("static/remoteEntry.{hash}.js");
    std::fs::write(dir.join(&script), EXTENSION_JS)?;
    let package = json!({
        "name": EXTENSION_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Lets microscope widgets reach the kernel of their notebook (live widgets).",
        "jupyterlab": { "_build": { "load": script, "extension": "./extension" } },
    });
    std::fs::write(
        dir.join("package.json"),
        serde_json::to_string_pretty(&package)?,
    )?;
    Ok(dir)
}

pub fn install(prefix: Option<&Path>, cuda: bool, prebuild: bool) -> Result<()> {
    let data = match prefix {
        // kernel.json names the binary and template by absolute path.
        Some(p) => std::path::absolute(p)
            .with_context(|| format!("resolving {}", p.display()))?
            .join("share/jupyter"),
        None => user_data_dir()?,
    };
    // The toolchain the template is built with, and every kernel after it (toolchain.rs).
    let toolchain = Toolchain::current()?;
    toolchain.apply();
    println!(
        "Rust toolchain: {} in {}",
        toolchain.version,
        toolchain.sysroot.display()
    );
    let dir = data.join("kernels").join(NAME);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let template = dir.join("template");
    let features = if cuda { "cuda" } else { "" };
    // Build aside, then swap: a failed or interrupted install leaves the previous one working.
    if prebuild {
        let staged = dir.join("template.new");
        prebuild_template(&template, &staged, cuda, &toolchain)?;
        let old = dir.join("template.old");
        let _ = std::fs::remove_dir_all(&old);
        if template.exists() {
            std::fs::rename(&template, &old)?;
        }
        std::fs::rename(&staged, &template)?;
        let _ = std::fs::remove_dir_all(&old);
    }
    let extension = install_extension(&data)?;
    println!(
        "installed the front-end extension {EXTENSION_NAME} in {}",
        extension.display()
    );
    // The binary travels with the kernelspec (a later `cargo clean` must not break it); write
    // it beside and rename, since a running kernel may be using the old one. It is copied from
    // /proc/self/exe, the running binary itself: a `cargo build` during the minutes of the
    // prebuild may have replaced or removed the file it was started from.
    let bin = dir.join("microscope-kernel");
    let staged = dir.join(".microscope-kernel.new");
    std::fs::copy("/proc/self/exe", &staged).with_context(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        format!("copying this binary ({})", exe.display())
    })?;
    std::fs::rename(&staged, &bin)?;
    let env: serde_json::Map<String, serde_json::Value> = toolchain
        .env()
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    let spec = json!({
        "argv": [bin, "run", "--connection-file", "{connection_file}",
                 "--template", template, "--features", features],
        "display_name": DISPLAY_NAME,
        "language": "rust",
        "interrupt_mode": "message",
        "env": env,
        "metadata": { "debugger": false },
    });
    let staged = dir.join(".kernel.json.new");
    std::fs::write(&staged, serde_json::to_string_pretty(&spec)?)?;
    std::fs::rename(&staged, dir.join("kernel.json"))?;
    println!(
        "installed kernelspec {NAME} ({DISPLAY_NAME}) in {}",
        dir.display()
    );
    // The first kernel need not wait for rust-analyzer's indexing either (see spare.rs).
    if !template.exists() {
        return Ok(());
    }
    if let Some(pid) = crate::spare::spawn(&bin, Some(&template), features) {
        println!(
            "started a spare kernel (pid {pid}) that preloads in the background: the next kernel \
             starts from it (unused, it exits after {} seconds, default 600; 0 turns spares off)",
            crate::spare::IDLE_ENV
        );
    }
    Ok(())
}

/// Makes sure every crate in the project's `Cargo.lock` is in cargo's cache, so the template can
/// build offline with exactly those versions: offline when they all are already, else
/// downloading them, else one line saying what to do. Every crate, not only the host build's:
/// evcxr's offline build of the template also needs crates that only other platforms compile
/// (zip's `nix`, for macOS and the BSDs), which a build or a `cargo fetch --target` of this
/// host never downloads.
fn fetch_locked(crate_dir: &Path) -> Result<()> {
    let fetch = |offline: bool| {
        let mut cmd = Command::new("cargo");
        cmd.arg("fetch")
            .arg("--manifest-path")
            .arg(crate_dir.join("Cargo.toml"));
        if offline {
            cmd.arg("--offline").stderr(std::process::Stdio::null());
        }
        cmd.status()
    };
    if fetch(true).is_ok_and(|s| s.success()) {
        return Ok(());
    }
    println!(
        "downloading the crates in {}",
        crate_dir.join("Cargo.lock").display()
    );
    match fetch(false) {
        Ok(s) if s.success() => Ok(()),
        _ => bail!(
            "could not download the crates the kernel builds with (see cargo's message above): \
             connect to crates.io, or run `cargo fetch` in {} where you can, then run this again",
            crate_dir.display()
        ),
    }
}

/// Builds the template into `staged`, starting from a copy of the current `template` when there
/// is one (cargo then rebuilds only what changed): the preload and a warm-up cell, with the
/// project's `Cargo.lock`.
fn prebuild_template(
    template: &Path,
    staged: &Path,
    cuda: bool,
    toolchain: &Toolchain,
) -> Result<()> {
    let start = Instant::now();
    let crate_dir = crate_dir();
    fetch_locked(&crate_dir)?;
    let _ = std::fs::remove_dir_all(staged);
    if template.exists() {
        copy_template(template, staged)?;
    }
    println!(
        "prebuilding the microscope crate and its dependencies into {} (the first time, minutes on a small machine)…",
        staged.display()
    );
    std::env::set_var("EVCXR_TMPDIR", staged);
    let preload = Preload {
        crate_dir: crate_dir.clone(),
        features: if cuda { vec!["cuda".into()] } else { vec![] },
        opt_level: OPT_LEVEL.into(),
        template: None,
        work_dir: staged.to_path_buf(),
        background: false,
        library_path: toolchain.library_path(staged),
        lockfile: Some(crate_dir.join("Cargo.lock")),
        setup_error: None,
        // The install sets no display secret for its evaluation process.
        secret: String::new(),
    };
    let progress = Progress::start(
        staged
            .join("target")
            .join(&toolchain.host)
            .join("debug")
            .join("deps"),
    );
    // rust-analyzer, inside evcxr in this process, is shown the crate graph the build uses, as in
    // a kernel (crate_graph.rs): 1.2 GB less at the install's peak.
    let cargo_home = staged.with_file_name(".template.cargo-home");
    let _ = std::fs::remove_dir_all(&cargo_home);
    let cargo = toolchain.sysroot.join("bin").join("cargo");
    if let Err(e) = crate::crate_graph::redirect(&cargo_home, staged, &cargo) {
        println!("could not trim rust-analyzer's crate graph ({e}): it indexes the whole graph");
    }
    let built = eval::prebuild(&preload);
    crate::crate_graph::undo();
    let _ = std::fs::remove_dir_all(&cargo_home);
    progress.stop();
    built.with_context(|| {
        format!(
            "prebuilding the kernel's template in {} failed; the previous install, if any, is unchanged",
            staged.display()
        )
    })?;
    println!("prebuilt in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// A line every half minute while the template builds (a cold build takes many minutes, and
/// without a terminal nothing else shows that it is moving): how many crates are built so far.
struct Progress {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Progress {
    fn start(deps: PathBuf) -> Progress {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let every = std::time::Duration::from_secs(30);
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                // Each library crate ends as an rlib in deps/ (evcxr builds a dylib beside it).
                let built = std::fs::read_dir(&deps)
                    .map(|d| {
                        d.flatten()
                            .filter(|e| e.file_name().to_string_lossy().ends_with(".rlib"))
                            .count()
                    })
                    .unwrap_or(0);
                println!(
                    "  … still prebuilding: {built} crates built, {:.0} min so far",
                    start.elapsed().as_secs_f64() / 60.0
                );
            }
        });
        Progress { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
