//! The kernel: binds the five Jupyter sockets and answers requests. Shell requests are handled
//! as they arrive (kernel_info at once, even while the preload compiles); executions queue on the
//! evaluation thread in order. Control (interrupt, shutdown) runs beside it. Everything a cell
//! prints goes out on iopub as it is printed: plain lines as `stream`, display lines from the
//! microscope crate as `display_data` / `update_display_data`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::bridge::{self, Bridge, Incoming};
use crate::eval::{Evaluator, Outcome, Preload, Request, Stream};
use crate::transport::{Outbox, Sockets};
use crate::wire::{header, Connection, Message, Signer, PROTOCOL_VERSION};

/// Prefix of a display line printed by the microscope crate (`microscope::widget::KERNEL_MARKER`).
pub const DISPLAY_MARKER: &str = "\u{1b}[microscope-display]";

/// How long an interrupted cell may take to stop by itself before its process is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);

pub struct Config {
    pub connection: Connection,
    pub interrupt_file: PathBuf,
    /// This kernel's own directory (removed at shutdown).
    pub work_dir: PathBuf,
    /// The socket of the bridge to the evaluation process, and the secret it must present.
    pub bridge_socket: PathBuf,
    pub bridge_token: String,
}

/// This kernel's sockets, here for [`shutdown`], which may come from any thread.
static SOCKETS: Sockets = Sockets::new();

/// How long [`shutdown`] waits for libzmq to close the sockets.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Outgoing iopub traffic, in order.
#[derive(Clone)]
struct Iopub {
    socket: Outbox,
    signer: Signer,
    session: String,
}

impl Iopub {
    fn send(&self, parent: &Value, msg_type: &str, content: Value) {
        let topic = format!("kernel.microscope.{msg_type}");
        let message = Message {
            identities: vec![Bytes::from(topic)],
            header: header(msg_type, &self.session),
            parent_header: if parent.is_null() {
                json!({})
            } else {
                parent.clone()
            },
            metadata: json!({}),
            content,
            buffers: Vec::new(),
        };
        self.socket.send(message.frames(&self.signer));
    }

    fn status(&self, parent: &Value, state: &str) {
        self.send(parent, "status", json!({ "execution_state": state }));
    }
}

/// Lines a cell printed, as the iopub messages they become: a display line (see
/// [`display_message`]) is a message of its own, and the text lines around display lines go
/// together as one `stream` message, up to [`STREAM_CHUNK`] bytes each. So a cell that prints
/// thousands of lines quickly sends a few messages, not one per line: iopub drops the messages
/// its queue cannot hold, and these would be lost output.
fn line_messages(stream: Stream, lines: &[String]) -> Vec<(String, Value)> {
    let name = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    let mut messages = Vec::new();
    let mut text = String::new();
    let send_text = |text: &mut String, messages: &mut Vec<(String, Value)>| {
        if !text.is_empty() {
            let text = std::mem::take(text);
            messages.push(("stream".into(), json!({ "name": name, "text": text })));
        }
    };
    for line in lines {
        if let Some(display) = display_message(stream, line) {
            send_text(&mut text, &mut messages);
            messages.push(display);
            continue;
        }
        text.push_str(line);
        text.push('\n');
        if text.len() >= STREAM_CHUNK {
            send_text(&mut text, &mut messages);
        }
    }
    send_text(&mut text, &mut messages);
    messages
}

/// The text that one `stream` message carries at most, give or take a line.
const STREAM_CHUNK: usize = 64 * 1024;

