//! The Jupyter wire protocol (messaging 5.3): connection files, signed multipart messages.
//!
//! A message on the wire is `[identities…, "<IDS|MSG>", signature, header, parent_header,
//! metadata, content, buffers…]`, the signature being HMAC-SHA256 (hex) over the four JSON
//! frames with the connection file's key. Incoming signatures are checked by the MAC library
//! (constant time), and each is accepted once: a replayed message is refused.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const DELIMITER: &[u8] = b"<IDS|MSG>";
pub const PROTOCOL_VERSION: &str = "5.3";

/// What a connection file says.
#[derive(Clone, Debug)]
pub struct Connection {
    pub transport: String,
    pub ip: String,
    pub shell_port: u16,
    pub control_port: u16,
    pub iopub_port: u16,
    pub stdin_port: u16,
    pub hb_port: u16,
    pub key: String,
}

impl Connection {
    pub fn read(path: &std::path::Path) -> Result<Connection> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading connection file {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let port = |name: &str| -> Result<u16> {
            v[name]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .with_context(|| format!("{}: no {name}", path.display()))
        };
        let scheme = v["signature_scheme"].as_str().unwrap_or("hmac-sha256");
        if scheme != "hmac-sha256" {
            bail!(
                "{}: signature scheme {scheme} is not supported (hmac-sha256 is)",
                path.display()
            );
        }
        let key = v["key"].as_str().unwrap_or("").to_string();
        if key.is_empty() {
            bail!(
                "{}: the connection file has no key, so nothing could tell the kernel's messages \
                 from anyone else's; microscope-kernel does not run unauthenticated",
                path.display()
            );
        }
        Ok(Connection {
            transport: v["transport"].as_str().unwrap_or("tcp").to_string(),
            ip: v["ip"].as_str().unwrap_or("127.0.0.1").to_string(),
            shell_port: port("shell_port")?,
            control_port: port("control_port")?,
            iopub_port: port("iopub_port")?,
            stdin_port: port("stdin_port")?,
            hb_port: port("hb_port")?,
            key,
        })
    }

    pub fn endpoint(&self, port: u16) -> String {
        format!("{}://{}:{}", self.transport, self.ip, port)
    }
}

/// Signs messages with the connection key and checks incoming ones: the signature must be the
/// key's (compared by the MAC library in constant time) and must not have been seen before.
/// Clones share the record of seen signatures, so a message cannot be replayed on another socket.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    seen: Arc<Mutex<Seen>>,
}

/// Signatures already accepted, the oldest dropped past `SEEN_LIMIT` (ipykernel keeps as many).
#[derive(Default)]
struct Seen {
    set: HashSet<Vec<u8>>,
    order: VecDeque<Vec<u8>>,
}

const SEEN_LIMIT: usize = 1 << 16;

