//! The Rust toolchain a kernel compiles its cells with, pinned when the kernel is installed.
//!
//! A cell is a shared object that links the Rust standard library dynamically (evcxr builds with
//! `-C prefer-dynamic`), so the evaluation process must find *that* toolchain's `libstd-*.so`,
//! and every later cell must be built by the same compiler as the prebuilt template. Three
//! things go wrong without a pin, and each has happened to users:
//! - the shared objects' RUNPATH is relative to the directory rustc wrote them to, but evcxr
//!   loads them from one level up, so it only resolves by accident (see `library_path`);
//! - Jupyter started from a desktop menu or a service has no `~/.cargo/bin` on `PATH`;
//! - `rustup default` or a `rust-toolchain.toml` in the notebook's folder picks another compiler.
//!
//! So `install` records the toolchain it built the template with (its sysroot, rustup name and
//! `rustc -vV` version line) in the kernelspec's `env`, and every kernel and spare puts that
//! toolchain's `bin` first on `PATH`, pins rustup to it, and hands its library directory to the
//! evaluation process. If the toolchain changed in place since (`rustup update`), the kernel does
//! not start a 15-minute rebuild against a template made by another compiler: every cell answers
//! with one line saying what to run again.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The kernelspec's `env` entries that pin the toolchain (also what a spare's key looks at).
pub const SYSROOT_ENV: &str = "MICROSCOPE_RUST_SYSROOT";
pub const VERSION_ENV: &str = "MICROSCOPE_RUSTC_VERSION";
const RUSTUP_ENV: &str = "RUSTUP_TOOLCHAIN";

/// What to run when the pinned toolchain is gone or changed: the README's main command, or the
/// install command it wraps.
pub const REINSTALL: &str =
    "run `notebooks/tour.sh` (or `microscope-kernel install --user`) again from the microscope repository";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// `rustc --print sysroot`: holds `bin/` (cargo, rustc) and `lib/rustlib/<host>/lib`.
    pub sysroot: PathBuf,
    /// rustup's name for it (`stable-x86_64-unknown-linux-gnu`), when rustup manages it.
    pub rustup_name: Option<String>,
    /// The first line of `rustc -vV` (`rustc 1.95.0 (59807616e 2026-04-14)`).
    pub version: String,
    /// The host triple (`x86_64-unknown-linux-gnu`).
    pub host: String,
}

impl Toolchain {
    /// The toolchain `rustc` resolves to here and now (through rustup's proxy, if that is what
    /// is on `PATH`): the one `install` pins.
    pub fn current() -> Result<Toolchain> {
        let out = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .context(
                "running `rustc --print sysroot`: no Rust toolchain on PATH (install one with rustup)",
            )?;
        if !out.status.success() {
            bail!(
                "`rustc --print sysroot` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let (version, host) = describe(&sysroot)?;
        let rustup_name = match (sysroot.parent(), sysroot.file_name()) {
            (Some(parent), Some(name)) if parent.file_name() == Some("toolchains".as_ref()) => {
                Some(name.to_string_lossy().into_owned())
            }
            _ => None,
        };
        Ok(Toolchain {
            sysroot,
            rustup_name,
            version,
            host,
        })
    }

    /// The kernelspec `env` entries that pin this toolchain.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (SYSROOT_ENV.into(), self.sysroot.display().to_string()),
            (VERSION_ENV.into(), self.version.clone()),
        ];
        if let Some(name) = &self.rustup_name {
            env.push((RUSTUP_ENV.into(), name.clone()));
        }
        env
    }

    /// The toolchain this process was pinned to (the kernelspec's `env`), checked against what
    /// is at its sysroot now. `Ok(None)`: no pin (a kernelspec from before pinning, or a kernel
    /// started by hand); the caller then uses [`Toolchain::current`].
    pub fn pinned() -> Result<Option<Toolchain>> {
        let Some(sysroot) = std::env::var_os(SYSROOT_ENV).map(PathBuf::from) else {
            return Ok(None);
        };
        Toolchain::check_pin(
            sysroot,
            &std::env::var(VERSION_ENV).unwrap_or_default(),
            std::env::var(RUSTUP_ENV).ok(),
        )
        .map(Some)
    }

    /// The toolchain in `sysroot`, if it still is the `wanted` version.
    fn check_pin(sysroot: PathBuf, wanted: &str, rustup_name: Option<String>) -> Result<Toolchain> {
        let (version, host) = describe(&sysroot).map_err(|e| {
            anyhow::anyhow!(
                "the Rust toolchain this kernel was installed with ({wanted} in {}) is gone ({e:#}): {REINSTALL}",
                sysroot.display()
            )
        })?;
        if !wanted.is_empty() && version != wanted {
            bail!(
                "the Rust toolchain in {} changed from {wanted} to {version} since this kernel was installed: {REINSTALL}",
                sysroot.display()
            );
        }
        Ok(Toolchain {
            rustup_name,
            sysroot,
            version,
            host,
        })
    }

