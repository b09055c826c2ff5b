//! The effective configuration: every setting from flags, the environment, an optional TOML
//! file and the built-in defaults, in one precedence order, highest first:
//!
//! 1. a command-line flag;
//! 2. an environment variable (an empty one counts as unset);
//! 3. the configuration file (`--config PATH`, or `PUBSUB_HUB_CONFIG`);
//! 4. the built-in default (the `DEFAULT_*` values of `pubsub_hub_web`).
//!
//! The same order applies to every setting. The Redis address adds one rule on top (see
//! [`crate::config`]): the URL and the host/port pair compete by layer, and within a layer the
//! URL wins.
//!
//! Every setting is one line of the `settings!` table below: its section and key in the
//! file, its type, its default, its environment variable, which flag sets it and how it is
//! shown by `--print-config`. The macro derives the file's shape (unknown keys refused), the
//! resolved [`Config`] with the [`Source`] of each value, and the printout.

use std::path::{Path, PathBuf};

use pubsub_hub_web::limits;
use serde::Deserialize;

use std::collections::BTreeMap;

use pubsub_hub_gateway::{NamespaceConfig, PublishPolicy, SubscribePolicy};

use crate::cli::{GatewayArgs, LogFormat, ModeName, RedisArgs, ServeArgs, Source};
use crate::error::CliError;

/// The environment variable naming the configuration file (when `--config` is not given).
pub const CONFIG_ENV: &str = "PUBSUB_HUB_CONFIG";

/// A resolved value and the layer it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value in force.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// A type a setting can have: it is read from an environment variable's text, from the file
/// (through serde), and printed back as a TOML value.
pub trait Value: Sized + Clone + for<'de> Deserialize<'de> {
    /// What a valid value looks like, for error messages.
    const EXPECTED: &'static str;
    /// Parses an environment variable's text.
    fn parse_text(text: &str) -> Option<Self>;
    /// The value as a TOML literal; `None` when it is unset.
    fn to_toml(&self) -> Option<String>;
}

