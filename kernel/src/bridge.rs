//! The bridge between Jupyter comms (target `microscope`) and the evaluation process, where the
//! user's models live and live widgets are answered.
//!
//! Each kernel listens on a Unix socket in its own directory (mode 0700, so only this user's
//! processes can reach it) and accepts only a peer that first sends the kernel's secret; both
//! reach the evaluation process through its environment. The kernel relays comm messages as
//! JSON lines without reading their content (see `microscope::widget::live` for the protocol):
//! it keeps, per comm, the request that last spoke on it, so that the answers that come back
//! are the children of that request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// The comm target the widgets open.
pub const TARGET: &str = "microscope";

/// How long a peer has to present the secret.
const FIRST_LINE_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `line` (with its newline) is the secret, compared in constant time.
fn same_secret(line: &[u8], token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.len() == token.len() && bool::from(line.ct_eq(token.as_bytes()))
}

#[derive(Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

struct Inner {
    /// Lines for the connected evaluation process (`None`: none connected yet, or it died).
    peer: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// Open comms and the header of the request that last spoke on each.
    comms: Mutex<HashMap<String, Value>>,
}

/// A message from the evaluation process for comm `comm`, with the header of its parent.
pub struct Incoming {
    pub comm: String,
    pub parent: Value,
    pub data: Value,
}

impl Bridge {
    /// Listens at `path`; `on_message` receives what the evaluation process sends to open comms.
    pub fn listen(
        path: &Path,
        token: String,
        on_message: impl Fn(Incoming) + Send + Sync + 'static,
    ) -> Result<Bridge> {
        let _ = std::fs::remove_file(path);
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        let bridge = Bridge {
            inner: Arc::new(Inner {
                peer: Mutex::new(None),
                comms: Mutex::new(HashMap::new()),
            }),
        };
        let on_message = Arc::new(on_message);
        let accepting = bridge.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Each connection on its own task: one that never sends its first line must
                // not hold up the next.
                let accepting = accepting.clone();
                let on_message = on_message.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    // The first line must be the secret, within a few bytes more than its
                    // length and a few seconds; anything else is dropped.
                    let mut first = Vec::new();
                    let limit = token.len() as u64 + 2;
                    let mut limited = (&mut reader).take(limit);
                    let read_first = limited.read_until(b'\n', &mut first);
                    match tokio::time::timeout(FIRST_LINE_TIME, read_first).await {
                        Ok(Ok(_)) if same_secret(&first, &token) => {}
                        _ => return,
                    }
                    let mut lines = reader.lines();
                    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                    *accepting.inner.peer.lock().unwrap() = Some(tx);
                    tokio::spawn(async move {
                        while let Some(line) = rx.recv().await {
                            if write.write_all(line.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    });
                    while let Ok(Some(line)) = lines.next_line().await {
                        let Ok(m) = serde_json::from_str::<Value>(&line) else {
                            continue;
                        };
                        let Some(comm) = m["comm"].as_str() else {
                            continue;
                        };
                        let parent = accepting.inner.comms.lock().unwrap().get(comm).cloned();
                        if let Some(parent) = parent {
                            on_message(Incoming {
                                comm: comm.to_string(),
                                parent,
                                data: m["msg"].clone(),
                            });
                        }
                    }
                });
            }
        });
        Ok(bridge)
    }

    /// A frontend opened comm `comm` with `data`. Returns the message to send back at once when
    /// no evaluation process listens (nothing was displayed live in this kernel yet).
    pub fn open(&self, comm: &str, parent: &Value, data: &Value) -> Option<Value> {
        self.inner
            .comms
            .lock()
            .unwrap()
            .insert(comm.to_string(), parent.clone());
        if self.forward(json!({ "comm": comm, "open": data })) {
            None
        } else {
            Some(json!({
                "kind": "hello",
                "ok": false,
                "reason": "this kernel has not displayed that widget: run the cell again to compute more",
            }))
        }
    }

    /// A message from the frontend on an open comm.
    pub fn message(&self, comm: &str, parent: &Value, data: &Value) {
        let known = match self.inner.comms.lock().unwrap().get_mut(comm) {
            Some(p) => {
                *p = parent.clone();
                true
            }
            None => false,
        };
        if known {
            self.forward(json!({ "comm": comm, "msg": data }));
        }
    }

    pub fn close(&self, comm: &str) {
        if self.inner.comms.lock().unwrap().remove(comm).is_some() {
            self.forward(json!({ "comm": comm, "close": true }));
        }
    }

    /// Open comms, for `comm_info_reply`.
    pub fn comms(&self) -> Vec<String> {
        self.inner.comms.lock().unwrap().keys().cloned().collect()
    }

    fn forward(&self, message: Value) -> bool {
        let mut peer = self.inner.peer.lock().unwrap();
        let sent = peer
            .as_ref()
            .is_some_and(|tx| tx.send(format!("{message}\n")).is_ok());
        if !sent {
            *peer = None;
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_secret_opens_the_bridge() {
        assert!(same_secret(b"abc123\n", "abc123"));
        assert!(same_secret(b"abc123", "abc123"));
        assert!(!same_secret(b"abc12\n", "abc123"));
        assert!(!same_secret(b"abc1234\n", "abc123"));
        assert!(!same_secret(b"abc124\n", "abc123"));
        assert!(!same_secret(b"\n", "abc123"));
    }
}
