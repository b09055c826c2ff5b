//! Resolving where Redis is. Building the client and showing a URL without its password
//! are `pubsub_hub_launcher`'s (`open_client`, `redact_url`), shared with the dashboard.
//!
//! Each of `url`, `host` and `port` is first resolved on its own by the one precedence
//! order of [`crate::settings`] (flag > env > file > default). Then the URL and the
//! host/port pair compete by layer: the URL is used when it comes from a layer at least as
//! high as the stronger of host and port, so
//! 1. `--redis-url` beats everything;
//! 2. `--redis-host` / `--redis-port` beat `REDIS_URL` and a file's `redis.url` (the other
//!    one of the pair comes from its own highest layer);
//! 3. `REDIS_URL` beats `REDIS_HOST` / `REDIS_PORT` and the file;
//! 4. and so on down to the defaults `localhost` / `6379`.
//!
//! A flag always beats the environment, even across the URL / host-and-port split, so a
//! `REDIS_URL` exported in a shell never silently overrides an explicit `--redis-port`.

use std::path::PathBuf;

use pubsub_hub_launcher::{ClientError, host_port_url, redact_url};

use crate::cli::Source;
use crate::error::CliError;
use crate::settings::Redis;

/// The Redis server a command talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTarget {
    /// The URL handed to redis-rs (may contain a password: never print it).
    url: String,
    /// `host:port` as chosen by host/port settings, or `None` when a URL was chosen.
    host_port: Option<(String, u16)>,
    /// Which layer won.
    source: Source,
    /// The CA that signed the server's certificate, for `rediss://`.
    ca_file: Option<PathBuf>,
}

impl RedisTarget {
    /// Applies the URL-versus-host/port rule to resolved settings. A malformed URL is a
    /// usage error.
    pub fn resolve(redis: &Redis) -> Result<RedisTarget, CliError> {
        let pair = redis.host.source.min(redis.port.source);
        let target = match &redis.url.value {
            Some(url) if redis.url.source <= pair => RedisTarget {
                url: url.clone(),
                host_port: None,
                source: redis.url.source,
                ca_file: None,
            },
            _ => RedisTarget {
                url: host_port_url(&redis.host.value, redis.port.value),
                host_port: Some((redis.host.value.clone(), redis.port.value)),
                source: pair,
                ca_file: None,
            },
        };
        let target = RedisTarget {
            ca_file: redis.ca_file.value.clone(),
            ..target
        };
        target.validate()?;
        Ok(target)
    }

    /// A target from a plain URL (tests, the bench's private server).
    pub fn from_url(url: impl Into<String>) -> Result<RedisTarget, CliError> {
        let target = RedisTarget {
            url: url.into(),
            host_port: None,
            source: Source::Flag,
            ca_file: None,
        };
        target.validate()?;
        Ok(target)
    }

    fn validate(&self) -> Result<(), CliError> {
        let what = match (self.host_port.is_some(), self.source) {
            (true, Source::Flag) => "--redis-host/--redis-port",
            (true, Source::Env) => "REDIS_HOST/REDIS_PORT",
            (true, _) => "redis.host/redis.port",
            (false, Source::Flag) => "--redis-url",
            (false, Source::Env) => "REDIS_URL",
            (false, _) => "redis.url",
        };
        pubsub_hub_launcher::check_url(&self.url).map_err(|e| match e {
            ClientError::InvalidUrl { reason, .. } => {
                CliError::usage(format!("invalid {what} {}: {reason}", self.display()))
            }
            other => CliError::usage(other.to_string()),
        })
    }

    /// The URL for redis-rs. Contains the password if there is one.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A redis-rs client for this target, trusting the CA file for `rediss://` when one
    /// is configured (built by `pubsub_hub_launcher::open_client`, as the dashboard's).
    pub fn client(&self) -> Result<redis::Client, CliError> {
        pubsub_hub_launcher::open_client(&self.url, self.ca_file.as_deref()).map_err(|e| {
            CliError::usage(match e {
                ClientError::InvalidUrl { reason, .. } => {
                    format!("invalid Redis address {}: {reason}", self.display())
                }
                other => other.to_string(),
            })
        })
    }

    /// The CA file for `rediss://`, if one is configured.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// Host and port when they were chosen by host/port settings.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        self.host_port.as_ref().map(|(h, p)| (h.as_str(), *p))
    }

    /// The layer the address came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Safe to print: `host:port` for host/port targets, the URL with any password
    /// replaced by `***` otherwise.
    pub fn display(&self) -> String {
        match &self.host_port {
            Some((h, p)) => format!("{h}:{p}"),
            None => redact_url(&self.url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Setting;

    fn redis(url: Option<(&str, Source)>, host: (&str, Source), port: (u16, Source)) -> Redis {
        Redis {
            url: match url {
                Some((u, source)) => Setting {
                    value: Some(u.to_owned()),
                    source,
                },
                None => Setting {
                    value: None,
                    source: Source::Default,
                },
            },
            host: Setting {
                value: host.0.to_owned(),
                source: host.1,
            },
            port: Setting {
                value: port.0,
                source: port.1,
            },
            ca_file: Setting {
                value: None,
                source: Source::Default,
            },
            embedded_fallback: Setting {
                value: true,
                source: Source::Default,
            },
        }
    }

    #[test]
    fn the_higher_layer_wins_across_url_and_host() {
        let env_url = Some(("redis://envhost:1/", Source::Env));
        let d = ("localhost", Source::Default);
        let t = RedisTarget::resolve(&redis(env_url, d, (7000, Source::Flag))).unwrap();
        assert_eq!(t.host_port(), Some(("localhost", 7000)));

        let t = RedisTarget::resolve(&redis(env_url, d, (7000, Source::Env))).unwrap();
        assert_eq!(t.url(), "redis://envhost:1/");

        let file_url = Some(("redis://filehost:1/", Source::File));
        let t = RedisTarget::resolve(&redis(file_url, d, (7000, Source::Env))).unwrap();
        assert_eq!(t.host_port(), Some(("localhost", 7000)));
        let t = RedisTarget::resolve(&redis(file_url, d, (6379, Source::Default))).unwrap();
        assert_eq!(t.url(), "redis://filehost:1/");
        assert_eq!(t.source(), Source::File);

        let flag_url = Some(("redis://flaghost:2/", Source::Flag));
        let t = RedisTarget::resolve(&redis(flag_url, ("h", Source::Flag), (1, Source::Flag)));
        assert_eq!(t.unwrap().url(), "redis://flaghost:2/");
    }

    #[test]
    fn malformed_urls_are_usage_errors_without_secrets() {
        let bad = redis(
            Some(("http://:hunter2@h/", Source::Flag)),
            ("h", Source::Default),
            (1, Source::Default),
        );
        let e = RedisTarget::resolve(&bad).unwrap_err();
        assert_eq!(e.status(), crate::error::ExitStatus::Usage);
        assert!(!e.message().contains("hunter2"), "{}", e.message());
    }
}
