//! What rust-analyzer is shown of the cells' crate graph.
//!
//! evcxr infers the types of a cell's variables with rust-analyzer, pointed at the kernel's evcxr
//! crate, and rust-analyzer takes that crate's dependency graph from `cargo metadata`. But the
//! `resolve` of `cargo metadata` also lists every optional dependency that a weak feature
//! (`dep?/feature`) names, enabled or not (rust-lang/cargo#10801). burn names all its backends
//! that way, so rust-analyzer loaded, parsed and indexed 540 crates (210 MB of source: tch,
//! wgpu, cudarc, ROCm's bindings…) where the build has 208, and every kernel and spare held
//! 2.4 GB (1.24 GB with the graph trimmed; `benches/kernel_memory.sh` measures both).
//!
//! Neither evcxr 0.22 nor rust-analyzer lets its caller filter that graph, and rust-analyzer runs
//! `$CARGO_HOME/bin/cargo` before any other cargo. So a kernel, and the install while it
//! prebuilds the template, point their own `CARGO_HOME` at a directory of their own whose
//! `bin/cargo` is this binary ([`redirect`]). Run as `cargo`
//! ([`main_as_cargo`]), it runs the pinned toolchain's cargo with the same arguments and the
//! user's `CARGO_HOME`; for `cargo metadata` of the kernel's evcxr crate only, it then keeps
//! the packages that `cargo tree` (cargo's feature resolver, the one builds use) lists.
//! Everything else a kernel starts gets the user's `CARGO_HOME` back ([`restore`]): evcxr's
//! builds, the evaluation process, spares. `MICROSCOPE_RUST_ANALYZER_ALL_CRATES=1` turns the
//! trimming off (it is part of a spare's key, as every `MICROSCOPE_RUST*` variable is).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The user's `CARGO_HOME` while this process's points at its own ("" when it was unset).
const USER_HOME_ENV: &str = "MICROSCOPE_USER_CARGO_HOME";
/// The pinned toolchain's cargo, which the stand-in runs.
const CARGO_ENV: &str = "MICROSCOPE_TOOLCHAIN_CARGO";
/// The manifest whose metadata is trimmed: the kernel's evcxr crate.
const MANIFEST_ENV: &str = "MICROSCOPE_TRIMMED_MANIFEST";
/// Set to 1, rust-analyzer is shown the whole graph, as before.
const ALL_CRATES_ENV: &str = "MICROSCOPE_RUST_ANALYZER_ALL_CRATES";

/// The variables [`redirect`] sets for this process alone.
const INTERNAL: [&str; 3] = [USER_HOME_ENV, CARGO_ENV, MANIFEST_ENV];

/// Points this process's `CARGO_HOME` at `home` (a new directory), whose `bin/cargo` is this
/// binary, for rust-analyzer to trim the metadata of `<evcxr_dir>/Cargo.toml` through. Call it
/// before any thread that reads the environment starts. Does nothing when [`ALL_CRATES_ENV`] is 1
/// or it already happened.
///
/// `bin/cargo` links to `/proc/<this process>/exe`, the running binary itself: the file it was
/// started from may be replaced meanwhile (a re-install renames a new kernel over it; a `cargo
/// build` rewrites the one an install runs from).
pub fn redirect(home: &Path, evcxr_dir: &Path, cargo: &Path) -> std::io::Result<()> {
    if std::env::var_os(ALL_CRATES_ENV).is_some_and(|v| v == "1")
        || std::env::var_os(USER_HOME_ENV).is_some()
    {
        return Ok(());
    }
    let user = std::env::var_os("CARGO_HOME").unwrap_or_default();
    // Builds get the user's home back through a `:build_env` line (eval.rs).
    if build_home(&user).is_none() {
        return Ok(());
    }
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin)?;
    let exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    std::os::unix::fs::symlink(exe, bin.join("cargo"))?;
    std::env::set_var(USER_HOME_ENV, user);
    std::env::set_var(CARGO_ENV, cargo);
    std::env::set_var(MANIFEST_ENV, evcxr_dir.join("Cargo.toml"));
    std::env::set_var("CARGO_HOME", home);
    Ok(())
}

/// Undoes [`redirect`] in this process: the user's `CARGO_HOME` back, the private variables
/// gone. The install calls it after its prebuild; a kernel keeps the redirect for its life.
pub fn undo() {
    let Some(user) = std::env::var_os(USER_HOME_ENV) else {
        return;
    };
    if user.is_empty() {
        std::env::remove_var("CARGO_HOME");
    } else {
        std::env::set_var("CARGO_HOME", user);
    }
    for k in INTERNAL {
        std::env::remove_var(k);
    }
}

