//! The evaluation thread: owns evcxr's `CommandContext` (which compiles each cell and runs it in
//! a child process that keeps the variables), preloads the microscope crate, and serves
//! execute, complete and inspect requests in order. Cells sent while the preload runs wait for
//! it in the queue.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};

use evcxr::{CommandContext, Error};
use tokio::sync::oneshot;

/// Which stream a line of cell output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A finished execution.
#[derive(Debug)]
pub enum Outcome {
    /// Rich output of the cell's last expression, by MIME type (may be empty).
    Ok(HashMap<String, String>),
    Error {
        ename: String,
        evalue: String,
        traceback: Vec<String>,
    },
}

pub enum Request {
    Execute {
        code: String,
        /// The request's header: the parent of everything the cell prints.
        parent: serde_json::Value,
        reply: oneshot::Sender<Outcome>,
    },
    Complete {
        code: String,
        /// Byte offset.
        cursor: usize,
        reply: oneshot::Sender<(Vec<String>, usize, usize)>,
    },
    Inspect {
        code: String,
        cursor: usize,
        reply: oneshot::Sender<Option<String>>,
    },
}

/// Handle to the evaluation thread.
#[derive(Clone)]
pub struct Evaluator {
    requests: mpsc::Sender<Request>,
    pub state: Arc<Shared>,
}

/// What the kernel's other tasks may look at while a cell runs.
#[derive(Default)]
pub struct Shared {
    /// The child process running the cells, once started (for the interrupt fallback).
    pub child: Mutex<Option<Arc<Mutex<Child>>>>,
    /// Header of the request being executed (parent of its output), `Null` between cells.
    pub parent: Mutex<serde_json::Value>,
    /// Counts finished executions; with `parent` it tells whether a cell is still the same one.
    pub finished: std::sync::atomic::AtomicU64,
    /// The preload is over (whether it worked or not).
    pub preloaded: std::sync::atomic::AtomicBool,
    /// Lines the running cell printed to stderr in the last moments, held back briefly: if the
    /// cell then stops at a `?`, they are its error message and become the `error` output.
    held: Mutex<Vec<(std::time::Instant, String)>>,
    /// The running cell stopped at a `?` (the evaluation process said so); held lines then
    /// stay held until the cell's end, where they become its error message.
    user_error: std::sync::atomic::AtomicBool,
    /// The running cell panicked (the evaluation process said so).
    panicked: std::sync::atomic::AtomicBool,
    /// What the running cell's last panic said on stderr (the line after the one saying where
    /// it panicked).
    panic_message: Mutex<Option<String>>,
    /// The last stderr line said that a thread panicked: the next one is the message.
    panic_follows: std::sync::atomic::AtomicBool,
    /// How many [`END_MARKER`]s have arrived.
    ends: std::sync::atomic::AtomicU64,
}

/// What the evaluation process prints (on its stdout, right after evcxr's own marker) when a
/// `?` in a cell returned an error: see `relay_cell_output` in main.rs.
pub const USER_ERROR_MARKER: &str = "\u{1b}[microscope-user-error]";

/// What the evaluation process prints (on its stdout, right after evcxr's own marker) when a
/// cell panicked. evcxr reports such a cell as a success (it only drops the variables the cell
/// defined); the kernel reports it as an error, so that running a notebook stops there.
pub const PANIC_MARKER: &str = "\u{1b}[microscope-panic]";

/// What the evaluation process prints on its stderr, after the display secret
/// ([`Preload::secret`]), when a cell's code has returned, after everything the cell printed
/// there (see `relay_cell_output` in main.rs). A cell's stderr may end without a newline: the
/// marker then ends that line.
///
/// Why: evcxr reads the process's stderr on a thread of its own and hands the lines on through
/// a channel, so when a cell's execution returns, the last lines it printed to stderr may still
/// be on their way. Under load that took more than the few milliseconds once allowed: CI saw a
/// cell's `eprintln!` arrive after its reply. So the kernel waits for this marker before it
/// replies ([`Shared::wait_for_end`]). stdout needs none: evcxr reads it on the thread that
/// runs the cell, and hands every line on before the execution returns ([`flush_readers`]).
pub const END_MARKER: &str = "\u{1b}[microscope-stderr-end]";

/// The longest wait for the end marker and for the line readers (a cell that closed its own
/// stderr sends no marker).
const END_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long stderr lines are held back before they are shown.
const HOLD: std::time::Duration = std::time::Duration::from_millis(100);

