//! Live widgets: a widget displayed under the microscope kernel can ask this process (where the
//! user's model lives) to compute what it does not show yet, and receives the results while
//! they are computed.
//!
//! The kernel opens a local channel for this process: a Unix socket in the kernel's private
//! directory, named by `MICROSCOPE_BRIDGE`, with a secret (`MICROSCOPE_BRIDGE_TOKEN`) that this
//! process sends first. The kernel relays Jupyter comm messages (target `microscope`) over it
//! as JSON lines and knows nothing of their content:
//!
//! - kernel → here: `{"comm": ID, "open": DATA}`, `{"comm": ID, "msg": DATA}`,
//!   `{"comm": ID, "close": true}`;
//! - here → kernel: `{"comm": ID, "msg": DATA}`.
//!
//! A widget registers what it came from (its layer and settings, as an [`Answer`] implemented
//! in the widget's own file) when it is made, and gets a [`Live`] handle into its props. Its comm
//! opens with `{session, widget}`; requests are `{request: N, op, ...}` and are answered by
//! [`Reply`] messages: `progress`, results, then `done`, `cancelled` or `error`, each carrying
//! `request: N`. Requests run one at a time on a background thread, so
//! cells keep running; a newer request on a comm, `{op: "cancel"}` and closing the comm all
//! cancel the comm's running request (checked at every optimization step). Results go through
//! the same technique cache as cells.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The variable naming the kernel's socket.
pub const BRIDGE_ENV: &str = "MICROSCOPE_BRIDGE";
/// The variable holding the secret this process presents on that socket.
pub const TOKEN_ENV: &str = "MICROSCOPE_BRIDGE_TOKEN";

/// What a widget's props carry to reach this process: the process (`session`, so a widget from
/// before a kernel restart knows it is stale) and what the widget was made from (`widget`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Live {
    pub session: String,
    pub widget: String,
}

/// What a live widget was made from, answering the requests of its comm. Each live widget
/// implements it in its own file; this module only relays.
pub(crate) trait Answer: Send + Sync {
    /// Computes what `request` (`{op, ...}`) asks, handing each message to `reply` as soon as it
    /// is ready; `cancel` is set when the widget no longer wants it (the techniques check it at
    /// every step, through [`crate::interrupt::with_cancel`]).
    fn answer(&self, request: &Value, cancel: &AtomicBool, reply: &dyn Fn(Reply)) -> Result<()>;
}

/// Every message a live widget receives: the one declaration of the protocol's `kind`s that
/// widgets/live.js and the components match on. Results carry their widget's own serialized
/// types.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The answer to a comm's open: whether this process knows the widget.
    Hello {
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// How far a request is; `fraction` is null while unknown.
    Progress {
        fraction: Option<f64>,
        label: String,
    },
    /// A gallery's finished cells (`GalleryUnit`s).
    Units {
        units: Value,
    },
    /// One computed tab of a unit's view.
    Tab {
        unit: usize,
        tab: Value,
    },
    /// A new live gallery, made for a layer graph.
    Gallery {
        gallery: Value,
    },
    Done,
    Cancelled,
    Error {
        message: String,
    },
}

impl Reply {
    /// A result message of a widget's own serializable type: `make` receives it as JSON.
    pub(crate) fn with(value: impl Serialize, make: impl FnOnce(Value) -> Reply) -> Reply {
        match serde_json::to_value(value) {
            Ok(v) => make(v),
            Err(e) => Reply::Error {
                message: format!("internal error: the result does not serialize: {e}"),
            },
        }
    }

    fn is_end(&self) -> bool {
        matches!(self, Reply::Done | Reply::Cancelled | Reply::Error { .. })
    }
}

struct Bridge {
    session: String,
    writer: Mutex<UnixStream>,
    widgets: Mutex<HashMap<String, Arc<dyn Answer>>>,
    next: AtomicU64,
}

/// Registers what a widget was made from; `None` when no kernel bridge is reachable (outside
/// the kernel).
pub(crate) fn register(source: Arc<dyn Answer>) -> Option<Live> {
    let bridge = bridge()?;
    let widget = format!("w{}", bridge.next.fetch_add(1, Ordering::Relaxed));
    bridge
        .widgets
        .lock()
        .unwrap()
        .insert(widget.clone(), source);
    Some(Live {
        session: bridge.session.clone(),
        widget,
    })
}

/// The connection to the kernel's bridge, made on first use. A failed attempt is not kept: a
/// spare kernel (see the kernel's spare.rs) runs its warm-up cell, which makes a widget, before
/// any kernel has adopted it and listens on the bridge, and every widget after the adoption
/// must still be live. Outside the kernel (`MICROSCOPE_BRIDGE` unset) nothing is tried.
fn bridge() -> Option<Arc<Bridge>> {
    static BRIDGE: Mutex<Option<Arc<Bridge>>> = Mutex::new(None);
    let mut held = BRIDGE.lock().unwrap_or_else(|e| e.into_inner());
    if held.is_none() {
        *held = connect();
    }
    held.clone()
}

