//! Warm spares: a kernel already started and preloaded, waiting for Jupyter to need one.
//!
//! A kernel started cold spends about 25 s before its first cell can run, nearly all of it in
//! rust-analyzer (inside evcxr) loading and indexing the crate graph in memory, which cannot be
//! saved to disk. So that work is done ahead of time. `install`, and every kernel as it starts,
//! leave one *spare* running: `microscope-kernel spare`, detached, preloading at the lowest CPU
//! priority. The process Jupyter starts (`run`) first offers its connection file to a spare over
//! a Unix socket in a private directory; the spare answers `adopted` and from then on *is* that
//! kernel: it binds the connection file's ports and serves. The started process stays as its
//! stand-in for Jupyter: it relays the kernel's stderr, exits when the kernel exits, and the
//! kernel shuts down when it goes (killed by Jupyter, or orphaned).
//!
//! A spare is only offered to kernels that would build the same way: same binary, template,
//! features, toolchain and build variables (the *key*). Other differences are handed over at
//! adoption: the working directory and the environment of the evaluation process (where cells
//! run) are set to the started process's before the first cell. A spare exits
//! `MICROSCOPE_SPARE_IDLE_S` seconds (default 600) after the process that started it is gone,
//! unused; `MICROSCOPE_SPARE_IDLE_S=0` turns spares off.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::eval::{Request, Shared};
use crate::{kernel, startup, wire};

pub const IDLE_ENV: &str = "MICROSCOPE_SPARE_IDLE_S";
const DEFAULT_IDLE: Duration = Duration::from_secs(600);

/// Variables a kernel sets for itself and its evaluation process: a spare's own, never compared
/// or handed over.
const INTERNAL: &[&str] = &[
    "EVCXR_TMPDIR",
    "EVCXR_IS_RUNTIME",
    startup::KERNEL_ENV,
    startup::INTERRUPT_ENV,
    startup::BRIDGE_ENV,
    startup::BRIDGE_TOKEN_ENV,
    startup::DISPLAY_SECRET_ENV,
];

/// How long a spare waits once the process that started it is gone; `None`: spares are off.
fn idle() -> Option<Duration> {
    match std::env::var(IDLE_ENV) {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(n) => Some(Duration::from_secs(n)),
            Err(_) => Some(DEFAULT_IDLE),
        },
        Err(_) => Some(DEFAULT_IDLE),
    }
}

/// Variables that belong to one process (Jupyter's `JPY_*`, the shell's): neither compared nor
/// handed over.
fn per_process(name: &str) -> bool {
    name.starts_with("JPY_") || matches!(name, "PWD" | "OLDPWD" | "SHLVL" | "_")
}

/// Variables that change how cells are built or loaded: a spare is only offered to a kernel
/// with the same values.
fn affects_build(name: &str) -> bool {
    !INTERNAL.contains(&name)
        && (["CARGO", "RUST", "EVCXR_", "CUDA", "MICROSCOPE_RUST"]
            .iter()
            .any(|p| name.starts_with(p))
            || matches!(name, "HOME" | "LD_LIBRARY_PATH" | "CUDARC_CUDA_VERSION"))
}

/// The environment as the user set it (not as `crate_graph::redirect` changed it for this
/// process).
fn environment() -> BTreeMap<String, String> {
    let mut env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    crate::crate_graph::as_user_set(&mut env);
    env
}

/// The first executable called `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What a kernel started by `exe` with these arguments would build with, hashed.
fn key(exe: &Path, template: Option<&Path>, features: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    let mut add = |s: &str| {
        h.update(s.as_bytes());
        h.update([0]);
    };
    add(&exe.display().to_string());
    if let Ok(m) = std::fs::metadata(exe) {
        add(&format!("{} {} {}", m.len(), m.mtime(), m.mtime_nsec()));
    }
    add(&template
        .map(|t| t.display().to_string())
        .unwrap_or_default());
    add(features);
    for tool in ["cargo", "rustc"] {
        add(&on_path(tool)
            .map(|p| p.display().to_string())
            .unwrap_or_default());
    }
    for (k, v) in environment() {
        if affects_build(&k) {
            add(&format!("{k}={v}"));
        }
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// This user's directory for spares' sockets, locks and logs: `~/.cache/microscope-spares`,
/// which no other user can create first (a folder in the shared /tmp could be, and would then
/// turn spares off); the temporary folder's `microscope-spares-UID` only without a home. `None`
/// when neither can be made private (someone else owns it, or it is open to others).
fn dir() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let candidates = [
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache/microscope-spares")),
        Some(std::env::temp_dir().join(format!("microscope-spares-{uid}"))),
    ];
    candidates.into_iter().flatten().find(|dir| {
        if let Some(parent) = dir.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
        std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
    })
}

/// The spare's lock, if no other process holds it.
fn try_lock(path: &Path) -> Option<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    locked.then_some(file)
}