impl Shared {
    /// The message of a cell that stopped at `?`: the stderr lines held since just before.
    /// evcxr reads the evaluation process's stdout and stderr on separate threads, so the
    /// message may arrive a little after the marker: wait for it (briefly).
    fn error_message(&self) -> Vec<String> {
        let start = std::time::Instant::now();
        while self.held.lock().unwrap().is_empty()
            && start.elapsed() < std::time::Duration::from_millis(500)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        self.held
            .lock()
            .unwrap()
            .drain(..)
            .map(|(_, l)| l)
            .collect()
    }

    /// How many end markers have arrived.
    fn ends(&self) -> u64 {
        self.ends.load(Ordering::SeqCst)
    }

    /// Waits until an end marker has arrived since `before` (see [`END_MARKER`]), at most
    /// [`END_WAIT`].
    fn wait_for_end(&self, before: u64) {
        let start = std::time::Instant::now();
        while self.ends() <= before && start.elapsed() < END_WAIT {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Sends held stderr lines: those older than `HOLD`, or all of them.
    fn release(&self, all: bool, on_line: &dyn Fn(&serde_json::Value, Stream, Vec<String>)) {
        let ready: Vec<String> = {
            let mut held = self.held.lock().unwrap();
            let keep = if all {
                0
            } else {
                held.iter()
                    .rev()
                    .take_while(|(t, _)| t.elapsed() < HOLD)
                    .count()
            };
            let n = held.len() - keep;
            held.drain(..n).map(|(_, l)| l).collect()
        };
        if !ready.is_empty() {
            let parent = self.parent.lock().unwrap().clone();
            on_line(&parent, Stream::Stderr, ready);
        }
    }
}

/// How the kernel preloads its crate.
#[derive(Clone, Debug)]
pub struct Preload {
    /// Where the microscope crate's sources are (its Cargo.toml).
    pub crate_dir: PathBuf,
    pub features: Vec<String>,
    /// evcxr optimization level for cells and dependencies.
    pub opt_level: String,
    /// Prebuilt evcxr directory to start from (see `install`).
    pub template: Option<PathBuf>,
    /// This kernel's evcxr directory (`EVCXR_TMPDIR`).
    pub work_dir: PathBuf,
    /// Preload at the lowest CPU priority, on a thread of its own (a spare's, which runs beside
    /// the kernels in use). The evaluation process is started before, at normal priority, so
    /// cells run at normal priority once the spare is adopted.
    pub background: bool,
    /// Directories the evaluation process loads cells' libraries from (`LD_LIBRARY_PATH`): see
    /// `Toolchain::library_path`.
    pub library_path: Vec<PathBuf>,
    /// The lock file the cells' crate graph is built with: the project's `Cargo.lock` for the
    /// template, the template's own for a kernel. evcxr's crate starts with no dependencies (its
    /// first build, `42`, prunes any lock file to nothing), so it is written just before the
    /// preload adds the crate: the same versions as the tests ran and the template holds, never
    /// a fresh resolution against whatever the local index knows.
    pub lockfile: Option<PathBuf>,
    /// Why this kernel cannot build cells at all (its pinned toolchain changed): every cell
    /// answers with this line instead of starting a build.
    pub setup_error: Option<String>,
    /// The display secret the evaluation process has (see `relay_line` in main.rs), empty when
    /// none: it opens the [`END_MARKER`], so that no text a cell prints can pass for one.
    pub secret: String,
}

impl Preload {
    /// The cell that sets the kernel up: fixed linker and optimization level (so a later install
    /// of lld or mold cannot change the build and trigger a rebuild), cargo offline (everything
    /// was fetched when the template was built; no index updates at start), the crate, its
    /// prelude. The crate is also built as a `dylib` (see its Cargo.toml), so every cell links
    /// the same copy of burn's global state (autodiff graph, tensor ids): statically linked, each
    /// cell would carry its own, and tensors made in one cell would collide with the next's.
    pub fn code(&self) -> String {
        let features = if self.features.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = self.features.iter().map(|f| format!("{f:?}")).collect();
            format!(", features = [{}]", quoted.join(", "))
        };
        // Builds use the user's cargo home, not the one this process shows rust-analyzer
        // (crate_graph.rs).
        let cargo_home = crate::crate_graph::user_cargo_home()
            .map(|h| format!(":build_env CARGO_HOME={h}\n"))
            .unwrap_or_default();
        format!(
            "{cargo_home}:linker system\n:opt {}\n:offline 1\n:dep microscope = {{ path = {:?}{features} }}\nuse microscope::prelude::*;\n",
            self.opt_level,
            self.crate_dir.display().to_string(),
        )
    }
}

impl Evaluator {
    /// Starts the thread. `on_line` receives every line the cells print, in order, as they are
    /// printed (several at once when they come faster than they are passed on), with the header
    /// of the request that printed them. Before each cell the interrupt file is
    /// removed, so an interrupt only stops the cell it was meant for.
    pub fn start(
        preload: Preload,
        interrupt_file: PathBuf,
        on_line: impl Fn(&serde_json::Value, Stream, Vec<String>) + Send + Sync + 'static,
    ) -> Evaluator {
        let (tx, rx) = mpsc::channel::<Request>();
        let state = Arc::new(Shared::default());
        let on_line: Forward = Arc::new(on_line);
        let shared = state.clone();
        let forward = on_line.clone();
        let end_marker = format!("{}{END_MARKER}", preload.secret);
        // stderr is held back briefly (see `Shared::held`); stdout goes out at once, after the
        // stderr lines printed before it.
        let sink: LineSink = Arc::new(move |stream, lines| match stream {
            Stream::Stderr => {
                for line in lines {
                    let (line, end) = match line.strip_suffix(&end_marker) {
                        Some(rest) => (rest.to_string(), true),
                        None => (line, false),
                    };
                    if shared.panic_follows.swap(false, Ordering::SeqCst) {
                        *shared.panic_message.lock().unwrap() = Some(line.clone());
                    }
                    // Rust's default panic message: "thread '…' panicked at FILE:LINE:COL:",
                    // then the message on the next line.
                    if line.starts_with("thread '")
                        && line.contains(" panicked at ")
                        && line.ends_with(':')
                    {
                        shared.panic_follows.store(true, Ordering::SeqCst);
                    }
                    // After a complete line the marker is a line of its own: nothing to show.
                    if !(end && line.is_empty()) {
                        shared
                            .held
                            .lock()
                            .unwrap()
                            .push((std::time::Instant::now(), line));
                    }
                    // Counted after the line it ends is held.
                    if end {
                        shared.ends.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            Stream::Stdout => {
                let send = |text: &mut Vec<String>| {
                    if text.is_empty() {
                        return;
                    }
                    if !shared.user_error.load(Ordering::SeqCst) {
                        shared.release(true, &*forward);
                    }
                    let parent = shared.parent.lock().unwrap().clone();
                    forward(&parent, stream, std::mem::take(text))
                };
                let mut text = Vec::new();
                for line in lines {
                    if line == USER_ERROR_MARKER {
                        send(&mut text);
                        shared.user_error.store(true, Ordering::SeqCst)
                    } else if line == PANIC_MARKER {
                        shared.panicked.store(true, Ordering::SeqCst)
                    } else {
                        text.push(line);
                    }
                }
                send(&mut text);
            }
        });
        let shared = state.clone();
        let forward = on_line.clone();
        std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(20));
                if !shared.user_error.load(Ordering::SeqCst) {
                    shared.release(false, &*forward);
                }
            })
            .expect("spawning the stderr thread");
        let sink_for_cells = on_line.clone();
        let shared = state.clone();
        std::thread::Builder::new()
            .name("evcxr".into())
            .spawn(move || run(preload, interrupt_file, rx, shared, sink, sink_for_cells))
            .expect("spawning the evaluation thread");
        Evaluator {
            requests: tx,
            state,
        }
    }