impl Value for String {
    const EXPECTED: &'static str = "text";
    fn parse_text(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
    fn to_toml(&self) -> Option<String> {
        Some(toml::Value::String(self.clone()).to_string())
    }
}

impl Value for PathBuf {
    const EXPECTED: &'static str = "a path";
    fn parse_text(text: &str) -> Option<Self> {
        Some(PathBuf::from(text))
    }
    fn to_toml(&self) -> Option<String> {
        self.to_string_lossy().into_owned().to_toml()
    }
}

impl Value for bool {
    const EXPECTED: &'static str = "true or false";
    fn parse_text(text: &str) -> Option<Self> {
        match text {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        }
    }
    fn to_toml(&self) -> Option<String> {
        Some(self.to_string())
    }
}

macro_rules! integer_values {
    ($($ty:ty => $expected:literal),*) => {$(
        impl Value for $ty {
            const EXPECTED: &'static str = $expected;
            fn parse_text(text: &str) -> Option<Self> {
                text.parse().ok()
            }
            fn to_toml(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}

integer_values!(
    u16 => "an integer from 0 to 65535",
    u32 => "an integer from 0 to 4294967295",
    u64 => "a non-negative integer",
    usize => "a non-negative integer"
);

/// A list: comma-separated in an environment variable, an array in the file.
impl Value for Vec<String> {
    const EXPECTED: &'static str = "a comma-separated list";
    fn parse_text(text: &str) -> Option<Self> {
        Some(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(ToOwned::to_owned)
                .collect(),
        )
    }
    fn to_toml(&self) -> Option<String> {
        let items: Vec<String> = self.iter().filter_map(|s| s.to_toml()).collect();
        Some(format!("[{}]", items.join(", ")))
    }
}

/// A `Value` for an enum of unit variants, each with its name in the file and variables.
macro_rules! named_values {
    ($ty:ty, $expected:literal, { $($name:literal => $variant:path),* $(,)? }) => {
        impl Value for $ty {
            const EXPECTED: &'static str = $expected;
            fn parse_text(text: &str) -> Option<Self> {
                match text {
                    $($name => Some($variant),)*
                    _ => None,
                }
            }
            fn to_toml(&self) -> Option<String> {
                let name = match self {
                    $($variant => $name,)*
                };
                name.to_owned().to_toml()
            }
        }
    };
}

named_values!(LogFormat, "text or json", {
    "text" => LogFormat::Text,
    "json" => LogFormat::Json,
});

named_values!(ModeName, "dedicated or shared", {
    "dedicated" => ModeName::Dedicated,
    "shared" => ModeName::Shared,
});

/// A `Value` for one of the gateway's policy enums (`#[non_exhaustive]` there, so a variant
/// this binary does not know prints as unset).
macro_rules! policy_values {
    ($ty:ty, $expected:literal, { $($name:literal => $variant:path),* $(,)? }) => {
        impl Value for $ty {
            const EXPECTED: &'static str = $expected;
            fn parse_text(text: &str) -> Option<Self> {
                match text {
                    $($name => Some($variant),)*
                    _ => None,
                }
            }
            fn to_toml(&self) -> Option<String> {
                let name = match self {
                    $($variant => $name,)*
                    _ => return None,
                };
                name.to_owned().to_toml()
            }
        }
    };
}

policy_values!(SubscribePolicy, "any, authenticated or token", {
    "any" => SubscribePolicy::Any,
    "authenticated" => SubscribePolicy::Authenticated,
    "token" => SubscribePolicy::Token,
});

policy_values!(PublishPolicy, "none, subscribers or any", {
    "none" => PublishPolicy::None,
    "subscribers" => PublishPolicy::Subscribers,
    "any" => PublishPolicy::Any,
});

/// The gateway's namespaces: `[gateway.namespaces.NAME]` tables in the file (there is no
/// environment variable for them); printed back as one inline table.
impl Value for BTreeMap<String, NamespaceConfig> {
    const EXPECTED: &'static str = "namespace tables";
    fn parse_text(_text: &str) -> Option<Self> {
        None
    }
    fn to_toml(&self) -> Option<String> {
        let tables: Vec<String> = self
            .iter()
            .map(|(name, ns)| {
                let mut keys = Vec::new();
                if let Some(p) = ns.subscribe.and_then(|p| p.to_toml()) {
                    keys.push(format!("subscribe = {p}"));
                }
                if let Some(p) = ns.publish.and_then(|p| p.to_toml()) {
                    keys.push(format!("publish = {p}"));
                }
                if let Some(n) = ns.history_size {
                    keys.push(format!("history_size = {n}"));
                }
                if let Some(d) = ns.history_ttl {
                    let text = pubsub_hub_gateway::config::duration_text::format(d);
                    keys.push(format!("history_ttl = \"{text}\""));
                }
                if let Some(b) = ns.force_recovery {
                    keys.push(format!("force_recovery = {b}"));
                }
                if let Some(b) = ns.force_positioning {
                    keys.push(format!("force_positioning = {b}"));
                }
                if let Some(on) = ns.presence {
                    keys.push(format!("presence = {on}"));
                }
                if let Some(on) = ns.join_leave {
                    keys.push(format!("join_leave = {on}"));
                }
                let key = toml::Value::String(name.clone()).to_string();
                format!("{key} = {{ {} }}", keys.join(", "))
            })
            .collect();
        Some(format!("{{ {} }}", tables.join(", ")))
    }
}

/// A setting without a default: unset unless some layer sets it.
impl<T: Value> Value for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn parse_text(text: &str) -> Option<Self> {
        T::parse_text(text).map(Some)
    }
    fn to_toml(&self) -> Option<String> {
        self.as_ref().and_then(T::to_toml)
    }
}

/// How `--print-config` shows a value: as it is.
fn plain<T: Value>(value: &T) -> Option<String> {
    value.to_toml()
}

/// How `--print-config` shows a secret: `"***"` when set.
fn secret(value: &Option<String>) -> Option<String> {
    value.as_ref().map(|_| "\"***\"".to_owned())
}

/// How `--print-config` shows Redis URLs: with their passwords replaced by `***`.
fn urls(value: &[String]) -> Option<String> {
    value
        .iter()
        .map(|u| pubsub_hub_launcher::redact_url(u))
        .collect::<Vec<_>>()
        .to_toml()
}

/// How `--print-config` shows a Redis URL: with its password replaced by `***`.
fn url(value: &Option<String>) -> Option<String> {
    value
        .as_ref()
        .and_then(|u| pubsub_hub_launcher::redact_url(u).to_toml())
}

/// The flags that can set a setting: the global ones and those of `serve` (all unset for
/// the client commands, which refuse `serve`'s flags).
#[derive(Debug, Clone, Copy)]
pub struct Flags<'a> {
    /// `--redis-url`, `--redis-host`, `--redis-port`, `--redis-ca-file`.
    pub redis: &'a RedisArgs,
    /// `serve`'s flags.
    pub serve: &'a ServeArgs,
    /// `gateway`'s flags.
    pub gateway: &'a GatewayArgs,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// One layer of text values by name: the process environment, or a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The table of settings. Each entry is
/// `key: Type = default, env "VAR", flag |f| accessor, show how;`
/// where the accessor reads the flag from [`Flags`] (`|_| None` for a setting without one)
/// and `how` is [`plain`], [`secret`] or [`url`].
macro_rules! settings {
    ($(
        $(#[doc = $sdoc:literal])*
        [$section:ident] $Section:ident {
            $(
                $(#[doc = $doc:literal])*
                $key:ident: $ty:ty = $default:expr, env $env:literal, flag $flag:expr, show $show:path;
            )*
        }
    )*) => {
        /// The shape of the configuration file: every key optional, unknown keys refused.
        pub mod file {
            #[allow(unused_imports)]
            use super::*;

            /// The whole file.
            #[derive(Debug, Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            pub struct FileConfig {
                $(
                    $(#[doc = $sdoc])*
                    #[serde(default)]
                    pub $section: $Section,
                )*
            }

            $(
                $(#[doc = $sdoc])*
                #[derive(Default, Deserialize)]
                #[serde(deny_unknown_fields)]
                pub struct $Section {
                    $(
                        $(#[doc = $doc])*
                        pub $key: Option<$ty>,
                    )*
                }
            )*
        }

        $(
            $(#[doc = $sdoc])*
            #[derive(Clone, PartialEq, Eq)]
            pub struct $Section {
                $(
                    $(#[doc = $doc])*
                    pub $key: Setting<$ty>,
                )*
            }

            /// Each value as `--print-config` shows it (secrets masked), with its source.
            impl std::fmt::Debug for $Section {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    let mut d = f.debug_struct(stringify!($Section));
                    $(
                        d.field(
                            stringify!($key),
                            &format_args!(
                                "{} ({})",
                                $show(&self.$key.value).unwrap_or_else(|| "unset".into()),
                                self.$key.source.as_str()
                            ),
                        );
                    )*
                    d.finish()
                }
            }

            /// Each value as `--print-config` would show it (secrets masked).
            impl std::fmt::Debug for file::$Section {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    let mut d = f.debug_struct(stringify!($Section));
                    $(
                        if let Some(value) = &self.$key {
                            d.field(
                                stringify!($key),
                                &format_args!("{}", $show(value).unwrap_or_default()),
                            );
                        }
                    )*
                    d.finish()
                }
            }
        )*

        /// The effective configuration: every setting with its value and [`Source`].
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Config {
            /// The configuration file that was read, if any.
            pub file: Option<PathBuf>,
            $(
                $(#[doc = $sdoc])*
                pub $section: $Section,
            )*
        }

        impl Config {
            /// Applies the precedence order: `flags`, then `env`, then `file`, then the
            /// defaults. An environment variable that does not parse is a usage error
            /// naming the variable.
            pub fn resolve(
                flags: &Flags<'_>,
                env: Env<'_>,
                file: Option<(PathBuf, file::FileConfig)>,
            ) -> Result<Config, CliError> {
                let (path, file) = match file {
                    Some((path, file)) => (Some(path), file),
                    None => (None, file::FileConfig::default()),
                };
                Ok(Config {
                    $(
                        $section: $Section {
                            $(
                                $key: {
                                    let flag: fn(&Flags<'_>) -> Option<$ty> = $flag;
                                    let default: $ty = $default;
                                    pick(flag(flags), $env, env, file.$section.$key, default)?
                                },
                            )*
                        },
                    )*
                    file: path,
                })
            }

            /// Every setting as `(section, key, env var, shown value, source)`, in table
            /// order; the shown value is masked for secrets and `None` when unset.
            pub fn entries(&self) -> Vec<Entry> {
                vec![$($(
                    Entry {
                        section: stringify!($section),
                        key: stringify!($key),
                        env: $env,
                        shown: $show(&self.$section.$key.value),
                        source: self.$section.$key.source,
                    },
                )*)*]
            }

            /// The section names, in table order.
            pub const SECTIONS: &'static [&'static str] = &[$(stringify!($section)),*];
        }
    };
}

settings! {
    /// `[server]`: where the dashboard listens and who may use it.
    [server] Server {
        /// Address the dashboard binds to.
        host: String = "127.0.0.1".into(), env "PUBSUB_HUB_HOST", flag |f| f.serve.host.clone(), show plain;
        /// Port the dashboard binds to (0 picks a free one).
        port: u16 = 8103, env "PUBSUB_HUB_PORT", flag |f| f.serve.port, show plain;
        /// The access token every route but the health checks requires.
        token: Option<String> = None, env "PUBSUB_HUB_TOKEN", flag |f| f.serve.token.clone().map(|t| Some(t.0)), show secret;
        /// Serve beyond loopback without a token.
        insecure_no_auth: bool = false, env "PUBSUB_HUB_INSECURE_NO_AUTH", flag |f| f.serve.insecure_no_auth.then_some(true), show plain;
        /// Always mark the session cookie `Secure` (the dashboard is reached over HTTPS).
        cookie_secure: bool = false, env "PUBSUB_HUB_COOKIE_SECURE", flag |f| f.serve.cookie_secure.then_some(true), show plain;
        /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` / `-Proto` are believed.
        trusted_proxies: Vec<String> = Vec::new(), env "PUBSUB_HUB_TRUSTED_PROXIES", flag |f| (!f.serve.trusted_proxies.is_empty()).then(|| f.serve.trusted_proxies.clone()), show plain;
    }
    /// `[redis]`: the Redis server.
    [redis] Redis {
        /// A full Redis URL; competes with host/port by layer, and wins within one.
        url: Option<String> = None, env "REDIS_URL", flag |f| f.redis.redis_url.clone().map(|u| Some(u.0)), show url;
        /// Redis host.
        host: String = "localhost".into(), env "REDIS_HOST", flag |f| f.redis.redis_host.clone(), show plain;
        /// Redis port.
        port: u16 = 6379, env "REDIS_PORT", flag |f| f.redis.redis_port, show plain;
        /// PEM file of the CA that signed the server's certificate (`rediss://` only).
        ca_file: Option<PathBuf> = None, env "PUBSUB_HUB_REDIS_CA_FILE", flag |f| f.redis.redis_ca_file.clone().map(Some), show plain;
        /// Start a private redis-server when no Redis address is configured and nothing
        /// answers at the default one (`serve` and `gateway`).
        embedded_fallback: bool = true, env "PUBSUB_HUB_EMBEDDED_FALLBACK", flag |f| (f.serve.no_embedded || f.gateway.no_embedded).then_some(false), show plain;
    }
    /// `[log]`: what is logged to stderr, and how.
    [log] Log {
        /// `text` (no colours unless stderr is a terminal) or `json` (one object per line).
        format: LogFormat = LogFormat::Text, env "PUBSUB_HUB_LOG_FORMAT", flag |f| f.log_format, show plain;
        /// A tracing filter (`warn`, `pubsub_hub=debug,info`); unset means the command's default.
        filter: Option<String> = None, env "RUST_LOG", flag |_| None, show plain;
    }
    /// `[limits]`: the dashboard's input limits (`pubsub_hub_web::Limits`).
    [limits] Limits {
        /// Largest request body, in bytes.
        max_body_bytes: usize = limits::DEFAULT_MAX_BODY_BYTES, env "PUBSUB_HUB_MAX_BODY_BYTES", flag |f| f.serve.max_body_bytes, show plain;
        /// Largest published message, in bytes.
        max_message_bytes: usize = limits::DEFAULT_MAX_MESSAGE_BYTES, env "PUBSUB_HUB_MAX_MESSAGE_BYTES", flag |f| f.serve.max_message_bytes, show plain;
        /// Most subscribers (also the hub's cap).
        max_subscriptions: usize = limits::DEFAULT_MAX_SUBSCRIPTIONS, env "PUBSUB_HUB_MAX_SUBSCRIPTIONS", flag |f| f.serve.max_subscriptions, show plain;
        /// Most channels or patterns per subscriber.
        max_targets_per_subscription: usize = limits::DEFAULT_MAX_TARGETS_PER_SUBSCRIPTION, env "PUBSUB_HUB_MAX_TARGETS_PER_SUBSCRIPTION", flag |_| None, show plain;
        /// Longest subscriber name, in bytes.
        max_name_bytes: usize = limits::DEFAULT_MAX_NAME_BYTES, env "PUBSUB_HUB_MAX_NAME_BYTES", flag |_| None, show plain;
        /// Longest channel or pattern, in bytes.
        max_target_bytes: usize = limits::DEFAULT_MAX_TARGET_BYTES, env "PUBSUB_HUB_MAX_TARGET_BYTES", flag |_| None, show plain;
        /// Upper end of `POST /publish`'s `count` clamp (at least 1).
        max_publish_count: u32 = limits::DEFAULT_MAX_PUBLISH_COUNT, env "PUBSUB_HUB_MAX_PUBLISH_COUNT", flag |_| None, show plain;
        /// Most server-wide channels listed in `/state` (the rest are counted).
        max_listed_channels: usize = limits::DEFAULT_MAX_LISTED_CHANNELS, env "PUBSUB_HUB_MAX_LISTED_CHANNELS", flag |_| None, show plain;
        /// Time a client has to send a request's head (also the idle keep-alive bound), in ms.
        header_read_timeout_ms: u64 = limits::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64, env "PUBSUB_HUB_HEADER_READ_TIMEOUT_MS", flag |_| None, show plain;
        /// Time a client has to send a request's body, in ms (then 408).
        body_read_timeout_ms: u64 = limits::DEFAULT_BODY_READ_TIMEOUT.as_millis() as u64, env "PUBSUB_HUB_BODY_READ_TIMEOUT_MS", flag |_| None, show plain;
        /// Time a write to a client may stay blocked (it stopped reading), in ms; then the connection is closed.
        write_timeout_ms: u64 = limits::DEFAULT_WRITE_TIMEOUT.as_millis() as u64, env "PUBSUB_HUB_WRITE_TIMEOUT_MS", flag |_| None, show plain;
        /// Most open HTTP connections (one more gets a 503).
        max_connections: usize = limits::DEFAULT_MAX_CONNECTIONS, env "PUBSUB_HUB_MAX_CONNECTIONS", flag |_| None, show plain;
    }
    /// `[dashboard]`: how the dashboard's hub connects.
    [dashboard] Dashboard {
        /// `dedicated` (one connection per subscriber, the guide's) or `shared`.
        mode: ModeName = ModeName::Dedicated, env "PUBSUB_HUB_MODE", flag |f| f.serve.mode, show plain;
        /// Subscriber connections in shared mode (at least 1).
        shared_connections: usize = pubsub_hub::DEFAULT_SHARED_CONNECTIONS, env "PUBSUB_HUB_SHARED_CONNECTIONS", flag |f| f.serve.shared_connections, show plain;
        /// Redis Cluster seed nodes; when set, the dashboard runs on the cluster.
        cluster_nodes: Vec<String> = Vec::new(), env "PUBSUB_HUB_CLUSTER_NODES", flag |f| (!f.serve.cluster_nodes.is_empty()).then(|| f.serve.cluster_nodes.clone()), show urls;
    }
    /// `[gateway]`: `pubsub-hub gateway` (`pubsub_hub_gateway::GatewayConfig`), with
    /// `[gateway.namespaces.NAME]` tables for namespaces.
    [gateway] Gateway {
        /// Address the gateway binds to.
        host: String = "127.0.0.1".into(), env "PUBSUB_HUB_GATEWAY_HOST", flag |f| f.gateway.host.clone(), show plain;
        /// Port the gateway binds to (0 picks a free one).
        port: u16 = 8000, env "PUBSUB_HUB_GATEWAY_PORT", flag |f| f.gateway.port, show plain;
        /// The server API key; unset turns the API off.
        api_key: Option<String> = None, env "PUBSUB_HUB_API_KEY", flag |f| f.gateway.api_key.clone().map(|k| Some(k.0)), show secret;
        /// The HS256 key of connection and subscription tokens.
        hmac_secret: Option<String> = None, env "PUBSUB_HUB_HMAC_SECRET", flag |f| f.gateway.hmac_secret.clone().map(|k| Some(k.0)), show secret;
        /// A PEM file with an RSA public key: RS256 tokens are accepted too.
        rsa_public_key_file: Option<PathBuf> = None, env "PUBSUB_HUB_RSA_PUBLIC_KEY_FILE", flag |_| None, show plain;
        /// Clients may connect without a token.
        allow_anonymous: bool = false, env "PUBSUB_HUB_ALLOW_ANONYMOUS", flag |f| f.gateway.allow_anonymous.then_some(true), show plain;
        /// Browser origins allowed besides the gateway's own (`*` for any).
        allowed_origins: Vec<String> = Vec::new(), env "PUBSUB_HUB_ALLOWED_ORIGINS", flag |f| (!f.gateway.allowed_origins.is_empty()).then(|| f.gateway.allowed_origins.clone()), show plain;
        /// Prefix added to every channel name to form the Redis channel.
        channel_prefix: Option<String> = None, env "PUBSUB_HUB_CHANNEL_PREFIX", flag |_| None, show plain;
        /// Who may subscribe to channels without a namespace: any, authenticated or token.
        subscribe: SubscribePolicy = SubscribePolicy::Any, env "PUBSUB_HUB_GATEWAY_SUBSCRIBE", flag |_| None, show plain;
        /// Who may publish from a client to channels without a namespace: none, subscribers or any.
        publish: PublishPolicy = PublishPolicy::None, env "PUBSUB_HUB_GATEWAY_PUBLISH", flag |_| None, show plain;
        /// Whether channels without a namespace keep presence (who is subscribed, in Redis, across processes).
        presence: bool = false, env "PUBSUB_HUB_GATEWAY_PRESENCE", flag |_| None, show plain;
        /// Whether subscribers of channels without a namespace get join and leave pushes.
        join_leave: bool = false, env "PUBSUB_HUB_GATEWAY_JOIN_LEAVE", flag |_| None, show plain;
        /// How long a presence entry outlives its connection's last refresh, in ms (the clients of a process that died stay listed this long).
        presence_ttl_ms: u64 = pubsub_hub_gateway::config::DEFAULT_PRESENCE_TTL.as_millis() as u64, env "PUBSUB_HUB_GATEWAY_PRESENCE_TTL_MS", flag |_| None, show plain;
        /// Namespaces: `[gateway.namespaces.NAME]` tables with `subscribe`, `publish`, `history_size`, `history_ttl` ("300s", "5m"), `force_recovery`, `force_positioning`, `presence` and `join_leave`; each inherits the ones above.
        namespaces: BTreeMap<String, NamespaceConfig> = BTreeMap::new(), env "PUBSUB_HUB_GATEWAY_NAMESPACES", flag |_| None, show plain;
        /// Redis Cluster seed nodes; when set, channels are shard channels on the cluster.
        cluster_nodes: Vec<String> = Vec::new(), env "PUBSUB_HUB_CLUSTER_NODES", flag |f| (!f.gateway.cluster_nodes.is_empty()).then(|| f.gateway.cluster_nodes.clone()), show urls;
        /// Subscriber connections the gateway's hub shares among all channels (at least 1).
        shared_connections: usize = pubsub_hub::DEFAULT_SHARED_CONNECTIONS, env "PUBSUB_HUB_GATEWAY_SHARED_CONNECTIONS", flag |_| None, show plain;
        /// Most client connections at once.
        max_connections: usize = pubsub_hub_gateway::config::DEFAULT_MAX_CONNECTIONS, env "PUBSUB_HUB_GATEWAY_MAX_CONNECTIONS", flag |_| None, show plain;
        /// Most channels per connection.
        max_channels_per_connection: usize = pubsub_hub_gateway::config::DEFAULT_MAX_CHANNELS_PER_CONNECTION, env "PUBSUB_HUB_GATEWAY_MAX_CHANNELS_PER_CONNECTION", flag |_| None, show plain;
        /// Largest client message and publish payload, in bytes.
        max_message_bytes: usize = pubsub_hub_gateway::config::DEFAULT_MAX_MESSAGE_BYTES, env "PUBSUB_HUB_GATEWAY_MAX_MESSAGE_BYTES", flag |_| None, show plain;
        /// Commands per second per connection.
        max_commands_per_second: u32 = pubsub_hub_gateway::config::DEFAULT_MAX_COMMANDS_PER_SECOND, env "PUBSUB_HUB_GATEWAY_MAX_COMMANDS_PER_SECOND", flag |_| None, show plain;
        /// Time a new connection has to send `connect`, in ms.
        connect_timeout_ms: u64 = pubsub_hub_gateway::config::DEFAULT_CONNECT_TIMEOUT.as_millis() as u64, env "PUBSUB_HUB_GATEWAY_CONNECT_TIMEOUT_MS", flag |_| None, show plain;
        /// Messages a client's write queue holds before it is disconnected as slow.
        write_queue_messages: usize = pubsub_hub_gateway::config::DEFAULT_WRITE_QUEUE_MESSAGES, env "PUBSUB_HUB_GATEWAY_WRITE_QUEUE_MESSAGES", flag |_| None, show plain;
        /// Bytes a client's write queue holds before it is disconnected as slow.
        write_queue_bytes: usize = pubsub_hub_gateway::config::DEFAULT_WRITE_QUEUE_BYTES, env "PUBSUB_HUB_GATEWAY_WRITE_QUEUE_BYTES", flag |_| None, show plain;
    }
}

/// One line of `--print-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file section.
    pub section: &'static str,
    /// The key within it.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The TOML value as shown (secrets masked), or `None` when unset.
    pub shown: Option<String>,
    /// Where the value came from.
    pub source: Source,
}

/// The highest layer that sets the value.
fn pick<T: Value>(
    flag: Option<T>,
    var: &str,
    env: Env<'_>,
    file: Option<T>,
    default: T,
) -> Result<Setting<T>, CliError> {
    if let Some(value) = flag {
        return Ok(Setting {
            value,
            source: Source::Flag,
        });
    }
    if let Some(text) = env(var).filter(|t| !t.is_empty()) {
        // The value is not repeated: it may be a secret.
        let value = T::parse_text(&text).ok_or_else(|| {
            CliError::usage(format!(
                "environment variable {var}: expected {}",
                T::EXPECTED
            ))
        })?;
        return Ok(Setting {
            value,
            source: Source::Env,
        });
    }
    if let Some(value) = file {
        return Ok(Setting {
            value,
            source: Source::File,
        });
    }
    Ok(Setting {
        value: default,
        source: Source::Default,
    })
}

/// Parses a configuration file's text. Errors are one line naming the key:
/// `limits.max_message_bytes: invalid type: string, expected usize (line 7)`.
pub fn parse_file(text: &str) -> Result<file::FileConfig, String> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.and_then(|s| text.get(..s.start))
            .map(|before| format!(" (line {})", before.matches('\n').count() + 1))
            .unwrap_or_default()
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        let key = e
            .span()
            .and_then(|s| key_at(text, s.start))
            .map(|k| format!("{k}: "))
            .unwrap_or_default();
        let message = crate::error::one_line(e.message());
        format!("{key}{message}{}", line_of(e.span()))
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = without_value(&crate::error::one_line(inner.message()));
        let at = line_of(inner.span());
        if path.is_empty() || path == "." {
            format!("{message}{at}")
        } else {
            format!("{path}: {message}{at}")
        }
    })
}

/// A serde type error without the value it quotes (`invalid type: string "...", expected
/// a sequence` becomes `invalid type: string, expected a sequence`): the value may be a
/// token or a URL with a password.
fn without_value(message: &str) -> String {
    if let Some((head, expected)) = message.split_once(", expected")
        && let Some((label, found)) = head.split_once(": ")
        && (label == "invalid type" || label == "invalid value" || label == "invalid length")
    {
        let kind = found.split_whitespace().next().unwrap_or(found);
        return format!("{label}: {kind}, expected{expected}");
    }
    message.to_owned()
}

/// For a syntax error at byte `at`: the `section.key` whose line it is on, when that line
/// is a plain `key = ...` (the value itself is never repeated: it may be a secret).
fn key_at(text: &str, at: usize) -> Option<String> {
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return None;
    }
    let section = text[..start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')?.strip_suffix(']').map(str::trim)
    });
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_owned(),
    })
}