/// The `CARGO_HOME` builds must use, when [`redirect`] changed this process's: the user's, or
/// cargo's default (`~/.cargo`) where the user has none. Text of one line, for evcxr's
/// `:build_env`.
pub fn user_cargo_home() -> Option<String> {
    build_home(&std::env::var_os(USER_HOME_ENV)?)
}

/// `user` (a `CARGO_HOME`, empty when unset) as the home a build would use, when it is text of
/// one line.
fn build_home(user: &OsStr) -> Option<String> {
    let home = if user.is_empty() {
        PathBuf::from(std::env::var_os("HOME")?).join(".cargo")
    } else {
        PathBuf::from(user)
    };
    home.into_os_string()
        .into_string()
        .ok()
        .filter(|h| !h.contains(['\n', '\r']))
}

/// Gives a process this one starts the environment it would have had without [`redirect`].
pub fn restore(cmd: &mut Command) {
    if let Some(user) = std::env::var_os(USER_HOME_ENV) {
        if user.is_empty() {
            cmd.env_remove("CARGO_HOME");
        } else {
            cmd.env("CARGO_HOME", user);
        }
    }
    for k in INTERNAL {
        cmd.env_remove(k);
    }
}

/// This process's environment as the user set it: what a spare's key and hand-over compare.
pub fn as_user_set(env: &mut BTreeMap<String, String>) {
    if let Some(user) = env.remove(USER_HOME_ENV) {
        if user.is_empty() {
            env.remove("CARGO_HOME");
        } else {
            env.insert("CARGO_HOME".into(), user);
        }
    }
    for k in INTERNAL {
        env.remove(k);
    }
}

/// When this binary was started as rust-analyzer's `cargo` (see [`redirect`]): runs it, and
/// returns the exit code. `None` otherwise.
pub fn main_as_cargo() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    if Path::new(&argv0).file_name() != Some(OsStr::new("cargo")) {
        return None;
    }
    let cargo = std::env::var_os(CARGO_ENV)?;
    let manifest = std::env::var_os(MANIFEST_ENV).unwrap_or_default();
    let args: Vec<OsString> = args.collect();
    let mut cmd = Command::new(&cargo);
    cmd.args(&args);
    restore(&mut cmd);
    if !is_metadata_of(&args, Path::new(&manifest)) {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        eprintln!(
            "microscope-kernel: running {}: {e}",
            Path::new(&cargo).display()
        );
        return Some(ExitCode::from(101));
    }
    let (stdout, status) = match shown_metadata(cmd, &cargo, &args) {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "microscope-kernel: running {}: {e}",
                Path::new(&cargo).display()
            );
            return Some(ExitCode::from(101));
        }
    };
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if o.write_all(&stdout).and_then(|_| o.flush()).is_err() {
        return Some(ExitCode::from(101));
    }
    Some(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(101)),
        None => ExitCode::from(101),
    })
}

/// What `metadata` (cargo's command for `cargo metadata` with `args`) prints, trimmed to the
/// packages `cargo tree` lists, and its exit status.
fn shown_metadata(
    mut metadata: Command,
    cargo: &OsStr,
    args: &[OsString],
) -> std::io::Result<(Vec<u8>, std::process::ExitStatus)> {
    let out = metadata.stderr(Stdio::inherit()).output()?;
    let mut stdout = out.stdout;
    if out.status.success() {
        let mut tree = Command::new(cargo);
        tree.args(tree_args(args)).stderr(Stdio::null());
        restore(&mut tree);
        if let Some(t) = tree.output().ok().filter(|t| t.status.success()) {
            if let Some(trimmed) = trim(&stdout, &String::from_utf8_lossy(&t.stdout)) {
                stdout = trimmed;
            }
        }
    }
    Ok((stdout, out.status))
}

/// Whether cargo's arguments ask for the metadata, with dependencies, of `manifest`.
fn is_metadata_of(args: &[OsString], manifest: &Path) -> bool {
    args.first().is_some_and(|a| a == "metadata")
        && !args.iter().any(|a| a == "--no-deps")
        && args
            .windows(2)
            .any(|w| w[0] == "--manifest-path" && Path::new(&w[1]) == manifest)
}

