//! Starting a kernel: its own directory and the variables its evaluation process finds the
//! kernel by ([`prepare`]), then serving Jupyter until shutdown ([`serve_kernel`]). A kernel
//! started cold (main.rs) and a spare that adopts a connection (spare.rs) both go through here.

use std::path::PathBuf;

use crate::{eval, kernel, template, toolchain, wire};

/// The variable naming the interrupt file (`microscope::interrupt::ENV`).
pub const INTERRUPT_ENV: &str = "MICROSCOPE_INTERRUPT_FILE";
/// The variables naming the bridge socket and its secret (`microscope::widget::live`).
pub const BRIDGE_ENV: &str = "MICROSCOPE_BRIDGE";
pub const BRIDGE_TOKEN_ENV: &str = "MICROSCOPE_BRIDGE_TOKEN";
/// Set in the evaluation process: widgets display through the kernel
/// (`microscope::widget::KERNEL_ENV`).
pub const KERNEL_ENV: &str = "MICROSCOPE_KERNEL";
/// The display secret's variable (`microscope::widget::DISPLAY_SECRET_ENV`; see `relay_line` in
/// main.rs).
pub const DISPLAY_SECRET_ENV: &str = "MICROSCOPE_DISPLAY_SECRET";

/// A kernel's own directory and settings, made before any thread starts (they go into the
/// environment the evaluation process inherits).
pub struct Prepared {
    pub preload: eval::Preload,
    pub work_dir: PathBuf,
    pub interrupt_file: PathBuf,
    pub bridge_socket: PathBuf,
    pub bridge_token: String,
}

/// Sets up a kernel's build directory (filled from the template by the evaluation thread) and
/// the variables its evaluation process finds the interrupt file and the bridge by.
/// `background`: preload at the lowest CPU priority (a spare's).
pub fn prepare(
    template: Option<PathBuf>,
    features: &str,
    background: bool,
    toolchain: &Result<toolchain::Toolchain, String>,
) -> anyhow::Result<Prepared> {
    let features: Vec<String> = features
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    let work = template::fresh_work_dir()?;
    let interrupt_file = work.join("interrupt");
    std::env::set_var("EVCXR_TMPDIR", work.join("evcxr"));
    std::env::set_var(KERNEL_ENV, "1");
    std::env::set_var(INTERRUPT_ENV, &interrupt_file);
    // The evaluation process finds the bridge (live widgets) through these.
    let bridge_socket = work.join("bridge.sock");
    let bridge_token = uuid::Uuid::new_v4().simple().to_string();
    std::env::set_var(BRIDGE_ENV, &bridge_socket);
    std::env::set_var(BRIDGE_TOKEN_ENV, &bridge_token);
    // Marks the crate's own display lines in the evaluation process's output (relay_line), and
    // its end markers (eval::END_MARKER).
    let secret = format!("\u{1b}[{}]", uuid::Uuid::new_v4().simple());
    std::env::set_var(DISPLAY_SECRET_ENV, &secret);
    let evcxr_dir = work.join("evcxr");
    if let Ok(t) = toolchain {
        let cargo = t.sysroot.join("bin").join("cargo");
        if let Err(e) = crate::crate_graph::redirect(&work.join("cargo-home"), &evcxr_dir, &cargo) {
            // Only memory is lost: rust-analyzer then indexes the whole graph.
            eprintln!("microscope-kernel: could not trim rust-analyzer's crate graph: {e}");
        }
    }
    let preload = eval::Preload {
        crate_dir: template::crate_dir(),
        features,
        opt_level: template::OPT_LEVEL.into(),
        library_path: toolchain
            .as_ref()
            .map(|t| t.library_path(&evcxr_dir))
            .unwrap_or_default(),
        lockfile: template
            .as_ref()
            .map(|t| t.join("Cargo.lock"))
            .filter(|l| l.exists()),
        setup_error: toolchain.as_ref().err().cloned(),
        secret,
        template,
        work_dir: evcxr_dir,
        background,
    };
    Ok(Prepared {
        preload,
        work_dir: work,
        interrupt_file,
        bridge_socket,
        bridge_token,
    })
}

/// Serves Jupyter on `connection` until shutdown, then removes the kernel's directory.
pub fn serve_kernel(
    connection: wire::Connection,
    prepared: Prepared,
    evaluator: eval::Evaluator,
    lines: kernel::Lines,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let work = prepared.work_dir.clone();
    let result = runtime.block_on(kernel::serve(
        kernel::Config {
            connection,
            interrupt_file: prepared.interrupt_file,
            work_dir: prepared.work_dir,
            bridge_socket: prepared.bridge_socket,
            bridge_token: prepared.bridge_token,
        },
        evaluator,
        lines,
    ));
    let _ = std::fs::remove_dir_all(&work);
    result
}

#[cfg(test)]
mod tests {
    /// The kernel does not link the crate; the variables they share must agree by name.
    #[test]
    fn the_variables_shared_with_the_crate_agree() {
        assert_eq!(super::INTERRUPT_ENV, microscope::interrupt::ENV);
        assert_eq!(super::BRIDGE_ENV, microscope::widget::live::BRIDGE_ENV);
        assert_eq!(super::BRIDGE_TOKEN_ENV, microscope::widget::live::TOKEN_ENV);
        assert_eq!(super::KERNEL_ENV, microscope::widget::KERNEL_ENV);
        assert_eq!(
            super::DISPLAY_SECRET_ENV,
            microscope::widget::DISPLAY_SECRET_ENV
        );
    }
}
