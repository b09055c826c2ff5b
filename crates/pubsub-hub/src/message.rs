//! Received messages and binary-safe payloads.

use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// How a payload's bytes are shown as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PayloadEncoding {
    /// The bytes are a JSON document; shown as that document.
    Json,
    /// The bytes are UTF-8 text but not JSON; shown as a JSON string.
    Text,
    /// The bytes are not UTF-8; shown as a standard base64 string.
    Base64,
}

/// The bytes of a message exactly as Redis delivered them, with a JSON view decoded on
/// first use.
///
/// Decoding is lazy so that the socket reader never parses JSON: a message fanned out to
/// many consumers is decoded once, by whoever looks first.
#[derive(Clone)]
pub struct Payload {
    bytes: Bytes,
    /// The JSON view and how it was obtained; filled by the first `json()` call.
    decoded: OnceLock<(Value, PayloadEncoding)>,
}

impl Payload {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Payload {
            bytes: bytes.into(),
            decoded: OnceLock::new(),
        }
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes as a cheaply clonable buffer.
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The payload as text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for a zero-length payload.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The JSON view: the parsed document when the bytes are JSON, a string when they are
    /// other UTF-8 text, and a base64 string otherwise (see [`Payload::encoding`]).
    pub fn json(&self) -> &Value {
        &self.decoded().0
    }

    /// Which of the three views [`Payload::json`] returns.
    pub fn encoding(&self) -> PayloadEncoding {
        self.decoded().1
    }

    fn decoded(&self) -> &(Value, PayloadEncoding) {
        self.decoded
            .get_or_init(|| match std::str::from_utf8(&self.bytes) {
                Ok(text) => match serde_json::from_str::<Value>(text) {
                    Ok(value) => (value, PayloadEncoding::Json),
                    Err(_) => (Value::String(text.to_owned()), PayloadEncoding::Text),
                },
                Err(_) => (
                    Value::String(base64::engine::general_purpose::STANDARD.encode(&self.bytes)),
                    PayloadEncoding::Base64,
                ),
            })
    }
}

impl fmt::Display for Payload {
    /// Shows the JSON view, compact (as `serde_json::Value` displays).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.json(), f)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("encoding", &self.encoding())
            .field("json", self.json())
            .finish()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Payload {}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.json() == other
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json().serialize(s)
    }
}

/// One message as a subscription received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The channel it was published to (lossy UTF-8 for a non-UTF-8 channel name).
    pub channel: String,
    /// The glob that matched, for a pattern delivery; `None` for an exact or shard delivery.
    pub pattern: Option<String>,
    /// The payload, byte for byte.
    pub payload: Payload,
    /// Unix time in milliseconds when this process received it.
    pub received_at_ms: u64,
}

impl ReceivedMessage {
    /// Builds a message received now.
    pub fn new(channel: String, pattern: Option<String>, payload: Payload) -> Self {
        ReceivedMessage {
            channel,
            pattern,
            payload,
            received_at_ms: now_ms(),
        }
    }

    /// The message as the dashboard contract shows it: `channel`, `pattern`, `payload`
    /// (JSON, text or base64), `received_at_ms`, plus `encoding` (`json`, `text`, `base64`).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Serialize for ReceivedMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ReceivedMessage", 5)?;
        st.serialize_field("channel", &self.channel)?;
        st.serialize_field("pattern", &self.pattern)?;
        st.serialize_field("payload", &self.payload)?;
        st.serialize_field("encoding", &self.payload.encoding())?;
        st.serialize_field("received_at_ms", &self.received_at_ms)?;
        st.end()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_text_and_binary_views() {
        let p = Payload::from_bytes(&b"{\"a\":1}"[..]);
        assert_eq!(p.encoding(), PayloadEncoding::Json);
        assert_eq!(p, json!({"a": 1}));

        let p = Payload::from_bytes(&b"hello world"[..]);
        assert_eq!(p.encoding(), PayloadEncoding::Text);
        assert_eq!(p.json(), &json!("hello world"));

        let raw = vec![0xff, 0x00, 0x80, b'a'];
        let p = Payload::from_bytes(raw.clone());
        assert_eq!(p.encoding(), PayloadEncoding::Base64);
        assert_eq!(p.json(), &json!("/wCAYQ=="));
        assert_eq!(p.as_bytes(), &raw[..]);
        assert!(p.as_str().is_none());
    }

    #[test]
    fn to_json_has_contract_fields() {
        let m = ReceivedMessage {
            channel: "c".into(),
            pattern: Some("c*".into()),
            payload: Payload::from_bytes(&b"\"x\""[..]),
            received_at_ms: 7,
        };
        assert_eq!(
            m.to_json(),
            json!({"channel": "c", "pattern": "c*", "payload": "x", "encoding": "json", "received_at_ms": 7})
        );
    }
}
