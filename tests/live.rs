//! Live widgets, library side: this test plays the kernel's end of the bridge (the socket the
//! kernel opens for its evaluation process) and drives a gallery's requests through it, as the
//! kernel relays them from a widget's comm. The kernel's relaying itself is tested with real
//! Jupyter in kernel/tests/notebooks.rs.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use microscope::prelude::*;
use microscope::widget::live::{BRIDGE_ENV, TOKEN_ENV};
use serde_json::{json, Value};

struct Kernel {
    out: UnixStream,
    lines: BufReader<UnixStream>,
}

impl Kernel {
    fn send(&mut self, m: Value) {
        self.out
            .write_all(format!("{m}\n").as_bytes())
            .expect("writing to the evaluation side");
    }

    /// The next message for `comm`, skipping other comms' traffic.
    fn next(&mut self, comm: &str) -> Value {
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).expect("reading");
            assert!(n > 0, "the evaluation side closed the bridge");
            let m: Value = serde_json::from_str(&line).expect("JSON lines");
            if m["comm"] == comm {
                return m["msg"].clone();
            }
        }
    }

    /// Messages for `comm` until request `request` finishes (done, cancelled or error).
    fn until_end(&mut self, comm: &str, request: u64) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let m = self.next(comm);
            if m["request"] != request {
                continue;
            }
            let end = ["done", "cancelled", "error"].contains(&m["kind"].as_str().unwrap_or(""));
            got.push(m);
            if end {
                return got;
            }
        }
    }
}

fn kind(m: &Value) -> &str {
    m["kind"].as_str().unwrap_or("")
}

