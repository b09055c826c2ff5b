//! The library's error type.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong in a [`PubSubHub`](crate::PubSubHub) call.
///
/// The enum is `#[non_exhaustive]`: match the `is_*` helpers rather than every variant.
#[derive(Debug)]
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

    /// The caller's input was rejected before Redis was asked (name, targets, limits).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            HubError::DuplicateName(_)
                | HubError::EmptyTargets
                | HubError::InvalidName(_)
                | HubError::InvalidTarget(_)
                | HubError::LimitExceeded { .. }
        )
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