/// `cargo tree`'s arguments for the graph `cargo metadata` with these arguments describes:
/// the same manifest, targets, features, config and unstable flags.
fn tree_args(args: &[OsString]) -> Vec<OsString> {
    let mut out: Vec<OsString> = ["tree", "-e", "normal,build", "--prefix", "none"]
        .into_iter()
        .map(OsString::from)
        .collect();
    out.extend(["--format".into(), "{p}".into()]);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match &*s {
            "--filter-platform" => {
                out.push("--target".into());
                out.extend(it.next().cloned());
            }
            "--manifest-path" | "--config" | "-Z" | "--features" => {
                out.push(a.clone());
                out.extend(it.next().cloned());
            }
            "--all-features" | "--no-default-features" | "--locked" | "--offline" | "--frozen" => {
                out.push(a.clone())
            }
            _ if s.starts_with("-Z")
                || s.starts_with("--config=")
                || s.starts_with("--features=") =>
            {
                out.push(a.clone())
            }
            _ => {}
        }
    }
    out
}

/// `metadata` (the JSON of `cargo metadata`) without the packages `tree` (the lines of `cargo
/// tree --prefix none --format {p}`: `name vVERSION …`) does not list, nor the edges to them.
/// The workspace's own packages always stay. `None` when either cannot be read, or `tree`
/// lists nothing: the caller then keeps the metadata as it was.
fn trim(metadata: &[u8], tree: &str) -> Option<Vec<u8>> {
    use serde_json::Value;
    let built: HashSet<(&str, &str)> = tree
        .lines()
        .filter_map(|l| {
            let mut t = l.split_whitespace();
            Some((t.next()?, t.next()?.strip_prefix('v')?))
        })
        .collect();
    if built.is_empty() {
        return None;
    }
    let mut m: Value = serde_json::from_slice(metadata).ok()?;
    let members: HashSet<String> = m
        .get("workspace_members")?
        .as_array()?
        .iter()
        .filter_map(|v| Some(v.as_str()?.to_string()))
        .collect();
    let keep: HashSet<String> = m
        .get("packages")?
        .as_array()?
        .iter()
        .filter_map(|p| {
            let id = p.get("id")?.as_str()?;
            let name = p.get("name")?.as_str()?;
            let version = p.get("version")?.as_str()?;
            (members.contains(id) || built.contains(&(name, version))).then(|| id.to_string())
        })
        .collect();
    let kept = |v: &Value| v.as_str().is_some_and(|id| keep.contains(id));
    m.get_mut("packages")?
        .as_array_mut()?
        .retain(|p| p.get("id").is_some_and(kept));
    if let Some(nodes) = m
        .get_mut("resolve")
        .and_then(|r| r.get_mut("nodes"))
        .and_then(Value::as_array_mut)
    {
        nodes.retain(|n| n.get("id").is_some_and(kept));
        for node in nodes {
            if let Some(deps) = node.get_mut("dependencies").and_then(Value::as_array_mut) {
                deps.retain(kept);
            }
            if let Some(deps) = node.get_mut("deps").and_then(Value::as_array_mut) {
                deps.retain(|d| d.get("pkg").is_some_and(kept));
            }
        }
    }
    serde_json::to_vec(&m).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn metadata() -> Value {
        let pkg = |name: &str, version: &str| json!({"id": format!("{name}@{version}"), "name": name, "version": version});
        let dep = |name: &str| json!({"name": name, "pkg": format!("{name}@1.0.0")});
        json!({
            "workspace_members": ["ctx@1.0.0"],
            "packages": [pkg("ctx", "1.0.0"), pkg("burn", "1.0.0"), pkg("tch", "1.0.0"),
                         pkg("serde", "1.0.0"), pkg("serde", "2.0.0")],
            "resolve": {"root": "ctx@1.0.0", "nodes": [
                {"id": "ctx@1.0.0", "dependencies": ["burn@1.0.0"], "deps": [dep("burn")]},
                {"id": "burn@1.0.0", "dependencies": ["tch@1.0.0", "serde@1.0.0"],
                 "deps": [dep("tch"), dep("serde")]},
                {"id": "tch@1.0.0", "dependencies": ["serde@2.0.0"],
                 "deps": [{"name": "serde", "pkg": "serde@2.0.0"}]},
                {"id": "serde@1.0.0", "dependencies": [], "deps": []},
                {"id": "serde@2.0.0", "dependencies": [], "deps": []},
            ]},
        })
    }

    #[test]
    fn only_the_packages_cargo_tree_lists_stay_and_the_edges_to_the_rest_go() {
        let tree = "ctx v1.0.0 (/tmp/evcxr)\nburn v1.0.0\nserde v1.0.0\nserde_derive v1.0.0 (proc-macro)\nburn v1.0.0 (*)\n";
        let raw = serde_json::to_vec(&metadata()).unwrap();
        let out: Value = serde_json::from_slice(&trim(&raw, tree).unwrap()).unwrap();
        let ids = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            ids(&out["packages"]),
            ["ctx@1.0.0", "burn@1.0.0", "serde@1.0.0"]
        );
        let nodes = &out["resolve"]["nodes"];
        assert_eq!(ids(nodes), ["ctx@1.0.0", "burn@1.0.0", "serde@1.0.0"]);
        assert_eq!(nodes[1]["dependencies"], json!(["serde@1.0.0"]));
        assert_eq!(nodes[1]["deps"].as_array().unwrap().len(), 1);
        assert_eq!(out["resolve"]["root"], "ctx@1.0.0");
    }

    /// On a crate like a kernel's evcxr crate (the microscope crate by path, the workspace's
    /// lock file), the trimmed graph keeps what the build uses and drops the backends burn names
    /// through weak features.
    #[test]
    fn the_kernels_crate_graph_is_trimmed_to_the_crates_it_builds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir =
            std::env::temp_dir().join(format!("microscope-crate-graph-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), "").unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"ctx\"\nversion = \"1.0.0\"\nedition = \"2021\"\n[lib]\npath = \"src/lib.rs\"\n[dependencies]\nmicroscope = {{ path = {:?} }}\n",
                root.display().to_string()
            ),
        )
        .unwrap();
        std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = dir.join("Cargo.toml");
        let args: Vec<OsString> = vec![
            "metadata".into(),
            "--format-version".into(),
            "1".into(),
            "--manifest-path".into(),
            manifest.clone().into(),
        ];
        assert!(is_metadata_of(&args, &manifest));
        let mut metadata = Command::new(&cargo);
        metadata.args(&args);
        let whole = metadata.output().unwrap();
        assert!(
            whole.status.success(),
            "{}",
            String::from_utf8_lossy(&whole.stderr)
        );
        let mut metadata = Command::new(&cargo);
        metadata.args(&args);
        let (shown, status) = shown_metadata(metadata, &cargo, &args).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(status.success());
        let names = |json: &[u8]| -> HashSet<String> {
            let v: Value = serde_json::from_slice(json).unwrap();
            v["packages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        };
        let (whole, shown) = (names(&whole.stdout), names(&shown));
        for built in [
            "ctx",
            "microscope",
            "burn",
            "burn-flex",
            "burn-autodiff",
            "serde",
        ] {
            assert!(shown.contains(built), "{built} is missing");
        }
        for unbuilt in ["burn-tch", "burn-wgpu", "burn-cuda", "cudarc", "tch"] {
            assert!(!shown.contains(unbuilt), "{unbuilt} is shown");
        }
        assert!(shown.is_subset(&whole));
        eprintln!(
            "rust-analyzer is shown {} of {} packages",
            shown.len(),
            whole.len()
        );
    }

    #[test]
    fn unreadable_input_leaves_the_metadata_as_it_was() {
        let raw = serde_json::to_vec(&metadata()).unwrap();
        assert_eq!(trim(&raw, ""), None);
        assert_eq!(trim(&raw, "warning: something\n"), None);
        assert_eq!(trim(b"not json", "ctx v1.0.0\n"), None);
    }

    #[test]
    fn only_the_evcxr_crates_full_metadata_is_trimmed() {
        let m = Path::new("/k/evcxr/Cargo.toml");
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let full = args(&[
            "metadata",
            "--format-version",
            "1",
            "--manifest-path",
            "/k/evcxr/Cargo.toml",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
            "-Zlockfile-path",
            "-Zunstable-options",
        ]);
        assert!(is_metadata_of(&full, m));
        let mut no_deps = full.clone();
        no_deps.push("--no-deps".into());
        assert!(!is_metadata_of(&no_deps, m));
        assert!(!is_metadata_of(
            &args(&["metadata", "--manifest-path", "/sysroot/library/Cargo.toml"]),
            m
        ));
        assert!(!is_metadata_of(
            &args(&["build", "--manifest-path", "/k/evcxr/Cargo.toml"]),
            m
        ));
        let tree: Vec<String> = tree_args(&full)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            tree,
            [
                "tree",
                "-e",
                "normal,build",
                "--prefix",
                "none",
                "--format",
                "{p}",
                "--manifest-path",
                "/k/evcxr/Cargo.toml",
                "--target",
                "x86_64-unknown-linux-gnu",
                "-Zlockfile-path",
                "-Zunstable-options"
            ]
        );
    }
}
