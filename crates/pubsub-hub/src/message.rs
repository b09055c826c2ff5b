//! Received messages and binary-safe payloads.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use serde::de::IgnoredAny;
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

/// Bytes of a payload kept by a ring buffer for a message larger than the buffer's whole
/// byte budget ([`HubConfig::buffer_max_bytes`](crate::HubConfig::buffer_max_bytes)): the
/// ring keeps this much of its start, with the true size (see [`Payload::is_preview`]).
/// Large enough for the dashboard's 2 KiB display cut, of text or of base64.
pub const PAYLOAD_PREVIEW_BYTES: usize = 4096;

/// Source bytes of the payloads whose JSON view is cached right now, in this process.
static CACHED_VIEW_BYTES: AtomicU64 = AtomicU64::new(0);

/// The bytes of a message exactly as Redis delivered them, with a JSON view decoded on
/// first use; or, in a ring buffer, a preview: the start of a payload too large for the
/// buffer, with its true size.
///
/// Decoding is lazy so that the socket reader never parses JSON: a message fanned out to
/// many consumers is decoded once, by whoever looks first. [`Payload::encoding`] only
/// validates (no document is built), so a caller that shows a cut of a large payload can
/// name its encoding without holding its parsed form; [`Payload::json`] builds the
/// document and keeps it with the payload (counted by [`Payload::cached_view_bytes`]).
pub struct Payload {
    /// The bytes held: the whole payload, or a preview's start.
    bytes: Bytes,
    /// The payload's size as published (more than `bytes.len()` for a preview).
    size: usize,
    /// How the whole payload reads; known from the start for a preview.
    encoding: OnceLock<PayloadEncoding>,
    /// The JSON view, filled by the first `json()` call.
    decoded: OnceLock<Value>,
}

impl Payload {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Payload {
            size: bytes.len(),
            bytes,
            encoding: OnceLock::new(),
            decoded: OnceLock::new(),
        }
    }

    /// A preview of this payload: a copy of its first bytes (at most `max`, cut on a
    /// character boundary for text), its true size and its encoding; its
    /// [`Payload::json`] is that start as a string (text, or base64 of the bytes). The copy
    /// does not keep the whole payload's buffer alive. Finding the encoding validates the
    /// whole payload once (without building a document); the result is kept with this
    /// payload. A payload of at most `max` bytes gives a whole copy, not a preview.
    pub fn preview(&self, max: usize) -> Payload {
        let encoding = self.encoding();
        let end = match encoding {
            PayloadEncoding::Base64 => max.min(self.bytes.len()),
            _ => cut_at_char_boundary(self.as_str().unwrap_or_default(), max).len(),
        };
        let preview = Payload {
            bytes: Bytes::copy_from_slice(&self.bytes[..end]),
            size: self.size,
            encoding: OnceLock::new(),
            decoded: OnceLock::new(),
        };
        let _ = preview.encoding.set(encoding);
        preview
    }

    /// The exact bytes (for a preview, the start it keeps).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes as a cheaply clonable buffer (for a preview, the start it keeps).
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The payload as text, when it is UTF-8 (for a preview, the start it keeps).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// Length in bytes of the payload as published; for a preview, the whole payload's
    /// length, not the bytes kept.
    pub fn len(&self) -> usize {
        self.size
    }

    /// True for a zero-length payload.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// True when this holds only the start of the payload: a ring buffer keeps a message
    /// larger than its byte budget as a preview of [`PAYLOAD_PREVIEW_BYTES`] (consumers
    /// receive the message whole). [`Payload::len`] is the true size, and
    /// [`Payload::json`] is the kept start as a string (text, or base64 of the bytes).
    pub fn is_preview(&self) -> bool {
        self.bytes.len() < self.size
    }

    /// The JSON view: the parsed document when the bytes are JSON, a string when they are
    /// other UTF-8 text, and a base64 string otherwise (see [`Payload::encoding`]); for a
    /// preview, the kept start as a string. Decoded on the first call and kept with the
    /// payload, so it costs memory as long as the payload lives: to show a part of a large
    /// payload, cut [`Payload::as_bytes`] instead.
    pub fn json(&self) -> &Value {
        self.decoded.get_or_init(|| {
            let value = self.decode();
            CACHED_VIEW_BYTES.fetch_add(self.bytes.len() as u64, Ordering::Relaxed);
            value
        })
    }

    fn decode(&self) -> Value {
        let base64 =
            || Value::String(base64::engine::general_purpose::STANDARD.encode(&self.bytes));
        let text = || Value::String(self.as_str().unwrap_or_default().to_owned());
        match self.encoding() {
            PayloadEncoding::Base64 => base64(),
            _ if self.is_preview() => text(),
            PayloadEncoding::Json => serde_json::from_slice(&self.bytes).unwrap_or_else(|_| text()),
            PayloadEncoding::Text => text(),
        }
    }

    /// Which of the three views [`Payload::json`] returns (for a preview, how the whole
    /// payload reads). Validates without building a document; the answer is kept.
    pub fn encoding(&self) -> PayloadEncoding {
        *self
            .encoding
            .get_or_init(|| match std::str::from_utf8(&self.bytes) {
                Ok(_) if serde_json::from_slice::<IgnoredAny>(&self.bytes).is_ok() => {
                    PayloadEncoding::Json
                }
                Ok(_) => PayloadEncoding::Text,
                Err(_) => PayloadEncoding::Base64,
            })
    }

    /// Source bytes of the payloads in this process whose [`Payload::json`] view is cached
    /// now. Ring buffers keep at most their byte budget of payload each, so what they make
    /// this count is bounded by the budgets; the rest belongs to messages the application
    /// holds.
    pub fn cached_view_bytes() -> u64 {
        CACHED_VIEW_BYTES.load(Ordering::Relaxed)
    }
}

