//! Strict `application/x-www-form-urlencoded` decoding, and the parsing of the `target` and
//! `count` fields of the contract (`docs/http-api.md`).
//!
//! The usual decoders are lenient: they keep a `%` that is not followed by two hex digits
//! as it is, and replace bytes that are not UTF-8 with U+FFFD. A dashboard that stores
//! names and channels should not silently store something other than what was sent, so this
//! one refuses both, and says which field was wrong.

use std::fmt;

/// Why a form body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormError {
    /// A `%` not followed by two hex digits, in the named field (or in a field's name).
    BadPercentEncoding {
        /// The field, as far as it could be read.
        field: String,
    },
    /// The decoded bytes of the named field (or of a field's name) are not UTF-8.
    InvalidUtf8 {
        /// The field, as far as it could be read.
        field: String,
    },
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormError::BadPercentEncoding { field } => write!(
                f,
                "the form is malformed: bad percent-encoding in {field} (a % must be followed by two hex digits)"
            ),
            FormError::InvalidUtf8 { field } => {
                write!(f, "the form is malformed: {field} is not valid UTF-8")
            }
        }
    }
}

impl std::error::Error for FormError {}

/// Decodes a form body into `(name, value)` pairs, in order, duplicates kept.
///
/// Pairs are separated by `&` (empty pieces are skipped); a piece without `=` is a name with
/// an empty value; `+` is a space; `%XX` is the byte `XX`. Fails on a malformed `%` escape
/// and on names or values whose bytes are not UTF-8.
pub fn decode_form(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut pairs = Vec::new();
    for piece in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = match piece.iter().position(|&b| b == b'=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &[][..]),
        };
        let name = decode_component(raw_name).map_err(|kind| kind.at("a field name".into()))?;
        let value =
            decode_component(raw_value).map_err(|kind| kind.at(format!("field {name:?}")))?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Encodes `(name, value)` pairs as a form body: the inverse of [`decode_form`]
/// (unreserved bytes as they are, space as `+`, everything else `%XX`).
pub fn encode_form<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(name, &mut out);
        out.push('=');
        encode_component(value, &mut out);
    }
    out
}

fn encode_component(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

enum ComponentError {
    Percent,
    Utf8,
}

impl ComponentError {
    fn at(self, field: String) -> FormError {
        match self {
            ComponentError::Percent => FormError::BadPercentEncoding { field },
            ComponentError::Utf8 => FormError::InvalidUtf8 { field },
        }
    }
}

fn decode_component(raw: &[u8]) -> Result<String, ComponentError> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).and_then(|&b| hex_value(b));
                let lo = raw.get(i + 2).and_then(|&b| hex_value(b));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => bytes.push(hi << 4 | lo),
                    _ => return Err(ComponentError::Percent),
                }
                i += 2;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| ComponentError::Utf8)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The contract's `count` rule: absent, empty or not an integer → 1, otherwise clamped to
/// `1..=max` (an integer too large to represent counts as `max`). `max` below 1 counts as 1.
pub fn parse_count(raw: Option<&str>, max: u32) -> u32 {
    use std::num::IntErrorKind;
    let max = max.max(1);
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return 1;
    };
    match raw.parse::<i64>() {
        Ok(n) => n.clamp(1, i64::from(max)) as u32,
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => max,
        Err(_) => 1,
    }
}

/// Splits a comma-separated target list: items trimmed, empty items dropped.
pub fn parse_targets(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(body: &str) -> Vec<(String, String)> {
        decode_form(body.as_bytes()).unwrap()
    }

    #[test]
    fn decodes_the_usual_forms() {
        assert_eq!(
            pairs("a=1&b=x+y&c=%2C%20%C3%A9&&d&e="),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), ", é".into()),
                ("d".into(), String::new()),
                ("e".into(), String::new()),
            ]
        );
        assert_eq!(pairs("k=a=b"), vec![("k".into(), "a=b".into())]);
        assert!(pairs("").is_empty());
    }

    #[test]
    fn refuses_malformed_escapes_and_bad_utf8() {
        for body in ["a=%", "a=%2", "a=%zz", "a=%%41", "%=x"] {
            assert!(
                matches!(
                    decode_form(body.as_bytes()),
                    Err(FormError::BadPercentEncoding { .. })
                ),
                "{body}"
            );
        }
        for body in [&b"a=%FF"[..], b"a=%C3", b"a=\xff", b"%80=1"] {
            assert!(
                matches!(decode_form(body), Err(FormError::InvalidUtf8 { .. })),
                "{body:?}"
            );
        }
        let e = decode_form(b"channel=%zz").unwrap_err().to_string();
        assert!(e.contains("\"channel\""), "{e}");
    }

    #[test]
    fn count_rules() {
        assert_eq!(parse_count(None, 20), 1);
        assert_eq!(parse_count(Some(""), 20), 1);
        assert_eq!(parse_count(Some("abc"), 20), 1);
        assert_eq!(parse_count(Some("2.5"), 20), 1);
        assert_eq!(parse_count(Some("0"), 20), 1);
        assert_eq!(parse_count(Some("-3"), 20), 1);
        assert_eq!(parse_count(Some(" 7 "), 20), 7);
        assert_eq!(parse_count(Some("25"), 20), 20);
        assert_eq!(parse_count(Some("99999999999999999999999"), 20), 20);
        assert_eq!(parse_count(Some("-99999999999999999999999"), 20), 1);
        assert_eq!(parse_count(Some("5"), 0), 1);
    }

    #[test]
    fn targets_are_trimmed_and_empties_dropped() {
        assert_eq!(parse_targets(" a , ,b,, "), vec!["a", "b"]);
        assert!(parse_targets(" , ,").is_empty());
    }
}