/// In the process Jupyter started: hands the connection file to a waiting spare. `Some` when a
/// spare took it; the caller then only has to [`follow`] it.
pub fn adopt(
    connection_file: &Path,
    template: Option<&Path>,
    features: &str,
) -> Option<UnixStream> {
    idle()?;
    let exe = std::env::current_exe().ok()?;
    let socket = dir()?.join(format!("{}.sock", key(&exe, template, features)));
    let mut stream = UnixStream::connect(socket).ok()?;
    let request = json!({
        "connection_file": std::path::absolute(connection_file).ok()?,
        "cwd": std::env::current_dir().ok()?,
        "env": environment(),
    });
    writeln!(stream, "{request}").ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    (read_line(&mut stream)? == "adopted").then_some(())?;
    stream.set_read_timeout(None).ok()?;
    Some(stream)
}

/// One line, read byte by byte (what follows it on the stream is not this function's).
fn read_line(stream: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.len() < 1 << 20 {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

/// In the process Jupyter started, once a spare adopted its connection file: shows what the
/// kernel prints to stderr, and returns when the kernel has exited. Exits (and so shuts the
/// kernel down) when the process that started it is gone, as a kernel would.
pub fn follow(mut stream: UnixStream) {
    kernel::when_parent_gone(|| std::process::exit(0));
    let _ = std::io::copy(&mut stream, &mut std::io::stderr());
}

/// Starts a spare for kernels like the one `exe` with these arguments starts, unless spares are
/// off or one is already waiting. It runs detached, in its own session, logging to the spares'
/// directory.
pub fn spawn(exe: &Path, template: Option<&Path>, features: &str) -> Option<u32> {
    use std::os::unix::process::CommandExt;
    idle()?;
    let dir = dir()?;
    let key = key(exe, template, features);
    // A spare holds its lock for as long as it waits (and while it starts).
    drop(try_lock(&dir.join(format!("{key}.lock")))?);
    let log = File::create(dir.join(format!("{key}.log"))).ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("spare");
    if let Some(t) = template {
        cmd.arg("--template").arg(t);
    }
    cmd.args(["--features", features, "--spawner"])
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for name in INTERNAL.iter().chain(&["JPY_PARENT_PID"]) {
        cmd.env_remove(name);
    }
    crate::crate_graph::restore(&mut cmd);
    // SAFETY: setsid is async-signal-safe; it detaches the spare from this process's session,
    // so signals meant for this kernel's process group do not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().ok()?;
    let pid = child.id();
    // Reap it if it exits while this process lives.
    std::thread::spawn(move || child.wait());
    Some(pid)
}

/// How long a kernel must have been without a running cell before it starts the next spare: a
/// spare's preload is nice'd, but it still takes memory bandwidth from cells run beside it.
const QUIET: Duration = Duration::from_secs(20);

/// Starts the next spare (see [`spawn`]) once the kernel whose evaluation state this is has run
/// no cell for [`QUIET`].
pub fn spawn_when_quiet(
    exe: PathBuf,
    template: Option<PathBuf>,
    features: String,
    state: Arc<Shared>,
) {
    std::thread::spawn(move || {
        let mut quiet = Duration::ZERO;
        let mut finished = state.finished.load(Ordering::SeqCst);
        while quiet < QUIET {
            std::thread::sleep(Duration::from_secs(1));
            let now = state.finished.load(Ordering::SeqCst);
            let running = !state.parent.lock().unwrap().is_null();
            quiet = if running || now != finished {
                Duration::ZERO
            } else {
                quiet + Duration::from_secs(1)
            };
            finished = now;
        }
        spawn(&exe, template.as_deref(), &features);
    });
}

/// `microscope-kernel spare`: preload, wait to be adopted, then serve as that kernel.
pub fn serve(
    template: Option<PathBuf>,
    features: String,
    spawner: u32,
    toolchain: crate::toolchain::Toolchain,
) -> Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let Some(idle) = idle() else { return Ok(()) };
    let dir = dir().context("no private directory for spares")?;
    let key = key(&exe, template.as_deref(), &features);
    let Some(lock) = try_lock(&dir.join(format!("{key}.lock"))) else {
        return Ok(()); // another spare is waiting
    };
    let socket = dir.join(format!("{key}.sock"));
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    let env_before = environment();
    let cwd_before = std::env::current_dir().ok();
    let prepared = startup::prepare(template.clone(), &features, true, &Ok(toolchain))?;
    let work_dir = prepared.work_dir.clone();
    let (evaluator, lines) =
        kernel::start_evaluator(prepared.preload.clone(), prepared.interrupt_file.clone());
    let template_shown = template
        .as_ref()
        .map(|t| t.display().to_string())
        .unwrap_or_default();
    eprintln!(
        "microscope spare {key} (pid {}, template {template_shown}): preloading; waiting for a kernel to adopt it",
        std::process::id()
    );

    let started = Instant::now();
    let mut ready = false;
    let mut orphaned: Option<Instant> = None;
    let (mut stream, request, connection) = loop {
        if !ready && evaluator.state.preloaded.load(Ordering::SeqCst) {
            ready = true;
            eprintln!(
                "microscope spare {key}: preloaded in {:.1} s; ready",
                started.elapsed().as_secs_f64()
            );
        }
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let request =
                    read_line(&mut stream).and_then(|l| serde_json::from_str::<Value>(&l).ok());
                if let Some(request) = request.filter(|r| r["connection_file"].is_string()) {
                    // Checked before answering: once `adopted` is said, the started process
                    // only follows this one, and a kernel that then failed would be dead. A
                    // connection file this spare cannot serve is refused, and that process
                    // starts a kernel of its own (which reports the problem).
                    let file =
                        PathBuf::from(request["connection_file"].as_str().unwrap_or_default());
                    match wire::Connection::read(&file) {
                        Ok(connection) => break (stream, request, connection),
                        Err(e) => {
                            let _ = writeln!(
                                stream,
                                "refused: {}",
                                format!("{e:#}").replace('\n', " ")
                            );
                        }
                    }
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        let spawner_alive = unsafe { libc::kill(spawner as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        // A spare whose template was removed (its kernelspec uninstalled) is of no use either.
        let template_gone = template.as_ref().is_some_and(|t| !t.exists());
        if spawner_alive {
            orphaned = None;
        }
        let unused_too_long =
            !spawner_alive && orphaned.get_or_insert_with(Instant::now).elapsed() > idle;
        if unused_too_long || template_gone {
            eprintln!("microscope spare {key}: not needed; exiting");
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_file(dir.join(format!("{key}.log")));
            kernel::shutdown(&evaluator, &work_dir);
        }
    };

    // Adopted: from here on this process is the kernel of that connection file.
    stream.set_read_timeout(None)?;
    stream.write_all(b"adopted\n")?;
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    // The log says what a waiting spare does: this one no longer waits.
    let _ = std::fs::remove_file(dir.join(format!("{key}.log")));
    drop(lock);
    let cwd: Option<PathBuf> = request["cwd"].as_str().map(PathBuf::from);
    if let Some(cwd) = &cwd {
        let _ = std::env::set_current_dir(cwd);
    }
    let env_after: BTreeMap<String, String> =
        serde_json::from_value(request["env"].clone()).unwrap_or_default();
    if let Some(code) = hand_over(
        &env_before,
        &env_after,
        cwd_before.as_deref(),
        cwd.as_deref(),
    ) {
        let (reply, _) = tokio::sync::oneshot::channel();
        evaluator.send(Request::Execute {
            code,
            parent: Value::Null,
            reply,
        });
    }
    // What this kernel prints to stderr now reaches Jupyter through the started process.
    // SAFETY: dup2 onto fd 2 of a socket this function owns (and keeps open below).
    unsafe { libc::dup2(stream.as_raw_fd(), 2) };
    let watched = stream.try_clone()?;
    let (watch_evaluator, watch_dir) = (evaluator.clone(), work_dir.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        loop {
            match (&watched).read(&mut buf) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The started process is gone (Jupyter killed it, or its parent died).
                _ => kernel::shutdown(&watch_evaluator, &watch_dir),
            }
        }
    });
    spawn_when_quiet(exe, template, features, evaluator.state.clone());
    let result = startup::serve_kernel(connection, prepared, evaluator, lines);
    drop(stream);
    result
}

/// A cell that gives the evaluation process the adopting process's environment and working
/// directory (it was started with the spare's); `None` when they are the same.
fn hand_over(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    cwd_before: Option<&Path>,
    cwd_after: Option<&Path>,
) -> Option<String> {
    let passed = |k: &str| !per_process(k) && !INTERNAL.contains(&k);
    let mut code = Vec::new();
    for (k, v) in after {
        if passed(k) && before.get(k) != Some(v) {
            code.push(format!("std::env::set_var({k:?}, {v:?});"));
        }
    }
    for k in before.keys() {
        if passed(k) && !after.contains_key(k) {
            code.push(format!("std::env::remove_var({k:?});"));
        }
    }
    let mut cell = String::new();
    if !code.is_empty() {
        cell = format!("unsafe {{ {} }}", code.join(" "));
    }
    if let Some(dir) = cwd_after
        .filter(|d| Some(*d) != cwd_before)
        .and_then(|d| d.to_str())
    {
        cell.push_str(&format!(" let _ = std::env::set_current_dir({dir:?});"));
    }
    (!cell.is_empty()).then(|| format!("{{ {cell} }}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hand_over_sets_what_differs_and_nothing_else() {
        let before = vars(&[
            ("A", "1"),
            ("GONE", "x"),
            ("JPY_PARENT_PID", "1"),
            ("MICROSCOPE_BRIDGE", "/s"),
        ]);
        let after = vars(&[
            ("A", "1"),
            ("NEW", "quote \" and \\ and\nline"),
            ("JPY_PARENT_PID", "2"),
        ]);
        let cell = hand_over(
            &before,
            &after,
            Some(Path::new("/a")),
            Some(Path::new("/b")),
        )
        .unwrap();
        assert!(
            cell.contains(r#"std::env::set_var("NEW", "quote \" and \\ and\nline");"#),
            "{cell}"
        );
        assert!(cell.contains(r#"std::env::remove_var("GONE");"#), "{cell}");
        assert!(
            cell.contains(r#"std::env::set_current_dir("/b")"#),
            "{cell}"
        );
        assert!(
            !cell.contains("JPY_PARENT_PID")
                && !cell.contains("MICROSCOPE_BRIDGE")
                && !cell.contains("\"A\""),
            "{cell}"
        );
        let same = vars(&[("A", "1")]);
        assert_eq!(
            hand_over(&same, &same, Some(Path::new("/a")), Some(Path::new("/a"))),
            None
        );
    }

    #[test]
    fn the_key_follows_what_changes_a_build() {
        let exe = std::env::current_exe().unwrap();
        let a = key(&exe, Some(Path::new("/t")), "");
        assert_eq!(a, key(&exe, Some(Path::new("/t")), ""));
        assert_ne!(a, key(&exe, Some(Path::new("/t")), "cuda"));
        assert_ne!(a, key(&exe, Some(Path::new("/u")), ""));
        assert!(
            affects_build("CARGO_HOME")
                && affects_build("RUSTFLAGS")
                && affects_build("LD_LIBRARY_PATH")
        );
        assert!(
            !affects_build("MICROSCOPE_CACHE")
                && !affects_build("EVCXR_TMPDIR")
                && !affects_build("JPY_PARENT_PID")
        );
    }
}