/// A line that is a display, as the iopub message it becomes. The evaluation process passes a
/// marked line on only when the crate wrote it (see `relay_cell_output` in main.rs); stderr is
/// not relayed, so it is never a display.
fn display_message(stream: Stream, line: &str) -> Option<(String, Value)> {
    let json_text = match stream {
        Stream::Stdout => line.strip_prefix(DISPLAY_MARKER)?,
        Stream::Stderr => return None,
    };
    let v = serde_json::from_str::<Value>(json_text).ok()?;
    let update = v["update"].as_bool().unwrap_or(false);
    let id = v["display_id"].as_str().map(str::to_string);
    let mut content = json!({ "data": v["data"], "metadata": {}, "transient": {} });
    if let Some(id) = &id {
        content["transient"] = json!({ "display_id": id });
    }
    let kind = if update && id.is_some() {
        "update_display_data"
    } else {
        "display_data"
    };
    Some((kind.into(), content))
}

/// Like ipykernel: when Jupyter says it watches (`JPY_PARENT_PID` is set), calls `gone` once
/// the process that started this one has exited. The parent is the one this process has now (a
/// wrapper script in kernel.json would be that parent).
pub fn when_parent_gone(gone: impl FnOnce() + Send + 'static) {
    if std::env::var_os("JPY_PARENT_PID").is_none() {
        return;
    }
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    std::thread::spawn(move || {
        // SAFETY: as above.
        while unsafe { libc::getppid() } == parent {
            std::thread::sleep(Duration::from_secs(1));
        }
        gone();
    });
}

/// Where the evaluation thread's lines go: the kernel's iopub once it serves, stderr before
/// (a spare's preload).
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Option<Iopub>>>);

/// Starts the evaluation thread (and with it the preload).
pub fn start_evaluator(preload: Preload, interrupt_file: PathBuf) -> (Evaluator, Lines) {
    let lines = Lines::default();
    let sink = lines.clone();
    let evaluator =
        Evaluator::start(
            preload,
            interrupt_file,
            move |parent, stream, lines| match sink.0.lock().unwrap().as_ref() {
                Some(iopub) => {
                    for (kind, content) in line_messages(stream, &lines) {
                        iopub.send(parent, &kind, content);
                    }
                }
                None => {
                    for line in lines {
                        eprintln!("{line}");
                    }
                }
            },
        );
    (evaluator, lines)
}

