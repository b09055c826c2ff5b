//! Gateway configuration: authentication, channel rules per namespace, limits, and their
//! documented `DEFAULT_*` values.
//!
//! Channel rules resolve in two layers: [`GatewayConfig::defaults`] applies to channels
//! without a namespace, and a namespace (the part of a channel name before the first `:`,
//! configured in [`GatewayConfig::namespaces`]) overrides only the rules it sets; every rule
//! it leaves out is inherited from the defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the server pings each bidirectional client (an empty reply `{}`); the client
/// answers with an empty command. Centrifugo's SDKs expect a ping within this interval plus
/// their own grace delay, so it is announced in the connect reply.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);
/// How long a client has to answer a ping before it is closed with "no pong".
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a connection (or a subscription) may outlive its token's `exp` before it is
/// closed. The SDKs refresh when the `ttl` announced in whole seconds runs out, so their
/// refresh can arrive up to a second after `exp`, later still on a slow network; Centrifugo
/// waits 25 s for the same reason.
pub const DEFAULT_EXPIRED_CLOSE_DELAY: Duration = Duration::from_secs(25);
/// Most client connections (WebSocket and SSE together) one gateway holds at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Most channels one connection may be subscribed to (client and server-side subscriptions
/// together).
pub const DEFAULT_MAX_CHANNELS_PER_CONNECTION: usize = 128;
/// Largest incoming WebSocket message, and largest publish payload, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Commands a connection may send per second (a token bucket with this rate and burst).
/// Pongs count too; a client above it is disconnected with "too many requests".
pub const DEFAULT_MAX_COMMANDS_PER_SECOND: u32 = 100;
/// Time a new WebSocket connection has to send its `connect` command ("stale" otherwise).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages one client's write queue holds before the client is disconnected as "slow".
pub const DEFAULT_WRITE_QUEUE_MESSAGES: usize = 4096;
/// Bytes one client's write queue holds before the client is disconnected as "slow".
pub const DEFAULT_WRITE_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Longest channel name, in bytes (Centrifugo's default too).
pub const DEFAULT_MAX_CHANNEL_LENGTH: usize = 255;
/// Largest server API request body, in bytes.
pub const DEFAULT_MAX_API_BODY_BYTES: usize = 1024 * 1024;
/// How long an idle channel's history lives when `history_size` is set without
/// `history_ttl`.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);
/// The largest `history_size`: recovery reads a channel's whole history into one reply.
pub const MAX_HISTORY_SIZE: usize = 100_000;

/// Durations in the configuration are written `"500ms"`, `"300s"`, `"5m"` or `"2h"`.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses `"<digits><unit>"` with unit `ms`, `s`, `m` or `h`.
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().ok()?;
        match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            _ => None,
        }
    }

    /// Writes a duration in the shortest exact unit.
    pub fn format(d: Duration) -> String {
        let ms = d.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            format!("{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            format!("{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }

    /// Serde: an optional duration as text.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_none(),
        }
    }

    /// Serde: an optional duration from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        match text {
            None => Ok(None),
            Some(t) => parse(&t).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a duration like \"300s\", \"5m\", \"2h\" or \"500ms\""
                ))
            }),
        }
    }
}
/// How long a client stays in a channel's presence (in Redis) after its gateway process last
/// refreshed it. Live connections refresh every third of it, so this is how long the clients
/// of a process that died without cleaning up (killed, lost its network) stay listed.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(60);

/// A secret (HMAC key, API key) whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

/// Who may subscribe to a channel with a plain `subscribe` command (no subscription token).
///
/// A valid subscription token for the channel, or the connection token's `channels` claim,
/// always allows the subscription, whatever the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SubscribePolicy {
    /// Any connected client, anonymous ones included.
    Any,
    /// Clients whose connection token named a user (`sub` not empty).
    Authenticated,
    /// Nobody without a subscription token: a private channel.
    Token,
}

/// Who may publish to a channel with a client `publish` command. The server API and the
/// Rust API always may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PublishPolicy {
    /// No client.
    None,
    /// Clients subscribed to the channel.
    Subscribers,
    /// Any connected client.
    Any,
}