#[test]
fn a_gallery_computes_what_it_lacks_over_the_bridge() {
    let dir = support::Scratch::new("live-test");
    let socket = dir.join("bridge.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Set before the crate first looks (the first live widget), in this test's own process.
    std::env::set_var(BRIDGE_ENV, &socket);
    std::env::set_var(TOKEN_ENV, "secret-123");

    let model = zoo::fashion().unwrap();
    let layer = model.layer("conv3").unwrap();
    let fv = FeatureVis::default().steps(8).cache(None);
    let gallery = layer.gallery_of(0..2, &fv).unwrap();
    assert_eq!(gallery.units.len(), 64, "every unit is listed");
    let computed: Vec<usize> = gallery
        .units
        .iter()
        .filter(|u| u.image.is_some())
        .map(|u| u.index)
        .collect();
    assert_eq!(computed, vec![0, 1]);
    let live = gallery
        .live
        .clone()
        .expect("a live handle under a kernel bridge");
    assert!(gallery.to_html().contains(&live.session));

    let (stream, _) = listener.accept().unwrap();
    let mut kernel = Kernel {
        out: stream.try_clone().unwrap(),
        lines: BufReader::new(stream),
    };
    let mut first = String::new();
    kernel.lines.read_line(&mut first).unwrap();
    assert_eq!(
        first.trim(),
        "secret-123",
        "the evaluation side presents the secret"
    );

    // A widget from another process (a restarted kernel) is told it is stale.
    kernel.send(json!({"comm": "old", "open": {"session": "other", "widget": live.widget}}));
    let hello = kernel.next("old");
    assert_eq!(hello["ok"], false);
    assert!(hello["reason"].as_str().unwrap().contains("run the cell"));

    kernel.send(json!({"comm": "a", "open": {"session": live.session, "widget": live.widget}}));
    assert_eq!(kernel.next("a")["ok"], true);

    // An uncomputed unit, on click: the same cell the notebook would have computed.
    kernel.send(json!({"comm": "a", "msg": {"request": 1, "op": "units", "units": [5]}}));
    let got = kernel.until_end("a", 1);
    assert_eq!(kind(got.last().unwrap()), "done", "{got:?}");
    let cells: Vec<&Value> = got.iter().filter(|m| kind(m) == "units").collect();
    assert_eq!(cells.len(), 1);
    let cell = &cells[0]["units"][0];
    assert_eq!(cell["index"], 5);
    let expected = layer.gallery_of([5], &fv).unwrap().units[5].clone();
    assert_eq!(
        cell["image"].as_str(),
        expected.image.as_deref(),
        "same seed and settings as the cell: same pixels"
    );
    assert_eq!(
        cell["activation"].as_f64().map(|a| a as f32),
        expected.activation
    );

    // A tab of the unit's view.
    kernel.send(
        json!({"comm": "a", "msg": {"request": 2, "op": "tab", "unit": 5, "tab": "weights"}}),
    );
    let got = kernel.until_end("a", 2);
    let tab = got.iter().find(|m| kind(m) == "tab").expect("a tab");
    assert_eq!(tab["tab"]["id"], "weights");
    assert_eq!(tab["tab"]["body"]["kind"], "Weights");
    assert_eq!(tab["tab"]["body"]["from"], "conv2");

    // Bad requests are errors that name what is wrong.
    kernel.send(json!({"comm": "a", "msg": {"request": 3, "op": "units", "units": [64]}}));
    let got = kernel.until_end("a", 3);
    assert_eq!(kind(got.last().unwrap()), "error");
    assert!(got.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("conv3"));

    // Long requests stop: on `cancel`, on a newer request, and when the comm closes.
    let slow = layer
        .gallery_of([], &FeatureVis::default().steps(1_000_000).cache(None))
        .unwrap();
    let slow_live = slow.live.unwrap();
    let open = json!({"session": slow_live.session, "widget": slow_live.widget});
    kernel.send(json!({"comm": "b", "open": open}));
    assert_eq!(kernel.next("b")["ok"], true);
    kernel.send(json!({"comm": "b", "msg": {"request": 1, "op": "units", "units": [0, 1]}}));
    loop {
        let m = kernel.next("b");
        if kind(&m) == "progress" {
            break;
        }
    }
    let asked = Instant::now();
    kernel.send(json!({"comm": "b", "msg": {"op": "cancel"}}));
    let got = kernel.until_end("b", 1);
    let waited = asked.elapsed();
    assert_eq!(kind(got.last().unwrap()), "cancelled");
    assert!(waited < Duration::from_secs(1), "stopped in {waited:?}");

    kernel.send(json!({"comm": "b", "msg": {"request": 2, "op": "units", "units": [2]}}));
    loop {
        if kind(&kernel.next("b")) == "progress" {
            break;
        }
    }
    kernel.send(
        json!({"comm": "b", "msg": {"request": 3, "op": "tab", "unit": 2, "tab": "no-such-tab"}}),
    );
    assert_eq!(kind(kernel.until_end("b", 2).last().unwrap()), "cancelled");
    let got = kernel.until_end("b", 3);
    assert!(got.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("no-such-tab"));

    kernel.send(json!({"comm": "b", "msg": {"request": 4, "op": "units", "units": [3]}}));
    loop {
        if kind(&kernel.next("b")) == "progress" {
            break;
        }
    }
    kernel.send(json!({"comm": "b", "close": true}));
    // Requests run one at a time: this one can only finish if closing stopped the other.
    let asked = Instant::now();
    kernel.send(json!({"comm": "a", "msg": {"request": 4, "op": "units", "units": [6]}}));
    let got = kernel.until_end("a", 4);
    assert_eq!(kind(got.last().unwrap()), "done");
    println!(
        "after closing a comm, the next request finished in {:?}",
        asked.elapsed()
    );

    // A layer graph hands out live galleries of its layers.
    let graph = model.graph().unwrap();
    let graph_live = graph.live.clone().expect("a live graph");
    let open = json!({"session": graph_live.session, "widget": graph_live.widget});
    kernel.send(json!({"comm": "g", "open": open}));
    assert_eq!(kernel.next("g")["ok"], true);
    kernel.send(json!({"comm": "g", "msg": {"request": 1, "op": "gallery", "layer": "conv1"}}));
    let got = kernel.until_end("g", 1);
    let shown = got
        .iter()
        .find(|m| kind(m) == "gallery")
        .expect("a gallery");
    let units = shown["gallery"]["units"].as_array().unwrap();
    assert_eq!(units.len(), model.layer("conv1").unwrap().units);
    assert!(
        units.iter().all(|u| u["image"].is_null()),
        "nothing computed yet"
    );
    let inner = json!({
        "session": shown["gallery"]["live"]["session"],
        "widget": shown["gallery"]["live"]["widget"],
    });
    kernel.send(json!({"comm": "h", "open": inner}));
    assert_eq!(kernel.next("h")["ok"], true);
    kernel.send(json!({"comm": "h", "msg": {"request": 1, "op": "units", "units": [0, 1]}}));
    let got = kernel.until_end("h", 1);
    assert_eq!(kind(got.last().unwrap()), "done", "{got:?}");
    kernel.send(json!({"comm": "g", "msg": {"request": 2, "op": "gallery", "layer": "nope"}}));
    let got = kernel.until_end("g", 2);
    assert!(got.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("nope"));
}
