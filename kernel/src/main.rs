//! `microscope-kernel`: the Jupyter kernel of microscope.
//!
//! - `microscope-kernel install [--user | --prefix DIR] [--cuda]` registers the kernelspec
//!   `microscope` ("Rust · microscope") and prebuilds the preloaded crate's dependency graph into
//!   a template build directory next to it.
//! - `microscope-kernel run --connection-file FILE` is what Jupyter starts (see kernel.json). It
//!   hands the connection file to a waiting spare kernel when there is one (spare.rs), else it is
//!   the kernel itself.
//! - `microscope-kernel spare` is such a spare, started by `install` and by kernels.
//!
//! See HOW_IT_WORKS.md for the pipeline.

mod bridge;
mod crate_graph;
mod eval;
mod install;
mod kernel;
mod spare;
mod startup;
mod template;
mod toolchain;
mod transport;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "microscope-kernel",
    version,
    about = "The microscope Jupyter kernel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register the kernelspec and prebuild the crate it preloads.
    Install {
        /// Install for this user (the default).
        #[arg(long, conflicts_with = "prefix")]
        user: bool,
        /// Install under DIR/share/jupyter/kernels (like ipykernel's --prefix).
        #[arg(long)]
        prefix: Option<PathBuf>,
        /// Preload microscope with its `cuda` feature.
        #[arg(long)]
        cuda: bool,
        /// Skip the prebuild (the first kernel then compiles everything).
        #[arg(long)]
        no_prebuild: bool,
    },
    /// Run the kernel (Jupyter calls this).
    Run {
        #[arg(long)]
        connection_file: PathBuf,
        /// Template build directory made at install.
        #[arg(long)]
        template: Option<PathBuf>,
        /// Features of the microscope crate to preload, comma-separated.
        #[arg(long, default_value = "")]
        features: String,
    },
    /// A warm spare kernel: preloads, then waits for `run` to hand it a connection file (see
    /// spare.rs). Started by `install` and by kernels, not by hand.
    #[command(hide = true)]
    Spare {
        #[arg(long)]
        template: Option<PathBuf>,
        #[arg(long, default_value = "")]
        features: String,
        /// The process that started this spare: it waits for `MICROSCOPE_SPARE_IDLE_S` after
        /// that one is gone.
        #[arg(long)]
        spawner: u32,
    },
}

