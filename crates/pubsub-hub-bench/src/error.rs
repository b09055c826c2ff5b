//! The bench's error: what failed, as one line. The binary prints it and exits 1.

use std::fmt;

/// A failed scenario or set-up step, as one line of text.
#[derive(Debug)]
pub struct BenchError(String);

impl BenchError {
    /// An error with this message (line breaks become spaces).
    pub fn new(message: impl Into<String>) -> Self {
        let message: String = message.into();
        BenchError(message.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}