impl Signer {
    pub fn new(key: &str) -> Signer {
        Signer {
            key: key.as_bytes().to_vec(),
            seen: Arc::default(),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        for p in parts {
            mac.update(p);
        }
        mac
    }

    pub fn sign(&self, parts: &[&[u8]]) -> String {
        self.mac(parts)
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Accepts `signature` (hex) for `parts` once.
    pub fn verify(&self, parts: &[&[u8]], signature: &[u8]) -> Result<()> {
        let bytes = from_hex(signature).context("message signature is not hex")?;
        self.mac(parts)
            .verify_slice(&bytes)
            .map_err(|_| anyhow::anyhow!("message signature does not match"))?;
        let mut seen = self.seen.lock().unwrap();
        if !seen.set.insert(bytes.clone()) {
            bail!("replayed message (its signature was accepted before)");
        }
        seen.order.push_back(bytes);
        if seen.order.len() > SEEN_LIMIT {
            if let Some(old) = seen.order.pop_front() {
                seen.set.remove(&old);
            }
        }
        Ok(())
    }
}

/// Lower- or upper-case hex to bytes; `None` for anything else. (A few lines here rather than a
/// dependency for the one 64-character signature per message.)
fn from_hex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// One Jupyter message.
#[derive(Clone, Debug)]
pub struct Message {
    pub identities: Vec<Bytes>,
    pub header: Value,
    pub parent_header: Value,
    pub metadata: Value,
    pub content: Value,
    pub buffers: Vec<Bytes>,
}

impl Message {
    pub fn msg_type(&self) -> &str {
        self.header["msg_type"].as_str().unwrap_or("")
    }

    /// Parses wire frames, checking the signature.
    pub fn parse(frames: Vec<Bytes>, signer: &Signer) -> Result<Message> {
        let at = frames
            .iter()
            .position(|f| f.as_ref() == DELIMITER)
            .context("message without <IDS|MSG> delimiter")?;
        if frames.len() < at + 6 {
            bail!(
                "message with {} frames after the delimiter",
                frames.len() - at - 1
            );
        }
        let json = |i: usize| -> Result<Value> {
            serde_json::from_slice(&frames[at + 2 + i]).context("message frame is not JSON")
        };
        let parts: Vec<&[u8]> = (0..4).map(|i| frames[at + 2 + i].as_ref()).collect();
        signer.verify(&parts, &frames[at + 1])?;
        Ok(Message {
            identities: frames[..at].to_vec(),
            header: json(0)?,
            parent_header: json(1)?,
            metadata: json(2)?,
            content: json(3)?,
            buffers: frames[at + 6..].to_vec(),
        })
    }

    /// A new message of `msg_type` whose parent is `parent` (sent back to the same peer).
    pub fn reply_to(parent: &Message, msg_type: &str, content: Value) -> Message {
        Message {
            identities: parent.identities.clone(),
            header: header(msg_type, parent.header["session"].as_str().unwrap_or("")),
            parent_header: parent.header.clone(),
            metadata: json!({}),
            content,
            buffers: Vec::new(),
        }
    }

    /// The wire frames, signed.
    pub fn frames(&self, signer: &Signer) -> Vec<Bytes> {
        let parts = [
            serde_json::to_vec(&self.header).expect("JSON"),
            serde_json::to_vec(&self.parent_header).expect("JSON"),
            serde_json::to_vec(&self.metadata).expect("JSON"),
            serde_json::to_vec(&self.content).expect("JSON"),
        ];
        let signature = signer.sign(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let mut frames = self.identities.clone();
        frames.push(Bytes::from_static(DELIMITER));
        frames.push(Bytes::from(signature));
        frames.extend(parts.into_iter().map(Bytes::from));
        frames.extend(self.buffers.iter().cloned());
        frames
    }
}

/// A message header.
pub fn header(msg_type: &str, session: &str) -> Value {
    json!({
        "msg_id": uuid::Uuid::new_v4().to_string(),
        "session": session,
        "username": "microscope",
        "date": now_iso8601(),
        "msg_type": msg_type,
        "version": PROTOCOL_VERSION,
    })
}

/// The current UTC time as ISO 8601 with microseconds.
pub fn now_iso8601() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = t.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        t.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_file_without_a_key_is_refused() {
        let dir = std::env::temp_dir().join(format!("wire-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("connection.json");
        let ports =
            r#""shell_port": 1, "control_port": 2, "iopub_port": 3, "stdin_port": 4, "hb_port": 5"#;
        std::fs::write(&file, format!(r#"{{{ports}, "key": ""}}"#)).unwrap();
        let e = Connection::read(&file).unwrap_err().to_string();
        assert!(e.contains("no key") && e.contains("connection.json"), "{e}");
        std::fs::write(&file, format!(r#"{{{ports}, "key": "k"}}"#)).unwrap();
        assert_eq!(Connection::read(&file).unwrap().key, "k");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_signature_that_is_not_hex_or_not_the_keys_is_refused() {
        let signer = Signer::new("secret");
        let parts: [&[u8]; 4] = [b"{}", b"{}", b"{}", b"{}"];
        let good = signer.sign(&parts);
        let other = Signer::new("other").sign(&parts);
        assert!(signer.verify(&parts, other.as_bytes()).is_err());
        assert!(signer.verify(&parts, b"zz").is_err());
        assert!(signer.verify(&parts, &good.as_bytes()[..10]).is_err());
        assert!(signer
            .verify(&parts, good.to_uppercase().as_bytes())
            .is_ok());
        assert!(signer.verify(&parts, good.as_bytes()).is_err(), "replay");
    }

    #[test]
    fn frames_round_trip_with_a_valid_signature() {
        let signer = Signer::new("secret");
        let m = Message {
            identities: vec![Bytes::from_static(b"peer")],
            header: header("kernel_info_request", "s1"),
            parent_header: json!({}),
            metadata: json!({}),
            content: json!({"a": 1}),
            buffers: vec![],
        };
        let back = Message::parse(m.frames(&signer), &signer).unwrap();
        assert!(
            Message::parse(m.frames(&signer), &signer.clone())
                .unwrap_err()
                .to_string()
                .contains("replayed"),
            "the same message a second time (on any socket) must be refused"
        );
        assert_eq!(back.msg_type(), "kernel_info_request");
        assert_eq!(back.content, json!({"a": 1}));
        assert_eq!(back.identities, m.identities);
        let mut bad = m.frames(&signer);
        bad[5] = Bytes::from_static(b"{\"a\": 2}");
        assert!(
            Message::parse(bad, &signer).is_err(),
            "tampered content must be refused"
        );
    }

    #[test]
    fn hmac_matches_a_known_value() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            Signer::new("key").sign(&[b"The quick brown fox jumps over the lazy dog"]),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn dates_are_iso8601() {
        let d = now_iso8601();
        assert_eq!(d.len(), 27, "{d}");
        assert!(d.starts_with("20") && d.ends_with('Z') && &d[10..11] == "T");
    }
}