fn main() -> ExitCode {
    // rust-analyzer's `cargo`, inside a kernel (crate_graph.rs).
    if let Some(code) = crate_graph::main_as_cargo() {
        return code;
    }
    relay_cell_output();
    // When evcxr starts this binary as its evaluation process, this call never returns.
    evcxr::runtime_hook();
    drop_workspace_library_paths();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Install {
            user: _,
            prefix,
            cuda,
            no_prebuild,
        } => install::install(prefix.as_deref(), cuda, !no_prebuild),
        Command::Run {
            connection_file,
            template,
            features,
        } => {
            let toolchain = kernel_toolchain();
            match spare::adopt(&connection_file, template.as_deref(), &features) {
                Some(stream) => {
                    spare::follow(stream);
                    Ok(())
                }
                None => run(connection_file, template, &features, toolchain),
            }
        }
        Command::Spare {
            template,
            features,
            spawner,
        } => match kernel_toolchain() {
            Ok(toolchain) => spare::serve(template, features, spawner, toolchain),
            // A kernel started cold will say why in its cells.
            Err(_) => Ok(()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("microscope-kernel: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// In the evaluation process (evcxr's runtime: this binary started with `EVCXR_IS_RUNTIME`),
/// passes stdout on through a pipe:
/// - adding [`eval::USER_ERROR_MARKER`] after evcxr's own marker for a `?` that stopped a cell
///   (evcxr consumes its marker itself and reports the cell as a success; with ours the kernel
///   can report it as the error it is);
/// - adding [`eval::PANIC_MARKER`] after evcxr's own marker for a cell that panicked (evcxr
///   consumes that one too);
/// - writing [`eval::END_MARKER`] to stderr when it sees evcxr's marker of a cell's end;
/// - passing the crate's own display lines and content blocks on (see [`relay_line`]) and
///   defusing every other line that would look like one.
fn relay_cell_output() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::FromRawFd;
    if std::env::var_os("EVCXR_IS_RUNTIME").is_none() {
        return;
    }
    let mut fds = [0i32; 2];
    // SAFETY: plain POSIX calls on descriptors this function owns; fd 1 is replaced by the
    // pipe's write end before any thread writes to it, and the original stdout stays open
    // (`original`) for the relay.
    let (reader, original) = unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return;
        }
        let original = libc::dup(1);
        if original < 0 || libc::dup2(fds[1], 1) < 0 {
            return;
        }
        libc::close(fds[1]);
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(original),
        )
    };
    let secret = std::env::var(startup::DISPLAY_SECRET_ENV).unwrap_or_default();
    std::thread::spawn(move || {
        let mut out = std::io::LineWriter::new(original);
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            let line = relay_line(&line, secret.as_bytes());
            let marker = &*line == b"EVCXR_ERROR_OCCURRED";
            let panicked = &*line == b"EVCXR_PANIC_NOTIFICATION";
            if &*line == b"EVCXR_EXECUTION_COMPLETE" {
                // The cell has returned, after everything it printed to stderr: the marker
                // follows its lines there. Not on stdout: evcxr waits until every stdout line
                // it read has been taken from its channel, and its first execution (at start,
                // before the kernel takes the channel) would wait forever.
                let end = format!("{secret}{}\n", eval::END_MARKER);
                // Straight to fd 2, past std's stderr lock, which a cell's thread may hold.
                // SAFETY: writes a buffer this function owns to a descriptor; a failed or short
                // write only costs the kernel's wait for the marker (at most `END_WAIT`).
                let _ = unsafe { libc::write(2, end.as_ptr().cast(), end.len()) };
            }
            let mut ok = out.write_all(&line).and_then(|_| out.write_all(b"\n"));
            if marker {
                ok = ok.and_then(|_| writeln!(out, "{}", eval::USER_ERROR_MARKER));
            }
            if panicked {
                ok = ok.and_then(|_| writeln!(out, "{}", eval::PANIC_MARKER));
            }
            if ok.and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
}

/// How the kernel's own markers start: a display line, a `?` that stopped a cell, a panic.
const MARKER_PREFIX: &str = "\u{1b}[microscope-";

/// What the evaluation process passes on for one line a cell printed. A line that starts with
/// the secret is the crate's own (a display line or a content block's first line): it goes on
/// without the secret. Any other line that evcxr or the kernel would read as a display is
/// defused with a zero-width space: one starting like the kernel's markers, and one holding
/// evcxr's content marker (evcxr finds that anywhere in a line) for any type but the plain text
/// evcxr itself writes for a value without a rich display.
fn relay_line<'a>(line: &'a [u8], secret: &[u8]) -> std::borrow::Cow<'a, [u8]> {
    use std::borrow::Cow;
    const CONTENT: &[u8] = b"EVCXR_BEGIN_CONTENT";
    const ZWSP: &[u8] = "\u{200b}".as_bytes();
    if !secret.is_empty() {
        if let Some(rest) = line.strip_prefix(secret) {
            return Cow::Borrowed(rest);
        }
    }
    let mut out = line.to_vec();
    if line.starts_with(MARKER_PREFIX.as_bytes()) {
        out.splice(0..0, ZWSP.iter().copied());
    }
    let evcxr_text_plain = line == b"EVCXR_BEGIN_CONTENT text/plain";
    if !evcxr_text_plain && line.windows(CONTENT.len()).any(|w| w == CONTENT) {
        let mut defused = Vec::with_capacity(out.len() + 3);
        let mut rest = out.as_slice();
        while let Some(at) = rest.windows(CONTENT.len()).position(|w| w == CONTENT) {
            // `EVCXR_BEGIN<zwsp>_CONTENT`: the same text to a reader, no marker to evcxr.
            defused.extend_from_slice(&rest[..at + 11]);
            defused.extend_from_slice(ZWSP);
            defused.extend_from_slice(&rest[at + 11..at + CONTENT.len()]);
            rest = &rest[at + CONTENT.len()..];
        }
        defused.extend_from_slice(rest);
        out = defused;
    }
    if out == line {
        Cow::Borrowed(line)
    } else {
        Cow::Owned(out)
    }
}

