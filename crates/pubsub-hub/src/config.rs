//! Hub configuration and its documented defaults.

use std::time::Duration;

use crate::error::HubError;

/// Messages kept per subscription for inspection (the guide's ring buffer).
pub const DEFAULT_BUFFER_SIZE: usize = 50;
/// Payload bytes kept per subscription's ring buffer: older messages leave the buffer
/// (not the consumers' queues) once their payloads add up to more. A message larger than
/// the whole budget is kept as a preview of its start with its true size
/// ([`Payload::is_preview`](crate::Payload::is_preview)); consumers still receive it whole.
pub const DEFAULT_BUFFER_MAX_BYTES: usize = 1024 * 1024;
/// Events a [`Consumer`](crate::Consumer) may fall behind by before it gets
/// [`Event::Lagged`](crate::Event::Lagged). Exact (not rounded); a queue's memory grows only
/// as far as its consumer ever fell behind.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Payload bytes one consumer's queue may hold before its oldest messages are dropped (and
/// reported as [`Event::Lagged`](crate::Event::Lagged)). The newest message is always
/// queued whole, whatever its size.
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Longest duration [`HubConfig::validate`] accepts for a time-out, interval or backoff:
/// longer ones could overflow a clock reading when added to it.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Bound on every Redis command (publish, introspection, SUBSCRIBE, PING).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on opening one connection to Redis.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle subscriber connection sends PING, so that a half-open socket is noticed.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// First reconnect delay; it doubles on each failed attempt.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Cap on the reconnect delay. Reconnecting never gives up.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Most subscriptions one hub holds at once.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 10_000;
/// Most distinct channels counted individually in `Stats::channel_published`;
/// publishes to further channels are counted in `Stats::channel_published_other`.
pub const DEFAULT_MAX_TRACKED_CHANNELS: usize = 1_000;
/// Subscriber connections in [`ConnectionMode::Shared`] when not given.
pub const DEFAULT_SHARED_CONNECTIONS: usize = 4;

/// How named subscribers map onto Redis connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionMode {
    /// One Redis connection per subscription, as in the guide. `PUBSUB NUMSUB` then counts
    /// named subscribers.
    Dedicated,
    /// All subscriptions share a fixed set of connections; the hub reference-counts each
    /// channel and pattern. `PUBSUB NUMSUB` then counts connections, not names. Shard
    /// channels go to as many shared shard links, picked by hash slot, each holding one
    /// connection per master it needs.
    Shared {
        /// Number of subscriber connections (at least 1).
        connections: usize,
    },
}

/// Tunables of a [`PubSubHub`](crate::PubSubHub). Start from [`HubConfig::default`] and
/// change what you need with the `with_*` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HubConfig {
    /// Ring-buffer size per subscription ([`DEFAULT_BUFFER_SIZE`]).
    pub buffer_size: usize,
    /// Payload bytes per ring buffer ([`DEFAULT_BUFFER_MAX_BYTES`]).
    pub buffer_max_bytes: usize,
    /// Per-consumer queue bound in events ([`DEFAULT_QUEUE_CAPACITY`]).
    pub queue_capacity: usize,
    /// Per-consumer queue bound in payload bytes ([`DEFAULT_QUEUE_MAX_BYTES`]).
    pub queue_max_bytes: usize,
    /// Bound on each Redis command ([`DEFAULT_COMMAND_TIMEOUT`]).
    pub command_timeout: Duration,
    /// Bound on each connection attempt ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Subscriber keep-alive PING interval ([`DEFAULT_PING_INTERVAL`]).
    pub ping_interval: Duration,
    /// First reconnect delay ([`DEFAULT_RECONNECT_MIN`]).
    pub reconnect_min: Duration,
    /// Largest reconnect delay ([`DEFAULT_RECONNECT_MAX`]).
    pub reconnect_max: Duration,
    /// Most subscriptions at once ([`DEFAULT_MAX_SUBSCRIPTIONS`]).
    pub max_subscriptions: usize,
    /// Most channels tracked by name in the publish statistics ([`DEFAULT_MAX_TRACKED_CHANNELS`]).
    pub max_tracked_channels: usize,
    /// Dedicated (default) or shared subscriber connections.
    pub mode: ConnectionMode,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            buffer_size: DEFAULT_BUFFER_SIZE,
            buffer_max_bytes: DEFAULT_BUFFER_MAX_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_tracked_channels: DEFAULT_MAX_TRACKED_CHANNELS,
            mode: ConnectionMode::Dedicated,
        }
    }
}

