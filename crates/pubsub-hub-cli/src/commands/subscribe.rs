//! `pubsub-hub subscribe`: print messages as they arrive, like `redis-cli subscribe`, with
//! connection events on stderr.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use pubsub_hub::{Event, HubConfig, PayloadEncoding, ReceivedMessage, TargetKind};

use crate::cli::{OutputFormat, SubscribeArgs};
use crate::config::RedisTarget;
use crate::error::CliError;

/// The subscription's name inside this process's hub.
const SUBSCRIPTION_NAME: &str = "pubsub-hub-cli";

/// How long the subscription may take to close after Ctrl-C or SIGTERM. Closing tells Redis
/// politely; when Redis is away or stalled the process exits anyway after this, and Redis
/// drops the subscription with the connection. Keeps the promise that Ctrl-C ends the
/// command within a second, whatever Redis does.
const STOP_BOUND: std::time::Duration = std::time::Duration::from_millis(500);

/// Subscribes and prints until `--count`, a signal, or a broken stdout.
///
/// A signal ends it at any point: also while it connects or subscribes to a Redis that
/// does not answer (the signal handlers are installed first, so a signal never waits for
/// a connect time-out).
pub async fn run(target: &RedisTarget, args: &SubscribeArgs) -> Result<(), CliError> {
    let stop = pubsub_hub_web::shutdown_signal();
    tokio::pin!(stop);
    let hub = tokio::select! {
        hub = super::connect(target, HubConfig::default()) => hub?,
        _ = &mut stop => return Ok(()),
    };
    let result = tokio::select! {
        r = receive(&hub, target, args) => r,
        _ = &mut stop => Ok(()),
    };
    if tokio::time::timeout(STOP_BOUND, hub.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("the subscription did not close within {STOP_BOUND:?}; exiting anyway");
    }
    result
}

async fn receive(
    hub: &pubsub_hub::PubSubHub,
    target: &RedisTarget,
    args: &SubscribeArgs,
) -> Result<(), CliError> {
    let kind = if args.pattern {
        TargetKind::Pattern
    } else if args.shard {
        TargetKind::Shard
    } else {
        TargetKind::Channel
    };
    let sub = hub
        .subscribe_kind(SUBSCRIPTION_NAME, kind, args.targets.clone())
        .await
        .map_err(|e| CliError::from_hub("SUBSCRIBE", &target.display(), &e))?;
    let mut consumer = sub.consumer();
    // Messages that arrived between Redis' confirmation and the consumer's creation are
    // only in the ring buffer; print them first. Later ones are in both places and are
    // recognised by identity (the buffer and the events share one `Arc`).
    let mut backlog: Vec<Arc<ReceivedMessage>> = sub.messages(None);
    backlog.reverse();
    let mut seen: HashSet<*const ReceivedMessage> = backlog.iter().map(Arc::as_ptr).collect();
    eprintln!(
        "pubsub-hub: subscribed to {} {}{}: {}",
        sub.targets().len(),
        kind.as_str(),
        if sub.targets().len() == 1 { "" } else { "s" },
        sub.targets().join(", ")
    );

    let mut printer = Printer::new(args.format, args.count);
    for m in &backlog {
        if printer.print(m)? {
            return Ok(());
        }
    }
    while let Some(event) = consumer.recv().await {
        match event {
            Event::Message(m) => {
                if !seen.is_empty() && seen.remove(&Arc::as_ptr(&m)) {
                    continue;
                }
                if printer.print(&m)? {
                    return Ok(());
                }
            }
            Event::Lagged(n) => {
                eprintln!("pubsub-hub: fell behind: {n} message(s) dropped");
            }
            Event::Disconnected { error } => {
                eprintln!(
                    "pubsub-hub: connection to Redis lost ({}); reconnecting, messages published meanwhile are lost",
                    crate::error::one_line(&error)
                );
            }
            Event::Reconnected => {
                eprintln!("pubsub-hub: reconnected and subscribed again");
            }
            _ => {}
        }
    }
    Err(CliError::failure(
        "the subscription was closed unexpectedly",
    ))
}

/// Writes messages to stdout and counts them against `--count`.
struct Printer {
    format: OutputFormat,
    remaining: Option<u64>,
    out: std::io::Stdout,
}

impl Printer {
    fn new(format: OutputFormat, count: Option<u64>) -> Self {
        Printer {
            format,
            remaining: count,
            out: std::io::stdout(),
        }
    }

    /// Prints one message; `Ok(true)` when done (count reached, or stdout closed).
    fn print(&mut self, m: &ReceivedMessage) -> Result<bool, CliError> {
        let line = match self.format {
            OutputFormat::Text => text_line(m),
            OutputFormat::Json => m.to_json().to_string(),
        };
        let mut out = self.out.lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(true);
            }
            return Err(CliError::failure(format!("cannot write to stdout: {e}")));
        }
        if let Some(n) = self.remaining.as_mut() {
            *n -= 1;
            return Ok(*n == 0);
        }
        Ok(false)
    }
}

/// `CHANNEL PAYLOAD` or `CHANNEL (via PATTERN) PAYLOAD`.
pub fn text_line(m: &ReceivedMessage) -> String {
    let payload = match m.payload.as_str() {
        Some(text) => escape_controls(text),
        None => {
            debug_assert_eq!(m.payload.encoding(), PayloadEncoding::Base64);
            format!("base64:{}", m.payload.json().as_str().unwrap_or_default())
        }
    };
    let channel = escape_controls(&m.channel);
    match &m.pattern {
        Some(p) => format!("{channel} (via {}) {payload}", escape_controls(p)),
        None => format!("{channel} {payload}"),
    }
}

/// Escapes control characters so that one message is one line on a terminal.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pubsub_hub::Payload;

    fn msg(channel: &str, pattern: Option<&str>, payload: &[u8]) -> ReceivedMessage {
        ReceivedMessage {
            channel: channel.into(),
            pattern: pattern.map(str::to_owned),
            payload: Payload::from_bytes(payload.to_vec()),
            received_at_ms: 0,
        }
    }

    #[test]
    fn text_lines() {
        assert_eq!(text_line(&msg("a", None, b"hello world")), "a hello world");
        assert_eq!(
            text_line(&msg("a:1", Some("a:*"), b"{\"x\":1}")),
            "a:1 (via a:*) {\"x\":1}"
        );
        assert_eq!(text_line(&msg("a", None, b"two\nlines")), "a two\\nlines");
        assert_eq!(text_line(&msg("a", None, &[0xff, 0])), "a base64:/wA=");
    }
}
