//! The library's error type.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong in a [`PubSubHub`](crate::PubSubHub) call.
///
/// The enum is `#[non_exhaustive]`: match the `is_*` helpers rather than every variant.
/// Cloning is for one failure that several callers share (a batch of durable
/// publications).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum HubError {
    /// A subscription with this name already exists in the hub.
    DuplicateName(String),
    /// A subscription was requested with no targets.
    EmptyTargets,
    /// The subscription name is empty.
    InvalidName(String),
    /// A target is not acceptable (for example the empty string).
    InvalidTarget(String),
    /// A configured limit would be exceeded (which limit, and its value).
    LimitExceeded {
        /// The name of the limit, as in [`HubConfig`](crate::HubConfig).
        limit: &'static str,
        /// The configured maximum.
        max: usize,
    },
    /// Redis answered with an error, or the connection failed.
    Redis(redis::RedisError),
    /// Redis cannot be reached right now (the last connection error).
    Unavailable(String),
    /// Redis did not answer within the configured time.
    Timeout {
        /// What we were doing.
        operation: &'static str,
        /// The bound that was exceeded.
        after: Duration,
    },
    /// The hub (or the subscription) has been shut down.
    Closed,
    /// A [`HubConfig`](crate::HubConfig) value is refused (see
    /// [`HubConfig::validate`](crate::HubConfig::validate)).
    InvalidConfig {
        /// The field, as named in [`HubConfig`](crate::HubConfig).
        field: &'static str,
        /// What is wrong with its value.
        reason: &'static str,
    },
}

impl HubError {
    /// The name is already in use.
    pub fn is_duplicate_name(&self) -> bool {
        matches!(self, HubError::DuplicateName(_))
    }

    /// No targets were given.
    pub fn is_empty_targets(&self) -> bool {
        matches!(self, HubError::EmptyTargets)
    }

    /// The caller's input was rejected before Redis was asked (name, targets, limits, the
    /// hub's configuration).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            HubError::DuplicateName(_)
                | HubError::EmptyTargets
                | HubError::InvalidName(_)
                | HubError::InvalidTarget(_)
                | HubError::LimitExceeded { .. }
                | HubError::InvalidConfig { .. }
        )
    }

    /// The hub's configuration was refused at construction ([`HubError::InvalidConfig`]).
    pub fn is_invalid_config(&self) -> bool {
        matches!(self, HubError::InvalidConfig { .. })
    }

    /// A configured limit was hit.
    pub fn is_limit_exceeded(&self) -> bool {
        matches!(self, HubError::LimitExceeded { .. })
    }

    /// Redis failed or could not be reached (including time-outs): retrying later may work.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            HubError::Redis(_) | HubError::Timeout { .. } | HubError::Unavailable(_)
        )
    }

    /// Redis did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HubError::Timeout { .. })
            || matches!(self, HubError::Redis(e) if e.is_timeout())
    }

    /// The hub or subscription was already closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, HubError::Closed)
    }

    /// When Redis refused the command or the login of the user the hub connects as, rather
    /// than being away: `"NOPERM"`, `"NOAUTH"`, or `"authentication failed"` (a wrong
    /// password). Retrying does not help until the ACL or the credentials change. `None`
    /// for every other error.
    ///
    /// The library reads its own texts here (an `Unavailable` carries the last connection
    /// error as text), so that no caller has to.
    pub fn refusal(&self) -> Option<&'static str> {
        let text = match self {
            HubError::Redis(e) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
                return Some("authentication failed");
            }
            HubError::Redis(e) => e.code().map_or_else(|| e.to_string(), str::to_owned),
            HubError::Unavailable(why) => why.clone(),
            _ => return None,
        };
        if text.contains("authentication failed") || text.contains("WRONGPASS") {
            return Some("authentication failed");
        }
        ["NOPERM", "NOAUTH"]
            .into_iter()
            .find(|code| text.contains(code))
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::DuplicateName(name) => {
                write!(f, "a subscription named {name:?} already exists")
            }
            HubError::EmptyTargets => f.write_str("at least one target is required"),
            HubError::InvalidName(why) => write!(f, "invalid subscription name: {why}"),
            HubError::InvalidTarget(why) => write!(f, "invalid target: {why}"),
            HubError::LimitExceeded { limit, max } => {
                write!(f, "limit {limit} exceeded (at most {max})")
            }
            HubError::Redis(e) => write!(f, "redis error: {e}"),
            HubError::Unavailable(why) => write!(f, "redis is unavailable: {why}"),
            HubError::Timeout { operation, after } => {
                write!(f, "redis did not answer {operation} within {after:?}")
            }
            HubError::Closed => f.write_str("the hub has been shut down"),
            HubError::InvalidConfig { field, reason } => {
                write!(f, "invalid hub configuration: {field} {reason}")
            }
        }
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HubError::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for HubError {
    fn from(e: redis::RedisError) -> Self {
        HubError::Redis(e)
    }
}

/// Runs `fut` with a time bound, mapping both failure kinds into [`HubError`].
pub(crate) async fn bounded<T>(
    operation: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, HubError> {
    match tokio::time::timeout(after, fut).await {
        Ok(result) => result.map_err(HubError::from),
        Err(_) => Err(HubError::Timeout { operation, after }),
    }
}

/// True when the error means the connection can no longer be trusted (as opposed to Redis
/// refusing one command, which leaves the connection usable).
pub(crate) fn connection_broken(e: &HubError) -> bool {
    match e {
        HubError::Redis(e) => {
            e.is_io_error()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.is_unrecoverable_error()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_from_absence() {
        let auth = HubError::Redis(redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "bad password",
        )));
        assert_eq!(auth.refusal(), Some("authentication failed"));
        let shard = HubError::Unavailable("127.0.0.1:7000: NOAUTH Authentication required".into());
        assert_eq!(shard.refusal(), Some("NOAUTH"));
        let away = HubError::Unavailable("no cluster node answered".into());
        assert_eq!(away.refusal(), None);
        assert_eq!(HubError::Closed.refusal(), None);
    }
}
