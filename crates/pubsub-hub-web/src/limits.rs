//! The dashboard's input limits: every one has a documented default and can be changed.
//!
//! A request over a limit is refused as a whole with a 4xx `{"error": ...}` that names the
//! limit (413 when the limit is a size, 400 when it is a count), before anything is
//! published or subscribed, so nothing is half-applied. `count` is the exception the
//! contract demands: it is clamped to `1..=max_publish_count`, never refused.
//!
//! Besides the inputs, it bounds what one answer lists from the server as a whole
//! (`max_listed_channels`), and what one connection may hold: how long its request head and
//! body may take to arrive, how long a write to it may be blocked by a client that does not
//! read, and how many connections are open at once.

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
/// How long a response may make no write progress (10 s): a client that stops reading a
/// large `/state` or an `/events` stream fills the socket buffers, and once nothing more
/// can be written for this long the connection is closed, giving its place under
/// [`DEFAULT_MAX_CONNECTIONS`] back. The clock runs only while a write is blocked, so an
/// idle stream or a slow but reading client is never cut.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// Bound on a blocked write to a client ([`DEFAULT_WRITE_TIMEOUT`]): a connection whose
    /// client has stopped reading is closed after it.
    pub write_timeout: Duration,
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
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Limits {
    /// Checks that every limit can serve a request: counts, sizes and time-outs at least 1,
    /// and `max_connections` within what a semaphore holds. The error names the limit (a
    /// [`Limit`], the field of this struct) and the reason, for a caller to report in its
    /// own words (the binary names its flag, variable or file key).
    pub fn validate(&self) -> Result<(), LimitError> {
        let counts = [
            (Limit::MaxBodyBytes, self.max_body_bytes),
            (Limit::MaxMessageBytes, self.max_message_bytes),
            (Limit::MaxSubscriptions, self.max_subscriptions),
            (
                Limit::MaxTargetsPerSubscription,
                self.max_targets_per_subscription,
            ),
            (Limit::MaxNameBytes, self.max_name_bytes),
            (Limit::MaxTargetBytes, self.max_target_bytes),
            (Limit::MaxPublishCount, self.max_publish_count as usize),
            (Limit::MaxListedChannels, self.max_listed_channels),
            (Limit::MaxConnections, self.max_connections),
        ];
        let zero = |limit| LimitError {
            limit,
            problem: LimitProblem::Zero,
        };
        if let Some((limit, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(zero(*limit));
        }
        let max = tokio::sync::Semaphore::MAX_PERMITS;
        if self.max_connections > max {
            return Err(LimitError {
                limit: Limit::MaxConnections,
                problem: LimitProblem::AboveMax { max },
            });
        }
        for (limit, d) in [
            (Limit::HeaderReadTimeout, self.header_read_timeout),
            (Limit::BodyReadTimeout, self.body_read_timeout),
            (Limit::WriteTimeout, self.write_timeout),
        ] {
            if d.is_zero() {
                return Err(zero(limit));
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

/// One of the [`Limits`], by its field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::max_body_bytes`].
    MaxBodyBytes,
    /// [`Limits::max_message_bytes`].
    MaxMessageBytes,
    /// [`Limits::max_subscriptions`].
    MaxSubscriptions,
    /// [`Limits::max_targets_per_subscription`].
    MaxTargetsPerSubscription,
    /// [`Limits::max_name_bytes`].
    MaxNameBytes,
    /// [`Limits::max_target_bytes`].
    MaxTargetBytes,
    /// [`Limits::max_publish_count`].
    MaxPublishCount,
    /// [`Limits::max_listed_channels`].
    MaxListedChannels,
    /// [`Limits::header_read_timeout`].
    HeaderReadTimeout,
    /// [`Limits::body_read_timeout`].
    BodyReadTimeout,
    /// [`Limits::write_timeout`].
    WriteTimeout,
    /// [`Limits::max_connections`].
    MaxConnections,
}

impl Limit {
    /// The field's name, as in the `/state` and error texts: `max_body_bytes`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxBodyBytes => "max_body_bytes",
            Limit::MaxMessageBytes => "max_message_bytes",
            Limit::MaxSubscriptions => "max_subscriptions",
            Limit::MaxTargetsPerSubscription => "max_targets_per_subscription",
            Limit::MaxNameBytes => "max_name_bytes",
            Limit::MaxTargetBytes => "max_target_bytes",
            Limit::MaxPublishCount => "max_publish_count",
            Limit::MaxListedChannels => "max_listed_channels",
            Limit::HeaderReadTimeout => "header_read_timeout",
            Limit::BodyReadTimeout => "body_read_timeout",
            Limit::WriteTimeout => "write_timeout",
            Limit::MaxConnections => "max_connections",
        }
    }

    /// True for the time-outs (a [`std::time::Duration`] rather than a count).
    pub fn is_duration(self) -> bool {
        matches!(
            self,
            Limit::HeaderReadTimeout | Limit::BodyReadTimeout | Limit::WriteTimeout
        )
    }
}

/// What is wrong with a limit's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitProblem {
    /// It is 0, which would refuse every request (or time every one out).
    Zero,
    /// It is above what can be enforced.
    AboveMax {
        /// The largest value that can.
        max: usize,
    },
}

/// A limit that cannot serve, from [`Limits::validate`]: which one and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitError {
    /// The limit.
    pub limit: Limit,
    /// What is wrong with its value.
    pub problem: LimitProblem,
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.limit.name();
        match self.problem {
            LimitProblem::Zero if self.limit.is_duration() => {
                write!(f, "the limit {name} must be more than 0")
            }
            LimitProblem::Zero => write!(f, "the limit {name} must be at least 1"),
            LimitProblem::AboveMax { max } => write!(f, "the limit {name} must be at most {max}"),
        }
    }
}

impl std::error::Error for LimitError {}

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
    fn validation_names_the_limit_and_the_reason() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let e = Limits {
            max_publish_count: 0,
            ..Limits::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            (e.limit, e.problem),
            (Limit::MaxPublishCount, LimitProblem::Zero)
        );
        assert_eq!(
            e.to_string(),
            "the limit max_publish_count must be at least 1"
        );
        let e = Limits {
            body_read_timeout: Duration::ZERO,
            ..Limits::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.limit, Limit::BodyReadTimeout);
        assert_eq!(
            e.to_string(),
            "the limit body_read_timeout must be more than 0"
        );
        let e = Limits {
            max_connections: usize::MAX,
            ..Limits::default()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(e.problem, LimitProblem::AboveMax { .. }), "{e}");
    }

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