/// The rules of channels without a namespace, and the base every namespace inherits from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ChannelRules {
    /// Who may subscribe without a subscription token ([`SubscribePolicy::Any`]).
    pub subscribe: SubscribePolicy,
    /// Who may publish from a client ([`PublishPolicy::None`]).
    pub publish: PublishPolicy,
    /// Publications kept per channel (0: no history, no recovery).
    pub history_size: usize,
    /// How long an idle channel's history lives ([`DEFAULT_HISTORY_TTL`]).
    #[serde(with = "duration_text")]
    pub history_ttl: Option<Duration>,
    /// Every subscription recovers on resubscribe, whether the client asks or not.
    pub force_recovery: bool,
    /// Every subscription is positioned: a hole in offsets while live makes the client
    /// recover.
    pub force_positioning: bool,
    /// Whether subscribers are kept in the channel's presence (in Redis, seen by every
    /// gateway process), so that `presence` and `presence_stats` answer (false: they answer
    /// "not available").
    pub presence: bool,
    /// Whether subscribers get `join` and `leave` pushes when a client subscribes to or
    /// leaves the channel on any gateway process (false).
    pub join_leave: bool,
}

impl Default for ChannelRules {
    fn default() -> Self {
        ChannelRules {
            subscribe: SubscribePolicy::Any,
            publish: PublishPolicy::None,
            history_size: 0,
            history_ttl: None,
            force_recovery: false,
            force_positioning: false,
            presence: false,
            join_leave: false,
        }
    }
}

impl ChannelRules {
    /// Sets the subscribe policy.
    pub fn with_subscribe(mut self, policy: SubscribePolicy) -> Self {
        self.subscribe = policy;
        self
    }

    /// Sets the publish policy.
    pub fn with_publish(mut self, policy: PublishPolicy) -> Self {
        self.publish = policy;
        self
    }

    /// Keeps the last `size` publications per channel for `ttl` after the last one.
    pub fn with_history(mut self, size: usize, ttl: Duration) -> Self {
        self.history_size = size;
        self.history_ttl = Some(ttl);
        self
    }

    /// The history TTL in force.
    pub fn history_ttl(&self) -> Duration {
        self.history_ttl.unwrap_or(DEFAULT_HISTORY_TTL)
    }

    /// Turns presence on or off.
    pub fn with_presence(mut self, on: bool) -> Self {
        self.presence = on;
        self
    }

    /// Turns join and leave pushes on or off.
    pub fn with_join_leave(mut self, on: bool) -> Self {
        self.join_leave = on;
        self
    }
}

/// One namespace's rules: each one it does not set is taken from [`GatewayConfig::defaults`].
///
/// Unknown keys are ignored here (rather than refused) so that a configuration file can carry
/// options of later gateway versions for the same namespace table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct NamespaceConfig {
    /// Who may subscribe without a token; inherited when `None`.
    pub subscribe: Option<SubscribePolicy>,
    /// Who may publish from a client; inherited when `None`.
    pub publish: Option<PublishPolicy>,
    /// Publications kept per channel; inherited when `None`.
    pub history_size: Option<usize>,
    /// How long an idle channel's history lives; inherited when `None`.
    #[serde(with = "duration_text")]
    pub history_ttl: Option<Duration>,
    /// Every subscription recovers; inherited when `None`.
    pub force_recovery: Option<bool>,
    /// Every subscription is positioned; inherited when `None`.
    pub force_positioning: Option<bool>,
    /// Presence on or off; inherited when `None`.
    pub presence: Option<bool>,
    /// Join and leave pushes on or off; inherited when `None`.
    pub join_leave: Option<bool>,
}

impl NamespaceConfig {
    /// Sets the subscribe policy.
    pub fn with_subscribe(mut self, policy: SubscribePolicy) -> Self {
        self.subscribe = Some(policy);
        self
    }

    /// Sets the publish policy.
    pub fn with_publish(mut self, policy: PublishPolicy) -> Self {
        self.publish = Some(policy);
        self
    }