impl HubConfig {
    /// Sets the ring-buffer size (0 keeps no history).
    pub fn with_buffer_size(mut self, n: usize) -> Self {
        self.buffer_size = n;
        self
    }
    /// Sets how many payload bytes a ring buffer keeps (a larger message is kept as a
    /// preview).
    pub fn with_buffer_max_bytes(mut self, n: usize) -> Self {
        self.buffer_max_bytes = n;
        self
    }
    /// Sets the per-consumer queue bound in events (at least 1; 0 is refused when the hub
    /// is built).
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }
    /// Sets the payload bytes one consumer's queue may hold (at least 1; the newest message
    /// is always queued whole, whatever its size).
    pub fn with_queue_max_bytes(mut self, n: usize) -> Self {
        self.queue_max_bytes = n;
        self
    }
    /// Sets the bound on each Redis command.
    pub fn with_command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }
    /// Sets the bound on each connection attempt.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// Sets the keep-alive PING interval of subscriber connections.
    pub fn with_ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = d;
        self
    }
    /// Sets the reconnect backoff range (`min` doubles up to `max`; both above zero and
    /// `max` at least `min`, checked when the hub is built).
    pub fn with_reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }
    /// Sets the most subscriptions the hub holds at once.
    pub fn with_max_subscriptions(mut self, n: usize) -> Self {
        self.max_subscriptions = n;
        self
    }
    /// Sets how many channels are tracked by name in the publish statistics.
    pub fn with_max_tracked_channels(mut self, n: usize) -> Self {
        self.max_tracked_channels = n;
        self
    }
    /// Chooses dedicated or shared subscriber connections (shared with at least one
    /// connection, checked when the hub is built).
    pub fn with_mode(mut self, mode: ConnectionMode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks every value once, as the hub's constructors do: a zero duration, queue or
    /// connection count, or a duration too long to add to a clock reading
    /// ([`MAX_DURATION`]), is refused with [`HubError::InvalidConfig`] naming the field.
    /// A value that passes cannot make a task panic or spin later.
    pub fn validate(&self) -> Result<(), HubError> {
        for (field, value) in [
            ("command_timeout", self.command_timeout),
            ("connect_timeout", self.connect_timeout),
            ("ping_interval", self.ping_interval),
            ("reconnect_min", self.reconnect_min),
            ("reconnect_max", self.reconnect_max),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be longer than zero"));
            }
            if value > MAX_DURATION {
                return Err(invalid(field, "must be at most one day"));
            }
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(invalid("reconnect_max", "must be at least reconnect_min"));
        }
        for (field, value) in [
            ("queue_capacity", self.queue_capacity),
            ("queue_max_bytes", self.queue_max_bytes),
            ("max_subscriptions", self.max_subscriptions),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if let ConnectionMode::Shared { connections: 0 } = self.mode {
            return Err(invalid("mode", "shared mode needs at least 1 connection"));
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: &'static str) -> HubError {
    HubError::InvalidConfig { field, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: HubConfig) -> &'static str {
        match config.validate() {
            Err(HubError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        HubConfig::default().validate().unwrap();
    }

    #[test]
    fn every_value_that_would_panic_or_spin_is_refused_by_name() {
        let zero = Duration::ZERO;
        let d = HubConfig::default;
        assert_eq!(refused(d().with_ping_interval(zero)), "ping_interval");
        assert_eq!(refused(d().with_command_timeout(zero)), "command_timeout");
        assert_eq!(refused(d().with_connect_timeout(zero)), "connect_timeout");
        let second = Duration::from_secs(1);
        assert_eq!(
            refused(d().with_reconnect_backoff(zero, second)),
            "reconnect_min"
        );
        assert_eq!(
            refused(d().with_reconnect_backoff(second, zero)),
            "reconnect_max"
        );
        assert_eq!(
            refused(d().with_reconnect_backoff(second * 2, second)),
            "reconnect_max"
        );
        assert_eq!(refused(d().with_queue_capacity(0)), "queue_capacity");
        assert_eq!(refused(d().with_queue_max_bytes(0)), "queue_max_bytes");
        assert_eq!(refused(d().with_max_subscriptions(0)), "max_subscriptions");
        assert_eq!(
            refused(d().with_mode(ConnectionMode::Shared { connections: 0 })),
            "mode"
        );
        // Long enough to overflow a clock reading when added to it.
        assert_eq!(
            refused(d().with_ping_interval(Duration::MAX)),
            "ping_interval"
        );
        assert_eq!(
            refused(d().with_command_timeout(MAX_DURATION + second)),
            "command_timeout"
        );
        let err = d().with_queue_capacity(0).validate().unwrap_err();
        assert!(err.is_invalid_config() && err.is_invalid_input());
        assert_eq!(
            err.to_string(),
            "invalid hub configuration: queue_capacity must be at least 1"
        );
    }

    #[test]
    fn values_that_only_limit_are_accepted() {
        HubConfig::default()
            .with_buffer_size(0)
            .with_buffer_max_bytes(0)
            .with_max_tracked_channels(0)
            .with_queue_capacity(1)
            .with_reconnect_backoff(Duration::from_millis(1), Duration::from_millis(1))
            .validate()
            .unwrap();
    }
}
