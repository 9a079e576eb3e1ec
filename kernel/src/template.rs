//! The template build directory and each kernel's own work directory: where they are and how
//! one becomes the other. A leaf: installing (install.rs) builds the template, and every
//! kernel's evaluation thread (eval.rs) starts from a copy of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Optimization level for cells and everything they link (evcxr's `:opt`): techniques run
/// optimized, and a cell's own code compiles in well under a second.
pub const OPT_LEVEL: &str = "2";

/// The microscope crate this kernel preloads: the workspace it was built in.
pub fn crate_dir() -> PathBuf {
    let kernel = Path::new(env!("CARGO_MANIFEST_DIR"));
    kernel.parent().unwrap_or(kernel).to_path_buf()
}

const WORK_PREFIX: &str = "microscope-kernel-";

/// A new, empty directory for one kernel's build. Directories left by kernels that were killed
/// (their process is gone) are removed first: each holds a copy of the template.
pub fn fresh_work_dir() -> Result<PathBuf> {
    remove_stale_work_dirs();
    let dir = std::env::temp_dir().join(format!(
        "{WORK_PREFIX}{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Private: it holds the bridge socket (live widgets) and the interrupt file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn remove_stale_work_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(WORK_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Copies the template into `dest` keeping timestamps (reflinks where the file system has them).
pub fn copy_template(template: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(template)
        .arg(dest)
        .status()
        .context("running cp")?;
    if !status.success() {
        bail!(
            "copying {} to {} failed",
            template.display(),
            dest.display()
        );
    }
    Ok(())
}