    /// Keeps the last `size` publications per channel for `ttl` after the last one.
    pub fn with_history(mut self, size: usize, ttl: Duration) -> Self {
        self.history_size = Some(size);
        self.history_ttl = Some(ttl);
        self
    }

    /// Sets `force_recovery`.
    pub fn with_force_recovery(mut self, on: bool) -> Self {
        self.force_recovery = Some(on);
        self
    }

    /// Sets `force_positioning`.
    pub fn with_force_positioning(mut self, on: bool) -> Self {
        self.force_positioning = Some(on);
        self
    }

    /// Turns presence on or off.
    pub fn with_presence(mut self, on: bool) -> Self {
        self.presence = Some(on);
        self
    }

    /// Turns join and leave pushes on or off.
    pub fn with_join_leave(mut self, on: bool) -> Self {
        self.join_leave = Some(on);
        self
    }

    /// These rules over `defaults`.
    pub fn resolve(&self, defaults: &ChannelRules) -> ChannelRules {
        ChannelRules {
            subscribe: self.subscribe.unwrap_or(defaults.subscribe),
            publish: self.publish.unwrap_or(defaults.publish),
            history_size: self.history_size.unwrap_or(defaults.history_size),
            history_ttl: self.history_ttl.or(defaults.history_ttl),
            force_recovery: self.force_recovery.unwrap_or(defaults.force_recovery),
            force_positioning: self.force_positioning.unwrap_or(defaults.force_positioning),
            presence: self.presence.unwrap_or(defaults.presence),
            join_leave: self.join_leave.unwrap_or(defaults.join_leave),
        }
    }
}

/// Every bound the gateway enforces, with its `DEFAULT_*` value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayLimits {
    /// Most connections at once ([`DEFAULT_MAX_CONNECTIONS`]); further WebSocket upgrades
    /// are closed with "connection limit", further SSE requests get 503.
    pub max_connections: usize,
    /// Most channels per connection ([`DEFAULT_MAX_CHANNELS_PER_CONNECTION`]); one more
    /// subscribe gets "limit exceeded".
    pub max_channels_per_connection: usize,
    /// Largest incoming message and publish payload ([`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// Command rate per connection ([`DEFAULT_MAX_COMMANDS_PER_SECOND`]).
    pub max_commands_per_second: u32,
    /// Time to send `connect` ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Write queue bound in messages ([`DEFAULT_WRITE_QUEUE_MESSAGES`]).
    pub write_queue_messages: usize,
    /// Write queue bound in bytes ([`DEFAULT_WRITE_QUEUE_BYTES`]).
    pub write_queue_bytes: usize,
    /// Longest channel name ([`DEFAULT_MAX_CHANNEL_LENGTH`]).
    pub max_channel_length: usize,
    /// Largest server API body ([`DEFAULT_MAX_API_BODY_BYTES`]).
    pub max_api_body_bytes: usize,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_channels_per_connection: DEFAULT_MAX_CHANNELS_PER_CONNECTION,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_commands_per_second: DEFAULT_MAX_COMMANDS_PER_SECOND,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            write_queue_messages: DEFAULT_WRITE_QUEUE_MESSAGES,
            write_queue_bytes: DEFAULT_WRITE_QUEUE_BYTES,
            max_channel_length: DEFAULT_MAX_CHANNEL_LENGTH,
            max_api_body_bytes: DEFAULT_MAX_API_BODY_BYTES,
        }
    }
}

