//! The dashboard's input limits: every one has a documented default and can be changed.
//!
//! A request over a limit is refused as a whole with a 4xx `{"error": ...}` that names the
//! limit (413 when the limit is a size, 400 when it is a count), before anything is
//! published or subscribed, so nothing is half-applied. `count` is the exception the
//! contract demands: it is clamped to `1..=max_publish_count`, never refused.
//!
//! Besides the inputs, it bounds what one answer lists from the server as a whole
//! (`max_listed_channels`), and what one connection may hold: how long its request head and
//! body may take to arrive, and how many connections are open at once.

use std::time::Duration;

use crate::error::ApiError;

/// Largest request body, in bytes (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest `message` of `POST /publish`, in bytes after trimming (64 KiB). Each publish is
/// also kept in up to every matching subscriber's ring buffer, so this bounds memory too.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most subscribers the dashboard holds (256); keeps one `/state` answer's size bounded and,
/// in the default dedicated mode (one Redis connection per subscriber), the number of Redis
/// connections modest.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 256;
/// Most channels or patterns one subscriber may list (32).
pub const DEFAULT_MAX_TARGETS_PER_SUBSCRIPTION: usize = 32;
/// Longest subscriber name, in bytes after trimming (128).
pub const DEFAULT_MAX_NAME_BYTES: usize = 128;
/// Longest channel or pattern, in bytes after trimming (256).
pub const DEFAULT_MAX_TARGET_BYTES: usize = 256;
/// Most publishes one `POST /publish` makes: the contract's clamp of `count` (20).
pub const DEFAULT_MAX_PUBLISH_COUNT: u32 = 20;
/// Most names `/state` lists in `active_channels` and in `shard_channels` (1,000). Both
/// come from the whole Redis server (`PUBSUB CHANNELS *`), not from this dashboard, so
/// without a bound one answer grows with every other client's channels (50,000 foreign
/// channels made a 1.65 MB `/state`). Beyond it the list is cut, in sorted order, and
/// `active_channels_truncated` / `active_channels_total` say so.
pub const DEFAULT_MAX_LISTED_CHANNELS: usize = 1_000;
/// How long a client may take to send a request's head (request line and headers), and
/// how long an idle keep-alive connection is kept waiting for its next request (10 s).
/// After it the connection is closed.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may take to arrive, as a whole (10 s); then the answer is a
/// 408 and the connection is closed.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most HTTP connections open at once (512). Every open page holds one for its push stream
/// and browsers open a few more; beyond the bound a new connection is answered with a 503
/// and closed at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// What one request may ask of the dashboard. The defaults are the `DEFAULT_*` constants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body ([`DEFAULT_MAX_BODY_BYTES`]); larger bodies get a 413 before
    /// they are read to the end.
    pub max_body_bytes: usize,
    /// Largest message ([`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// Most subscribers ([`DEFAULT_MAX_SUBSCRIPTIONS`]). [`crate::Dashboard::start`] also
    /// gives it to the hub, so the library enforces it too.
    pub max_subscriptions: usize,
    /// Most targets per subscriber ([`DEFAULT_MAX_TARGETS_PER_SUBSCRIPTION`]).
    pub max_targets_per_subscription: usize,
    /// Longest subscriber name ([`DEFAULT_MAX_NAME_BYTES`]).
    pub max_name_bytes: usize,
    /// Longest channel or pattern, for publishing and subscribing
    /// ([`DEFAULT_MAX_TARGET_BYTES`]).
    pub max_target_bytes: usize,
    /// Upper end of the `count` clamp ([`DEFAULT_MAX_PUBLISH_COUNT`]); at least 1.
    pub max_publish_count: u32,
    /// Most names listed in `active_channels` and `shard_channels`
    /// ([`DEFAULT_MAX_LISTED_CHANNELS`]); never refuses anything, cuts the list and marks it.
    pub max_listed_channels: usize,
    /// Bound on receiving a request head, and on an idle keep-alive connection
    /// ([`DEFAULT_HEADER_READ_TIMEOUT`]).
    pub header_read_timeout: Duration,
    /// Bound on receiving a whole request body ([`DEFAULT_BODY_READ_TIMEOUT`]): 408.
    pub body_read_timeout: Duration,
    /// Most connections open at once ([`DEFAULT_MAX_CONNECTIONS`]): 503 beyond.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_targets_per_subscription: DEFAULT_MAX_TARGETS_PER_SUBSCRIPTION,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            max_target_bytes: DEFAULT_MAX_TARGET_BYTES,
            max_publish_count: DEFAULT_MAX_PUBLISH_COUNT,
            max_listed_channels: DEFAULT_MAX_LISTED_CHANNELS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Limits {
    /// Checks that every limit can serve a request: counts, sizes and time-outs at least 1,
    /// and `max_connections` within what a semaphore holds. The error names the limit.
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_message_bytes", self.max_message_bytes),
            ("max_subscriptions", self.max_subscriptions),
            (
                "max_targets_per_subscription",
                self.max_targets_per_subscription,
            ),
            ("max_name_bytes", self.max_name_bytes),
            ("max_target_bytes", self.max_target_bytes),
            ("max_publish_count", self.max_publish_count as usize),
            ("max_listed_channels", self.max_listed_channels),
            ("max_connections", self.max_connections),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(format!("the limit {name} must be at least 1"));
        }
        let max_permits = tokio::sync::Semaphore::MAX_PERMITS;
        if self.max_connections > max_permits {
            return Err(format!(
                "the limit max_connections must be at most {max_permits}"
            ));
        }
        for (name, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("the limit {name} must be more than 0"));
            }
        }
        Ok(())
    }

    /// A 413 naming a size limit: `what is N bytes; the limit max_x is M bytes`.
    pub(crate) fn too_large(what: &str, size: usize, limit: &str, max: usize) -> ApiError {
        ApiError::PayloadTooLarge(format!(
            "{what} is {size} bytes; the limit {limit} is {max} bytes"
        ))
    }

    /// Checks the size of a `message`.
    pub(crate) fn check_message(&self, message: &str) -> Result<(), ApiError> {
        if message.len() > self.max_message_bytes {
            return Err(Self::too_large(
                "message",
                message.len(),
                "max_message_bytes",
                self.max_message_bytes,
            ));
        }
        Ok(())
    }

    /// Checks a subscriber name's size and characters.
    pub(crate) fn check_name(&self, name: &str) -> Result<(), ApiError> {
        if name.len() > self.max_name_bytes {
            return Err(Self::too_large(
                "name",
                name.len(),
                "max_name_bytes",
                self.max_name_bytes,
            ));
        }
        no_control_characters("name", name)
    }

    /// Checks one channel or pattern's size and characters.
    pub(crate) fn check_target(&self, field: &str, target: &str) -> Result<(), ApiError> {
        if target.len() > self.max_target_bytes {
            return Err(Self::too_large(
                field,
                target.len(),
                "max_target_bytes",
                self.max_target_bytes,
            ));
        }
        no_control_characters(field, target)
    }

    /// Checks a subscriber's target list: how many, and each one.
    pub(crate) fn check_targets(&self, targets: &[String]) -> Result<(), ApiError> {
        if targets.len() > self.max_targets_per_subscription {
            return Err(ApiError::bad_request(format!(
                "target lists {} items; the limit max_targets_per_subscription is {}",
                targets.len(),
                self.max_targets_per_subscription
            )));
        }
        targets
            .iter()
            .try_for_each(|t| self.check_target("target", t))
    }

    /// The refusal for a full dashboard.
    pub(crate) fn subscriptions_full(&self) -> ApiError {
        ApiError::bad_request(format!(
            "there are already {0} subscriptions; the limit max_subscriptions is {0}",
            self.max_subscriptions
        ))
    }
}

/// Names and channels are shown as text and written to logs: control characters (line
/// breaks, escape sequences, NUL) in them are refused rather than stored.
fn no_control_characters(field: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_limit() {
        let limits = Limits {
            max_message_bytes: 3,
            max_name_bytes: 2,
            max_target_bytes: 1,
            max_targets_per_subscription: 1,
            ..Limits::default()
        };
        let e = limits.check_message("abcd").unwrap_err();
        assert_eq!(e.status(), 413);
        assert!(e.message().contains("max_message_bytes is 3"), "{e}");
        assert!(
            limits
                .check_name("abc")
                .unwrap_err()
                .message()
                .contains("max_name_bytes")
        );
        assert!(
            limits
                .check_target("channel", "ab")
                .unwrap_err()
                .message()
                .starts_with("channel is 2 bytes")
        );
        let e = limits.check_targets(&["a".into(), "b".into()]).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message().contains("max_targets_per_subscription is 1"));
        assert_eq!(limits.check_name("\n").unwrap_err().status(), 400);
        assert!(Limits::default().check_name("é,b c").is_ok());
    }
}