pub async fn serve(config: Config, evaluator: Evaluator, lines: Lines) -> Result<()> {
    let conn = &config.connection;
    let signer = Signer::new(&conn.key);
    let session = uuid::Uuid::new_v4().to_string();
    let mut shell = SOCKETS.router(&conn.endpoint(conn.shell_port)).await?;
    let mut control = SOCKETS.router(&conn.endpoint(conn.control_port)).await?;
    // Bound and kept open, its messages dropped: input requests are not supported.
    SOCKETS.router(&conn.endpoint(conn.stdin_port)).await?;
    let iopub_socket = SOCKETS.publisher(&conn.endpoint(conn.iopub_port)).await?;
    SOCKETS.echo(&conn.endpoint(conn.hb_port)).await?;

    let iopub = Iopub {
        socket: iopub_socket,
        signer: signer.clone(),
        session: session.clone(),
    };
    iopub.status(&Value::Null, "starting");
    *lines.0.lock().unwrap() = Some(iopub.clone());

    // Shut down rather than live on as an orphan holding its evaluation process, its memory
    // and its build directory.
    let (orphan_evaluator, work_dir) = (evaluator.clone(), config.work_dir.clone());
    when_parent_gone(move || shutdown(&orphan_evaluator, &work_dir));

    let comm_sink = iopub.clone();
    let bridge = Bridge::listen(
        &config.bridge_socket,
        config.bridge_token.clone(),
        move |m: Incoming| {
            comm_sink.send(
                &m.parent,
                "comm_msg",
                json!({ "comm_id": m.comm, "data": m.data }),
            )
        },
    )?;

    // Control: kernel_info, interrupt, shutdown.
    let control_evaluator = evaluator.clone();
    let control_signer = signer.clone();
    let control_iopub = iopub.clone();
    let interrupt_file = config.interrupt_file.clone();
    let work_dir = config.work_dir.clone();
    tokio::spawn(async move {
        while let Some(frames) = control.incoming.recv().await {
            let Ok(request) = Message::parse(frames, &control_signer) else {
                continue;
            };
            control_iopub.status(&request.header, "busy");
            let reply = match request.msg_type() {
                "kernel_info_request" => {
                    Message::reply_to(&request, "kernel_info_reply", kernel_info())
                }
                "interrupt_request" => {
                    interrupt(&control_evaluator, &interrupt_file);
                    Message::reply_to(&request, "interrupt_reply", json!({ "status": "ok" }))
                }
                "shutdown_request" => {
                    let restart = request.content["restart"].as_bool().unwrap_or(false);
                    let reply = Message::reply_to(
                        &request,
                        "shutdown_reply",
                        json!({ "status": "ok", "restart": restart }),
                    );
                    control.outgoing.send(reply.frames(&control_signer));
                    control_iopub.status(&request.header, "idle");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    shutdown(&control_evaluator, &work_dir);
                }
                // Not something this kernel does: say so, rather than claim it was done.
                other => match other.strip_suffix("_request") {
                    Some(kind) => Message::reply_to(
                        &request,
                        &format!("{kind}_reply"),
                        json!({
                            "status": "error",
                            "ename": "UnknownRequest",
                            "evalue": format!("microscope-kernel does not handle {other} on the control channel"),
                            "traceback": [],
                        }),
                    ),
                    None => {
                        control_iopub.status(&request.header, "idle");
                        continue;
                    }
                },
            };
            control.outgoing.send(reply.frames(&control_signer));
            control_iopub.status(&request.header, "idle");
        }
    });

    let execution_count = AtomicU64::new(0);
    loop {
        let frames = shell.incoming.recv().await.context("shell socket closed")?;
        let request = match Message::parse(frames, &signer) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("microscope kernel: dropped a shell message: {e}");
                continue;
            }
        };
        iopub.status(&request.header, "busy");
        // Routed here, in arrival order: what needs the evaluation thread is queued on it now,
        // so executions run in the order they came, and only waiting for them is left to a task.
        match route(&request, &iopub, &evaluator, &bridge, &execution_count) {
            Route::Now(reply) => {
                shell.outgoing.send(reply.frames(&signer));
                iopub.status(&request.header, "idle");
            }
            Route::NoReply => iopub.status(&request.header, "idle"),
            Route::Queued(pending) => {
                let (shell_out, iopub, signer) =
                    (shell.outgoing.clone(), iopub.clone(), signer.clone());
                tokio::spawn(async move {
                    let reply = pending.reply(&request, &iopub).await;
                    shell_out.send(reply.frames(&signer));
                    iopub.status(&request.header, "idle");
                });
            }
        }
    }
}

/// Where a shell request goes.
enum Route {
    /// Answered at once.
    Now(Message),
    /// A comm message: relayed over the bridge, no reply.
    NoReply,
    /// Queued on the evaluation thread; the reply waits for it.
    Queued(Pending),
}

/// A request the evaluation thread has in its queue.
enum Pending {
    Execute {
        count: u64,
        silent: bool,
        outcome: oneshot::Receiver<Outcome>,
    },
    Complete {
        code: String,
        cursor: usize,
        result: oneshot::Receiver<(Vec<String>, usize, usize)>,
    },
    Inspect {
        text: oneshot::Receiver<Option<String>>,
    },
}