/// Everything a [`Gateway`](crate::Gateway) is built from. Start from
/// [`GatewayConfig::default`] and set the public fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Added in front of every channel name to form the Redis channel: with `Some("app.")`
    /// the gateway channel `news` is the Redis channel `app.news`. `None` maps names as they
    /// are.
    pub channel_prefix: Option<String>,
    /// The HS256 key of connection and subscription tokens (JWT).
    pub hmac_secret: Option<Secret>,
    /// A PEM RSA public key: RS256 tokens are accepted too when set.
    pub rsa_public_key: Option<String>,
    /// Whether a client may connect without a token (as an anonymous user, `""`). Tokens are
    /// still verified when a client sends one.
    pub allow_anonymous: bool,
    /// Origins (`scheme://host[:port]`) allowed to open browser connections, besides the
    /// gateway's own origin (a request whose `Origin` matches its `Host`). `"*"` allows every
    /// origin. Requests without an `Origin` header (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// The server API key (`X-API-Key: KEY` or `Authorization: apikey KEY`). `None` turns
    /// the `/api/*` endpoints off (404).
    pub api_key: Option<Secret>,
    /// Rules of channels without a namespace, inherited by every namespace.
    pub defaults: ChannelRules,
    /// Namespaces by name: channel `chat:room1` is in namespace `chat`. A channel whose
    /// namespace is not listed here is refused with "unknown channel".
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Bounds.
    pub limits: GatewayLimits,
    /// Server ping interval ([`DEFAULT_PING_INTERVAL`]).
    pub ping_interval: Duration,
    /// Pong wait ([`DEFAULT_PONG_TIMEOUT`]).
    pub pong_timeout: Duration,
    /// Grace after a token's `exp` for its refresh to arrive
    /// ([`DEFAULT_EXPIRED_CLOSE_DELAY`]); `refresh` and `sub_refresh` with an expired
    /// token are refused all the same.
    pub expired_close_delay: Duration,
    /// This gateway's name in connect replies (`node`), and in `/api/info`.
    pub node_name: String,
    /// How long a presence entry lives in Redis without a refresh
    /// ([`DEFAULT_PRESENCE_TTL`], at least 1 s); each connection refreshes its entries
    /// every third of it.
    pub presence_ttl: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            channel_prefix: None,
            hmac_secret: None,
            rsa_public_key: None,
            allow_anonymous: false,
            allowed_origins: Vec::new(),
            api_key: None,
            defaults: ChannelRules::default(),
            namespaces: BTreeMap::new(),
            limits: GatewayLimits::default(),
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            expired_close_delay: DEFAULT_EXPIRED_CLOSE_DELAY,
            node_name: default_node_name(),
            presence_ttl: DEFAULT_PRESENCE_TTL,
        }
    }
}

fn default_node_name() -> String {
    format!("pubsub-hub-gateway-{}", std::process::id())
}

