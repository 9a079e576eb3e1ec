//! The Jupyter wire protocol (messaging 5.3): connection files, signed multipart messages.
//!
//! A message on the wire is `[identities…, "<IDS|MSG>", signature, header, parent_header,
//! metadata, content, buffers…]`, the signature being HMAC-SHA256 (hex) over the four JSON
//! frames with the connection file's key.

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
        Ok(Connection {
            transport: v["transport"].as_str().unwrap_or("tcp").to_string(),
            ip: v["ip"].as_str().unwrap_or("127.0.0.1").to_string(),
            shell_port: port("shell_port")?,
            control_port: port("control_port")?,
            iopub_port: port("iopub_port")?,
            stdin_port: port("stdin_port")?,
            hb_port: port("hb_port")?,
            key: v["key"].as_str().unwrap_or("").to_string(),
        })
    }

    pub fn endpoint(&self, port: u16) -> String {
        format!("{}://{}:{}", self.transport, self.ip, port)
    }
}

/// Signs and checks messages with the connection key (an empty key disables signing).
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: &str) -> Signer {
        Signer {
            key: key.as_bytes().to_vec(),
        }
    }

    pub fn sign(&self, parts: &[&[u8]]) -> String {
        if self.key.is_empty() {
            return String::new();
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        for p in parts {
            mac.update(p);
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
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
        let want = signer.sign(&parts);
        if want.as_bytes() != frames[at + 1].as_ref() {
            bail!("message signature does not match");
        }
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