/// Reads and parses the file at `path`; errors name the file.
pub fn read_file(path: &Path) -> Result<file::FileConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("config {}: cannot read it: {e}", path.display())))?;
    parse_file(&text).map_err(|e| CliError::usage(format!("config {}: {e}", path.display())))
}

impl Config {
    /// Loads the configuration: the file named by `--config` (or `PUBSUB_HUB_CONFIG` in
    /// `env`), then every setting by the precedence order, then checks the values.
    pub fn load(
        flags: &Flags<'_>,
        config_flag: Option<&Path>,
        env: Env<'_>,
    ) -> Result<Config, CliError> {
        let path = config_flag
            .map(Path::to_path_buf)
            .or_else(|| env(CONFIG_ENV).filter(|p| !p.is_empty()).map(PathBuf::from));
        let file = match path {
            Some(path) => {
                let parsed = read_file(&path)?;
                Some((path, parsed))
            }
            None => None,
        };
        let config = Config::resolve(flags, env, file)?;
        config.check()?;
        Ok(config)
    }

    /// Checks the values that have a valid type but are still unusable.
    fn check(&self) -> Result<(), CliError> {
        if let Err(e) = self.web_limits().validate() {
            // The dashboard's error names the `Limits` field; its key here is the same name,
            // with `_ms` on the time-outs (milliseconds in the file and the environment).
            let name = e.limit.name();
            let entry = self
                .entries()
                .into_iter()
                .filter(|entry| entry.section == "limits")
                .find(|entry| entry.key.strip_suffix("_ms").unwrap_or(entry.key) == name);
            let (key, source) = entry.map_or(("limits", Source::Default), |e| (e.key, e.source));
            return Err(self.invalid("limits", key, source, &e.to_string()));
        }
        if let Some(filter) = &self.log.filter.value
            && let Err(e) = tracing_subscriber::EnvFilter::builder().parse(filter)
        {
            let source = self.log.filter.source;
            return Err(self.invalid("log", "filter", source, &e.to_string()));
        }
        if let Some(token) = &self.server.token.value
            && let Err(why) = pubsub_hub_web::access::validate_token(token)
        {
            let source = self.server.token.source;
            return Err(self.invalid("server", "token", source, &why));
        }
        if let Err(why) = pubsub_hub_web::TrustedProxies::parse(&self.server.trusted_proxies.value)
        {
            let source = self.server.trusted_proxies.source;
            return Err(self.invalid("server", "trusted_proxies", source, &why));
        }
        if self.dashboard.shared_connections.value == 0 {
            let source = self.dashboard.shared_connections.source;
            return Err(self.invalid(
                "dashboard",
                "shared_connections",
                source,
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// A usage error for `section.key`, naming where its value came from.
    fn invalid(&self, section: &str, key: &str, source: Source, why: &str) -> CliError {
        let env = self
            .entries()
            .into_iter()
            .find(|e| e.section == section && e.key == key)
            .map(|e| e.env)
            .unwrap_or_default();
        let origin = match source {
            // Repeatable flags are named in the singular.
            Source::Flag => match key {
                "trusted_proxies" => "--trusted-proxy".to_owned(),
                "cluster_nodes" => "--cluster-node".to_owned(),
                _ => format!("--{}", key.replace('_', "-")),
            },
            Source::Env => format!("environment variable {env}"),
            Source::File => match &self.file {
                Some(path) => format!("config {}: {section}.{key}", path.display()),
                None => format!("{section}.{key}"),
            },
            Source::Default => format!("default {section}.{key}"),
        };
        CliError::usage(format!("{origin}: {why}"))
    }

    /// True when a private, throwaway `redis-server` may stand in for Redis: only when no
    /// Redis address is configured at all (no URL, host or port from a flag, the environment
    /// or the file) and the fallback is not switched off. A configured address is never
    /// replaced: when nothing answers there, the dashboard (and any long-running command)
    /// starts anyway and connects when Redis appears.
    pub fn private_redis_allowed(&self) -> bool {
        let r = &self.redis;
        let configured = [r.url.source, r.host.source, r.port.source]
            .iter()
            .any(|s| *s != Source::Default);
        !configured && r.embedded_fallback.value
    }

    /// The Redis address settings, for [`crate::config::RedisTarget::resolve`].
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The dashboard's [`pubsub_hub_web::Limits`].
    pub fn web_limits(&self) -> pubsub_hub_web::Limits {
        let l = &self.limits;
        pubsub_hub_web::Limits {
            max_body_bytes: l.max_body_bytes.value,
            max_message_bytes: l.max_message_bytes.value,
            max_subscriptions: l.max_subscriptions.value,
            max_targets_per_subscription: l.max_targets_per_subscription.value,
            max_name_bytes: l.max_name_bytes.value,
            max_target_bytes: l.max_target_bytes.value,
            max_publish_count: l.max_publish_count.value,
            max_listed_channels: l.max_listed_channels.value,
            header_read_timeout: std::time::Duration::from_millis(l.header_read_timeout_ms.value),
            body_read_timeout: std::time::Duration::from_millis(l.body_read_timeout_ms.value),
            write_timeout: std::time::Duration::from_millis(l.write_timeout_ms.value),
            max_connections: l.max_connections.value,
        }
    }

    /// The dashboard hub's connection mode.
    pub fn connection_mode(&self) -> pubsub_hub::ConnectionMode {
        let d = &self.dashboard;
        match d.mode.value {
            ModeName::Dedicated => pubsub_hub::ConnectionMode::Dedicated,
            ModeName::Shared => pubsub_hub::ConnectionMode::Shared {
                connections: d.shared_connections.value,
            },
        }
    }

    /// The gateway's configuration for `pubsub-hub gateway`: the `[gateway]` settings, the
    /// RSA key file read, and the whole checked by the gateway crate (a bad value is a
    /// usage error naming it).
    pub fn gateway_config(&self) -> Result<pubsub_hub_gateway::GatewayConfig, CliError> {
        let g = &self.gateway;
        let mut config = pubsub_hub_gateway::GatewayConfig::default();
        config.channel_prefix = g.channel_prefix.value.clone();
        config.hmac_secret = g
            .hmac_secret
            .value
            .clone()
            .map(pubsub_hub_gateway::Secret::new);
        config.api_key = g.api_key.value.clone().map(pubsub_hub_gateway::Secret::new);
        config.allow_anonymous = g.allow_anonymous.value;
        config.allowed_origins = g.allowed_origins.value.clone();
        config.defaults = pubsub_hub_gateway::ChannelRules::default()
            .with_subscribe(g.subscribe.value)
            .with_publish(g.publish.value)
            .with_presence(g.presence.value)
            .with_join_leave(g.join_leave.value);
        config.presence_ttl = std::time::Duration::from_millis(g.presence_ttl_ms.value);
        config.namespaces = g.namespaces.value.clone();
        let l = &mut config.limits;
        l.max_connections = g.max_connections.value;
        l.max_channels_per_connection = g.max_channels_per_connection.value;
        l.max_message_bytes = g.max_message_bytes.value;
        l.max_commands_per_second = g.max_commands_per_second.value;
        l.connect_timeout = std::time::Duration::from_millis(g.connect_timeout_ms.value);
        l.write_queue_messages = g.write_queue_messages.value;
        l.write_queue_bytes = g.write_queue_bytes.value;
        if let Some(path) = &g.rsa_public_key_file.value {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                self.invalid(
                    "gateway",
                    "rsa_public_key_file",
                    g.rsa_public_key_file.source,
                    &format!("cannot read {}: {e}", path.display()),
                )
            })?;
            config.rsa_public_key = Some(pem);
        }
        if g.shared_connections.value == 0 {
            return Err(self.invalid(
                "gateway",
                "shared_connections",
                g.shared_connections.source,
                "must be at least 1",
            ));
        }
        // The gateway names the bad setting (`limits.max_connections`); find its key here.
        if let Err(e) = pubsub_hub_gateway::Gateway::check_config(&config) {
            let entry = self
                .entries()
                .into_iter()
                .filter(|e| e.section == "gateway")
                .find(|entry| {
                    let name = entry.key.strip_suffix("_ms").unwrap_or(entry.key);
                    e.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .any(|w| w == name)
                });
            let (key, source) = entry.map_or(("gateway", Source::Default), |e| (e.key, e.source));
            return Err(self.invalid("gateway", key, source, &e));
        }
        Ok(config)
    }

    /// The effective configuration as TOML, each value followed by its source
    /// (`# flag`, `# env VAR`, `# file`, `# default`); secrets are masked, unset values
    /// are comments. The text parses back with [`parse_file`].
    pub fn render(&self, redis_in_use: &str) -> String {
        let mut out = String::new();
        out.push_str(
            "# pubsub-hub: the effective configuration (precedence: flag > env > file > default)\n",
        );
        match &self.file {
            Some(path) => out.push_str(&format!("# config file: {}\n", path.display())),
            None => out.push_str("# config file: none\n"),
        }
        out.push_str(&format!("# Redis in use: {redis_in_use}\n"));
        let entries = self.entries();
        for section in Self::SECTIONS {
            out.push_str(&format!("\n[{section}]\n"));
            let mut any = false;
            for e in entries.iter().filter(|e| e.section == *section) {
                any = true;
                let source = match e.source {
                    Source::Env => format!("env {}", e.env),
                    other => other.as_str().to_owned(),
                };
                match &e.shown {
                    Some(value) => out.push_str(&format!("{} = {value}  # {source}\n", e.key)),
                    None => out.push_str(&format!("# {} is not set  # {source}\n", e.key)),
                }
            }
            if !any {
                out.push_str("# (no settings yet)\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn flags_none() -> (RedisArgs, ServeArgs) {
        (RedisArgs::default(), ServeArgs::default())
    }

    fn load(
        serve: &ServeArgs,
        env: &[(&str, &str)],
        file: Option<&str>,
    ) -> Result<Config, CliError> {
        let redis = RedisArgs::default();
        let gateway = GatewayArgs::default();
        let flags = Flags {
            redis: &redis,
            serve,
            gateway: &gateway,
            log_format: None,
        };
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.get(k).cloned();
        let file = file.map(|t| (PathBuf::from("/x.toml"), parse_file(t).unwrap()));
        let config = Config::resolve(&flags, &lookup, file)?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn a_private_redis_only_when_no_address_is_configured() {
        let (_, none) = flags_none();
        assert!(load(&none, &[], None).unwrap().private_redis_allowed());
        for env in [
            ("REDIS_URL", "redis://h:1/"),
            ("REDIS_HOST", "h"),
            ("REDIS_PORT", "7000"),
        ] {
            let c = load(&none, &[env], None).unwrap();
            assert!(!c.private_redis_allowed(), "{env:?} configures Redis");
        }
        let c = load(&none, &[], Some("[redis]\nport = 7000\n")).unwrap();
        assert!(!c.private_redis_allowed(), "the file configures Redis");
        let no_embedded = ServeArgs {
            no_embedded: true,
            ..ServeArgs::default()
        };
        assert!(
            !load(&no_embedded, &[], None)
                .unwrap()
                .private_redis_allowed()
        );
    }

    #[test]
    fn every_layer_in_order() {
        let file = "[server]\nport = 1\n[limits]\nmax_message_bytes = 10\n";
        let (_, none) = flags_none();
        let c = load(&none, &[], Some(file)).unwrap();
        assert_eq!(
            c.server.port,
            Setting {
                value: 1,
                source: Source::File
            }
        );
        assert_eq!(c.server.host.source, Source::Default);
        assert_eq!(c.web_limits().max_message_bytes, 10);

        let c = load(&none, &[("PUBSUB_HUB_PORT", "2")], Some(file)).unwrap();
        assert_eq!(
            c.server.port,
            Setting {
                value: 2,
                source: Source::Env
            }
        );

        let flag = ServeArgs {
            port: Some(3),
            ..ServeArgs::default()
        };
        let c = load(&flag, &[("PUBSUB_HUB_PORT", "2")], Some(file)).unwrap();
        assert_eq!(
            c.server.port,
            Setting {
                value: 3,
                source: Source::Flag
            }
        );

        // An empty variable is unset.
        let c = load(&none, &[("PUBSUB_HUB_PORT", "")], Some(file)).unwrap();
        assert_eq!(c.server.port.source, Source::File);
    }

    #[test]
    fn env_errors_name_the_variable_and_hide_the_value() {
        let (_, none) = flags_none();
        let e = load(&none, &[("REDIS_PORT", "abc")], None).unwrap_err();
        assert_eq!(
            e.message(),
            "environment variable REDIS_PORT: expected an integer from 0 to 65535"
        );
        let e = load(&none, &[("PUBSUB_HUB_INSECURE_NO_AUTH", "maybe")], None).unwrap_err();
        assert!(e.message().contains("PUBSUB_HUB_INSECURE_NO_AUTH"), "{e}");
    }

    #[test]
    fn file_errors_are_one_line_naming_the_key() {
        let e = parse_file("[limits]\nmax_message_bytes = \"big\"\n").unwrap_err();
        assert!(
            e.starts_with("limits.max_message_bytes: invalid type"),
            "{e}"
        );
        assert!(e.ends_with("(line 2)"), "{e}");
        let e = parse_file("[server]\nprot = 1\n").unwrap_err();
        assert!(e.contains("prot"), "{e}");
        let e = parse_file("[nosuch]\n").unwrap_err();
        assert!(e.contains("nosuch"), "{e}");
        let e = parse_file("[server\nport = 1").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        let e = parse_file("[server]\nport = 1\ntoken = s3cret\n").unwrap_err();
        assert!(e.starts_with("server.token: "), "{e}");
        assert!(e.ends_with("(line 3)") && !e.contains("s3cret"), "{e}");
        let e = parse_file("[redis]\nport = 70000\n").unwrap_err();
        assert!(e.starts_with("redis.port: "), "{e}");
        // A value of the wrong type is not repeated: it may be a secret.
        let e = parse_file("[dashboard]\ncluster_nodes = \"redis://:pw-s3cret@h:7000/\"\n")
            .unwrap_err();
        assert!(
            e.starts_with("dashboard.cluster_nodes: invalid type: string, expected"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let e = parse_file("[server]\ntoken = 12345678\n").unwrap_err();
        assert!(
            e.starts_with("server.token: invalid type: integer, expected"),
            "{e}"
        );
        assert!(!e.contains("12345678"), "{e}");
    }

    #[test]
    fn unusable_values_are_refused_naming_the_key() {
        let (_, none) = flags_none();
        let e = load(&none, &[], Some("[limits]\nmax_publish_count = 0\n")).unwrap_err();
        assert_eq!(
            e.message(),
            "config /x.toml: limits.max_publish_count: the limit max_publish_count must be at least 1"
        );
        let e = load(&none, &[("PUBSUB_HUB_MAX_CONNECTIONS", "0")], None).unwrap_err();
        assert_eq!(
            e.message(),
            "environment variable PUBSUB_HUB_MAX_CONNECTIONS: the limit max_connections must be at least 1"
        );
        let e = load(&none, &[], Some("[limits]\nbody_read_timeout_ms = 0\n")).unwrap_err();
        assert_eq!(
            e.message(),
            "config /x.toml: limits.body_read_timeout_ms: the limit body_read_timeout must be more than 0"
        );
        let e = load(&none, &[("PUBSUB_HUB_TOKEN", "a b")], None).unwrap_err();
        assert!(
            e.message()
                .starts_with("environment variable PUBSUB_HUB_TOKEN: "),
            "{e}"
        );
        // The web crate's rule: at least 16 characters, the token itself never shown.
        let e = load(&none, &[("PUBSUB_HUB_TOKEN", "short-s3cret")], None).unwrap_err();
        assert!(
            e.message().starts_with(
                "environment variable PUBSUB_HUB_TOKEN: the access token is 12 characters; at least 16"
            ),
            "{e}"
        );
        assert!(!e.message().contains("s3cret"), "{e}");
        let e = load(
            &none,
            &[],
            Some("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy\"]\n"),
        )
        .unwrap_err();
        assert!(
            e.message()
                .starts_with("config /x.toml: server.trusted_proxies: trusted proxy \"proxy\""),
            "{e}"
        );
        let e = load(&none, &[("PUBSUB_HUB_WRITE_TIMEOUT_MS", "0")], None).unwrap_err();
        assert_eq!(
            e.message(),
            "environment variable PUBSUB_HUB_WRITE_TIMEOUT_MS: the limit write_timeout must be more than 0"
        );
        let e = load(&none, &[], Some("[dashboard]\nshared_connections = 0\n")).unwrap_err();
        assert!(e.message().contains("dashboard.shared_connections"), "{e}");
        let e = load(&none, &[("RUST_LOG", "a=b=c")], None).unwrap_err();
        assert!(
            e.message().starts_with("environment variable RUST_LOG: "),
            "{e}"
        );
    }

    #[test]
    fn the_printout_masks_secrets_and_parses_back() {
        let (_, none) = flags_none();
        let c = load(
            &none,
            &[("PUBSUB_HUB_TOKEN", "tok-s3cret-0123456789")],
            Some("[redis]\nurl = \"redis://u:pw-s3cret@h:1/\"\n"),
        )
        .unwrap();
        let text = c.render("h:1");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("token = \"***\"  # env PUBSUB_HUB_TOKEN"),
            "{text}"
        );
        assert!(
            text.contains("url = \"redis://u:***@h:1/\"  # file"),
            "{text}"
        );
        assert!(text.contains("port = 8103  # default"), "{text}");
        assert!(text.contains("# ca_file is not set  # default"), "{text}");
        parse_file(&text).expect("the printout is a valid configuration file");
        // `{:?}` of the configuration, of the file and of the command line masks them too.
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("redis://u:***@h:1/"),
            "{debug}"
        );
        let file = parse_file("[server]\ntoken = \"tok-s3cret-0123456789\"\n").unwrap();
        assert!(!format!("{file:?}").contains("s3cret"), "{file:?}");
        let cli = crate::cli::Cli::try_parse_args([
            "pubsub-hub",
            "--redis-url",
            "redis://:pw-s3cret@h/",
            "serve",
            "--token",
            "tok-s3cret-0123456789",
        ])
        .unwrap();
        assert!(!format!("{cli:?}").contains("s3cret"), "{cli:?}");
    }

    /// The `--help` texts state defaults by hand (`[env X; file s.k; default D]`): they
    /// must be the table's.
    #[test]
    fn help_texts_state_the_table_defaults() {
        use clap::CommandFactory;
        let (_, none) = flags_none();
        let defaults = load(&none, &[], None).unwrap().entries();
        let mut checked = 0;
        let command = crate::Cli::command();
        for arg in command.get_arguments() {
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            for e in &defaults {
                let Some(at) = help.find(&format!("file {}.{};", e.section, e.key)) else {
                    continue;
                };
                assert!(help.contains(&format!("env {}", e.env)), "{help}");
                let bracket = help[at..].split(']').next().unwrap();
                if let Some((_, stated)) = bracket.split_once("default ") {
                    let actual = e.shown.clone().unwrap();
                    assert_eq!(stated, actual.trim_matches('"'), "{}.{}", e.section, e.key);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 7, "only {checked} defaults found in the help");
    }

    #[test]
    fn the_readme_sample_loads() {
        let readme = include_str!("../../../README.md");
        let operations = readme
            .split_once("## Operations")
            .expect("an Operations section")
            .1;
        let sample = operations
            .split_once("```toml\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .expect("a TOML sample")
            .0;
        let file = parse_file(sample).expect("the README's sample is a valid configuration");
        assert!(
            file.limits.max_publish_count.is_some(),
            "it lists the limits"
        );
    }

    #[test]
    fn the_example_file_in_contrib_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/pubsub-hub.toml");
        let file = read_file(&path).expect("contrib/pubsub-hub.toml is a valid configuration");
        assert!(
            file.server.host.is_some(),
            "the example sets the listen address"
        );
    }
}