fn connect() -> Option<Arc<Bridge>> {
    let path = std::env::var_os(BRIDGE_ENV)?;
    let token = std::env::var(TOKEN_ENV).ok()?;
    let mut stream = UnixStream::connect(&path).ok()?;
    stream.write_all(format!("{token}\n").as_bytes()).ok()?;
    let reader = stream.try_clone().ok()?;
    let session = format!(
        "{:x}-{}",
        std::process::id(),
        super::html::fresh_id().trim_start_matches("microscope-")
    );
    let bridge = Arc::new(Bridge {
        session,
        writer: Mutex::new(stream),
        widgets: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
    });
    let (jobs, queue) = mpsc::channel::<Job>();
    let worker = bridge.clone();
    std::thread::Builder::new()
        .name("microscope-live".into())
        .spawn(move || {
            for job in queue {
                worker.run(job);
            }
        })
        .ok()?;
    let listener = bridge.clone();
    std::thread::Builder::new()
        .name("microscope-bridge".into())
        .spawn(move || listener.listen(reader, jobs))
        .ok()?;
    Some(bridge)
}

/// One request of one comm, queued for the worker.
struct Job {
    comm: String,
    request: Value,
    source: Arc<dyn Answer>,
    data: Value,
    cancel: Arc<AtomicBool>,
}

struct Comm {
    source: Arc<dyn Answer>,
    running: Option<Arc<AtomicBool>>,
}

impl Comm {
    fn cancel(&mut self) {
        if let Some(flag) = self.running.take() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

impl Bridge {
    /// Sends `reply` to `comm`, tagged with the request it answers (if any).
    fn send(&self, comm: &str, reply: Reply, request: Option<&Value>) {
        let mut msg = serde_json::to_value(&reply)
            .unwrap_or_else(|e| json!({ "kind": "error", "message": e.to_string() }));
        if let Some(request) = request {
            msg["request"] = request.clone();
        }
        let mut line = json!({ "comm": comm, "msg": msg }).to_string();
        line.push('\n');
        let _ = self.writer.lock().unwrap().write_all(line.as_bytes());
    }

    /// Reads the kernel's messages until it goes away, then cancels whatever still runs.
    fn listen(&self, reader: UnixStream, jobs: mpsc::Sender<Job>) {
        let mut comms: HashMap<String, Comm> = HashMap::new();
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let Ok(m) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let Some(id) = m["comm"].as_str().map(str::to_string) else {
                continue;
            };
            if let Some(open) = m.get("open") {
                match self.source_for(open) {
                    Ok(source) => {
                        comms.insert(
                            id.clone(),
                            Comm {
                                source,
                                running: None,
                            },
                        );
                        self.send(
                            &id,
                            Reply::Hello {
                                ok: true,
                                reason: None,
                            },
                            None,
                        );
                    }
                    Err(reason) => self.send(
                        &id,
                        Reply::Hello {
                            ok: false,
                            reason: Some(reason),
                        },
                        None,
                    ),
                }
            } else if let Some(data) = m.get("msg") {
                let Some(comm) = comms.get_mut(&id) else {
                    continue;
                };
                comm.cancel();
                if data["op"] == "cancel" {
                    continue;
                }
                let cancel = Arc::new(AtomicBool::new(false));
                comm.running = Some(cancel.clone());
                let _ = jobs.send(Job {
                    comm: id,
                    request: data["request"].clone(),
                    source: comm.source.clone(),
                    data: data.clone(),
                    cancel,
                });
            } else if m.get("close").is_some() {
                if let Some(mut comm) = comms.remove(&id) {
                    comm.cancel();
                }
            }
        }
        for comm in comms.values_mut() {
            comm.cancel();
        }
    }

    fn source_for(&self, open: &Value) -> std::result::Result<Arc<dyn Answer>, String> {
        let stale = "made by an earlier run of the kernel: run the cell again to compute more";
        if open["session"].as_str() != Some(self.session.as_str()) {
            return Err(stale.into());
        }
        let widget = open["widget"].as_str().unwrap_or_default();
        self.widgets
            .lock()
            .unwrap()
            .get(widget)
            .cloned()
            .ok_or_else(|| stale.into())
    }

    fn run(&self, job: Job) {
        let reply = |msg: Reply| {
            debug_assert!(!msg.is_end(), "the bridge ends requests itself");
            self.send(&job.comm, msg, Some(&job.request));
        };
        let end = |msg: Reply| self.send(&job.comm, msg, Some(&job.request));
        if job.cancel.load(Ordering::Relaxed) {
            end(Reply::Cancelled);
            return;
        }
        // A panic in a technique must not take the worker (and every later request) with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::interrupt::with_cancel(job.cancel.clone(), || {
                job.source.answer(&job.data, &job.cancel, &reply)
            })
        }));
        match result {
            Ok(Ok(())) => end(Reply::Done),
            Ok(Err(Error::Cancelled { .. })) => end(Reply::Cancelled),
            Ok(Err(e)) => end(Reply::Error {
                message: e.to_string(),
            }),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                end(Reply::Error {
                    message: format!("internal error: {what}"),
                })
            }
        }
    }
}

/// At most five progress messages a second.
#[derive(Default)]
pub(crate) struct Throttle(Option<Instant>);

impl Throttle {
    pub(crate) fn ready(&mut self) -> bool {
        let now = Instant::now();
        match self.0 {
            Some(t) if now - t < Duration::from_millis(200) => false,
            _ => {
                self.0 = Some(now);
                true
            }
        }
    }
}

/// Reads a widget's request as its own typed request enum (`#[serde(tag = "op")]`), or says
/// what `widget` can answer.
pub(crate) fn parse_request<T: serde::de::DeserializeOwned>(
    request: &Value,
    widget: &str,
) -> Result<T> {
    T::deserialize(request)
        .map_err(|e| Error::Message(format!("a {widget} cannot answer this request: {e}")))
}
