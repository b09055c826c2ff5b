//! The progress display: one line per finished measurement on stderr, stamped with the
//! time since the start, so a long run shows it is alive and where it is.

use std::io::Write;
use std::time::Instant;

/// Writes progress lines to stderr.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    scenario: std::cell::Cell<&'static str>,
}

impl Progress {
    /// Starts the clock.
    pub fn new() -> Self {
        Progress {
            start: Instant::now(),
            scenario: std::cell::Cell::new("bench"),
        }
    }

    /// A scenario begins.
    pub fn scenario(&self, name: &'static str) {
        self.scenario.set(name);
        self.line(&format!("== {name}"));
    }

    /// A general note (not tied to a measurement).
    pub fn note(&self, text: &str) {
        self.line(text);
    }

    /// One measurement finished.
    pub fn step(&self, text: &str) {
        self.line(&format!("{}: {text}", self.scenario.get()));
    }

    fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[{:>6.1}s] {text}", self.start.elapsed().as_secs_f64());
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(-1000.0), "-1,000");
    }
}