    /// Makes this process (and everything it starts: evcxr's cargo and rustc, spares) use this
    /// toolchain: its `bin` first on `PATH`, and rustup pinned to it, so neither a missing
    /// `~/.cargo/bin` nor `rustup default` nor a `rust-toolchain.toml` in the notebook's folder
    /// changes the compiler. Call before any thread starts.
    pub fn apply(&self) {
        let bin = self.sysroot.join("bin");
        let mut paths = vec![bin.clone()];
        if let Some(path) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&path).filter(|p| *p != bin));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            std::env::set_var("PATH", joined);
        }
        for (k, v) in self.env() {
            std::env::set_var(k, v);
        }
    }

    /// Where the standard library's shared objects are (`libstd-<hash>.so`).
    pub fn std_lib_dir(&self) -> PathBuf {
        self.sysroot
            .join("lib")
            .join("rustlib")
            .join(&self.host)
            .join("lib")
    }

    /// The directories the evaluation process needs on its library path, for a kernel whose
    /// evcxr directory is `work_dir`: the cells' dependencies (the microscope crate and the
    /// rest, built as dylibs into `deps/`) and the standard library.
    ///
    /// Why not the shared objects' own RUNPATH: rustc writes it relative to `deps/`
    /// (`$ORIGIN/../../…/.rustup/toolchains/…`), but evcxr loads each cell from one directory
    /// up, so the path is off by one level. It resolves only where the extra `..` stops at `/`
    /// (a build directory in /tmp), not in a kernelspec beside `~/.rustup`. evcxr sets its own
    /// `RUSTFLAGS`, so an absolute `-C link-args=-Wl,-rpath,…` cannot be added to every crate;
    /// the loader's search path, set for the one process that loads cells, covers all of them.
    pub fn library_path(&self, work_dir: &Path) -> Vec<PathBuf> {
        vec![
            work_dir
                .join("target")
                .join(&self.host)
                .join("debug")
                .join("deps"),
            self.std_lib_dir(),
        ]
    }
}

/// The version line and host triple of the `rustc` in `sysroot`.
fn describe(sysroot: &Path) -> Result<(String, String)> {
    let rustc = sysroot.join("bin").join("rustc");
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {}", rustc.display()))?;
    if !out.status.success() {
        bail!("{} -vV failed", rustc.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().next().unwrap_or_default().trim().to_string();
    let host = text
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .with_context(|| format!("{} -vV names no host", rustc.display()))?;
    Ok((version, host))
}

/// The toolchain a kernel or spare uses: the pinned one when the kernelspec pins one (an error
/// that names what to run again when it changed), else whatever `rustc` is now.
pub fn for_kernel() -> Result<Toolchain> {
    match Toolchain::pinned()? {
        Some(t) => Ok(t),
        None => Toolchain::current(),
    }
}

/// `list` with what `var` already holds after it, as one search-path value.
pub fn prepend_paths(list: &[PathBuf], var: &str) -> std::ffi::OsString {
    let mut all: Vec<PathBuf> = list.to_vec();
    if let Some(old) = std::env::var_os(var) {
        all.extend(std::env::split_paths(&old).filter(|p| !list.contains(p)));
    }
    std::env::join_paths(all).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_toolchain_has_a_standard_library_to_load() {
        let t = Toolchain::current().unwrap();
        assert!(t.version.starts_with("rustc "), "{t:?}");
        let has_std = std::fs::read_dir(t.std_lib_dir())
            .unwrap()
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("libstd-") && name.ends_with(".so")
            });
        assert!(has_std, "no libstd-*.so in {}", t.std_lib_dir().display());
    }

    #[test]
    fn a_pin_holds_while_the_toolchain_is_the_same_and_says_what_to_run_when_not() {
        let t = Toolchain::current().unwrap();
        let same = Toolchain::check_pin(t.sysroot.clone(), &t.version, t.rustup_name.clone());
        assert_eq!(same.unwrap(), t);
        let updated = Toolchain::check_pin(t.sysroot.clone(), "rustc 1.0.0 (a 2015-05-15)", None)
            .unwrap_err()
            .to_string();
        assert!(
            updated.contains("changed from rustc 1.0.0") && updated.contains(REINSTALL),
            "{updated}"
        );
        let gone = Toolchain::check_pin("/nonexistent/toolchain".into(), &t.version, None)
            .unwrap_err()
            .to_string();
        assert!(
            gone.contains("is gone") && gone.contains(REINSTALL),
            "{gone}"
        );
        assert!(
            !gone.contains('\n') && !updated.contains('\n'),
            "one line each"
        );
    }
}