impl Clone for Payload {
    /// Shares the bytes; the JSON view is not copied (the clone decodes its own on demand).
    fn clone(&self) -> Self {
        let encoding = OnceLock::new();
        if let Some(e) = self.encoding.get() {
            let _ = encoding.set(*e);
        }
        Payload {
            bytes: self.bytes.clone(),
            size: self.size,
            encoding,
            decoded: OnceLock::new(),
        }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if self.decoded.get().is_some() {
            CACHED_VIEW_BYTES.fetch_sub(self.bytes.len() as u64, Ordering::Relaxed);
        }
    }
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
fn cut_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
            .field("size", &self.size)
            .field("preview", &self.is_preview())
            .field("json", self.json())
            .finish()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes && self.size == other.size
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

    /// The same message with its payload cut to a preview of at most `max` bytes (see
    /// [`Payload::is_preview`]).
    pub(crate) fn preview(&self, max: usize) -> ReceivedMessage {
        ReceivedMessage {
            channel: self.channel.clone(),
            pattern: self.pattern.clone(),
            payload: self.payload.preview(max),
            received_at_ms: self.received_at_ms,
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
    fn a_preview_keeps_the_start_the_true_size_and_the_encoding() {
        let body = format!(r#"{{"body":"{}"}}"#, "é".repeat(5000));
        let whole = Payload::from_bytes(body.clone().into_bytes());
        let p = whole.preview(100);
        assert!(p.is_preview() && !whole.is_preview());
        assert_eq!(p.len(), body.len());
        assert_eq!(p.encoding(), PayloadEncoding::Json);
        assert_eq!(p.as_bytes().len(), 99, "cut on a character boundary");
        assert_eq!(p.json(), &json!(&body[..99]));

        let binary = Payload::from_bytes(vec![0xffu8; 10_000]);
        let p = binary.preview(30);
        assert_eq!(p.encoding(), PayloadEncoding::Base64);
        assert_eq!(p.as_bytes(), &[0xff; 30][..]);
        assert_eq!(p.len(), 10_000);

        let small = Payload::from_bytes(&b"hi"[..]).preview(100);
        assert!(!small.is_preview());
        assert_eq!(small.encoding(), PayloadEncoding::Text);
    }

    #[test]
    fn encoding_does_not_cache_a_view_and_json_is_counted() {
        let p = Payload::from_bytes(&b"[1,2,3]"[..]);
        assert_eq!(p.encoding(), PayloadEncoding::Json);
        assert!(p.decoded.get().is_none(), "encoding() builds no document");
        assert_eq!(p.json(), &json!([1, 2, 3]));
        assert!(p.decoded.get().is_some());
        let copy = p.clone();
        assert!(
            copy.decoded.get().is_none(),
            "a clone does not copy the view"
        );
        assert_eq!(copy.encoding.get(), Some(&PayloadEncoding::Json));
        // The process-wide count moves with other tests running in parallel, so only
        // its consistency is checked here: it is at least what this payload holds.
        assert!(Payload::cached_view_bytes() >= 7);
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