    pub fn send(&self, request: Request) {
        // The thread only stops with the process.
        let _ = self.requests.send(request);
    }
}

type LineSink = Arc<dyn Fn(Stream, Vec<String>) + Send + Sync>;

/// A request to a line reader: answer on this sender once every line received so far has gone
/// to the sink.
type Flush = mpsc::Sender<()>;

/// The most lines passed on at once.
const BATCH: usize = 1000;

/// How long a line waits for more to go on with it: a cell that prints thousands of lines
/// quickly reaches Jupyter in tens of messages a second, not one per line (iopub's queue holds
/// a thousand messages and drops what comes on top).
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// Passes the lines evcxr hands on for one stream to `sink`, until evcxr drops the channel, and
/// answers each [`Flush`] request once the lines already in the channel have gone too. Lines
/// that come within [`GATHER`] of one another go on together, up to [`BATCH`] at once.
fn pass_lines(
    stream: Stream,
    lines: crossbeam_channel::Receiver<String>,
    flush: crossbeam_channel::Receiver<Flush>,
    sink: LineSink,
) {
    loop {
        crossbeam_channel::select! {
            recv(lines) -> line => match line {
                Ok(line) => {
                    let deadline = std::time::Instant::now() + GATHER;
                    let mut batch = vec![line];
                    while batch.len() < BATCH {
                        match lines.recv_deadline(deadline) {
                            Ok(line) => batch.push(line),
                            Err(_) => break,
                        }
                    }
                    sink(stream, batch);
                }
                Err(_) => return,
            },
            recv(flush) -> done => {
                // `select!` picks at random among ready channels: empty this one first.
                loop {
                    let batch: Vec<String> = lines.try_iter().take(BATCH).collect();
                    if batch.is_empty() {
                        break;
                    }
                    sink(stream, batch);
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// Returns once each line reader has passed on every line it had received (see [`pass_lines`]),
/// at most [`END_WAIT`] later.
fn flush_readers(readers: &[crossbeam_channel::Sender<Flush>]) {
    let deadline = std::time::Instant::now() + END_WAIT;
    let (done, answers) = mpsc::channel();
    for reader in readers {
        let _ = reader.send(done.clone());
    }
    drop(done);
    for _ in readers {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if answers.recv_timeout(left).is_err() {
            return;
        }
    }
}

/// Sends lines of a cell's output, with the header of the request that printed them.
type Forward = Arc<dyn Fn(&serde_json::Value, Stream, Vec<String>) + Send + Sync>;

fn run(
    preload: Preload,
    interrupt_file: PathBuf,
    requests: mpsc::Receiver<Request>,
    shared: Arc<Shared>,
    on_line: LineSink,
    forward: Forward,
) {
    let clock = std::time::Instant::now();
    let log = |what: &str| {
        if std::env::var_os("MICROSCOPE_KERNEL_TIMING").is_some() {
            eprintln!(
                "microscope kernel: {what} at {:.2} s",
                clock.elapsed().as_secs_f64()
            );
        }
    };
    if let Some(template) = preload.template.as_ref().filter(|t| t.exists()) {
        if !preload.work_dir.exists() {
            if let Err(e) = crate::template::copy_template(template, &preload.work_dir) {
                on_line(
                    Stream::Stderr,
                    vec![format!("microscope kernel: {e:#}; building from scratch")],
                );
            }
        }
    }
    let started = match &preload.setup_error {
        Some(e) => Err(e.clone()),
        None => start_evcxr(&preload.library_path).map_err(|e| format!("evcxr did not start: {e}")),
    };
    let mut flushes = Vec::new();
    let started = started.map(|(ctx, outputs)| {
        for (stream, rx) in [
            (Stream::Stdout, outputs.stdout),
            (Stream::Stderr, outputs.stderr),
        ] {
            let sink = on_line.clone();
            let (flush, flushed) = crossbeam_channel::unbounded();
            flushes.push(flush);
            std::thread::spawn(move || pass_lines(stream, rx, flushed, sink));
        }
        ctx
    });
    let mut start_error = None;
    let mut ctx = match started {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            on_line(Stream::Stderr, vec![format!("microscope kernel: {e}")]);
            start_error = Some(e);
            None
        }
    };
    log("evcxr started");
    let timing = std::env::var_os("MICROSCOPE_KERNEL_TIMING").is_some();
    let mut preload_error = None;
    if let Some(c) = ctx.as_mut() {
        *shared.child.lock().unwrap() = Some(c.process_handle());
        if timing {
            let _ = c.execute(":timing");
        }
        preload_error = if preload.background {
            std::thread::scope(|s| {
                s.spawn(|| {
                    lowest_priority();
                    preload_cells(c, &preload)
                })
                .join()
                .unwrap_or_else(|_| Some("preloading the microscope crate panicked".into()))
            })
        } else {
            preload_cells(c, &preload)
        };
    }
    shared.preloaded.store(true, Ordering::SeqCst);
    log("preload done");
    for request in requests {
        match request {
            Request::Execute {
                code,
                parent,
                reply,
            } => {
                let _ = std::fs::remove_file(&interrupt_file);
                let ends = shared.ends();
                shared.release(true, &*forward);
                shared.user_error.store(false, Ordering::SeqCst);
                shared.panicked.store(false, Ordering::SeqCst);
                *shared.panic_message.lock().unwrap() = None;
                shared.panic_follows.store(false, Ordering::SeqCst);
                *shared.parent.lock().unwrap() = parent;
                // Whether the evaluation process ran the cell's code (to its end, a panic or a
                // `?` included): then the end marker follows its stderr.
                let mut ran = false;
                let outcome = match (&mut ctx, &preload_error) {
                    (_, Some(e)) => error_outcome("PreloadError", e.clone()),
                    (None, None) => error_outcome(
                        "KernelError",
                        start_error
                            .clone()
                            .unwrap_or_else(|| "evcxr did not start".into()),
                    ),
                    (Some(c), None) => {
                        let result = c.execute(&code);
                        *shared.child.lock().unwrap() = Some(c.process_handle());
                        match result {
                            Ok(out) => {
                                log_phases(&out);
                                // evcxr runs the code right after this phase, once; a command
                                // (`:vars`) or a cell with nothing to run has no such phase.
                                ran = out.phases.iter().any(|p| p.name == "Final compile");
                                Outcome::Ok(out.content_by_mime_type)
                            }
                            Err(e) => {
                                ran = matches!(e, Error::TypeRedefinedVariablesLost(_));
                                outcome_of(e)
                            }
                        }
                    }
                };
                // Outputs precede the result. A cell whose code ran has its last stderr line
                // followed by the end marker: wait for that. Then every line evcxr has handed
                // on is passed to the sink (for a process that died, evcxr has read its stderr
                // to the end).
                if ran {
                    shared.wait_for_end(ends);
                }
                flush_readers(&flushes);
                // A cell that stopped at `?` is an error, whose message is what it printed to
                // stderr just before (evcxr prints the error there).
                let outcome = match outcome {
                    Outcome::Ok(_) if shared.user_error.load(Ordering::SeqCst) => {
                        let lines = shared.error_message();
                        // The message may quote a model file's strings: terminal control
                        // sequences in it are shown, not obeyed, by the front end.
                        let text = visible_controls(&lines.join("\n"));
                        let evalue = if text.trim().is_empty() {
                            "the cell stopped at `?` with an error".to_string()
                        } else {
                            text
                        };
                        Outcome::Error {
                            ename: "Error".into(),
                            traceback: vec![format!("Error: {evalue}")],
                            evalue,
                        }
                    }
                    Outcome::Ok(_) if shared.panicked.load(Ordering::SeqCst) => {
                        let message = shared.panic_message.lock().unwrap().take();
                        // Shown, not obeyed, as above.
                        let evalue =
                            visible_controls(message.as_deref().unwrap_or("the cell panicked"));
                        Outcome::Error {
                            ename: "Panic".into(),
                            traceback: vec![
                                format!("panic: {evalue}"),
                                "(the panic's whole report is above, on stderr; variables this \
                                 cell defined are lost, earlier ones are kept)"
                                    .into(),
                            ],
                            evalue,
                        }
                    }
                    outcome => outcome,
                };
                shared.user_error.store(false, Ordering::SeqCst);
                shared.panicked.store(false, Ordering::SeqCst);
                shared.release(true, &*forward);
                *shared.parent.lock().unwrap() = serde_json::Value::Null;
                shared
                    .finished
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = reply.send(outcome);
            }
            Request::Complete {
                code,
                cursor,
                reply,
            } => {
                let result = ctx
                    .as_mut()
                    .and_then(|c| c.completions(&code, cursor).ok())
                    .map(|c| {
                        let matches = c.completions.into_iter().map(|m| m.code).collect();
                        (matches, c.start_offset, c.end_offset)
                    })
                    .unwrap_or((Vec::new(), cursor, cursor));
                let _ = reply.send(result);
            }
            Request::Inspect {
                code,
                cursor,
                reply,
            } => {
                let text = ctx
                    .as_mut()
                    .and_then(|c| c.hover_at(&code, cursor).ok())
                    .map(|(signature, docs)| {
                        if docs.is_empty() {
                            signature
                        } else {
                            format!("{signature}\n\n{docs}")
                        }
                    })
                    .filter(|t| !t.trim().is_empty());
                let _ = reply.send(text);
            }
        }
    }
}

/// The preload cell, then the warm-up: evcxr infers variable types with rust-analyzer, which
/// indexes the whole dependency graph the first time it looks at a cell using the crate (tens
/// of seconds). Do that here, in the background, rather than in the user's first cell.
fn preload_cells(c: &mut CommandContext, preload: &Preload) -> Option<String> {
    if let Err(e) = write_lockfile(preload) {
        return Some(format!("preloading the microscope crate failed: {e:#}"));
    }
    match c.execute(&preload.code()) {
        Ok(out) => log_phases(&out),
        Err(e) => return Some(format!("preloading the microscope crate failed: {e}")),
    }
    if let Ok(out) = c.execute(WARM_UP) {
        log_phases(&out);
    }
    None
}

/// Nice 19 for the calling thread (on Linux a thread's priority is its own) and for the
/// processes it starts (cargo, rustc).
fn lowest_priority() {
    // SAFETY: plain syscalls on the calling thread; failure leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// With `MICROSCOPE_KERNEL_TIMING` set, evcxr's per-phase timings go to the kernel's stderr.
fn log_phases(out: &evcxr::EvalOutputs) {
    if std::env::var_os("MICROSCOPE_KERNEL_TIMING").is_none() {
        return;
    }
    for p in &out.phases {
        eprintln!(
            "microscope kernel: phase {} {:.2} s",
            p.name,
            p.duration.as_secs_f64()
        );
    }
}

/// The cell run at install time after the preload: it compiles and links a cell that uses the
/// crate, so the template holds every artifact a first widget cell needs.
const WARM_UP: &str = "let microscope_warm_up = zoo::fashion()?.graph()?.to_html().len();";

/// Copies `preload.lockfile` into the evcxr crate (see `Preload::lockfile`).
fn write_lockfile(preload: &Preload) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(lock) = &preload.lockfile {
        let dest = preload.work_dir.join("Cargo.lock");
        std::fs::copy(lock, &dest)
            .with_context(|| format!("copying {} to {}", lock.display(), dest.display()))?;
    }
    Ok(())
}

/// evcxr's context, with its evaluation process (this binary) started with the library path
/// its cells need (see `Toolchain::library_path`). The path stays with the command, so a
/// restarted evaluation process has it too.
fn start_evcxr(
    library_path: &[PathBuf],
) -> Result<(CommandContext, evcxr::EvalContextOutputs), Error> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.env(
        "LD_LIBRARY_PATH",
        crate::toolchain::prepend_paths(library_path, "LD_LIBRARY_PATH"),
    );
    crate::crate_graph::restore(&mut command);
    let (eval, outputs) = evcxr::EvalContext::with_subprocess_command(command)?;
    Ok((CommandContext::with_eval_context(eval), outputs))
}

/// Builds the template: preload and warm-up, printing what the compiler prints.
pub fn prebuild(preload: &Preload) -> anyhow::Result<()> {
    let (mut ctx, outputs) =
        start_evcxr(&preload.library_path).map_err(|e| anyhow::anyhow!("starting evcxr: {e}"))?;
    for rx in [outputs.stdout, outputs.stderr] {
        let end_marker = format!("{}{END_MARKER}", preload.secret);
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                match line.strip_suffix(&end_marker) {
                    Some("") => {}
                    Some(rest) => eprintln!("{rest}"),
                    None => eprintln!("{line}"),
                }
            }
        });
    }
    write_lockfile(preload)?;
    for code in [preload.code(), WARM_UP.to_string()] {
        ctx.execute(&code)
            .map_err(|e| anyhow::anyhow!("prebuild cell `{}` failed: {e}", code.trim()))?;
    }
    Ok(())
}

/// `text` with control characters other than newline and tab written as `\u{..}` escapes.
fn visible_controls(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let shown: Vec<char> = if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().collect()
            } else {
                vec![c]
            };
            shown
        })
        .collect()
}

fn error_outcome(ename: &str, evalue: String) -> Outcome {
    Outcome::Error {
        ename: ename.into(),
        traceback: evalue.lines().map(str::to_string).collect(),
        evalue,
    }
}

/// An evcxr error as a Jupyter error: compiler messages keep their rendering (with the
/// offending code and the compiler's explanation).
fn outcome_of(e: Error) -> Outcome {
    match e {
        Error::CompilationErrors(errors) => {
            let evalue = errors
                .first()
                .map(|e| e.message())
                .unwrap_or_else(|| "compilation failed".into());
            let traceback = errors
                .iter()
                .flat_map(|e| {
                    let text = e.rendered();
                    let text = if text.trim().is_empty() {
                        e.message()
                    } else {
                        text
                    };
                    text.lines().map(str::to_string).collect::<Vec<_>>()
                })
                .collect();
            Outcome::Error {
                ename: "CompilationError".into(),
                evalue,
                traceback,
            }
        }
        Error::SubprocessTerminated(message) => error_outcome(
            "EvaluationProcessRestarted",
            format!(
                "{message}\nThe evaluation process stopped; variables defined so far are lost."
            ),
        ),
        other => error_outcome("Error", other.to_string()),
    }
}
