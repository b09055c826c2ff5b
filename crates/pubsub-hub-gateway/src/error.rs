//! The gateway's error type.

use std::fmt;

use pubsub_hub::HubError;

/// Everything that can go wrong in a [`Gateway`](crate::Gateway) call.
#[derive(Debug)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is invalid; the message names the setting.
    Config(String),
    /// The channel name is not acceptable (empty, too long, or an unknown namespace).
    InvalidChannel(String),
    /// A payload is too large or not acceptable.
    InvalidPayload(String),
    /// The hub failed (Redis unavailable, timed out, closed).
    Hub(HubError),
    /// The history store failed (for example Redis is unreachable).
    Unavailable(String),
    /// The gateway has been shut down.
    Closed,
}

impl GatewayError {
    /// The configuration was refused.
    pub fn is_config(&self) -> bool {
        matches!(self, GatewayError::Config(_))
    }

    /// The channel name was refused.
    pub fn is_invalid_channel(&self) -> bool {
        matches!(self, GatewayError::InvalidChannel(_))
    }

    /// Redis could not be reached or did not answer in time.
    pub fn is_unavailable(&self) -> bool {
        match self {
            GatewayError::Hub(e) => e.is_unavailable() || e.is_timeout(),
            GatewayError::Unavailable(_) => true,
            _ => false,
        }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Config(m) => write!(f, "invalid gateway configuration: {m}"),
            GatewayError::InvalidChannel(m) => write!(f, "invalid channel: {m}"),
            GatewayError::InvalidPayload(m) => write!(f, "invalid payload: {m}"),
            GatewayError::Hub(e) => write!(f, "{e}"),
            GatewayError::Unavailable(m) => write!(f, "history store failed: {m}"),
            GatewayError::Closed => f.write_str("the gateway is shut down"),
        }
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GatewayError::Hub(e) => Some(e),
            _ => None,
        }
    }
}

impl From<HubError> for GatewayError {
    fn from(e: HubError) -> Self {
        GatewayError::Hub(e)
    }
}