/// Routes one shell request: answers what needs nothing else, relays comm messages, and queues
/// on the evaluation thread what needs it.
fn route(
    request: &Message,
    iopub: &Iopub,
    evaluator: &Evaluator,
    bridge: &Bridge,
    count: &AtomicU64,
) -> Route {
    let c = &request.content;
    if let Some(kind) = request.msg_type().strip_prefix("comm_") {
        if kind != "info_request" {
            comm(kind, request, iopub, bridge);
            return Route::NoReply;
        }
    }
    let code = || c["code"].as_str().unwrap_or("").to_string();
    let cursor = |code: &str| byte_offset(code, c["cursor_pos"].as_u64().unwrap_or(0) as usize);
    Route::Now(match request.msg_type() {
        "kernel_info_request" => Message::reply_to(request, "kernel_info_reply", kernel_info()),
        "execute_request" => {
            let code = code();
            let silent = c["silent"].as_bool().unwrap_or(false);
            let store = c["store_history"].as_bool().unwrap_or(true) && !silent;
            let n = if store {
                count.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                count.load(Ordering::SeqCst)
            };
            if !silent {
                iopub.send(
                    &request.header,
                    "execute_input",
                    json!({ "code": code, "execution_count": n }),
                );
            }
            let (tx, outcome) = oneshot::channel();
            evaluator.send(Request::Execute {
                code,
                parent: request.header.clone(),
                reply: tx,
            });
            return Route::Queued(Pending::Execute {
                count: n,
                silent,
                outcome,
            });
        }
        "complete_request" => {
            let code = code();
            let cursor = cursor(&code);
            let (tx, result) = oneshot::channel();
            evaluator.send(Request::Complete {
                code: code.clone(),
                cursor,
                reply: tx,
            });
            return Route::Queued(Pending::Complete {
                code,
                cursor,
                result,
            });
        }
        "inspect_request" => {
            let code = code();
            let cursor = cursor(&code);
            let (tx, text) = oneshot::channel();
            evaluator.send(Request::Inspect {
                code,
                cursor,
                reply: tx,
            });
            return Route::Queued(Pending::Inspect { text });
        }
        "is_complete_request" => {
            Message::reply_to(request, "is_complete_reply", json!({ "status": "unknown" }))
        }
        "history_request" => Message::reply_to(
            request,
            "history_reply",
            json!({ "status": "ok", "history": [] }),
        ),
        "comm_info_request" => {
            let wanted = c["target_name"].as_str().unwrap_or(bridge::TARGET);
            let comms: serde_json::Map<String, Value> = if wanted == bridge::TARGET {
                bridge
                    .comms()
                    .into_iter()
                    .map(|id| (id, json!({ "target_name": bridge::TARGET })))
                    .collect()
            } else {
                serde_json::Map::new()
            };
            Message::reply_to(
                request,
                "comm_info_reply",
                json!({ "status": "ok", "comms": comms }),
            )
        }
        other => {
            let kind = other
                .strip_suffix("_request")
                .map(|k| format!("{k}_reply"))
                .unwrap_or_else(|| "error_reply".into());
            Message::reply_to(
                request,
                &kind,
                json!({ "status": "error", "ename": "NotSupported", "evalue": format!("{other} is not supported"), "traceback": [] }),
            )
        }
    })
}

impl Pending {
    /// Waits for the evaluation thread, then makes the reply (and, for a cell, its result or
    /// error on iopub).
    async fn reply(self, request: &Message, iopub: &Iopub) -> Message {
        match self {
            Pending::Execute {
                count: n,
                silent,
                outcome,
            } => match outcome.await.unwrap_or(Outcome::Error {
                ename: "KernelError".into(),
                evalue: "the evaluation thread stopped".into(),
                traceback: vec![],
            }) {
                Outcome::Ok(data) => {
                    if !data.is_empty() && !silent {
                        iopub.send(
                            &request.header,
                            "execute_result",
                            json!({ "execution_count": n, "data": data, "metadata": {} }),
                        );
                    }
                    Message::reply_to(
                        request,
                        "execute_reply",
                        json!({ "status": "ok", "execution_count": n, "user_expressions": {}, "payload": [] }),
                    )
                }
                Outcome::Error {
                    ename,
                    evalue,
                    traceback,
                } => {
                    let content =
                        json!({ "ename": ename, "evalue": evalue, "traceback": traceback });
                    iopub.send(&request.header, "error", content.clone());
                    let mut reply = content;
                    reply["status"] = json!("error");
                    reply["execution_count"] = json!(n);
                    Message::reply_to(request, "execute_reply", reply)
                }
            },
            Pending::Complete {
                code,
                cursor,
                result,
            } => {
                let (matches, start, end) = result.await.unwrap_or((vec![], cursor, cursor));
                Message::reply_to(
                    request,
                    "complete_reply",
                    json!({
                        "status": "ok",
                        "matches": matches,
                        "cursor_start": char_offset(&code, start),
                        "cursor_end": char_offset(&code, end),
                        "metadata": {},
                    }),
                )
            }
            Pending::Inspect { text } => {
                let text = text.await.ok().flatten();
                Message::reply_to(
                    request,
                    "inspect_reply",
                    json!({
                        "status": "ok",
                        "found": text.is_some(),
                        "data": text.map(|t| json!({ "text/plain": t })).unwrap_or(json!({})),
                        "metadata": {},
                    }),
                )
            }
        }
    }
}