/// `cargo run` and `cargo test` put this workspace's `target/*/deps` on `LD_LIBRARY_PATH`, where
/// the crate's own `dylib` (built with other settings) would shadow the one the cells link
/// against, and their shared objects would fail to load. Other entries (CUDA's, say) stay.
fn drop_workspace_library_paths() {
    let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") else {
        return;
    };
    let target = template::crate_dir().join("target");
    let kept: Vec<PathBuf> = std::env::split_paths(&paths)
        .filter(|p| !p.starts_with(&target))
        .collect();
    match std::env::join_paths(&kept) {
        Ok(joined) if !kept.is_empty() => std::env::set_var("LD_LIBRARY_PATH", joined),
        _ => std::env::remove_var("LD_LIBRARY_PATH"),
    }
}

/// The toolchain this kernel builds cells with (`toolchain.rs`), applied to this process before
/// any thread starts and before a spare's key is computed (a spare and the process that adopts
/// it must agree on it). A pinned toolchain that changed is an error every cell will show.
fn kernel_toolchain() -> Result<toolchain::Toolchain, String> {
    match toolchain::for_kernel() {
        Ok(t) => {
            t.apply();
            Ok(t)
        }
        Err(e) => {
            let e = format!("{e:#}");
            eprintln!("microscope-kernel: {e}");
            Err(e)
        }
    }
}

/// A kernel started cold: no spare took its connection file. It leaves a spare for the next.
fn run(
    connection_file: PathBuf,
    template: Option<PathBuf>,
    features: &str,
    toolchain: Result<toolchain::Toolchain, String>,
) -> anyhow::Result<()> {
    let connection = wire::Connection::read(&connection_file)?;
    let prepared = startup::prepare(template.clone(), features, false, &toolchain)?;
    let (evaluator, lines) =
        kernel::start_evaluator(prepared.preload.clone(), prepared.interrupt_file.clone());
    if let Ok(exe) = std::env::current_exe() {
        spare::spawn_when_quiet(exe, template, features.to_string(), evaluator.state.clone());
    }
    startup::serve_kernel(connection, prepared, evaluator, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_crates_marked_lines_pass_as_displays() {
        let secret = b"\x1b[s3cret]";
        let own = [&secret[..], kernel::DISPLAY_MARKER.as_bytes(), b"{}"].concat();
        assert_eq!(
            &*relay_line(&own, secret),
            [kernel::DISPLAY_MARKER.as_bytes(), b"{}"].concat()
        );
        let forged = [kernel::DISPLAY_MARKER.as_bytes(), b"{}"].concat();
        assert!(!relay_line(&forged, secret).starts_with(kernel::DISPLAY_MARKER.as_bytes()));
        // Nor do the markers of a cell's end: a cell cannot make itself an error, or hide one.
        for marker in [eval::USER_ERROR_MARKER, eval::PANIC_MARKER] {
            assert!(marker.starts_with(MARKER_PREFIX));
            assert!(!relay_line(marker.as_bytes(), secret).starts_with(MARKER_PREFIX.as_bytes()));
        }
        assert!(kernel::DISPLAY_MARKER.starts_with(MARKER_PREFIX));
        let own_block = [&secret[..], b"EVCXR_BEGIN_CONTENT text/html"].concat();
        assert_eq!(
            &*relay_line(&own_block, secret),
            b"EVCXR_BEGIN_CONTENT text/html"
        );
        for forged in [
            &b"EVCXR_BEGIN_CONTENT text/html"[..],
            b"name: x EVCXR_BEGIN_CONTENT text/html",
            b"EVCXR_BEGIN_CONTENT image/svg+xml EVCXR_BEGIN_CONTENT text/html",
        ] {
            let out = relay_line(forged, secret);
            assert!(
                !out.windows(19).any(|w| w == b"EVCXR_BEGIN_CONTENT"),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
        // What evcxr itself writes for a value without a rich display still works.
        assert_eq!(
            &*relay_line(b"EVCXR_BEGIN_CONTENT text/plain", secret),
            b"EVCXR_BEGIN_CONTENT text/plain"
        );
        assert_eq!(&*relay_line(b"plain text", secret), b"plain text");
    }
}