impl GatewayConfig {
    /// Sets the HS256 token key.
    pub fn with_hmac_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.hmac_secret = Some(secret.into());
        self
    }

    /// Accepts RS256 tokens signed for this PEM RSA public key (besides HS256 ones when a
    /// secret is set too).
    pub fn with_rsa_public_key(mut self, pem: impl Into<String>) -> Self {
        self.rsa_public_key = Some(pem.into());
        self
    }

    /// Sets the server API key.
    pub fn with_api_key(mut self, key: impl Into<Secret>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Allows or refuses connections without a token.
    pub fn with_allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// Sets the Redis channel prefix.
    pub fn with_channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.channel_prefix = Some(prefix.into());
        self
    }

    /// Adds an allowed browser origin.
    pub fn with_allowed_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins.push(origin.into());
        self
    }

    /// Adds (or replaces) a namespace.
    pub fn with_namespace(mut self, name: impl Into<String>, ns: NamespaceConfig) -> Self {
        self.namespaces.insert(name.into(), ns);
        self
    }

    /// Sets the rules of channels without a namespace.
    pub fn with_defaults(mut self, rules: ChannelRules) -> Self {
        self.defaults = rules;
        self
    }

    /// Sets the limits.
    pub fn with_limits(mut self, limits: GatewayLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the ping interval and pong timeout.
    pub fn with_ping(mut self, interval: Duration, pong_timeout: Duration) -> Self {
        self.ping_interval = interval;
        self.pong_timeout = pong_timeout;
        self
    }

    /// Sets the presence expiry.
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// Sets the grace after a token's `exp` before the connection or subscription is closed.
    pub fn with_expired_close_delay(mut self, delay: Duration) -> Self {
        self.expired_close_delay = delay;
        self
    }

    /// Checks the configuration; the error says which setting is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        let positive = [
            ("limits.max_connections", l.max_connections),
            (
                "limits.max_channels_per_connection",
                l.max_channels_per_connection,
            ),
            ("limits.max_message_bytes", l.max_message_bytes),
            (
                "limits.max_commands_per_second",
                l.max_commands_per_second as usize,
            ),
            ("limits.write_queue_messages", l.write_queue_messages),
            ("limits.write_queue_bytes", l.write_queue_bytes),
            ("limits.max_channel_length", l.max_channel_length),
            ("limits.max_api_body_bytes", l.max_api_body_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        for (name, d) in [
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
            ("limits.connect_timeout", l.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be more than 0"));
            }
        }
        if self.ping_interval.as_secs() == 0 {
            // The connect reply announces the interval in whole seconds.
            return Err("ping_interval must be at least 1 s".into());
        }
        if self.presence_ttl < Duration::from_secs(1) {
            // Refreshed every third of it: below a second, refreshes would be a load of
            // their own.
            return Err("presence_ttl must be at least 1 s".into());
        }
        if let Some(secret) = &self.hmac_secret
            && secret.expose().is_empty()
        {
            return Err("hmac_secret is empty".into());
        }
        if let Some(key) = &self.api_key
            && key.expose().is_empty()
        {
            return Err("api_key is empty".into());
        }
        for name in self.namespaces.keys() {
            if name.is_empty() || name.contains(':') {
                return Err(format!(
                    "namespace name {name:?} must be non-empty and without ':'"
                ));
            }
        }
        let all_rules = std::iter::once(("defaults".to_owned(), self.defaults.clone())).chain(
            self.namespaces
                .iter()
                .map(|(name, ns)| (format!("namespaces.{name}"), ns.resolve(&self.defaults))),
        );
        for (name, rules) in all_rules {
            if rules.history_size > MAX_HISTORY_SIZE {
                return Err(format!(
                    "{name}.history_size must be at most {MAX_HISTORY_SIZE}"
                ));
            }
            if rules.history_size > 0 && rules.history_ttl().as_secs() == 0 {
                return Err(format!("{name}.history_ttl must be at least 1s"));
            }
        }
        for origin in &self.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "allowed origin {origin:?} must be \"*\" or start with http:// or https://"
                ));
            }
        }
        Ok(())
    }

    /// The rules of `channel`, or `None` when its namespace is not configured.
    pub fn rules_for(&self, channel: &str) -> Option<ChannelRules> {
        match channel.split_once(':') {
            None => Some(self.defaults.clone()),
            Some((ns, _)) => self.namespaces.get(ns).map(|n| n.resolve(&self.defaults)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_inherits_every_rule_it_does_not_set() {
        let config = GatewayConfig::default()
            .with_defaults(ChannelRules::default().with_subscribe(SubscribePolicy::Authenticated))
            .with_namespace(
                "chat",
                NamespaceConfig::default().with_publish(PublishPolicy::Subscribers),
            )
            .with_namespace("empty", NamespaceConfig::default());
        let chat = config.rules_for("chat:1").unwrap();
        assert_eq!(chat.subscribe, SubscribePolicy::Authenticated);
        assert_eq!(chat.publish, PublishPolicy::Subscribers);
        assert_eq!(config.rules_for("empty:x").unwrap(), config.defaults);
        assert_eq!(config.rules_for("plain").unwrap(), config.defaults);
        assert!(config.rules_for("nope:x").is_none());
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let mut config = GatewayConfig::default();
        config.limits.write_queue_bytes = 0;
        assert!(config.validate().unwrap_err().contains("write_queue_bytes"));
        let config = GatewayConfig::default().with_allowed_origin("example.com");
        assert!(config.validate().unwrap_err().contains("example.com"));
        let config = GatewayConfig::default().with_namespace("a:b", NamespaceConfig::default());
        assert!(config.validate().unwrap_err().contains("a:b"));
        assert!(GatewayConfig::default().validate().is_ok());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let config = GatewayConfig::default()
            .with_hmac_secret("hunter2")
            .with_api_key("k3y");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("k3y"),
            "{shown}"
        );
    }
}