/// `comm_open`, `comm_msg`, `comm_close` from the frontend. Comms to the `microscope` target go
/// over the bridge; a comm to any other target is closed at once, as the protocol asks.
fn comm(kind: &str, request: &Message, iopub: &Iopub, bridge: &Bridge) {
    let c = &request.content;
    let Some(id) = c["comm_id"].as_str() else {
        return;
    };
    let data = &c["data"];
    match kind {
        "open" if c["target_name"] == bridge::TARGET => {
            if let Some(answer) = bridge.open(id, &request.header, data) {
                iopub.send(
                    &request.header,
                    "comm_msg",
                    json!({ "comm_id": id, "data": answer }),
                );
            }
        }
        "open" => iopub.send(
            &request.header,
            "comm_close",
            json!({ "comm_id": id, "data": {} }),
        ),
        "msg" => bridge.message(id, &request.header, data),
        "close" => bridge.close(id),
        _ => {}
    }
}

fn kernel_info() -> Value {
    json!({
        "status": "ok",
        "protocol_version": PROTOCOL_VERSION,
        "implementation": "microscope-kernel",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {
            "name": "rust",
            "version": "",
            "mimetype": "text/rust",
            "file_extension": ".rs",
            "pygments_lexer": "rust",
            "codemirror_mode": "rust",
        },
        "banner": "microscope: look inside vision neural networks (Rust, evcxr)",
        "help_links": [],
    })
}

/// Asks the running cell to stop: microscope computations check the interrupt file every step
/// and return an error, keeping the process and its variables. A cell that does not stop within
/// the grace period (code that never checks) has its process killed, as evcxr does.
fn interrupt(evaluator: &Evaluator, file: &PathBuf) {
    let state = evaluator.state.clone();
    if state.parent.lock().unwrap().is_null() {
        return;
    }
    let _ = std::fs::write(file, b"interrupt");
    let generation = state.finished.load(Ordering::SeqCst);
    std::thread::spawn(move || {
        std::thread::sleep(INTERRUPT_GRACE);
        if state.finished.load(Ordering::SeqCst) == generation
            && !state.parent.lock().unwrap().is_null()
        {
            if let Some(child) = state.child.lock().unwrap().as_ref() {
                let _ = child.lock().unwrap().kill();
            }
        }
    });
}

