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
//! A widget registers what it came from (its layer and settings) when it is made, and gets a
//! [`Live`] handle into its props. Its comm opens with `{session, widget}`; requests are
//! `{request: N, op, ...}` and are answered by `progress`, results, then `done`, `cancelled` or
//! `error`, each carrying `request: N`. Requests run one at a time on a background thread, so
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

use super::gallery::GalleryOptions;
use super::unit_view::ViewOptions;
use crate::error::{Error, Result};
use crate::model::{Layer, Model};

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

/// What a live widget was made from: what its requests compute against.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// A layer graph: galleries of its layers.
    Model { model: Model },
    /// A gallery: its units, and the tabs of their views.
    Gallery {
        layer: Layer,
        options: GalleryOptions,
    },
}

struct Bridge {
    session: String,
    writer: Mutex<UnixStream>,
    widgets: Mutex<HashMap<String, Arc<Source>>>,
    next: AtomicU64,
}

/// Registers a widget's source; `None` when no kernel bridge is reachable (outside the kernel).
pub(crate) fn register(source: Source) -> Option<Live> {
    let bridge = bridge()?;
    let widget = format!("w{}", bridge.next.fetch_add(1, Ordering::Relaxed));
    bridge
        .widgets
        .lock()
        .unwrap()
        .insert(widget.clone(), Arc::new(source));
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
    source: Arc<Source>,
    data: Value,
    cancel: Arc<AtomicBool>,
}

struct Comm {
    source: Arc<Source>,
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
    fn send(&self, comm: &str, msg: Value) {
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
                        self.send(&id, json!({ "kind": "hello", "ok": true }));
                    }
                    Err(reason) => self.send(
                        &id,
                        json!({ "kind": "hello", "ok": false, "reason": reason }),
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

    fn source_for(&self, open: &Value) -> std::result::Result<Arc<Source>, String> {
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
        let reply = |mut msg: Value| {
            msg["request"] = job.request.clone();
            self.send(&job.comm, msg);
        };
        if job.cancel.load(Ordering::Relaxed) {
            reply(json!({ "kind": "cancelled" }));
            return;
        }
        // A panic in a technique must not take the worker (and every later request) with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::interrupt::with_cancel(job.cancel.clone(), || {
                answer(&job.source, &job.data, &job.cancel, &reply)
            })
        }));
        match result {
            Ok(Ok(())) => reply(json!({ "kind": "done" })),
            Ok(Err(Error::Cancelled { .. })) => reply(json!({ "kind": "cancelled" })),
            Ok(Err(e)) => reply(json!({ "kind": "error", "message": e.to_string() })),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                reply(json!({ "kind": "error", "message": format!("internal error: {what}") }))
            }
        }
    }
}

/// At most five progress messages a second.
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
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

/// Computes what one request asks of a widget's source, handing each part to `reply` as soon
/// as it is done.
///
/// Ops of a layer graph:
/// - `gallery` `{layer}`: a gallery of that layer with nothing computed yet (default settings),
///   live itself, as a `gallery` message; the widget then asks it for units.
///
/// Ops of a gallery:
/// - `units` `{units: [i, …]}`: those units' cells, one `units` message per finished batch;
/// - `tab` `{unit, tab}`: one tab of that unit's view (`tab` ids of [`super::unit_view::TABS`]).
pub(crate) fn answer(
    source: &Source,
    data: &Value,
    cancel: &AtomicBool,
    reply: &dyn Fn(Value),
) -> Result<()> {
    let (layer, options) = match source {
        Source::Gallery { layer, options } => (layer, options),
        Source::Model { model } => return answer_graph(model, data, reply),
    };
    let unit_arg = |v: &Value| -> Result<usize> {
        v.as_u64()
            .map(|u| u as usize)
            .filter(|&u| u < layer.units)
            .ok_or_else(|| {
                Error::Message(format!(
                    "{}: no unit {v} ({} units)",
                    layer.name, layer.units
                ))
            })
    };
    match data["op"].as_str().unwrap_or_default() {
        "units" => {
            let units: Vec<usize> = data["units"]
                .as_array()
                .map(|a| a.iter().map(unit_arg).collect::<Result<_>>())
                .transpose()?
                .unwrap_or_default();
            let mut throttle = Throttle(None);
            layer.gallery_units(
                options,
                &units,
                &mut |p| {
                    if throttle.ready() {
                        reply(json!({
                            "kind": "progress",
                            "fraction": p.fraction(),
                            "label": format!("{} of {} units", p.done, p.total),
                        }));
                    }
                },
                Some(cancel),
                &mut |batch| reply(json!({ "kind": "units", "units": batch })),
            )
        }
        "tab" => {
            let unit = layer.unit(unit_arg(&data["unit"])?)?;
            let id = data["tab"].as_str().unwrap_or_default();
            reply(
                json!({ "kind": "progress", "fraction": null, "label": format!("computing {id} of {unit}") }),
            );
            let view = ViewOptions {
                feature_vis: options.feature_vis.clone(),
                ..ViewOptions::default()
            };
            let tab = unit.view_tab(id, &view)?;
            reply(json!({ "kind": "tab", "unit": unit.index(), "tab": tab }));
            Ok(())
        }
        other => Err(Error::Message(format!(
            "a gallery cannot answer {other:?} (ops: units, tab, cancel)"
        ))),
    }
}

fn answer_graph(model: &Model, data: &Value, reply: &dyn Fn(Value)) -> Result<()> {
    match data["op"].as_str().unwrap_or_default() {
        "gallery" => {
            let name = data["layer"].as_str().unwrap_or_default();
            let layer = model.layer(name)?;
            let options = GalleryOptions {
                units: Some(Vec::new()),
                ..GalleryOptions::default()
            };
            let gallery = layer.gallery_with(&options, &mut |_| {}, None)?;
            reply(json!({ "kind": "gallery", "gallery": gallery }));
            Ok(())
        }
        other => Err(Error::Message(format!(
            "a layer graph cannot answer {other:?} (ops: gallery, cancel)"
        ))),
    }
}
