//! The binary's errors: one line of text and a documented exit code.

use std::fmt;

use pubsub_hub::HubError;

/// The exit-code table shown at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (subscribe: --count reached, or stopped by Ctrl-C / SIGTERM)
  1  runtime error: Redis refused a command or the connection broke, a file could not be
     read
  2  usage or configuration error: bad arguments, a bad config file key or environment
     value, a malformed Redis URL, no message to publish, a public address without a token
  3  Redis unreachable: could not connect (refused, timed out, name not resolved) or
     authentication failed";

/// The process exit codes (see [`EXIT_CODES_HELP`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitStatus {
    /// 0: success.
    Ok = 0,
    /// 1: a runtime failure.
    Failure = 1,
    /// 2: the command line, the configuration or the input is wrong (clap uses 2 for its
    /// own errors too). Restarting does not help.
    Usage = 2,
    /// 3: Redis could not be reached.
    Unreachable = 3,
}

impl ExitStatus {
    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error the binary reports as one line on stderr before exiting.
#[derive(Debug)]
pub struct CliError {
    status: ExitStatus,
    message: String,
}

impl CliError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::Usage, message)
    }

    /// A runtime failure (exit 1).
    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::Failure, message)
    }

    /// Redis could not be reached (exit 3).
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::Unreachable, message)
    }

    fn new(status: ExitStatus, message: impl Into<String>) -> Self {
        CliError {
            status,
            message: one_line(&message.into()),
        }
    }

    /// A hub error while talking to Redis at `address`: exit 3 if it means Redis cannot be
    /// reached or refused us, otherwise 1. `doing` names the step (`connect`, `PUBLISH`).
    pub fn from_hub(doing: &str, address: &str, e: &HubError) -> Self {
        if is_unreachable(e) {
            CliError::unreachable(format!(
                "cannot reach Redis at {address}: {}",
                hub_reason(e)
            ))
        } else if e.is_invalid_input() {
            CliError::usage(format!("{doing}: {e}"))
        } else {
            CliError::failure(format!(
                "{doing} failed on Redis at {address}: {}",
                hub_reason(e)
            ))
        }
    }

    /// The exit status.
    pub fn status(&self) -> ExitStatus {
        self.status
    }

    /// The one-line message (without the `pubsub-hub:` prefix).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// True when the error means "no usable connection": refused, timed out, I/O or DNS
/// failure, authentication refused.
fn is_unreachable(e: &HubError) -> bool {
    match e {
        HubError::Redis(r) => {
            r.is_connection_refusal()
                || r.is_io_error()
                || r.is_timeout()
                || r.is_connection_dropped()
                || r.kind() == redis::ErrorKind::AuthenticationFailed
                || r.code() == Some("NOAUTH")
                || r.code() == Some("WRONGPASS")
        }
        HubError::Timeout { operation, .. } => *operation == "connect",
        HubError::Unavailable(_) => true,
        _ => false,
    }
}

/// The reason without the library's `redis error:` prefix.
fn hub_reason(e: &HubError) -> String {
    match e {
        HubError::Redis(r) => redis_reason(r),
        HubError::Unavailable(why) => why.clone(),
        other => other.to_string(),
    }
}

/// A redis-rs error as a short human sentence.
pub fn redis_reason(e: &redis::RedisError) -> String {
    if e.is_connection_refusal() {
        return "connection refused".into();
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.code() == Some("WRONGPASS")
        || e.code() == Some("NOAUTH")
    {
        return "authentication failed".into();
    }
    e.to_string()
}

/// Collapses any line breaks so the message stays on one line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let e = CliError::failure("first\n  second\r\n\nthird");
        assert_eq!(e.message(), "first; second; third");
        assert_eq!(e.status().code(), 1);
    }

    #[test]
    fn connect_timeout_is_unreachable() {
        let e = HubError::Timeout {
            operation: "connect",
            after: std::time::Duration::from_secs(2),
        };
        let e = CliError::from_hub("connect", "localhost:1", &e);
        assert_eq!(e.status(), ExitStatus::Unreachable);
    }
}