/// Stops the evaluation process, exits. The kernel's directory (a copy of the template) is
/// removed by a process of its own, so that the ports are free at once for the kernel after
/// this one (a restart reuses them); one left behind is removed by the next kernel's start.
pub fn shutdown(evaluator: &Evaluator, work_dir: &std::path::Path) -> ! {
    // Held until the process exits: a second shutdown (the parent gone during a shutdown
    // request) must not close files under libzmq while the first one is closing its sockets.
    static ONCE: Mutex<()> = Mutex::new(());
    let _once = ONCE.lock();
    // A poisoned lock still holds the child: kill it all the same.
    let child = evaluator
        .state
        .child
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(child) = child.as_ref() {
        let _ = child.lock().unwrap_or_else(|e| e.into_inner()).kill();
    }
    // libzmq closes its own connections and listeners; the fds it uses must not be closed under
    // it (its threads abort on a failed close), so the others are closed only once it is done.
    if SOCKETS.close(CLOSE_WAIT) {
        close_sockets();
    }
    let removing = std::process::Command::new("rm")
        .arg("-rf")
        .arg(work_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if removing.is_err() {
        let _ = std::fs::remove_dir_all(work_dir);
    }
    std::process::exit(0)
}

/// Closes every socket of this process now (the bridge's and a spare's: the Jupyter sockets are
/// closed by then). Exiting frees the process's memory (gigabytes for a kernel) before the OS
/// closes its files, which kept a kernel's connections open for a while after it decided to go: when Jupyter killed the stand-in of an adopted spare (spare.rs) and
/// started the next kernel, the client's first request still reached this one and was lost.
fn close_sockets() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<libc::c_int> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        // SAFETY: fstat writes into a zeroed stat it is given; shutdown and close take any fd
        // (an fd closed meanwhile only makes them fail). Nothing uses these sockets after this:
        // the process exits next.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                libc::shutdown(fd, libc::SHUT_RDWR);
                libc::close(fd);
            }
        }
    }
}

/// Jupyter counts cursor positions in Unicode code points; evcxr in bytes.
fn byte_offset(code: &str, chars: usize) -> usize {
    code.char_indices()
        .nth(chars)
        .map_or(code.len(), |(b, _)| b)
}

fn char_offset(code: &str, bytes: usize) -> usize {
    code[..bytes.min(code.len())].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lines_become_display_messages_and_text_lines_go_together() {
        let display = format!(
            "{DISPLAY_MARKER}{}",
            json!({"data": {"text/plain": "x"}, "display_id": "d1", "update": true})
        );
        let lines: Vec<String> = ["a", "b", &display, "c"].map(String::from).into();
        let messages = line_messages(Stream::Stdout, &lines);
        let kinds: Vec<&str> = messages.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["stream", "update_display_data", "stream"]);
        assert_eq!(messages[0].1["text"], "a\nb\n");
        assert_eq!(messages[0].1["name"], "stdout");
        assert_eq!(messages[1].1["transient"]["display_id"], "d1");
        assert_eq!(messages[1].1["data"]["text/plain"], "x");
        assert_eq!(messages[2].1["text"], "c\n");

        let messages = line_messages(Stream::Stderr, &lines);
        assert_eq!(messages.len(), 1, "stderr is never a display");
        assert_eq!(messages[0].1["name"], "stderr");
        assert_eq!(messages[0].1["text"], format!("a\nb\n{display}\nc\n"));

        // Many lines: a few messages, each under the chunk size give or take a line, and
        // nothing lost.
        let many: Vec<String> = (0..20_000).map(|i| format!("line {i}")).collect();
        let messages = line_messages(Stream::Stderr, &many);
        assert!(
            messages.len() > 1 && messages.len() < 10,
            "{}",
            messages.len()
        );
        let text: String = messages
            .iter()
            .map(|(_, c)| c["text"].as_str().unwrap())
            .inspect(|t| assert!(t.len() < STREAM_CHUNK + 20))
            .collect();
        assert_eq!(text, many.join("\n") + "\n");
    }

    #[test]
    fn cursor_offsets_convert_between_chars_and_bytes() {
        let code = "let é = 1; x";
        assert_eq!(byte_offset(code, 5), 6);
        assert_eq!(char_offset(code, 6), 5);
        assert_eq!(byte_offset(code, 100), code.len());
    }

    #[test]
    fn the_marker_is_the_one_the_crate_prints() {
        assert_eq!(DISPLAY_MARKER, microscope::widget::KERNEL_MARKER);
    }
}
