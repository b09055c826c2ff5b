//! How a Redis message's bytes become a publication's JSON `data`, and back.
//!
//! Redis payloads are bytes; the protocol's JSON encoding carries `data` as raw JSON. So:
//! - bytes that are a JSON document arrive as that document, byte for byte (line breaks,
//!   which JSON allows only as whitespace, become spaces, since a line break separates
//!   replies in a frame);
//! - UTF-8 text that is not JSON arrives as a JSON string of that text;
//! - any other bytes arrive as a standard base64 string, and the publication's `tags` carry
//!   `{"encoding": "base64"}` ([`ENCODING_TAG`], [`BASE64`]) so a client can tell a text
//!   payload from an encoded one.
//!
//! Nothing is dropped and nothing arrives empty: the empty payload is UTF-8 text that is not
//! JSON, so it arrives as `""`.
//!
//! In the other direction, a client's or the server API's `data` goes to Redis as its
//! exact JSON text: `{"a":1}` is published as those 7 bytes, `"hi"` as 4 bytes with the
//! quotes.

use base64::Engine as _;
use serde_json::value::RawValue;

/// The publication tag that says how `data` is encoded, present only when it is not the
/// payload itself.
pub const ENCODING_TAG: &str = "encoding";
/// The value of [`ENCODING_TAG`] for bytes that are not UTF-8.
pub const BASE64: &str = "base64";

/// How a payload was mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataEncoding {
    /// A JSON document, passed through.
    Json,
    /// UTF-8 text, as a JSON string.
    Text,
    /// Other bytes, as a base64 JSON string.
    Base64,
}

/// The publication's `data` (raw JSON text) and how it was made.
pub fn data_of(bytes: &[u8]) -> (String, DataEncoding) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.trim().is_empty() && serde_json::from_str::<&RawValue>(text).is_ok() {
            let trimmed = text.trim();
            let json = if trimmed.contains(['\n', '\r']) {
                trimmed.replace(['\n', '\r'], " ")
            } else {
                trimmed.to_owned()
            };
            return (json, DataEncoding::Json);
        }
        return (crate::protocol::json_string(text), DataEncoding::Text);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    (crate::protocol::json_string(&encoded), DataEncoding::Base64)
}

/// The publication push (unwrapped) for a Redis message on `channel`:
/// `{"channel":"...","pub":{"data":...}}`, with the encoding tag when needed.
pub fn publication_push(channel: &str, bytes: &[u8]) -> String {
    publication_push_at(channel, bytes, None)
}

/// [`publication_push`] with the publication's history `offset`, when it has one.
pub fn publication_push_at(channel: &str, bytes: &[u8], offset: Option<u64>) -> String {
    let publication = publication_json(bytes, offset);
    let channel = crate::protocol::json_string(channel);
    let mut out = String::with_capacity(channel.len() + publication.len() + 24);
    out.push_str("{\"channel\":");
    out.push_str(&channel);
    out.push_str(",\"pub\":");
    out.push_str(&publication);
    out.push('}');
    out
}

/// The publication object `{"data":...,"offset":N}` (with the encoding tag when needed),
/// as pushes, subscribe replies and history replies carry it.
pub fn publication_json(bytes: &[u8], offset: Option<u64>) -> String {
    let (data, encoding) = data_of(bytes);
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("{\"data\":");
    out.push_str(&data);
    if encoding == DataEncoding::Base64 {
        out.push_str(",\"tags\":{\"");
        out.push_str(ENCODING_TAG);
        out.push_str("\":\"");
        out.push_str(BASE64);
        out.push_str("\"}");
    }
    if let Some(offset) = offset {
        out.push_str(",\"offset\":");
        out.push_str(&offset.to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pub_of(bytes: &[u8]) -> Value {
        serde_json::from_str(&publication_push("c", bytes)).unwrap()
    }

    #[test]
    fn json_passes_through_text_becomes_a_string_bytes_become_base64() {
        assert_eq!(
            pub_of(br#"{"a": [1, 2]}"#),
            json!({"channel": "c", "pub": {"data": {"a": [1, 2]}}})
        );
        assert_eq!(
            pub_of(b"hello"),
            json!({"channel": "c", "pub": {"data": "hello"}})
        );
        assert_eq!(pub_of(b""), json!({"channel": "c", "pub": {"data": ""}}));
        assert_eq!(pub_of(b"42"), json!({"channel": "c", "pub": {"data": 42}}));
        assert_eq!(
            pub_of(&[0xff, 0x00, 0x01]),
            json!({"channel": "c", "pub": {"data": "/wAB", "tags": {"encoding": "base64"}}})
        );
    }

    #[test]
    fn line_breaks_never_reach_the_frame() {
        let push = publication_push("c", b"{\n\"a\":\r\n1}\n");
        assert!(!push.contains('\n') && !push.contains('\r'), "{push}");
        assert_eq!(
            serde_json::from_str::<Value>(&push).unwrap()["pub"]["data"],
            json!({"a": 1})
        );
        let text = publication_push("c", b"two\nlines");
        assert!(!text.contains('\n'));
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["pub"]["data"],
            json!("two\nlines")
        );
    }
}
