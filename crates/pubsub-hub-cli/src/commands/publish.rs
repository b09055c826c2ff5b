//! `pubsub-hub publish`: one message, `--count` times, printing Redis' delivered counts.

use std::io::{IsTerminal, Read, Write};

use pubsub_hub::HubConfig;
use serde_json::Value;

use crate::cli::PublishArgs;
use crate::config::RedisTarget;
use crate::error::CliError;

/// Publishes as `args` says and prints one delivered count per line.
pub async fn run(target: &RedisTarget, args: &PublishArgs) -> Result<(), CliError> {
    let input = read_input(args)?;
    let payload = encode(input, args.raw)?;
    let hub = super::connect(target, HubConfig::default()).await?;
    let result = publish_all(&hub, target, args, &payload).await;
    hub.shutdown().await;
    result
}

async fn publish_all(
    hub: &pubsub_hub::PubSubHub,
    target: &RedisTarget,
    args: &PublishArgs,
    payload: &[u8],
) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    for _ in 0..args.count {
        let (command, sent) = if args.shard {
            ("SPUBLISH", hub.spublish_bytes(&args.channel, payload).await)
        } else {
            ("PUBLISH", hub.publish_bytes(&args.channel, payload).await)
        };
        let delivered = sent.map_err(|e| CliError::from_hub(command, &target.display(), &e))?;
        let mut out = stdout.lock();
        if let Err(e) = writeln!(out, "{delivered}").and_then(|_| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(CliError::failure(format!("cannot write to stdout: {e}")));
        }
    }
    Ok(())
}

/// Where the message came from, and its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Input {
    /// The bytes as given.
    pub bytes: Vec<u8>,
    /// True when read from stdin or a file (a trailing newline is then not meant as data
    /// in JSON mode).
    pub from_stream: bool,
}

fn read_input(args: &PublishArgs) -> Result<Input, CliError> {
    if let Some(path) = &args.file {
        let bytes = std::fs::read(path)
            .map_err(|e| CliError::failure(format!("cannot read {}: {e}", path.display())))?;
        return Ok(Input {
            bytes,
            from_stream: true,
        });
    }
    match args.message.as_deref() {
        Some("-") => read_stdin(),
        Some(text) => Ok(Input {
            bytes: text.as_bytes().to_vec(),
            from_stream: false,
        }),
        None if std::io::stdin().is_terminal() => Err(no_message()),
        // Without `-`, an empty stdin (say /dev/null in a script) is a forgotten message,
        // not a request to publish an empty one.
        None => match read_stdin()? {
            input if input.bytes.is_empty() => Err(no_message()),
            input => Ok(input),
        },
    }
}

fn no_message() -> CliError {
    CliError::usage("no message: give MESSAGE, `-` to read stdin, or --file PATH")
}

fn read_stdin() -> Result<Input, CliError> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::failure(format!("cannot read stdin: {e}")))?;
    Ok(Input {
        bytes,
        from_stream: true,
    })
}

/// The bytes to PUBLISH: exactly the input with `raw`; otherwise JSON (see `--help`).
pub fn encode(input: Input, raw: bool) -> Result<Vec<u8>, CliError> {
    if raw {
        return Ok(input.bytes);
    }
    let mut text = String::from_utf8(input.bytes)
        .map_err(|_| CliError::usage("the message is not UTF-8 text; use --raw to send bytes"))?;
    if input.from_stream {
        if text.ends_with("\r\n") {
            text.truncate(text.len() - 2);
        } else if text.ends_with('\n') {
            text.truncate(text.len() - 1);
        }
    }
    let value = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    serde_json::to_vec(&value).map_err(|e| CliError::failure(format!("cannot encode JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(s: &str) -> Input {
        Input {
            bytes: s.as_bytes().to_vec(),
            from_stream: false,
        }
    }

    #[test]
    fn json_mode_compacts_json_and_quotes_text() {
        assert_eq!(encode(arg("{\"a\": 1}"), false).unwrap(), b"{\"a\":1}");
        assert_eq!(encode(arg("42"), false).unwrap(), b"42");
        assert_eq!(
            encode(arg("hello world"), false).unwrap(),
            b"\"hello world\""
        );
        let piped = Input {
            bytes: b"hi\n".to_vec(),
            from_stream: true,
        };
        assert_eq!(encode(piped, false).unwrap(), b"\"hi\"");
    }

    #[test]
    fn raw_mode_keeps_bytes() {
        let piped = Input {
            bytes: vec![0xff, b'\n'],
            from_stream: true,
        };
        assert_eq!(encode(piped, true).unwrap(), vec![0xff, b'\n']);
        let bad = Input {
            bytes: vec![0xff],
            from_stream: true,
        };
        assert!(encode(bad, false).is_err());
    }
}
